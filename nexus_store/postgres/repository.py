"""``store.entities``: a generic, safe repository over any model on ``Base``.

    from nexus_store.postgres.models import User

    user = await store.entities.create(User, email="ada@example.com", username="ada",
                                       password_hash=hashed)
    same = await store.entities.get(User, user.id)                 # NotFoundError if absent
    page = await store.entities.list(User, where={"is_active": True}, order_by="-created_at",
                                     limit=50)
    more = await store.entities.list(User, where={"is_active": True}, order_by="-created_at",
                                     limit=50, after=page.next_cursor)
    user = await store.entities.update(User, user.id, expected_version=user.version,
                                       full_name="Ada Lovelace")   # ConflictError if stale
    await store.entities.delete(User, user.id)                     # soft: sets deleted_at
    await store.entities.restore(User, user.id)
    await store.entities.update(User, user.id, full_name="Ada L.", audit=True)  # + change record
    async with store.entities.transaction():                       # all or nothing
        org = await store.entities.create(Organization, name="Acme", slug="acme")
        await store.entities.create(OrganizationMember, organization_id=org.id,
                                    user_id=user.id, role="owner")

Every value is checked against its column before SQL is sent (see ``_values``); filters
accept only mapped columns and whitelisted operators (see ``_query``); database errors come
back as :class:`ConflictError`, :class:`IntegrityError` or :class:`ValidationError` naming
the field and the constraint.

A write made with ``audit=True`` (or to a model whose ``AuditPolicy`` is enabled) also inserts
its change record into the ``outbox`` table, in the same transaction; the relay copies it to
the audit log (see :mod:`nexus_store.outbox`).

Reads outside a transaction run in autocommit (one round trip) and go to a read replica when
``postgres.read_urls`` is set, unless ``fresh=True``. Inside ``transaction()`` every call uses
the transaction's connection. Do not share one transaction between concurrent tasks.
"""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Interval,
    Numeric,
    PickleType,
    String,
    Table,
    UniqueConstraint,
    Uuid,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import ClassManager, Mapper, class_mapper

from nexus_store.errors import ConflictError, NotFoundError, ValidationError
from nexus_store.log import observe
from nexus_store.outbox.changes import Action, Change, emit, policy_for
from nexus_store.postgres import _copy
from nexus_store.postgres._integrity import translate_errors
from nexus_store.postgres._query import (
    Page,
    decode_cursor,
    encode_cursor,
    keyset_condition,
    order_for,
    where_clause,
)
from nexus_store.postgres._values import TableRules, rules_for
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["EntityRepository", "Page"]

M = TypeVar("M", bound=Base)
R = TypeVar("R")

MAX_PAGE = 1000
# Set by the repository itself, never by callers.
_MANAGED_ON_INSERT = frozenset({"version", "updated_at", "deleted_at"})
_MANAGED_ON_UPDATE = _MANAGED_ON_INSERT | {"created_at"}


@dataclass(frozen=True)
class _ModelInfo:
    """What the repository needs to know about one model, computed once."""

    model: type[Base]
    manager: ClassManager[Any]
    table: Table
    rules: TableRules
    key: Column[Any]
    columns: tuple[Column[Any], ...]
    attributes: tuple[str, ...]  # attribute key of each column, same order
    versioned: bool
    soft_delete: bool
    default_order: str | None

    def materialize(self, row: Sequence[Any]) -> Any:
        """A model instance holding ``row`` as loaded state (no change history)."""
        instance = self.manager.new_instance()
        instance.__dict__.update(zip(self.attributes, row, strict=True))
        return instance

    def where_key(self, key: Any) -> Any:
        return self.key == self.rules.convert(self.key.name, key, "id")


def _driver_native(type_: Any) -> bool:
    """Whether psycopg returns exactly what SQLAlchemy would for this column type."""
    if isinstance(type_, ARRAY):
        return _driver_native(type_.item_type)
    if isinstance(type_, Enum | Interval | PickleType):
        return False
    if isinstance(type_, Numeric) and not isinstance(type_, Float):
        return bool(type_.asdecimal)
    if isinstance(type_, Uuid):
        return bool(type_.as_uuid)
    return isinstance(type_, String | Integer | Float | Boolean | DateTime | Date | JSON)


