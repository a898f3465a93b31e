"""``create``, ``put``, ``upsert``, ``update``, ``delete`` and ``restore``.

Every write runs on :meth:`Transactions.writing` (the caller's transaction, or its own) and,
when audited, inserts its change record into the outbox in that same transaction. Values are
checked against their columns first; ``version`` and ``updated_at`` are maintained here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Executable, UniqueConstraint, delete, func, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from nexus_store.approvals.policy import approval_policy
from nexus_store.errors import (
    ApprovalRequiredError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from nexus_store.outbox.changes import emit
from nexus_store.postgres._audit import AuditPlan, Audits
from nexus_store.postgres._model import (
    MANAGED_ON_INSERT,
    MANAGED_ON_UPDATE,
    ModelInfo,
    model_info,
)
from nexus_store.postgres._query import column_names
from nexus_store.postgres._reads import Reads
from nexus_store.postgres._transaction import Transactions
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base
from nexus_store.telemetry import operation

__all__ = ["Writes", "bookkeeping"]

M = TypeVar("M", bound=Base)


def bookkeeping(info: ModelInfo[Any]) -> dict[str, Any]:
    """What every update of a row also sets: the next ``version``, ``updated_at``."""
    changes: dict[str, Any] = {}
    if info.versioned:
        changes["version"] = info.table.c.version + 1
    if "updated_at" in info.table.columns:
        changes["updated_at"] = func.now()
    return changes


def _require_unique(info: ModelInfo[Any], targets: list[str]) -> None:
    """``targets`` must be the key, a unique constraint or a non-partial unique index."""
    wanted = set(targets)
    unique_sets = [{c.name for c in info.table.primary_key.columns}]
    unique_sets += [
        {c.name for c in index.columns}
        for index in info.table.indexes
        if index.unique and not index.dialect_options["postgresql"].get("where")
    ]
    unique_sets += [
        {c.name for c in constraint.columns}
        for constraint in info.table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    if wanted not in unique_sets:
        raise ValidationError(
            "conflict", f"{', '.join(targets)} is not a unique key of {info.table.name}"
        )


class Writes:
    """The single-row writes of one repository."""

    def __init__(
        self, backend: PostgresBackend, transactions: Transactions, audits: Audits, reads: Reads
    ) -> None:
        self._backend = backend
        self._transactions = transactions
        self._audits = audits
        self._reads = reads  # tells a stale version from a missing row after an update

    async def _write(self, statement: Executable, audit: AuditPlan | None) -> list[Any]:
        """Run ``statement`` (it returns the written rows) and emit its change record."""
        async with self._transactions.writing() as connection:
            if audit is None:
                return list((await connection.execute(statement)).all())
            before = None if audit.lock is None else (await connection.execute(audit.lock)).first()
            rows = list((await connection.execute(statement)).all())
            if rows:
                # After the change: the outbox id is taken once this transaction holds the
                # row, which keeps the audit log in commit order for each row.
                deleted = audit.action == "delete" and audit.lock is None
                change = audit.change(rows[0] if deleted else before, None if deleted else rows[0])
                await emit(connection, [change] if change is not None else [])
            return rows

    async def create(self, model: type[M], /, *, audit: bool | None = None, **values: Any) -> M:
        info = model_info(model)
        converted = info.rules.values(values, managed=MANAGED_ON_INSERT, insert=True)
        with operation(self._backend, "entities.create", info.table.name, model=model.__name__):
            rows = await self._write(
                insert(info.table).values(converted).returning(*info.columns),
                self._audits.plan(info, audit, "create"),
            )
        return info.materialize(rows[0])

    async def put(self, entity: M, *, audit: bool | None = None) -> M:
        if not isinstance(entity, Base):
            raise ValidationError("record", f"{type(entity).__name__} is not a model on Base")
        info = model_info(type(entity))
        state = entity.__dict__
        values = {
            column.name: state[attribute]
            for column, attribute in zip(info.columns, info.attributes, strict=True)
            if attribute in state
        }
        created = await self.create(type(entity), audit=audit, **values)
        state.update((attribute, created.__dict__[attribute]) for attribute in info.attributes)
        return entity

    async def upsert(
        self,
        model: type[M],
        /,
        *,
        conflict: str | Sequence[str],
        update: Sequence[str] | None = None,
        audit: bool | None = None,
        **values: Any,
    ) -> M:
        info = model_info(model)
        targets = column_names("conflict", conflict)
        _require_unique(info, targets)
        converted = info.rules.values(values, managed=MANAGED_ON_INSERT, insert=True)
        missing = [name for name in targets if name not in converted]
        if missing:
            raise ValidationError(missing[0], "is a conflict column and needs a value")
        names = (
            column_names("update", update)
            if update is not None
            else [n for n in converted if n not in targets and n != info.key.name]
        )
        statement = pg_insert(info.table).values(converted)
        changes: dict[str, Any] = {}
        for name in names:
            if name not in converted:
                raise ValidationError(f"update.{name}", "is not among the given values")
            if name in targets or name == info.key.name:
                raise ValidationError(f"update.{name}", "a key column cannot be updated")
            changes[name] = statement.excluded[name]
        changes.update(bookkeeping(info))
        if info.soft_delete:
            changes["deleted_at"] = None
        statement = statement.on_conflict_do_update(index_elements=targets, set_=changes)
        same_key = (info.table.c[name] == converted[name] for name in targets)
        with operation(self._backend, "entities.upsert", info.table.name, model=model.__name__):
            rows = await self._write(
                statement.returning(*info.columns),
                self._audits.plan(info, audit, "upsert", *same_key),
            )
        return info.materialize(rows[0])

    async def update(
        self,
        model: type[M],
        id: Any,
        /,
        *,
        expected_version: int | None = None,
        audit: bool | None = None,
        **changes: Any,
    ) -> M:
        info = model_info(model)
        if not changes:
            raise ValidationError("changes", "give at least one column to change")
        converted = info.rules.values(changes, managed=MANAGED_ON_UPDATE, insert=False)
        if info.key.name in converted:
            raise ValidationError(info.key.name, "the key cannot be changed")
        guarded = approval_policy(model)
        if guarded is not None and not guarded.fields.isdisjoint(converted):
            raise ApprovalRequiredError(model.__name__, sorted(guarded.fields & converted.keys()))
        conditions = [info.where_key(id), *info.visible(False)]
        if expected_version is not None:
            if not info.versioned:
                raise ValidationError("expected_version", f"{model.__name__} has no version")
            version = info.rules.convert("version", expected_version, "expected_version")
            conditions.append(info.table.c.version == version)
        statement = (
            update(info.table)
            .where(*conditions)
            .values({**converted, **bookkeeping(info)})
            .returning(*info.columns)
        )
        audited = self._audits.plan(info, audit, "update", info.where_key(id), *info.visible(False))
        with operation(self._backend, "entities.update", info.table.name, model=model.__name__):
            rows = await self._write(statement, audited)
        if rows:
            return info.materialize(rows[0])
        current = await self._reads.get_or_none(model, id, fresh=True)
        if current is None:
            raise NotFoundError(model.__name__, id)
        raise ConflictError(
            f"{model.__name__} {id} is at version {info.value(current, 'version')}, "
            f"not {expected_version}: reload it and retry",
            field="version",
        )

    async def delete(
        self, model: type[Base], id: Any, /, *, soft: bool = True, audit: bool | None = None
    ) -> None:
        info = model_info(model)
        statement: Any
        if soft:
            if not info.soft_delete:
                raise ValidationError(
                    "soft", f"{model.__name__} has no deleted_at column; use soft=False"
                )
            live = [info.where_key(id), info.table.c.deleted_at.is_(None)]
            audited = self._audits.plan(info, audit, "delete", *live)
            statement = (
                update(info.table).where(*live).values(deleted_at=func.now(), **bookkeeping(info))
            )
        else:  # an audited hard delete returns the row: its before-image
            audited = self._audits.plan(info, audit, "delete")
            statement = delete(info.table).where(info.where_key(id))
        returned = info.columns if audited is not None else (info.key,)
        name = info.table.name
        with operation(self._backend, "entities.delete", name, model=model.__name__, soft=soft):
            rows = await self._write(statement.returning(*returned), audited)
        if not rows:
            raise NotFoundError(model.__name__, id)

    async def restore(self, model: type[M], id: Any, /, *, audit: bool | None = None) -> M:
        info = model_info(model)
        if not info.soft_delete:
            raise ValidationError("model", f"{model.__name__} has no deleted_at column")
        deleted = info.table.c.deleted_at.is_not(None)
        statement = (
            update(info.table)
            .where(info.where_key(id), deleted)
            .values(deleted_at=None, **bookkeeping(info))
            .returning(*info.columns)
        )
        audited = self._audits.plan(info, audit, "restore", info.where_key(id), deleted)
        with operation(self._backend, "entities.restore", info.table.name, model=model.__name__):
            rows = await self._write(statement, audited)
        if not rows:
            raise NotFoundError(f"deleted {model.__name__}", id)
        return info.materialize(rows[0])
