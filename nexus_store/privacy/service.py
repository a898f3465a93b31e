"""Per-user export and erasure across PostgreSQL, MongoDB and Redis (``store.privacy``).

    async with open("ada.json", "wb") as out:   # or `nexus-store privacy export USER_ID`
        async for chunk in store.privacy.export_user(user_id):
            out.write(chunk)

    report = await store.privacy.erase_user(user_id)
    print(report.postgres, report.events, report.sessions, report.cache_entries)

Erasure runs, in order: PostgreSQL (one transaction, each linked row deleted, anonymised or
kept and scrubbed per :mod:`nexus_store.privacy.policy`; the user row becomes a tombstone),
the user's analytics events, their sessions, their cache entries (tag ``user:<id>``), then
one audit entry. Every step is idempotent, and the audit entry's idempotency key is
``erasure:<user id>``, so a run that crashed halfway is completed by running it again, and a
run after a complete one changes nothing and records nothing.

The audit log is not erased: it is immutable, and holds only ids and redacted diffs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from sqlalchemy import Select, Table, Text, column, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from nexus_store.errors import BackendUnavailableError, NotFoundError, ValidationError
from nexus_store.log import get_logger
from nexus_store.outbox.changes import REDACTED, current_context, is_secret_field, json_safe
from nexus_store.privacy.policy import USER_TOMBSTONE, UserLink, user_links
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from nexus_store.connections import Backends
    from nexus_store.mongo.audit.log import AuditLog, AuditPage
    from nexus_store.mongo.events.service import Events
    from nexus_store.redis.cache import Cache
    from nexus_store.redis.sessions import SessionStore

__all__ = ["ErasureReport", "Privacy", "Progress"]

T = TypeVar("T")
_log = get_logger("nexus_store.privacy")
# Called with (section, rows so far) while an export runs; the CLI prints it on stderr.
Progress = Callable[[str, int], None]
_PROGRESS_EVERY = 1000
_EXPORT_BATCH = 500


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What one ``erase_user`` run changed: all zero when a previous run had already erased
    everything (the audit entry is then the previous run's, not a new one)."""

    user_id: str
    postgres: dict[str, int] = field(default_factory=dict)  # "table.column" -> rows
    events: int = 0
    sessions: int = 0
    cache_entries: int = 0
    audit_seq: int | None = None  # the erasure's audit entry (the same one on every re-run)

    @property
    def changed_anything(self) -> bool:
        return bool(
            any(self.postgres.values()) or self.events or self.sessions or self.cache_entries
        )