@dataclass(frozen=True)
class _Audit:
    """How a write with ``audit`` finds its change record. ``lock`` selects the row's
    before-image FOR UPDATE in the write's transaction; a hard delete returns it instead."""

    info: _ModelInfo
    action: Action
    lock: Any = None

    def change(self, before: Sequence[Any] | None, after: Sequence[Any] | None) -> Change | None:
        names = [column.name for column in self.info.columns]
        old = None if before is None else dict(zip(names, before, strict=True))
        new = None if after is None else dict(zip(names, after, strict=True))
        key = (new or old or {}).get(self.info.key.name)
        action: Action = self.action
        if action == "upsert":
            action = "create" if old is None else "update"
        return Change.of(self.info.model, action, key, old, new)


def _with_keys(
    info: _ModelInfo, rows: Iterable[Mapping[str, Any] | Base]
) -> list[Mapping[str, Any]]:
    """The rows as mappings, each with its key (from the key's Python default if absent)."""
    make_key = _copy._fallback(info.table, info.key.name)
    name = info.key.name
    keyed = []
    for index, row in enumerate(rows):
        mapping = _copy._as_mapping(row, info.table, index)
        if name not in mapping and callable(make_key):
            mapping = {**mapping, name: make_key()}
        keyed.append(mapping)
    return keyed


@dataclass
class _Transaction:
    repository: EntityRepository
    connection: AsyncConnection


_ACTIVE: ContextVar[_Transaction | None] = ContextVar("nexus_entities_tx", default=None)


