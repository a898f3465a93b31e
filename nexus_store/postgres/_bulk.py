"""``bulk_create``: rows checked in Python, then sent with binary COPY in one transaction.

The bench (``bench/scenarios/postgres_entities.py``) measured COPY at about three times
psycopg's ``executemany`` and six times SQLAlchemy's insertmanyvalues on this machine,
so every ``bulk_create`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import ColumnDefault, Table

from nexus_store.errors import ValidationError
from nexus_store.outbox.changes import Change, emit
from nexus_store.postgres._audit import Audits
from nexus_store.postgres._model import MANAGED_ON_INSERT, ModelInfo, model_info
from nexus_store.postgres._transaction import Transactions
from nexus_store.postgres._types import InvalidValue, column_type
from nexus_store.postgres._values import TableRules
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base
from nexus_store.telemetry import operation

__all__ = ["BulkInsert"]

_MISSING = object()
_STAGING = sql.Identifier("nexus_bulk_staging")


@dataclass(frozen=True)
class _Prepared:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


def _as_mapping(row: Mapping[str, Any] | Base, table: Table, index: int) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if isinstance(row, Base):
        state = row.__dict__
        return {column.name: state[column.key] for column in table.columns if column.key in state}
    raise ValidationError(f"rows[{index}]", f"must be a dict or a model, got {type(row).__name__}")


def _row_list(rows: object) -> list[Any]:
    """``rows`` as a list; a single row (a dict), text or bytes or a non-iterable is refused
    rather than iterated into keys, characters or a TypeError."""
    if isinstance(rows, Mapping | str | bytes | bytearray) or not isinstance(rows, Iterable):
        raise ValidationError(
            "rows", f"must be a list of dicts or models, got {type(rows).__name__}"
        )
    return list(rows)


def _prepare(
    table: Table,
    rules: TableRules,
    rows: Sequence[Mapping[str, Any] | Base],
    *,
    managed: frozenset[str],
) -> _Prepared:
    """Check every row; the column list is the union of the keys given."""
    mappings = _mappings(rows, table)
    names: dict[str, None] = dict.fromkeys(chain.from_iterable(mappings))
    for name in names:
        if not isinstance(name, str) or name not in rules.converters:
            raise ValidationError(f"rows.{name}", f"is not a column of {table.name}")
        if name in managed:
            raise ValidationError(f"rows.{name}", "is maintained by nexus-store")
    missing_required = rules.required.difference(names)
    if missing_required and mappings:
        raise ValidationError(f"rows[0].{sorted(missing_required)[0]}", "is required")
    columns = list(names)
    at_once = _checked_at_once(rules, columns, mappings)
    if at_once is not None:
        return _Prepared(columns, [_copy_type(table, name) for name in columns], at_once)
    fallback = [_fallback(table, name) for name in columns]
    converters = [rules.converters[name] for name in columns]
    plan = list(zip(columns, converters, fallback, strict=True))
    prepared = []
    for index, mapping in enumerate(mappings):
        values = []
        for name, convert, default in plan:
            value = mapping.get(name, _MISSING)
            if value is _MISSING:
                if default is _MISSING:
                    raise ValidationError(f"rows[{index}].{name}", "is missing (other rows set it)")
                value = default() if callable(default) else default
            try:
                values.append(convert(value, name))
            except InvalidValue as exc:
                raise ValidationError(f"rows[{index}].{exc.field or name}", exc.problem) from None
        prepared.append(tuple(values))
    return _Prepared(columns, [_copy_type(table, name) for name in columns], prepared)


def _mappings(
    rows: Sequence[Mapping[str, Any] | Base], table: Table
) -> Sequence[Mapping[str, Any]]:
    if set(map(type, rows)) <= {dict}:  # the usual case, without an isinstance per row
        return rows  # type: ignore[return-value]
    return [_as_mapping(row, table, index) for index, row in enumerate(rows)]


def _checked_at_once(
    rules: TableRules, columns: list[str], mappings: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]] | None:
    """The rows as tuples, when every row gives every column and each column passes its
    whole-column check (``TableRules.all_valid``: one C-level pass per column instead of a
    converter call per value, the most of what ``bulk_create`` spent in Python). None sends
    the caller to the value-by-value checks, which name the first bad value or normalise."""
    if not columns or set(map(len, mappings)) != {len(columns)}:
        return None  # a row lacks a column (keys are all among the columns): defaults apply
    checks = []
    for name in columns:
        check = rules.all_valid.get(name)
        if check is None:
            return None
        checks.append(check)
    by_column = [list(map(itemgetter(name), mappings)) for name in columns]
    for check, values in zip(checks, by_column, strict=True):
        if not check(values):
            return None
    return list(zip(*by_column, strict=True))


def _copy_type(table: Table, name: str) -> str:
    """The PostgreSQL type name psycopg needs to dump the column's values in binary COPY."""
    type_ = table.columns[name].type
    copy_type = column_type(type_).copy_type
    if copy_type is None:
        raise ValidationError("model", f"bulk_create cannot COPY a column of type {type_!r}")
    return copy_type


