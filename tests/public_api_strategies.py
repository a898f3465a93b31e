"""Argument strategies for the whole-API fuzz harness (``tests/test_public_api_fuzz.py``).

``HOSTILE`` is every kind of value an attacker or a buggy caller passes: wrong types, lone
surrogates, NUL, huge sizes, NaN/±Infinity, negative, zero and huge numbers, deep nesting,
``$``- and dotted keys, glob and brace characters, bytes and None. ``VALID`` gives, per
``"api.method"`` and per parameter, values the method must accept. An example passes each
parameter a valid value or, now and then, a hostile one.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from nexus_store import AuditRecord, Event, NewSession
from nexus_store.audit_proofs import TreeHead
from nexus_store.health import CheckResult
from nexus_store.postgres.models import Document, Organization, Project, Task, User
from nexus_store.redis.cache import CacheEntry
from nexus_store.redis.names import AREAS
from nexus_store.redis.queue import QueueMessage
from nexus_store.redis.ratelimit.limiter import RateLimitHit
from nexus_store.redis.realtime import RealtimeMessage

__all__ = [
    "HOSTILE",
    "NO_INPUT",
    "PENDING",
    "REFUSED_ONLY",
    "SEEDED_AUDIT_ENTRIES",
    "VALID",
    "Arguments",
    "set_backup_directory",
    "valid_text",
]

Strategy = st.SearchStrategy[Any]

# -- hostile values ---------------------------------------------------------------------------

_NASTY_CHARACTERS = [
    "\ud800",
    "\udfff",
    "\x00",
    "*",
    "?",
    "[",
    "]",
    "{",
    "}",
    "$",
    ".",
    ":",
    "\n",
    " ",
    "%",
    "\\",
    "/",
    "é",
    "😀",
    "\u2028",
    "\ufeff",
    "'",
    '"',
]
_NASTY_TEXT = st.text(st.sampled_from(_NASTY_CHARACTERS) | st.characters(), max_size=12)
_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**63,
        -(2**63) - 1,
        2**64,
        10**100,
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        1e308,
        5e-324,
        -1e-9,
        True,
        False,
        Decimal("NaN"),
        Decimal("1e400"),
    ]
)


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


_SHAPES = st.sampled_from(
    [
        None,
        b"bytes",
        b"\xff\xfe",
        bytearray(b"x"),
        object(),
        {1, 2},
        (1, 2),
        [],
        {},
        "",
        "x" * 100_000,
        ["x"] * 10_000,
        _nested(300),
        {"$where": "1"},
        {"a.b": 1},
        {"": 1},
        {1: "int key"},
        {("tuple",): 1},
        {"nested": {"$gt": ""}},
        {"k": float("nan")},
        {"k": [float("inf")]},
        {"k": "\ud800"},
        {"\ud800": 1},
        {"k\x00": 1},
        dt.datetime(2026, 1, 1),  # naive
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.timedelta(seconds=-1),
        uuid.UUID(int=0),
        Decimal("1.5"),
        lambda: None,
    ]
)

#: Every kind of hostile value, as one strategy.
HOSTILE: Strategy = st.one_of(_NASTY_TEXT, _NUMBERS, _SHAPES, st.binary(max_size=8))

# -- valid values -----------------------------------------------------------------------------


def valid_text(prefix: str = "") -> Strategy:
    """Short printable names, unique per draw (entities need unique emails and names)."""
    return st.builds(lambda: f"{prefix}{uuid.uuid4().hex[:12]}")


_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    # JSONB reads integral floats from 1e16 up back as ints: PostgreSQL refuses them.
    | st.floats(-1e15, 1e15)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(
                st.characters(exclude_categories=("Cs",), exclude_characters="\x00$."),
                min_size=1,
                max_size=6,
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
_PLAIN_DICT = st.dictionaries(st.sampled_from(["a", "b", "plan", "n"]), _PLAIN, max_size=3)
_DAY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_START = st.just(_DAY)
_END = st.just(_DAY + dt.timedelta(days=1))
_NAMES = st.sampled_from(["signup", "view", "paid"])
_SECONDS = st.sampled_from([5, 30, 60.0])  # long enough to read back under load
_LIMITS = st.sampled_from(["10/second", "100/minute;1000/hour", "5/minute"])
_QUEUE = st.sampled_from(["fuzz-q1", "fuzz-q2"])
_MESSAGE_ID = st.sampled_from(["0-1", "1700000000000-0"])


def _user_values() -> Strategy:
    return st.fixed_dictionaries(
        {
            "email": valid_text().map(lambda t: f"{t}@example.com"),
            "username": valid_text("u"),
            "password_hash": st.just("$argon2id$" + "x" * 40),
        },
        optional={
            "full_name": st.text(max_size=20).filter(lambda t: "\x00" not in t),
            "preferences": _PLAIN_DICT,
            "is_active": st.booleans(),
        },
    )


def _filters() -> Strategy:
    return st.sampled_from(
        [
            None,
            {},
            {"is_active": True},
            {"username__ilike": "u"},
            {"email__in": ["a@b.c"]},
            {"created_at__gte": _DAY},
            {"preferences__contains": {"a": 1}},
            {"deleted_at__is_null": True},
        ]
    )


def _loader() -> Strategy:
    return st.sampled_from([lambda: 1, lambda: {"a": [1, 2]}, lambda: None])


def _event_record() -> Strategy:
    return st.builds(Event, name=_NAMES, user_id=valid_text("u"), properties=_PLAIN_DICT)


def _put_record() -> Strategy:
    return st.one_of(
        _user_values().map(lambda values: User(**values)),
        _event_record(),
        st.builds(
            AuditRecord,
            actor=valid_text("a"),
            action=st.just("fuzz"),
            resource_type=st.just("fuzz"),
            resource_id=valid_text(),
        ),
        st.builds(NewSession, user_id=valid_text("u"), data=_PLAIN_DICT),
        st.builds(CacheEntry, key=valid_text("fz:"), value=_PLAIN, ttl=st.just(30)),
        st.builds(QueueMessage, queue=_QUEUE, payload=_PLAIN),
        st.builds(RealtimeMessage, channel=st.just("fuzz:channel"), message=_PLAIN),
        st.builds(RateLimitHit, key=valid_text("fz:"), limits=_LIMITS),
    )


Arguments = dict[str, Strategy]
_ENTITY_MODEL = st.sampled_from([User, Organization, Project])
_ANY_ID = st.builds(uuid.uuid4)
_CACHE_KEY = valid_text("fz:")
_TOKEN = st.sampled_from(["0000." + "A" * 43, "not-a-token"])

#: Audit entries the harness records before fuzzing, so that proofs have a tree to prove in.
SEEDED_AUDIT_ENTRIES = 3
_backup_directory: list[Path] = []


def set_backup_directory(path: Path) -> None:
    """Where ``backup.*`` calls of the harness look for archives (a pytest tmp directory)."""
    _backup_directory[:] = [path]


_BACKUP_DIRECTORY = st.builds(lambda: str(_backup_directory[0]))
_NO_ARCHIVE = st.builds(lambda: str(_backup_directory[0] / f"{uuid.uuid4().hex}.nxb"))


async def _healthy() -> CheckResult:
    return CheckResult("fuzz", "pass")


_TREE_HEAD = st.builds(
    TreeHead,
    size=st.integers(0, 5),
    root_hash=st.just("0" * 64),
    timestamp=st.integers(0, 2**41),
    algorithm=st.sampled_from(["ed25519", "hmac-sha256"]),
    signature=st.just("A" * 86),
)
_PROBE = st.sampled_from(["liveness", "readiness"])

#: "api.method" -> {parameter: strategy of valid values}. A parameter missing here fails the
#: harness, so that a new parameter cannot go unfuzzed.
VALID: dict[str, Arguments] = {
    # entities (PostgreSQL)
    "entities.create": {
        "model": st.just(User),
        "audit": st.sampled_from([None, False]),
        "values": _user_values(),
    },
    "entities.bulk_create": {
        "model": st.just(User),
        "audit": st.sampled_from([None, False]),
        "rows": st.lists(_user_values(), max_size=3),
    },
    "entities.get": {
        "model": _ENTITY_MODEL,
        "id": _ANY_ID,
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.get_or_none": {
        "model": _ENTITY_MODEL,
        "id": _ANY_ID,
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.list": {
        "model": st.just(User),
        "where": _filters(),
        "order_by": st.sampled_from([None, "created_at", "-created_at", ["email"]]),
        "limit": st.integers(1, 5),
        "after": st.none(),
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.count": {
        "model": st.just(User),
        "where": _filters(),
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.exists": {
        "model": st.just(User),
        "where": _filters(),
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.update": {
        "model": st.just(User),
        "id": _ANY_ID,
        "expected_version": st.none(),
        "audit": st.none(),
        "changes": st.just({"full_name": "x"}),
    },
    "entities.delete": {
        "model": st.just(User),
        "id": _ANY_ID,
        "soft": st.booleans(),
        "audit": st.none(),
    },
    "entities.restore": {"model": st.just(User), "id": _ANY_ID, "audit": st.none()},
    "entities.upsert": {
        "model": st.just(Organization),
        "conflict": st.just("slug"),
        "update": st.sampled_from([None, ["name"]]),
        "audit": st.none(),
        "values": st.builds(lambda t: {"name": t, "slug": t}, valid_text("s")),
    },
    "entities.put": {
        "entity": _user_values().map(lambda values: User(**values)),
        "audit": st.none(),
    },
    # events and audit (MongoDB)
    "events.track": {
        "name": _NAMES,
        "user_id": valid_text("u"),
        "anonymous_id": st.none(),
        "session_id": st.none(),
        "properties": _PLAIN_DICT | st.none(),
        "context": st.none(),
        "ts": st.none(),
        "event_id": st.none(),
        "wait": st.just(False),
    },
    "events.put": {"event": _event_record()},
    "events.counts": {
        "names": _NAMES,
        "start": _START,
        "end": _END,
        "interval": st.sampled_from(["hour", "day"]),
    },
    "events.unique_users": {"start": _START, "end": _END, "names": st.none() | _NAMES},
    "events.funnel": {
        "steps": st.lists(_NAMES, min_size=2, max_size=3),
        "start": _START,
        "end": _END,
        "window": st.just(dt.timedelta(hours=1)),
        "anchor": st.sampled_from(["first", "any"]),
    },
    "events.timeline": {
        "user_id": valid_text("u"),
        "limit": st.integers(1, 5),
        "cursor": st.none(),
    },
    "events.top_events": {"start": _START, "end": _END, "limit": st.integers(1, 5)},
    "events.delete_user": {"user_id": valid_text("u")},
    "events.export_user": {"user_id": valid_text("u")},
    "audit.record": {
        "actor": valid_text("a"),
        "action": st.just("fuzz"),
        "resource_type": st.just("fuzz"),
        "resource_id": valid_text(),
        "before": st.none() | _PLAIN_DICT,
        "after": st.none() | _PLAIN_DICT,
        "ip": st.none(),
        "user_agent": st.none(),
        "reason": st.none(),
        "idempotency_key": st.none(),
    },
    "audit.put": {
        "record": st.builds(
            AuditRecord,
            actor=valid_text("a"),
            action=st.just("f"),
            resource_type=st.just("f"),
            resource_id=valid_text(),
        )
    },
    "audit.verify": {
        "start": st.none(),
        "end": st.none(),
        "raise_on_tamper": st.just(False),
        "batch_size": st.integers(1, 1000),
        "since": st.none(),
    },
    "audit.by_actor": {"actor": valid_text("a"), "limit": st.integers(1, 5), "cursor": st.none()},
    "audit.by_resource": {
        "resource_type": st.just("fuzz"),
        "resource_id": valid_text(),
        "limit": st.integers(1, 5),
        "cursor": st.none(),
    },
    "audit.in_range": {
        "start": _START,
        "end": _END,
        "limit": st.integers(1, 5),
        "cursor": st.none(),
    },
    "audit.entries": {"batch_size": st.integers(1, 1000)},
    # Redis areas
    "sessions.create": {
        "user_id": valid_text("u"),
        "data": _PLAIN_DICT,
        "ttl": st.none() | _SECONDS,
    },
    "sessions.get": {"token": _TOKEN},
    "sessions.get_or_none": {"token": _TOKEN},
    "sessions.update": {"token": _TOKEN, "data": _PLAIN_DICT},
    "sessions.revoke": {"token": _TOKEN},
    "sessions.revoke_all": {"user_id": valid_text("u")},
    "sessions.list_for_user": {"user_id": valid_text("u")},
    "sessions.put": {"record": st.builds(NewSession, user_id=valid_text("u"), data=_PLAIN_DICT)},
    "cache.get": {"key": _CACHE_KEY, "default": st.none()},
    "cache.set": {
        "key": _CACHE_KEY,
        "value": _PLAIN,
        "ttl": st.none() | _SECONDS,
        "tags": st.lists(valid_text("t"), max_size=2),
        "stale_ttl": st.none(),
    },
    "cache.delete": {"keys": st.lists(_CACHE_KEY, max_size=3)},
    "cache.get_many": {"keys": st.lists(_CACHE_KEY, max_size=3)},
    "cache.set_many": {
        "values": st.dictionaries(_CACHE_KEY, _PLAIN, max_size=3),
        "ttl": st.none() | _SECONDS,
        "tags": st.just([]),
    },
    "cache.invalidate_tag": {"tag": valid_text("t")},
    "cache.get_or_set": {
        "key": _CACHE_KEY,
        "loader": _loader(),
        "ttl": st.none() | _SECONDS,
        "tags": st.just([]),
        "early_refresh": st.none(),
        "stale_ttl": st.none(),
    },
    "cache.get_or_set_sync": {
        "key": _CACHE_KEY,
        "loader": _loader(),
        "ttl": st.none() | _SECONDS,
        "tags": st.just([]),
        "early_refresh": st.none(),
        "stale_ttl": st.none(),
    },
    "cache.put": {"entry": st.builds(CacheEntry, key=_CACHE_KEY, value=_PLAIN, ttl=st.just(30))},
    "cache.cached": {"ttl": st.none() | _SECONDS, "key": st.none(), "tags": st.just(())},
    **{
        f"limiter.{method}": {
            "key": valid_text("fz:"),
            "limits": _LIMITS,
            "cost": st.integers(1, 3),
            "strategy": st.none(),
        }
        for method in ("hit", "hit_sync", "check", "check_sync", "test", "test_sync")
    },
    "limiter.peek": {"key": valid_text("fz:"), "limits": _LIMITS, "strategy": st.none()},
    "limiter.peek_sync": {"key": valid_text("fz:"), "limits": _LIMITS, "strategy": st.none()},
    "limiter.reset": {"key": valid_text("fz:")},
    "limiter.reset_sync": {"key": valid_text("fz:")},
    "limiter.put": {"hit": st.builds(RateLimitHit, key=valid_text("fz:"), limits=_LIMITS)},
    "limiter.limit": {
        "limits": _LIMITS,
        "key": st.none(),
        "cost": st.integers(1, 3),
        "strategy": st.none(),
    },
    "realtime.publish": {"channel": st.just("fuzz:channel"), "message": _PLAIN},
    "realtime.put": {
        "message": st.builds(RealtimeMessage, channel=st.just("fuzz:c"), message=_PLAIN)
    },
    "realtime.subscribe": {"pattern": st.sampled_from(["fuzz:*", "chat:?"])},
    "queue.enqueue": {"queue": _QUEUE, "payload": _PLAIN},
    "queue.put": {"message": st.builds(QueueMessage, queue=_QUEUE, payload=_PLAIN)},
    "queue.consume": {
        "queue": _QUEUE,
        "group": st.just("g"),
        "consumer": st.just("c"),
        "count": st.integers(1, 5),
        "visibility_timeout": st.none() | _SECONDS,
        "block": st.none(),
    },
    "queue.ack": {"queue": _QUEUE, "group": st.just("g"), "ids": st.lists(_MESSAGE_ID, max_size=2)},
    "queue.dead_letters": {"queue": _QUEUE, "count": st.integers(1, 10)},
    "queue.stats": {"queue": _QUEUE},
    # privacy (every store)
    "privacy.export_user": {"user_id": _ANY_ID, "progress": st.none()},
    "privacy.erase_user": {"user_id": _ANY_ID},
    # approvals (PostgreSQL): no request exists, so a decision is a typed NotFoundError
    **{
        f"approvals.{method}": {
            "request_id": _ANY_ID,
            "approver" if method != "cancel" else "requester": valid_text("a"),
            "reason": st.none() | st.just("fuzz"),
        }
        for method in ("approve", "reject", "cancel")
    },
    "approvals.request": {
        "model": st.just(User),
        "id": _ANY_ID,
        "requester": valid_text("a"),
        "changes": st.just({"full_name": "x"}),
        "expected_version": st.none(),
        "reason": st.none() | st.just("fuzz"),
        "approvals": st.none() | st.just(1),  # 1 or the policy's, which names no approvers
        "approvers": st.none() | st.lists(valid_text("a"), min_size=1, max_size=3),
        "approver_role": st.none(),
        "expires_in": st.sampled_from([dt.timedelta(hours=1), 3600.0]),
    },
    "approvals.get": {"request_id": _ANY_ID},
    "approvals.pending": {"for_user": st.none() | valid_text("a"), "limit": st.integers(1, 5)},
    # audit proofs
    # the harness records SEEDED_AUDIT_ENTRIES entries first: these sizes always exist
    "audit.prove": {
        "seq": st.integers(1, SEEDED_AUDIT_ENTRIES),
        "tree_size": st.none() | st.just(SEEDED_AUDIT_ENTRIES),
    },
    "audit.prove_consistency": {
        "old_size": st.integers(1, SEEDED_AUDIT_ENTRIES),
        "new_size": st.just(SEEDED_AUDIT_ENTRIES),
    },
    "audit.check_tree_head": {"head": _TREE_HEAD},
    # backup: reading and pruning an archive directory (create/restore are too slow here)
    "backup.archives": {"directory": _BACKUP_DIRECTORY},
    "backup.prune": {
        "directory": _BACKUP_DIRECTORY,
        "keep_daily": st.integers(0, 3),
        "keep_weekly": st.integers(0, 3),
        "dry_run": st.booleans(),
    },
    "backup.verify": {"path": _NO_ARCHIVE, "key_file": st.none()},
    # search and tenancy
    "entities.search": {
        "model": st.sampled_from([Project, Task, Document]),
        "text": st.sampled_from(["apollo", "launch plan", '"quoted" -not']),
        "where": st.sampled_from([None, {}]),
        "limit": st.integers(1, 5),
        "after": st.none(),
        "fuzzy": st.booleans(),
        "highlight": st.booleans(),
        "include_deleted": st.booleans(),
        "fresh": st.booleans(),
    },
    "entities.tenant": {"organization_id": _ANY_ID},
    # application health checks (in memory)
    "health_checks.add": {
        "key": valid_text("fuzz:m"),
        "check": st.just(_healthy),
        "probe": _PROBE,
        "component_type": st.just("component"),
    },
    "health_checks.remove": {"key": valid_text("fuzz:m")},
    "health_checks.for_probe": {"probe": _PROBE},
    # the facade
    "store.put": {"record": _put_record()},
}

#: Methods that take no caller input: nothing to fuzz. The harness checks that they still
#: take none, so a parameter added later is noticed.
NO_INPUT: dict[str, str] = {
    name: "no parameters"
    for name in (
        "entities.transaction",
        "events.flush",
        "events.stats",
        "events.aclose",
        "cache.stats",
        "limiter.stats",
        "approvals.expire_stale",
        "audit.aclose",
        "audit.public_key",
        "audit.tree_head",
        "outbox.aclose",
        "outbox.deliver_batch",
        "outbox.lag",
        "outbox.prune",
        "outbox.relay_once",
        "outbox.start_relay",
        "outbox.stop",
        "privacy.aclose",
    )
}

#: Public methods not fuzzed yet, and why. The completeness test keeps this list exact, so a
#: method can neither be forgotten here nor silently dropped.
PENDING: dict[str, str] = {}

# -- methods fuzzed for their refusals only --------------------------------------------------


def _refused_path(optional: bool) -> Strategy:
    """Values no file system path argument takes: not text (bytes, numbers, containers...),
    or text with NUL, a lone surrogate, or longer than a path or a name can be."""
    not_text = HOSTILE.filter(lambda value: not isinstance(value, str | os.PathLike))
    if optional:
        not_text = not_text.filter(lambda value: value is not None)
    return not_text | st.sampled_from(["a\x00b", "\ud800", "x" * 5000, "d/" + "n" * 300])


def _not_areas(value: Any) -> bool:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return True
    return not all(isinstance(name, str) and name in AREAS for name in value)


_NOT_A_FLAG = HOSTILE.filter(lambda value: not isinstance(value, bool))
_STORES = ("postgres", "mongo", "redis")


def _quiet_progress(store: str, message: str) -> None:
    pass


#: "api.method" -> {parameter: (valid values, values that must be refused)}, for methods too
#: slow or too destructive to call with valid arguments (a backup dumps every store, a
#: restore replaces them): the harness passes at least one refused value, and checks the
#: call is refused naming it before any work, writing nothing.
REFUSED_ONLY: dict[str, dict[str, tuple[Strategy, Strategy]]] = {
    "backup.create": {
        "path": (_NO_ARCHIVE, _refused_path(optional=False)),
        "only": (
            st.sampled_from([None, *_STORES]),
            HOSTILE.filter(lambda value: value is not None and value not in _STORES),
        ),
        "encrypt": (st.booleans(), _NOT_A_FLAG),
        "key_file": (st.none(), _refused_path(optional=True)),
        "redis_areas": (st.just(("sessions", "queue")), HOSTILE.filter(_not_areas)),
        "progress": (st.just(_quiet_progress), HOSTILE.filter(lambda value: not callable(value))),
    },
    "backup.restore": {
        "path": (_NO_ARCHIVE, _refused_path(optional=False)),
        "only": (
            st.sampled_from([None, *_STORES]),
            HOSTILE.filter(lambda value: value is not None and value not in _STORES),
        ),
        "force": (st.booleans(), _NOT_A_FLAG),
        "key_file": (st.none(), _refused_path(optional=True)),
        "progress": (st.just(_quiet_progress), HOSTILE.filter(lambda value: not callable(value))),
    },
}