class EntityRepository:
    """CRUD, keyset pagination, upsert, bulk insert and transactions for ``Base`` models."""

    def __init__(self, backends: Backends | PostgresBackend) -> None:
        backend = backends if isinstance(backends, PostgresBackend) else backends.postgres
        # Tables audited without audit=True (the outbox.audited_tables setting).
        self._audited_tables: frozenset[str] = (
            frozenset()
            if isinstance(backends, PostgresBackend)
            else frozenset(backends.settings.outbox.audited_tables)
        )
        self._backend = backend
        self._metadata = Base.metadata
        self._infos: dict[type[Base], _ModelInfo] = {}
        self._lookups: dict[tuple[type[Base], bool], Any] = {}
        self._replicas: Iterator[int] | None = (
            itertools.cycle(range(1, len(backend.read_engines) + 1))
            if backend.read_engines
            else None
        )

    # -- model facts ---------------------------------------------------------------------

    def _info(self, model: type[Base]) -> _ModelInfo:
        info = self._infos.get(model)
        if info is None:
            if not (isinstance(model, type) and issubclass(model, Base)):
                raise ValidationError("model", f"{model!r} is not a model class on Base")
            mapper: Mapper[Any] = class_mapper(model)
            table = mapper.local_table
            if not isinstance(table, Table) or len(table.primary_key.columns) != 1:
                raise ValidationError("model", f"{model.__name__} needs a single-column key")
            columns = tuple(table.columns)
            attributes = tuple(mapper.get_property_by_column(c).key for c in columns)
            info = _ModelInfo(
                model=model,
                manager=mapper.class_manager,
                table=table,
                rules=rules_for(table),
                key=next(iter(table.primary_key.columns)),
                columns=columns,
                attributes=attributes,
                versioned="version" in table.columns,
                soft_delete="deleted_at" in table.columns,
                default_order="created_at" if "created_at" in table.columns else None,
            )
            self._infos[model] = info
        return info

    # -- connections ---------------------------------------------------------------------

    def _active(self) -> AsyncConnection | None:
        current = _ACTIVE.get()
        return current.connection if current is not None and current.repository is self else None

    def _read_target(self, fresh: bool) -> int:
        """A replica (1..n, round robin) for plain reads; the primary (0) when ``fresh``."""
        return next(self._replicas) if self._replicas is not None and not fresh else 0

    def _read_engine(self, target: int) -> AsyncEngine:
        backend = self._backend
        return backend.read_engines[target - 1] if target else backend.autocommit_engine

    async def _read(self, fresh: bool, run: Callable[[AsyncConnection], Awaitable[R]]) -> R:
        active = self._active()
        with translate_errors(self._metadata):
            if active is not None:
                return await run(active)
            engine = self._read_engine(self._read_target(fresh))
            try:
                async with engine.connect() as connection:
                    return await run(connection)
            except sqlalchemy.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # A pooled connection had died (server restart, failover). Pre-ping is off to
            # save a round trip per read, so this idempotent read is retried once instead.
            async with engine.connect() as connection:
                return await run(connection)

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """The connection every write runs on: the caller's transaction, or a new one.

        This is the single write path: work added here (an outbox row for ``audit=True``)
        commits or rolls back with the entity write.
        """
        active = self._active()
        with translate_errors(self._metadata):
            if active is not None:
                yield active
                return
            async with self._backend.engine.begin() as connection:
                yield connection

    async def _write(self, statement: Any, audit: _Audit | None = None) -> list[Any]:
        async with self._writing() as connection:
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

    def _audit(
        self, info: _ModelInfo, audit: bool | None, action: Action, *row: Any
    ) -> _Audit | None:
        """The audit plan of a write (``audit`` if given, else the model's policy), or None.

        ``row``: conditions selecting the changed row, whose before-image is then locked and
        read first; without them the statement itself returns it (a hard delete).
        """
        if audit is None:
            audit = policy_for(info.model, self._audited_tables).enabled
        if not isinstance(audit, bool):
            raise ValidationError("audit", "must be True, False or None (the model's policy)")
        if not audit:
            return None
        lock = select(*info.columns).where(*row).with_for_update() if row else None
        return _Audit(info, action, lock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EntityRepository]:
        """Run several calls atomically; a nested ``transaction()`` is a savepoint.

            async with store.entities.transaction():
                account = await store.entities.create(FinancialAccount, ...)
                await store.entities.create(Transaction, account_id=account.id, ...)

        Any exception rolls everything back. After a database error inside the block the
        transaction is aborted: let the error leave the block (or use a nested transaction).
        """
        active = self._active()
        if active is not None:
            with translate_errors(self._metadata):
                async with active.begin_nested():
                    yield self
            return
        with translate_errors(self._metadata):
            connection = await self._backend.engine.connect()
        try:
            with translate_errors(self._metadata):
                transaction = await connection.begin()
            token = _ACTIVE.set(_Transaction(self, connection))
            try:
                yield self
            except BaseException:
                await transaction.rollback()
                raise
            finally:
                _ACTIVE.reset(token)
            with translate_errors(self._metadata):
                await transaction.commit()
        finally:
            await connection.close()

    # -- create --------------------------------------------------------------------------

    async def create(self, model: type[M], /, *, audit: bool | None = None, **values: Any) -> M:
        """Insert one row; returns it with defaults (id, timestamps, version) filled in."""
        info = self._info(model)
        started = time.perf_counter()
        converted = info.rules.values(values, managed=_MANAGED_ON_INSERT, insert=True)
        rows = await self._write(
            insert(info.table).values(converted).returning(*info.columns),
            self._audit(info, audit, "create"),
        )
        observe("postgres", "create", started, model=model.__name__)
        return info.materialize(rows[0])  # type: ignore[no-any-return]

    async def put(self, entity: M, *, audit: bool | None = None) -> M:
        """Insert a model instance (``store.put(user)``); returns it refreshed from the row."""
        if not isinstance(entity, Base):
            raise ValidationError("record", f"{type(entity).__name__} is not a model on Base")
        info = self._info(type(entity))
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
        """Insert, or update the row that has the same ``conflict`` column(s).

            user = await store.entities.upsert(User, conflict="email", email="a@x.io",
                                               username="a", password_hash=h)

        ``update`` limits which columns an existing row takes (default: all given except
        the conflict columns). An updated row gets a new version and is undeleted.
        """
        info = self._info(model)
        started = time.perf_counter()
        targets = [conflict] if isinstance(conflict, str) else list(conflict)
        self._require_unique(info, targets)
        converted = info.rules.values(values, managed=_MANAGED_ON_INSERT, insert=True)
        missing = [name for name in targets if name not in converted]
        if missing:
            raise ValidationError(missing[0], "is a conflict column and needs a value")
        names = (
            list(update)
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
        changes.update(self._bookkeeping(info))
        if info.soft_delete:
            changes["deleted_at"] = None
        statement = statement.on_conflict_do_update(index_elements=targets, set_=changes)
        same_key = (info.table.c[name] == converted[name] for name in targets)
        rows = await self._write(
            statement.returning(*info.columns), self._audit(info, audit, "upsert", *same_key)
        )
        observe("postgres", "upsert", started, model=model.__name__)
        return info.materialize(rows[0])  # type: ignore[no-any-return]

    @staticmethod
    def _require_unique(info: _ModelInfo, targets: list[str]) -> None:
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

    async def bulk_create(
        self,
        model: type[Base],
        rows: Iterable[Mapping[str, Any] | Base],
        *,
        audit: bool | None = None,
    ) -> int:
        """Insert many rows with COPY (binary) in one transaction; returns how many.

        Every row is checked first; one bad row (or one duplicate) inserts nothing. Rows
        must set the same columns (a missing column takes its Python default, else NULL).
        Give ``id`` values yourself if you need to know them.
        """
        info = self._info(model)
        started = time.perf_counter()
        audited = self._audit(info, audit, "create")
        if audited is not None:  # each change record names its row: keys are needed now
            rows = _with_keys(info, rows)
        prepared = _copy.prepare(info.table, info.rules, rows, managed=_MANAGED_ON_INSERT)
        if not prepared.rows:
            return 0
        if audited is not None and info.key.name not in prepared.columns:
            raise ValidationError(f"rows.{info.key.name}", "audited bulk inserts need the keys")
        async with self._writing() as connection:
            raw = await connection.get_raw_connection()
            driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            await _copy.copy_rows(driver, info.table, prepared)
            if audited is not None:
                created = [dict(zip(prepared.columns, row, strict=True)) for row in prepared.rows]
                changes = [
                    Change.of(model, "create", values[info.key.name], None, values)
                    for values in created
                ]
                await emit(connection, [change for change in changes if change is not None])
        observe("postgres", "bulk_create", started, model=model.__name__, rows=len(prepared.rows))
        return len(prepared.rows)

    # -- read ----------------------------------------------------------------------------

    def _visible(self, info: _ModelInfo, include_deleted: bool) -> list[Any]:
        if info.soft_delete and not include_deleted:
            return [info.table.c.deleted_at.is_(None)]
        return []

    def _key_lookup(self, info: _ModelInfo, include_deleted: bool) -> tuple[Any, str | None]:
        """The lookup by key as a Core statement, and precompiled for the driver fast path.

        SQLAlchemy's execution layer costs more than the round trip of a lookup by key, so
        ``get`` outside transactions sends the precompiled SQL on a pooled psycopg
        connection. Models with column types that need SQLAlchemy's result processing
        (enums, pickles...) get None and use the Core statement.
        """
        cache_key = (info.model, include_deleted)
        found = self._lookups.get(cache_key)
        if found is None:
            dialect = self._backend.engine.dialect
            statement = select(*info.columns).where(
                info.key == bindparam("key", type_=info.key.type),
                *self._visible(info, include_deleted),
            )
            native = all(_driver_native(column.type) for column in info.columns)
            found = (statement, str(statement.compile(dialect=dialect)) if native else None)
            self._lookups[cache_key] = found
        return found

    async def get_or_none(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M | None:
        """The row with key ``id``, or None (soft-deleted rows count as absent)."""
        info = self._info(model)
        started = time.perf_counter()
        parameters = {"key": info.rules.convert(info.key.name, id, "id")}
        statement, sql = self._key_lookup(info, include_deleted)

        async def run(connection: AsyncConnection) -> Any:
            return (await connection.execute(statement, parameters)).first()

        if sql is not None and self._active() is None:
            row = await self._fast_lookup(self._read_target(fresh), sql, parameters)
        else:
            row = await self._read(fresh, run)
        observe("postgres", "get", started, model=model.__name__)
        return None if row is None else info.materialize(row)

    async def _fast_lookup(self, target: int, sql: str, parameters: Any) -> Any:
        """One precompiled read on a psycopg-pooled autocommit connection: no SQLAlchemy
        work at all, its pool checkout costs more than the rest of the call."""
        with translate_errors(self._metadata):
            pool = await self._backend.read_pool(target)
            for attempt in (1, 2):
                driver = await pool.getconn()
                try:
                    cursor = await driver.execute(sql, parameters, prepare=True)
                    row = await cursor.fetchone()
                except psycopg.Error:
                    broken = driver.broken
                    await pool.putconn(driver)  # the pool discards a broken connection
                    if attempt == 2 or not broken:
                        raise
                    # A dead pooled connection (no pre-ping here) means a restart or
                    # failover: its pool-mates are dead too, so weed them out, retry once.
                    await pool.check()
                    continue
                except BaseException:
                    # Cancelled mid-query: the connection's state is unknown, never reuse it.
                    await driver.close()
                    await pool.putconn(driver)
                    raise
                await pool.putconn(driver)
                return row
        return None

    async def get(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M:
        """The row with key ``id``; :class:`NotFoundError` if absent or soft-deleted."""
        found = await self.get_or_none(model, id, include_deleted=include_deleted, fresh=fresh)
        if found is None:
            raise NotFoundError(model.__name__, id)
        return found

    async def list(
        self,
        model: type[M],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int = 50,
        after: str | None = None,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> Page[M]:
        """One page of rows, in keyset order (stable while rows are inserted).

        ``order_by`` names NOT NULL columns, ``"-name"`` for descending; the key is added
        as the tie-breaker. Pass ``page.next_cursor`` as ``after`` for the next page.
        """
        info = self._info(model)
        started = time.perf_counter()
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE}")
        order = order_for(info.table, info.rules, order_by, info.default_order)
        conditions = where_clause(info.table, info.rules, where)
        conditions += self._visible(info, include_deleted)
        if after is not None:
            conditions.append(keyset_condition(order, decode_cursor(order, info.rules, after)))
        statement = (
            select(*info.columns).where(*conditions).order_by(*order.clauses()).limit(limit + 1)
        )

        async def run(connection: AsyncConnection) -> builtins.list[Any]:
            return builtins.list((await connection.execute(statement)).all())

        rows = await self._read(fresh, run)
        observe("postgres", "list", started, model=model.__name__, rows=len(rows))
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            positions = [info.columns.index(column) for column in order.columns]
            cursor = encode_cursor(order, [rows[-1][index] for index in positions])
        return Page([info.materialize(row) for row in rows], cursor)

    async def count(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> int:
        """How many rows match ``where``."""
        info = self._info(model)
        conditions = where_clause(info.table, info.rules, where)
        conditions += self._visible(info, include_deleted)
        statement = select(func.count()).select_from(info.table).where(*conditions)

        async def run(connection: AsyncConnection) -> int:
            return int((await connection.execute(statement)).scalar_one())

        return await self._read(fresh, run)

    async def exists(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> bool:
        """Whether any row matches ``where``."""
        info = self._info(model)
        conditions = where_clause(info.table, info.rules, where)
        conditions += self._visible(info, include_deleted)
        statement = select(exists().where(*conditions))

        async def run(connection: AsyncConnection) -> bool:
            return bool((await connection.execute(statement)).scalar_one())

        return await self._read(fresh, run)

    # -- update / delete -----------------------------------------------------------------

    @staticmethod
    def _bookkeeping(info: _ModelInfo) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if info.versioned:
            changes["version"] = info.table.c.version + 1
        if "updated_at" in info.table.columns:
            changes["updated_at"] = func.now()
        return changes

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
        """Change columns of one row; ``expected_version`` makes it optimistic.

        Raises :class:`ConflictError` (field ``version``) when the row's version is not
        ``expected_version``, :class:`NotFoundError` when there is no such (live) row.
        """
        info = self._info(model)
        started = time.perf_counter()
        if not changes:
            raise ValidationError("changes", "give at least one column to change")
        converted = info.rules.values(changes, managed=_MANAGED_ON_UPDATE, insert=False)
        if info.key.name in converted:
            raise ValidationError(info.key.name, "the key cannot be changed")
        conditions = [info.where_key(id), *self._visible(info, False)]
        if expected_version is not None:
            if not info.versioned:
                raise ValidationError("expected_version", f"{model.__name__} has no version")
            version = info.rules.convert("version", expected_version, "expected_version")
            conditions.append(info.table.c.version == version)
        statement = (
            update(info.table)
            .where(*conditions)
            .values({**converted, **self._bookkeeping(info)})
            .returning(*info.columns)
        )
        audited = self._audit(
            info, audit, "update", info.where_key(id), *self._visible(info, False)
        )
        rows = await self._write(statement, audited)
        observe("postgres", "update", started, model=model.__name__)
        if rows:
            return info.materialize(rows[0])  # type: ignore[no-any-return]
        current = await self.get_or_none(model, id, fresh=True)
        if current is None:
            raise NotFoundError(model.__name__, id)
        raise ConflictError(
            f"{model.__name__} {id} is at version {current.version}, "  # type: ignore[attr-defined]
            f"not {expected_version}: reload it and retry",
            field="version",
        )

    async def delete(
        self, model: type[Base], id: Any, /, *, soft: bool = True, audit: bool | None = None
    ) -> None:
        """Delete one row: ``soft`` sets ``deleted_at`` (hidden, restorable), else removes it.

        A hard delete follows the foreign keys' ON DELETE rules; a RESTRICT raises
        :class:`IntegrityError` naming the constraint.
        """
        info = self._info(model)
        started = time.perf_counter()
        statement: Any
        if soft:
            if not info.soft_delete:
                raise ValidationError(
                    "soft", f"{model.__name__} has no deleted_at column; use soft=False"
                )
            live = [info.where_key(id), info.table.c.deleted_at.is_(None)]
            audited = self._audit(info, audit, "delete", *live)
            statement = (
                update(info.table)
                .where(*live)
                .values(deleted_at=func.now(), **self._bookkeeping(info))
            )
        else:  # an audited hard delete returns the row: its before-image
            audited = self._audit(info, audit, "delete")
            statement = delete(info.table).where(info.where_key(id))
        returned = info.columns if audited is not None else (info.key,)
        rows = await self._write(statement.returning(*returned), audited)
        observe("postgres", "delete", started, model=model.__name__, soft=soft)
        if not rows:
            raise NotFoundError(model.__name__, id)

    async def restore(self, model: type[M], id: Any, /, *, audit: bool | None = None) -> M:
        """Undo a soft delete; :class:`NotFoundError` if there is no soft-deleted row."""
        info = self._info(model)
        if not info.soft_delete:
            raise ValidationError("model", f"{model.__name__} has no deleted_at column")
        statement = (
            update(info.table)
            .where(info.where_key(id), info.table.c.deleted_at.is_not(None))
            .values(deleted_at=None, **self._bookkeeping(info))
            .returning(*info.columns)
        )
        deleted = info.table.c.deleted_at.is_not(None)
        audited = self._audit(info, audit, "restore", info.where_key(id), deleted)
        rows = await self._write(statement, audited)
        if not rows:
            raise NotFoundError(f"deleted {model.__name__}", id)
        return info.materialize(rows[0])  # type: ignore[no-any-return]