def _fallback(table: Table, name: str) -> Any:
    """What a row that omits ``name`` gets: the Python default, or NULL if allowed."""
    column = table.columns[name]
    default = column.default
    if isinstance(default, ColumnDefault) and default.is_scalar:
        return default.arg
    if isinstance(default, ColumnDefault) and default.is_callable:
        function = default.arg  # SQLAlchemy wraps it to take an execution context
        return lambda: function(None)
    return None if column.nullable else _MISSING


async def _copy_rows(
    connection: psycopg.AsyncConnection[Any], table: Table, prepared: _Prepared, *, staged: bool
) -> None:
    """COPY ``prepared`` rows into ``table`` over an open driver connection.

    PostgreSQL refuses ``COPY FROM`` into a table whose row-level security applies to the
    current role. ``staged`` copies into a temporary table instead and moves the rows with one
    ``INSERT ... SELECT``, which the tenant policies check row by row.
    """
    target = sql.Identifier(*filter(None, (table.schema, table.name)))
    columns = sql.SQL(", ").join(map(sql.Identifier, prepared.columns))
    into = _STAGING if staged else target
    async with connection.cursor() as cursor:
        if staged:
            await cursor.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                ).format(_STAGING, columns, target)
            )
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(into, columns)
        async with cursor.copy(statement) as copy:
            copy.set_types(prepared.types)
            for row in prepared.rows:
                await copy.write_row(row)
        if staged:
            await cursor.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                    target, columns, columns, _STAGING
                )
            )
            await cursor.execute(sql.SQL("DROP TABLE {}").format(_STAGING))


def _with_keys(
    info: ModelInfo[Any], rows: Iterable[Mapping[str, Any] | Base]
) -> list[Mapping[str, Any]]:
    """The rows as mappings, each with its key (from the key's Python default if absent)."""
    make_key = _fallback(info.table, info.key.name)
    name = info.key.name
    keyed = []
    for index, row in enumerate(rows):
        mapping = _as_mapping(row, info.table, index)
        if name not in mapping and callable(make_key):
            mapping = {**mapping, name: make_key()}
        keyed.append(mapping)
    return keyed


class BulkInsert:
    """The COPY path of one repository."""

    def __init__(
        self, backend: PostgresBackend, transactions: Transactions, audits: Audits
    ) -> None:
        self._backend = backend
        self._transactions = transactions
        self._audits = audits
        # table -> whether row-level security binds this repository's role on it (fixed by
        # the role and the schema, so asked once per table).
        self._row_security: dict[str, bool] = {}

    async def _row_security_active(
        self, connection: psycopg.AsyncConnection[Any], table: Table
    ) -> bool:
        name = table.fullname
        active = self._row_security.get(name)
        if active is None:
            cursor = await connection.execute("SELECT row_security_active(%s::regclass)", (name,))
            found = await cursor.fetchone()
            active = self._row_security[name] = bool(found and found[0])
        return active

    async def bulk_create(
        self,
        model: type[Base],
        rows: Iterable[Mapping[str, Any] | Base],
        *,
        audit: bool | None = None,
    ) -> int:
        info = model_info(model)
        rows = _row_list(rows)
        audited = self._audits.enabled(info, audit)
        if audited:  # each change record names its row: keys are needed now
            rows = _with_keys(info, rows)
        prepared = _prepare(info.table, info.rules, rows, managed=MANAGED_ON_INSERT)
        if not prepared.rows:
            return 0
        if audited and info.key.name not in prepared.columns:
            raise ValidationError(f"rows.{info.key.name}", "audited bulk inserts need the keys")
        count = len(prepared.rows)
        name = info.table.name
        with operation(
            self._backend, "entities.bulk_create", name, model=model.__name__, rows=count
        ):
            async with self._transactions.writing() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                if not isinstance(driver, psycopg.AsyncConnection):  # the engine is psycopg's
                    raise TypeError(f"bulk_create needs a psycopg connection, got {driver!r}")
                staged = await self._row_security_active(driver, info.table)
                await _copy_rows(driver, info.table, prepared, staged=staged)
                if audited:
                    columns = prepared.columns
                    created = [dict(zip(columns, row, strict=True)) for row in prepared.rows]
                    changes = [
                        Change.of(model, "create", values[info.key.name], None, values)
                        for values in created
                    ]
                    await emit(connection, [change for change in changes if change is not None])
        return count
