"""``bulk_create``: rows checked in Python, then sent with binary COPY in one transaction.

The bench (``bench/scenarios/postgres_entities.py``) measured COPY at about three times
psycopg's ``executemany`` and six times SQLAlchemy's insertmanyvalues on this machine,
so every ``bulk_create`` uses it.

The server spends most of a COPY updating indexes while the client waits for the socket, so
the rows are checked a chunk at a time and each chunk is sent as soon as it passes: the
checks of chunk n+1 run while the server stores chunk n. The first chunk is checked before
any SQL, so a batch of up to ``_CHUNK`` rows is refused without touching the server; a bad
value further on ends the COPY, and the transaction (or, inside the caller's transaction, a
savepoint) rolls back: nothing is written either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
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
from nexus_store.postgres._types import Convert, InvalidValue, column_type
from nexus_store.postgres._values import TableRules
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base
from nexus_store.telemetry import operation

__all__ = ["BulkInsert"]

_MISSING = object()
_STAGING = sql.Identifier("nexus_bulk_staging")
# Rows checked per step. The first chunk's checks are the only ones the server does not
# overlap (about 1 ms per 1,000 rows of ``users``, 5 ms at 5,000); the per-chunk work
# (a slice, a list per column) stays a rounding error at this size.
_CHUNK = 1_000


Row = tuple[Any, ...]


@dataclass(frozen=True)
class _Columns:
    """What the COPY sends: the union of the keys given, checked against the table."""

    names: list[str]
    types: list[str]
    #: Per column: (name, converter, what a row without it gets, or _MISSING).
    plan: list[tuple[str, Convert, Any]]
    #: Per column, its whole-column check (``TableRules.all_valid``); None when a column has
    #: none, and every chunk goes value by value.
    checks: list[Callable[[Sequence[Any]], bool]] | None


class _Refused(Exception):
    """Ends a COPY whose next chunk failed its checks. psycopg sends the server the text of
    the exception that leaves the COPY, and the server logs it: the ValidationError (which
    can quote a value) stays on this side."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__("a value was refused before it was sent")
        self.error = error


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


def _columns(
    table: Table,
    rules: TableRules,
    mappings: Sequence[Mapping[str, Any]],
    *,
    managed: frozenset[str],
) -> _Columns:
    """The column list: the union of the keys given (the first row's in its order, then any
    other in name order), each a settable column of ``table``."""
    names = dict.fromkeys(mappings[0])
    # One C-level pass over every row's keys; a set, as ordering 250,000 keys into a dict
    # cost twice as much.
    others = set().union(*mappings).difference(names)
    names.update(dict.fromkeys(sorted(others, key=str)))
    for name in names:
        if not isinstance(name, str) or name not in rules.converters:
            raise ValidationError(f"rows.{name}", f"is not a column of {table.name}")
        if name in managed:
            raise ValidationError(f"rows.{name}", "is maintained by nexus-store")
    missing_required = rules.required.difference(names)
    if missing_required:
        raise ValidationError(f"rows[0].{sorted(missing_required)[0]}", "is required")
    plan = [(name, rules.converters[name], _fallback(table, name)) for name in names]
    checks = [rules.all_valid[name] for name in names if name in rules.all_valid]
    return _Columns(
        list(names),
        [_copy_type(table, name) for name in names],
        plan,
        checks if len(checks) == len(names) else None,
    )


def _checked(columns: _Columns, mappings: Sequence[Mapping[str, Any]], start: int) -> list[Row]:
    """``mappings`` (rows ``start`` onwards of the batch) checked, as tuples in column order."""
    at_once = _checked_at_once(columns, mappings)
    if at_once is not None:
        return at_once
    prepared = []
    for index, mapping in enumerate(mappings, start):
        values = []
        for name, convert, default in columns.plan:
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
    return prepared


def _chunks(columns: _Columns, mappings: Sequence[Mapping[str, Any]]) -> Iterator[list[Row]]:
    """The batch checked ``_CHUNK`` rows at a time, each chunk checked when it is asked for."""
    for start in range(0, len(mappings), _CHUNK):
        yield _checked(columns, mappings[start : start + _CHUNK], start)


