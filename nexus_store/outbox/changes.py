"""Change records: who changed which row and how, with sensitive values redacted.

A change record is what the outbox carries to the audit log. It holds ids and a before/after
diff; the value of a redacted field never leaves PostgreSQL (the diff says only that it
changed: ``{"email": "[redacted]"}``). A model's :class:`AuditPolicy` decides which fields are
redacted and whether its writes are audited without being asked (nexus-store's own models
are audited when asked per call, or when listed in the ``outbox.audited_tables`` setting):

    class Invoice(Entity):
        __tablename__ = "invoices"
        __audit__ = AuditPolicy(enabled=True, redact=frozenset({"customer_email"}))

Secret-looking fields (``password_hash``, ``*_token``, ``key_hash``, ``secret``...) are
redacted whatever the policy says. The actor and request details come from
:func:`audit_context`:

    with audit_context("user:42", ip="203.0.113.9", reason="profile edit"):
        await store.entities.update(User, user_id, full_name="Ada L.", audit=True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Table, insert
from sqlalchemy import inspect as sa_inspect

from nexus_store.errors import ValidationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "AUDIT_TOPIC",
    "REDACTED",
    "AuditContext",
    "AuditPolicy",
    "Change",
    "audit_context",
    "current_context",
    "emit",
    "is_secret_field",
    "json_safe",
    "outbox_table",
    "policy_for",
    "row_values",
]

AUDIT_TOPIC = "audit"
REDACTED = "[redacted]"
Action = Literal["create", "update", "delete", "restore", "upsert", "erase"]

# Matched against field names; a match is redacted for every model, whatever its policy says.
_SECRET_NAME = re.compile(
    r"password|passwd|secret|token|credential|private_key|api_?key|key_hash|_hash$|^hash$|salt|otp",
    re.IGNORECASE,
)
# Changes on every write and says nothing an auditor needs (``version`` is kept: it orders
# the changes of one row).
_BOOKKEEPING = frozenset({"updated_at"})


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """How the writes of one model are audited.

    ``enabled``: every write through ``store.entities`` emits a change record (a call's
    ``audit=True``/``False`` overrides it). ``redact``: fields holding personal or secret
    data whose values are never copied (secret-looking names are always added).
    ``ignore``: fields left out of diffs entirely.
    """

    enabled: bool = False
    redact: frozenset[str] = frozenset()
    ignore: frozenset[str] = _BOOKKEEPING

    def redacts(self, name: str) -> bool:
        return name in self.redact or is_secret_field(name)


_NONE = AuditPolicy()


_PERSONAL_USER_FIELDS = frozenset({"email", "username", "full_name", "preferences"})

# What nexus-store's own models redact, by table. None is audited unless asked: per call, or
# per table with the ``outbox.audited_tables`` setting.
_BUILTIN_POLICIES: dict[str, AuditPolicy] = {
    "users": AuditPolicy(redact=_PERSONAL_USER_FIELDS),
    "api_keys": AuditPolicy(redact=frozenset({"name", "prefix"})),
    "transactions": AuditPolicy(redact=frozenset({"description"})),
    "documents": AuditPolicy(redact=frozenset({"title", "content"})),
    "document_versions": AuditPolicy(redact=frozenset({"content", "comment"})),
    "files": AuditPolicy(redact=frozenset({"name", "storage_key"})),
    "tasks": AuditPolicy(redact=frozenset({"description"})),
    "projects": AuditPolicy(redact=frozenset({"description"})),
}


def policy_for(model: type[Any], audited_tables: Collection[str] = ()) -> AuditPolicy:
    """The model's ``__audit__`` policy, else nexus-store's default for its table; enabled
    too when the table is in ``audited_tables`` (the ``outbox.audited_tables`` setting)."""
    table = str(getattr(model, "__tablename__", ""))
    declared = getattr(model, "__audit__", None)
    policy = declared if isinstance(declared, AuditPolicy) else _BUILTIN_POLICIES.get(table, _NONE)
    if not policy.enabled and table in audited_tables:
        return replace(policy, enabled=True)
    return policy


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who is acting, and from where; copied into every change record."""

    actor: str = "system"
    ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None


_SYSTEM = AuditContext()
_context: ContextVar[AuditContext] = ContextVar("nexus_audit_context", default=_SYSTEM)


@contextmanager
def audit_context(
    actor: str, *, ip: str | None = None, user_agent: str | None = None, reason: str | None = None
) -> Iterator[AuditContext]:
    """Attribute the change records written inside the block to ``actor``.

    It is a context variable: each asyncio task (each request) has its own.
    """
    if not actor or not isinstance(actor, str):
        raise ValidationError("actor", "must be a non-empty string such as 'user:42'")
    token = _context.set(AuditContext(actor, ip, user_agent, reason))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def current_context() -> AuditContext:
    return _context.get()


