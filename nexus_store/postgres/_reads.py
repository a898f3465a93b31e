"""``get``, ``get_or_none``, ``list``, ``count`` and ``exists``.

Outside a transaction a read runs in autocommit (one round trip, no BEGIN/ROLLBACK) on a read
replica, round robin, when ``postgres.read_urls`` is set and the call is not ``fresh``; else on
the primary. It runs on psycopg's pool, with its SQL compiled once per statement shape,
wherever psycopg's results are SQLAlchemy's (see :meth:`Reads._driver_form`; a lookup by key
skips even that, see :meth:`Reads._key_lookup`). Inside ``transaction()`` every read uses the
transaction's connection. In a tenant scope, a read outside a transaction sets the tenant
within its own statement (``scope_condition``).
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import Select, bindparam, exists, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import Compiled

from nexus_store._text import flag
from nexus_store.errors import NotFoundError, ValidationError
from nexus_store.postgres._integrity import translate_errors
from nexus_store.postgres._model import ModelInfo, model_info
from nexus_store.postgres._query import (
    Order,
    Page,
    decode_cursor,
    encode_cursor,
    keyset_condition,
    order_for,
    where_clause,
)
from nexus_store.postgres._transaction import Transactions, scope_condition
from nexus_store.postgres._types import column_type
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base
from nexus_store.telemetry import operation

__all__ = ["MAX_PAGE", "Reads"]

M = TypeVar("M", bound=Base)

MAX_PAGE = 1000
# order_by values and filter shapes come from callers: keep the caches bounded.
_MAX_CACHED_ORDERS = 512
_MAX_CACHED_STATEMENTS = 1024
_UNSEEN: Any = object()


class Reads:
    """The read side of one repository: its read targets and its precompiled lookups."""

    def __init__(self, backend: PostgresBackend, transactions: Transactions) -> None:
        self._backend = backend
        self._transactions = transactions
        # (model, include_deleted, scoped) -> the lookup by key, as a statement and as
        # driver SQL.
        self._lookups: dict[tuple[type[Base], bool, bool], tuple[Any, str | None]] = {}
        # (model, order_by) -> the validated order and its clauses.
        self._orders: dict[
            tuple[type[Base], Any], tuple[Order, builtins.list[Any], builtins.list[int]]
        ] = {}
        # SQLAlchemy cache key -> the statement compiled for psycopg, None if only
        # SQLAlchemy can run it (see _driver_form).
        self._compiled: dict[Any, Compiled | None] = {}
        self._replicas: Iterator[int] | None = (
            itertools.cycle(range(1, len(backend.read_engines) + 1))
            if backend.read_engines
            else None
        )

    # -- where a read runs ---------------------------------------------------------------

    def _target(self, fresh: bool) -> int:
        """A replica (1..n, round robin) for plain reads; the primary (0) when ``fresh``."""
        return next(self._replicas) if self._replicas is not None and not fresh else 0

    def _engine(self, target: int) -> AsyncEngine:
        backend = self._backend
        return backend.read_engines[target - 1] if target else backend.autocommit_engine

    async def rows(self, fresh: bool, statement: Select[Any]) -> builtins.list[Any]:
        """The rows of ``statement``, run where a read belongs: the caller's transaction,
        else an autocommit connection (replica unless fresh), where in a tenant scope the
        statement sets the tenant itself (one round trip, no transaction)."""
        flag("fresh", fresh)  # checked even where a transaction makes it moot
        active = self._transactions.active()
        if active is not None:
            with translate_errors():
                return builtins.list((await active.execute(statement)).all())
        tenant = self._transactions.tenant()
        if tenant is not None:
            statement = statement.where(scope_condition(tenant))
        target = self._target(fresh)
        driver = self._driver_form(statement)
        if driver is not None:
            return await self._driver_rows(target, *driver)
        with translate_errors():
            engine = self._engine(target)
            try:
                async with engine.connect() as connection:
                    return builtins.list((await connection.execute(statement)).all())
            except sqlalchemy.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # A pooled connection had died (server restart, failover). Pre-ping is off to
            # save a round trip per read, so this idempotent read is retried once instead.
            async with engine.connect() as connection:
                return builtins.list((await connection.execute(statement)).all())

    def _driver_form(self, statement: Select[Any]) -> tuple[str, dict[str, Any]] | None:
        """``statement`` as psycopg SQL and parameters, or None where only SQLAlchemy can
        run it (see :func:`_driver_ready`).

        SQLAlchemy's execution layer (pool checkout, execution context, result wrapping)
        cost more than the round trip of a page of 100 rows, so single-statement reads run
        on psycopg's pool instead. The SQL is compiled once per statement shape: the cache
        key is SQLAlchemy's own, which leaves the bound values out, and ``construct_params``
        takes them from the statement at hand.
        """
        cache_key = statement._generate_cache_key()
        if cache_key is None:  # a construct SQLAlchemy itself will not cache
            return None
        compiled = self._compiled.get(cache_key.key, _UNSEEN)
        if compiled is _UNSEEN:
            dialect = self._backend.engine.dialect
            compiled = statement.compile(dialect=dialect, cache_key=cache_key)
            if not _driver_ready(compiled, statement, dialect):
                compiled = None
            if len(self._compiled) < _MAX_CACHED_STATEMENTS:
                self._compiled[cache_key.key] = compiled
        if compiled is None:
            return None
        parameters = compiled.construct_params(extracted_parameters=cache_key.bindparams)
        return compiled.string, parameters

    async def _driver_rows(self, target: int, sql: str, parameters: Any) -> builtins.list[Any]:
        """The rows of one SQL statement on a psycopg-pooled autocommit connection of
        ``target``: no SQLAlchemy work at all, its pool checkout alone costs ten times
        psycopg_pool's."""
        with translate_errors():
            pool = await self._backend.read_pool(target)
            for attempt in (1, 2):
                driver = await pool.getconn()
                try:
                    cursor = await driver.execute(sql, parameters, prepare=True)
                    rows = await cursor.fetchall()
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
                return rows
        return []

    # -- by key --------------------------------------------------------------------------

    def _key_lookup(
        self, info: ModelInfo[Any], include_deleted: bool, scoped: bool
    ) -> tuple[Any, str | None]:
        """The lookup by key as a Core statement, and precompiled as driver SQL.

        Even :meth:`_driver_form`'s cache key costs a tenth of a lookup by key, so ``get``
        keeps its SQL compiled per model (``scoped``: setting the tenant, bound as
        ``tenant``) and goes straight to :meth:`_driver_rows` outside transactions. Models
        with column types that need SQLAlchemy's result processing (enums, pickles...) get
        None and use the Core statement.
        """
        cache_key = (info.model, include_deleted, scoped)
        found = self._lookups.get(cache_key)
        if found is None:
            dialect = self._backend.engine.dialect
            statement = info.select_all.where(
                info.key == bindparam("key", type_=info.key.type),
                *info.visible(include_deleted),
            )
            native = all(column_type(column.type).driver_native for column in info.columns)
            sql = statement.where(scope_condition(None)) if scoped else statement
            found = (statement, str(sql.compile(dialect=dialect)) if native else None)
            self._lookups[cache_key] = found
        return found

    async def get_or_none(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M | None:
        info = model_info(model)
        key = info.rules.convert(info.key.name, id, "id")
        tenant = self._transactions.tenant()
        include_deleted = flag("include_deleted", include_deleted)
        flag("fresh", fresh)
        statement, sql = self._key_lookup(info, include_deleted, tenant is not None)

        with operation(self._backend, "entities.get", info.table.name, model=model.__name__):
            if sql is not None and self._transactions.active() is None:
                parameters = {"key": key} if tenant is None else {"key": key, "tenant": tenant}
                rows = await self._driver_rows(self._target(fresh), sql, parameters)
            else:
                rows = await self.rows(fresh, statement.params(key=key))
        return info.materialize(rows[0]) if rows else None

    async def get(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M:
        found = await self.get_or_none(model, id, include_deleted=include_deleted, fresh=fresh)
        if found is None:
            raise NotFoundError(model.__name__, id)
        return found

    # -- by filter -----------------------------------------------------------------------

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
        info = model_info(model)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE}")
        order, clauses, positions = self._order(info, order_by)
        conditions = where_clause(info.table, info.rules, where)
        conditions += info.visible(include_deleted)
        if after is not None:
            conditions.append(keyset_condition(order, decode_cursor(order, info.rules, after)))
        statement = info.select_all.where(*conditions).order_by(*clauses).limit(limit + 1)
        name = info.table.name
        with operation(self._backend, "entities.list", name, model=model.__name__) as op:
            rows = await self.rows(fresh, statement)
            op.note(rows=len(rows))
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            cursor = encode_cursor(order, [rows[-1][index] for index in positions])
        return Page(info.materialize_all(rows), cursor)

    def _order(
        self, info: ModelInfo[Any], order_by: Any
    ) -> tuple[Order, builtins.list[Any], builtins.list[int]]:
        """The validated order, its ORDER BY clauses and the row positions of its columns,
        built once per model and order_by."""
        key: Any = order_by
        if isinstance(order_by, list | tuple) and all(isinstance(k, str) for k in order_by):
            key = tuple(order_by)
        cacheable = key is None or isinstance(key, str | tuple)
        found = self._orders.get((info.model, key)) if cacheable else None
        if found is None:
            order = order_for(info.table, info.rules, order_by, info.default_order)
            positions = [info.positions[column.name] for column in order.columns]
            found = (order, order.clauses(), positions)
            if cacheable and len(self._orders) < _MAX_CACHED_ORDERS:
                self._orders[(info.model, key)] = found
        return found

    def _matching(
        self, model: type[Base], where: Mapping[str, Any] | None, include_deleted: bool
    ) -> tuple[ModelInfo[Any], builtins.list[Any]]:
        info = model_info(model)
        conditions = where_clause(info.table, info.rules, where)
        return info, conditions + info.visible(include_deleted)

    async def count(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> int:
        info, conditions = self._matching(model, where, include_deleted)
        statement = select(func.count()).select_from(info.table).where(*conditions)
        with operation(self._backend, "entities.count", info.table.name, model=model.__name__):
            rows = await self.rows(fresh, statement)
        return int(rows[0][0])

    async def exists(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> bool:
        info, conditions = self._matching(model, where, include_deleted)
        statement = select(exists().where(*conditions))
        with operation(self._backend, "entities.exists", info.table.name, model=model.__name__):
            rows = await self.rows(fresh, statement)
        return bool(rows[0][0])


def _driver_ready(compiled: Compiled, statement: Select[Any], dialect: Dialect) -> bool:
    """Whether psycopg alone runs ``compiled`` as SQLAlchemy would: its SQL is final (no
    IN-list expanded at execution), no bound value needs SQLAlchemy's conversion, and every
    result column comes back from psycopg as SQLAlchemy would return it."""
    if getattr(compiled, "post_compile_params", None) or getattr(
        compiled, "literal_execute_params", None
    ):
        return False
    binds: Any = getattr(compiled, "binds", {})
    if any(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds.values()):
        return False
    return all(column_type(column.type).driver_native for column in statement.selected_columns)