class Privacy:
    """GDPR-style export and erasure of one user's data in every store."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._apis: dict[Callable[[Backends], Any], Any] = {}

    def _own(self, api_type: Callable[[Backends], T]) -> T:
        # This class's own sub-API instances, built on first use and closed by aclose().
        api = self._apis.get(api_type)
        if api is None:
            api = self._apis[api_type] = api_type(self._backends)
        return cast(T, api)

    @property
    def _events(self) -> Events:
        from nexus_store.mongo.events.service import Events

        return self._own(Events)

    @property
    def _audit(self) -> AuditLog:
        from nexus_store.mongo.audit.log import AuditLog

        return self._own(AuditLog)

    @property
    def _sessions(self) -> SessionStore:
        from nexus_store.redis.sessions import SessionStore

        return self._own(SessionStore)

    @property
    def _cache(self) -> Cache:
        from nexus_store.redis.cache import Cache

        return self._own(Cache)

    async def aclose(self) -> None:
        for api in self._apis.values():
            closer = getattr(api, "aclose", None)
            if closer is not None:
                await closer()
        self._apis.clear()

    # -- export ----------------------------------------------------------------------------

    async def export_user(
        self, user_id: uuid.UUID | str, *, progress: Progress | None = None
    ) -> AsyncIterator[bytes]:
        """Stream one JSON document of everything stored about the user, in UTF-8 chunks.

        Sections: ``postgres`` (the user's row and every row linked to it, by table, read in
        one consistent snapshot), ``events``, ``sessions`` (metadata, never tokens) and
        ``audit`` (entries about the user or by them). Secret fields (password and key
        hashes, tokens) are replaced by ``"[redacted]"``. Raises :class:`NotFoundError`
        before the first chunk when the user does not exist.
        """
        uid = _user_id(user_id)
        report = progress or (lambda _section, _count: None)
        users = _users_table()
        header = {"user_id": uid, "exported_at": datetime.now(UTC).isoformat()}
        opening = orjson.dumps(header)[:-1] + b',"postgres":{'
        async for chunk in self._export_postgres(uid, users, report, opening):
            yield chunk
        yield b'},"events":['
        count = 0
        async for event in self._events.export_user(uid):
            yield (b"," if count else b"") + _dumps(event)
            count += 1
            if count % _PROGRESS_EVERY == 0:
                report("events", count)
        report("events", count)
        sessions = await self._sessions.list_for_user(uid)
        yield b'],"sessions":' + _dumps([asdict(info) for info in sessions])
        report("sessions", len(sessions))
        yield b',"audit":['
        count = 0
        async for entry in self._audit_entries(uid):
            yield (b"," if count else b"") + _dumps(entry)
            count += 1
        report("audit", count)
        yield b"]}"

    async def _export_postgres(
        self, uid: str, users: Table, report: Progress, opening: bytes
    ) -> AsyncIterator[bytes]:
        """The ``postgres`` section, preceded by ``opening`` once the user is known to exist
        (so that nothing at all is written for an unknown user)."""
        postgres = self._backends.postgres
        with postgres.unavailable():
            async with postgres.engine.connect() as conn:
                await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    by_table: dict[str, list[UserLink]] = {}
                    for link in await _links(conn, users):
                        by_table.setdefault(link.table.name, []).append(link)
                    user_row = (
                        (await conn.execute(select(users).where(users.c.id == uid)))
                        .mappings()
                        .one_or_none()
                    )
                    if user_row is None:
                        raise NotFoundError("user", uid)
                    yield opening + b'"users":[' + _dumps(_export_row(user_row)) + b"]"
                    report("users", 1)
                    for name, links in by_table.items():
                        table = links[0].table
                        query = select(table).where(or_(*(link.column == uid for link in links)))
                        yield b"," + orjson.dumps(name) + b":["
                        count = 0
                        # The rows are yielded from inside: a span open across a yield would
                        # be current in the consumer's code, so it covers the query only.
                        with operation(postgres, "privacy.export", name, table=name):
                            result = await conn.stream(
                                query.order_by(*table.primary_key.columns).execution_options(
                                    yield_per=_EXPORT_BATCH
                                )
                            )
                        async for row in result.mappings():
                            yield (b"," if count else b"") + _dumps(_export_row(row))
                            count += 1
                            if count % _PROGRESS_EVERY == 0:
                                report(name, count)
                        report(name, count)
                        yield b"]"

    async def _audit_entries(self, uid: str) -> AsyncIterator[dict[str, Any]]:
        """Entries about the user, then entries they made (as ``<id>`` or ``user:<id>``)."""
        seen: set[int] = set()
        audit = self._audit
        queries: list[Callable[[int | None], Awaitable[AuditPage]]] = [
            lambda cursor: audit.by_resource("users", uid, limit=_EXPORT_BATCH, cursor=cursor),
            lambda cursor: audit.by_actor(uid, limit=_EXPORT_BATCH, cursor=cursor),
            lambda cursor: audit.by_actor(f"user:{uid}", limit=_EXPORT_BATCH, cursor=cursor),
        ]
        for query in queries:
            cursor: int | None = None
            while True:
                page = await query(cursor)
                for entry in page.entries:
                    if entry.seq not in seen:
                        seen.add(entry.seq)
                        yield entry.model_dump(mode="json")
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor

    # -- erasure ---------------------------------------------------------------------------

    async def erase_user(self, user_id: uuid.UUID | str) -> ErasureReport:
        """Erase the user from every store; safe to re-run (see the module docstring).

        Raises :class:`NotFoundError` when no user row (or tombstone) has this id, and
        :class:`BackendUnavailableError` when a store cannot be reached: run it again once
        the store is back and it finishes the job.
        """
        uid = _user_id(user_id)
        postgres = await self._erase_postgres(uid)
        events = await self._events.delete_user(uid)
        sessions = await self._sessions.revoke_all(uid)
        cache_entries = await self._invalidate_cache(uid)
        context = current_context()
        entry = await self._audit.record(
            context.actor,
            "erase",
            "users",
            uid,
            after={
                "postgres": _nested(postgres),
                "events": events,
                "sessions": sessions,
                "cache_entries": cache_entries,
            },
            reason=context.reason or "personal data erasure",
            idempotency_key=f"erasure:{uid}",
        )
        report = ErasureReport(uid, postgres, events, sessions, cache_entries, entry.seq)
        _log.info("user_erased", user_id=uid, changed=report.changed_anything)
        return report

    async def _erase_postgres(self, uid: str) -> dict[str, int]:
        users = _users_table()
        counts: dict[str, int] = {}
        postgres = self._backends.postgres
        with operation(postgres, "privacy.erase") as op, postgres.unavailable():
            async with postgres.engine.begin() as conn:
                links = await _links(conn, users)
                # The lock serialises concurrent erasures of one user.
                found = await conn.execute(
                    select(users.c.id).where(users.c.id == uid).with_for_update()
                )
                if found.one_or_none() is None:
                    raise NotFoundError("user", uid)
                for link in links:
                    statement = _erase_statement(link, uid)
                    if statement is not None:
                        result = await conn.execute(statement)
                        counts[f"{link.table.name}.{link.column.name}"] = result.rowcount
                tombstone = _scrub_statement(
                    users, users.c.id == uid, _tombstone_values(users, uid)
                )
                counts["users"] = (await conn.execute(tombstone)).rowcount
            op.note(rows=sum(counts.values()))
        return counts

    async def _invalidate_cache(self, uid: str) -> int:
        cache = self._cache
        errors = cache.stats().errors
        dropped = await cache.invalidate_tag(f"user:{uid}")
        if cache.stats().errors > errors:  # the cache absorbs outages as misses; erasure must not
            raise BackendUnavailableError(
                "redis", f"could not drop the cache entries tagged user:{uid}; run erase_user again"
            )
        return dropped


def _nested(counts: dict[str, int]) -> dict[str, Any]:
    """``{"api_keys.user_id": 1}`` as ``{"api_keys": {"user_id": 1}}`` (no dots in BSON keys)."""
    nested: dict[str, Any] = {}
    for name, count in counts.items():
        if count:
            table, _, column_name = name.partition(".")
            if column_name:
                nested.setdefault(table, {})[column_name] = count
            else:
                nested[table] = count
    return nested


def _erase_statement(link: UserLink, uid: str) -> Any:
    table, column, policy = link.table, link.column, link.policy
    linked = column == uid
    if policy.action == "delete":
        return delete(table).where(linked)
    values = policy.replacements(uid)
    if policy.action == "anonymise":
        return update(table).where(linked).values({column.name: None, **values})
    return _scrub_statement(table, linked, values) if values else None


def _scrub_statement(table: Table, where: Any, values: dict[str, Any]) -> Any:
    """UPDATE only rows that still hold something to scrub, so a re-run changes nothing."""
    pending = or_(*(table.c[name].is_distinct_from(value) for name, value in values.items()))
    return update(table).where(where, pending).values(values)


def _tombstone_values(users: Table, uid: str) -> dict[str, Any]:
    values = {
        name: value for name, value in USER_TOMBSTONE.replacements(uid).items() if name in users.c
    }
    if "deleted_at" in users.c:
        values["deleted_at"] = func.coalesce(users.c.deleted_at, func.now())
    return values


def _users_table() -> Table:
    from nexus_store.postgres.models import User

    return cast(Table, User.__table__)


async def _links(conn: AsyncConnection, users: Table) -> list[UserLink]:
    """The links to ``users`` of every model on ``Base`` whose table exists in this database
    (an application may declare models it has not created here: they hold nothing)."""
    from nexus_store.postgres.models import Base

    tables = {
        mapper.local_table.fullname: mapper.class_
        for mapper in Base.registry.mappers
        if isinstance(mapper.local_table, Table)
    }
    names: Select[str] = select(column("name", Text)).select_from(
        func.unnest(literal(list(tables), ARRAY(Text))).alias("name")
    )
    existing = set(
        (await conn.execute(names.where(func.to_regclass(column("name")).is_not(None)))).scalars()
    )
    models = {tables[name].__table__.name: tables[name] for name in existing}
    return user_links(models, users)


def _user_id(user_id: uuid.UUID | str) -> str:
    try:
        return str(user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id)))
    except ValueError:
        raise ValidationError("user_id", "must be a UUID") from None


def _export_row(row: Any) -> dict[str, Any]:
    return {
        name: REDACTED if is_secret_field(name) and value is not None else value
        for name, value in row.items()
    }


def _dumps(value: Any) -> bytes:
    return orjson.dumps(json_safe(value))