@dataclass(frozen=True, slots=True)
class Change:
    """One audited write: ``before``/``after`` hold only the changed fields, redacted."""

    action: Action
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    context: AuditContext = field(default_factory=current_context)

    @classmethod
    def of(
        cls,
        model: type[Any],
        action: Action,
        resource_id: Any,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> Change | None:
        """The change record of one row, or None when nothing auditable changed.

        ``before``/``after`` are the row's column values (see :func:`row_values`); pass
        None for the side that does not exist (``create`` has no before).
        """
        policy = policy_for(model)
        old, new = _diff(policy, before, after)
        if old is None and new is None:
            return None
        return cls(action, str(model.__tablename__), str(resource_id), old, new)

    def outbox_row(self) -> dict[str, Any]:
        """The values of the ``outbox`` row that carries this change."""
        context = self.context
        payload: dict[str, Any] = {
            "actor": context.actor,
            "action": self.action,
            "before": self.before,
            "after": self.after,
        }
        for name in ("ip", "user_agent", "reason"):
            if (value := getattr(context, name)) is not None:
                payload[name] = value
        return {
            "topic": AUDIT_TOPIC,
            "aggregate_type": self.resource_type,
            "aggregate_id": self.resource_id,
            "payload": payload,
        }


def row_values(instance: Any) -> dict[str, Any]:
    """Column values of an ORM instance, by attribute name (no lazy loads)."""
    state = sa_inspect(instance)
    loaded = state.dict
    return {attr.key: loaded[attr.key] for attr in state.mapper.column_attrs if attr.key in loaded}


async def emit(target: AsyncSession | AsyncConnection, changes: Sequence[Change]) -> None:
    """Insert the outbox rows of ``changes`` in ``target``'s transaction.

    Call it after the statements that made the changes: for a row that several transactions
    change, the later commit then always gets the larger outbox id (it waited for the row
    lock before inserting), which is what keeps the audit log in commit order per resource.
    """
    if changes:
        await target.execute(insert(outbox_table()), [change.outbox_row() for change in changes])


def outbox_table() -> Table:
    """The ``outbox`` table (imported on first use: reading change records needs no models)."""
    from nexus_store.postgres.models import Outbox

    return cast(Table, Outbox.__table__)


def _diff(
    policy: AuditPolicy, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    old = {k: v for k, v in (before or {}).items() if k not in policy.ignore}
    new = {k: v for k, v in (after or {}).items() if k not in policy.ignore}
    if before is not None and after is not None:
        changed = [k for k in new.keys() | old.keys() if old.get(k) != new.get(k)]
        if not changed:
            return None, None
        old = {k: old.get(k) for k in changed}
        new = {k: new.get(k) for k in changed}
    return (
        _redact(policy, old) if before is not None else None,
        _redact(policy, new) if after is not None else None,
    )


def _redact(policy: AuditPolicy, values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: REDACTED if policy.redacts(name) and value is not None else json_safe(value)
        for name, value in sorted(values.items())
    }


def is_secret_field(name: str) -> bool:
    """Whether a field name looks like it holds a secret (``password_hash``, ``api_token``)."""
    return _SECRET_NAME.search(name) is not None


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: ids and timestamps as strings, money as an exact decimal string.

    Values under secret-looking keys of nested mappings (JSONB) are replaced by
    :data:`REDACTED`.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):  # BSON: 64-bit integers, finite floats
        in_range = math.isfinite(value) if isinstance(value, float) else -(2**63) <= value < 2**63
        return value if in_range else str(value)
    if isinstance(value, Mapping):
        return {
            _document_key(str(key)): REDACTED if is_secret_field(str(key)) else json_safe(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    for types, convert in _CONVERTERS:
        if isinstance(value, types):
            return convert(value)
    return str(value)


def _document_key(key: str) -> str:
    """Percent-escape what a MongoDB field name may not hold (``$`` first, ``.``, NUL)."""
    if key.startswith("$") or any(char in key for char in ".%\x00"):
        key = key.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00")
        key = "%24" + key[1:] if key.startswith("$") else key
    return key


_CONVERTERS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    ((datetime, date, time), lambda value: value.isoformat()),
    (timedelta, lambda value: value.total_seconds()),
    (Enum, lambda value: json_safe(value.value)),
    (bytes, lambda value: value.hex()),
)
