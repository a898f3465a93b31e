"""``get``, ``get_or_none``, ``list``, ``count`` and ``exists``.

Outside a transaction a read runs in autocommit (one round trip, no BEGIN/ROLLBACK) on a read
replica, round robin, when ``postgres.read_urls`` is set and the call is not ``fresh``; else on
the primary. A lookup by key skips SQLAlchemy (see :meth:`Reads._key_lookup`). Inside
``transaction()`` every read uses the transaction's connection. In a tenant scope, a read
outside a transaction sets the tenant within its own statement (``scope_condition``).
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import CursorResult, Select, bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

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
R = TypeVar("R")

MAX_PAGE = 1000
_MAX_CACHED_ORDERS = 512  # order_by values come from callers: keep the cache bounded


class Reads:
    """The read side of one repository: its read targets and its precompiled lookups."""

    def __init__(self, backend: PostgresBackend, transactions: Transactions) -> None:
        self._backend = backend
        self._transactions = transactions
        # (model, include_deleted, scoped) -> the lookup by key, as a statement and as
        # driver SQL.
        self._lookups: dict[tuple[type[Base], bool, bool], tuple[Any, str | None]] = {}
        # (model, order_by) -> the validated order and its clauses.
        self._orders: dict[tuple[type[Base], Any], tuple[Order, builtins.list[Any]]] = {}
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

    async def run(
        self, fresh: bool, statement: Select[Any], consume: Callable[[CursorResult[Any]], R]
    ) -> R:
        """``consume(result)`` of ``statement``, run where a read belongs: the caller's
        transaction, else an autocommit connection (replica unless fresh), where in a tenant
        scope the statement sets the tenant itself (one round trip, no transaction)."""
        flag("fresh", fresh)  # checked even where a transaction makes it moot
        active = self._transactions.active()
        with translate_errors():
            if active is not None:
                return consume(await active.execute(statement))
            tenant = self._transactions.tenant()
            if tenant is not None:
                statement = statement.where(scope_condition(tenant))
            engine = self._engine(self._target(fresh))
            try:
                async with engine.connect() as connection:
                    return consume(await connection.execute(statement))
            except sqlalchemy.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # A pooled connection had died (server restart, failover). Pre-ping is off to
            # save a round trip per read, so this idempotent read is retried once instead.
            async with engine.connect() as connection:
                return consume(await connection.execute(statement))

    # -- by key --------------------------------------------------------------------------

    def _key_lookup(
        self, info: ModelInfo[Any], include_deleted: bool, scoped: bool
    ) -> tuple[Any, str | None]:
        """The lookup by key as a Core statement, and precompiled for the driver fast path.

        SQLAlchemy's execution layer costs more than the round trip of a lookup by key, so
        ``get`` outside transactions sends the precompiled SQL on a pooled psycopg
        connection; ``scoped``, the SQL sets the tenant (bound as ``tenant``) itself.
        Models with column types that need SQLAlchemy's result processing (enums,
        pickles...) get None and use the Core statement.
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

    async def _fast_lookup(self, target: int, sql: str, parameters: Any) -> Any:
        """One precompiled read on a psycopg-pooled autocommit connection: no SQLAlchemy
        work at all, its pool checkout costs more than the rest of the call."""
        with translate_errors():
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
                row = await self._fast_lookup(self._target(fresh), sql, parameters)
            else:
                bound = statement.params(key=key)
                row = await self.run(fresh, bound, lambda result: result.first())
        return None if row is None else info.materialize(row)

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
        order, clauses = self._order(info, order_by)
        conditions = where_clause(info.table, info.rules, where)
        conditions += info.visible(include_deleted)
        if after is not None:
            conditions.append(keyset_condition(order, decode_cursor(order, info.rules, after)))
        statement = info.select_all.where(*conditions).order_by(*clauses).limit(limit + 1)
        name = info.table.name
        with operation(self._backend, "entities.list", name, model=model.__name__) as op:
            rows = await self.run(fresh, statement, _all_rows)
            op.note(rows=len(rows))
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            positions = [info.columns.index(column) for column in order.columns]
            cursor = encode_cursor(order, [rows[-1][index] for index in positions])
        return Page([info.materialize(row) for row in rows], cursor)

    def _order(self, info: ModelInfo[Any], order_by: Any) -> tuple[Order, builtins.list[Any]]:
        """The validated order and its ORDER BY clauses, built once per model and order_by."""
        key: Any = order_by
        if isinstance(order_by, list | tuple) and all(isinstance(k, str) for k in order_by):
            key = tuple(order_by)
        cacheable = key is None or isinstance(key, str | tuple)
        found = self._orders.get((info.model, key)) if cacheable else None
        if found is None:
            order = order_for(info.table, info.rules, order_by, info.default_order)
            found = (order, order.clauses())
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
            return await self.run(fresh, statement, lambda result: int(result.scalar_one()))

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
            return await self.run(fresh, statement, lambda result: bool(result.scalar_one()))


def _all_rows(result: CursorResult[Any]) -> builtins.list[Any]:
    return builtins.list(result.all())