def _mappings(
    rows: Sequence[Mapping[str, Any] | Base], table: Table
) -> Sequence[Mapping[str, Any]]:
    if set(map(type, rows)) <= {dict}:  # the usual case, without an isinstance per row
        return rows  # type: ignore[return-value]
    return [_as_mapping(row, table, index) for index, row in enumerate(rows)]


def _checked_at_once(columns: _Columns, mappings: Sequence[Mapping[str, Any]]) -> list[Row] | None:
    """The rows as tuples, when every row gives every column and each column passes its
    whole-column check (``TableRules.all_valid``: one C-level pass per column instead of a
    converter call per value, the most of what ``bulk_create`` spent in Python). None sends
    the caller to the value-by-value checks, which name the first bad value or normalise."""
    checks = columns.checks
    if not checks or set(map(len, mappings)) != {len(checks)}:
        return None  # a row lacks a column (keys are all among the columns): defaults apply
    by_column = [list(map(itemgetter(name), mappings)) for name in columns.names]
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
    connection: psycopg.AsyncConnection[Any],
    table: Table,
    columns: _Columns,
    chunks: Iterable[list[Row]],
    *,
    staged: bool,
) -> None:
    """COPY the rows of ``chunks`` into ``table`` over an open driver connection. A chunk
    that fails its checks ends the COPY with its ValidationError.

    PostgreSQL refuses ``COPY FROM`` into a table whose row-level security applies to the
    current role. ``staged`` copies into a temporary table instead and moves the rows with one
    ``INSERT ... SELECT``, which the tenant policies check row by row.
    """
    target = sql.Identifier(*filter(None, (table.schema, table.name)))
    names = sql.SQL(", ").join(map(sql.Identifier, columns.names))
    into = _STAGING if staged else target
    async with connection.cursor() as cursor:
        if staged:
            await cursor.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
                ).format(_STAGING, names, target)
            )
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(into, names)
        try:
            async with cursor.copy(statement) as copy:
                copy.set_types(columns.types)
                try:
                    for chunk in chunks:  # each freed once sent, while the server works
                        for row in chunk:
                            await copy.write_row(row)
                except ValidationError as exc:
                    raise _Refused(exc) from None
        except _Refused as refused:
            raise refused.error from None
        if staged:
            await cursor.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                    target, names, names, _STAGING
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
        mappings = _mappings(rows, info.table)
        if not mappings:
            return 0
        columns = _columns(info.table, info.rules, mappings, managed=MANAGED_ON_INSERT)
        if audited and info.key.name not in columns.names:
            raise ValidationError(f"rows.{info.key.name}", "audited bulk inserts need the keys")
        chunks = _chunks(columns, mappings)
        first = next(chunks)  # checked before any SQL: a small batch never reaches the server
        if audited:  # the change records need every row: all are checked before any SQL
            checked = list(chain(first, *chunks))
            batches: Iterable[list[Row]] = [checked]
        else:
            batches = chain([first], chunks)
        # Inside the caller's transaction a value refused halfway through the COPY (or a
        # duplicate) rolls back to before this call, not the caller's transaction.
        own = self._transactions.active() is None
        name = info.table.name
        with operation(
            self._backend, "entities.bulk_create", name, model=model.__name__, rows=len(mappings)
        ):
            async with self._transactions.writing() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                if not isinstance(driver, psycopg.AsyncConnection):  # the engine is psycopg's
                    raise TypeError(f"bulk_create needs a psycopg connection, got {driver!r}")
                staged = await self._row_security_active(driver, info.table)
                async with nullcontext() if own else connection.begin_nested():
                    await _copy_rows(driver, info.table, columns, batches, staged=staged)
                if audited:
                    created = [dict(zip(columns.names, row, strict=True)) for row in checked]
                    changes = [
                        Change.of(model, "create", values[info.key.name], None, values)
                        for values in created
                    ]
                    await emit(connection, [change for change in changes if change is not None])
        return len(mappings)
