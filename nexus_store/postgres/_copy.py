"""The bulk insert path: rows checked in Python, then sent with binary COPY.

The bench (``bench/scenarios/postgres_entities.py``) measured COPY at about three times
psycopg's ``executemany`` and six times SQLAlchemy's insertmanyvalues on this machine,
so every ``bulk_create`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from nexus_store.errors import ValidationError
from nexus_store.postgres._values import InvalidValue, TableRules
from nexus_store.postgres.models.base import Base

__all__ = ["Prepared", "copy_rows", "prepare"]

_MISSING = object()


def _pg_type(type_: Any) -> str:
    """The PostgreSQL type name psycopg needs to dump a value in binary COPY."""
    if isinstance(type_, ARRAY):
        return f"{_pg_type(type_.item_type)}[]"
    for cls, name in (
        (Boolean, "bool"),
        (SmallInteger, "int2"),
        (BigInteger, "int8"),
        (Integer, "int4"),
        (Float, "float8"),
        (Numeric, "numeric"),
        (Text, "text"),
        (String, "varchar"),
        (Date, "date"),
        (Uuid, "uuid"),
        (JSONB, "jsonb"),
        (JSON, "json"),
    ):
        if isinstance(type_, cls):
            return name
    if isinstance(type_, DateTime):
        return "timestamptz" if type_.timezone else "timestamp"
    raise ValidationError("model", f"bulk_create cannot COPY a column of type {type_!r}")


@dataclass(frozen=True)
class Prepared:
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


def prepare(
    table: Table,
    rules: TableRules,
    rows: Iterable[Mapping[str, Any] | Base],
    *,
    managed: frozenset[str],
) -> Prepared:
    """Check every row; the column list is the union of the keys given."""
    mappings = [_as_mapping(row, table, index) for index, row in enumerate(rows)]
    names: dict[str, None] = {}
    for mapping in mappings:
        names.update(dict.fromkeys(mapping))
    for name in names:
        if not isinstance(name, str) or name not in rules.converters:
            raise ValidationError(f"rows.{name}", f"is not a column of {table.name}")
        if name in managed:
            raise ValidationError(f"rows.{name}", "is maintained by nexus-store")
    missing_required = rules.required.difference(names)
    if missing_required and mappings:
        raise ValidationError(f"rows[0].{sorted(missing_required)[0]}", "is required")
    columns = list(names)
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
    types = [_pg_type(table.columns[name].type) for name in columns]
    return Prepared(columns, types, prepared)


def _fallback(table: Table, name: str) -> Any:
    """What a row that omits ``name`` gets: the Python default, or NULL if allowed."""
    column = table.columns[name]
    default = column.default
    if default is not None and getattr(default, "is_scalar", False):
        return default.arg  # type: ignore[attr-defined]
    if default is not None and getattr(default, "is_callable", False):
        function = default.arg  # type: ignore[attr-defined]
        return lambda: function(None)
    return None if column.nullable else _MISSING


async def copy_rows(connection: AsyncConnection[Any], table: Table, prepared: Prepared) -> None:
    """COPY ``prepared`` rows into ``table`` over an open driver connection."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(*filter(None, (table.schema, table.name))),
        sql.SQL(", ").join(map(sql.Identifier, prepared.columns)),
    )
    async with connection.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(prepared.types)
        for row in prepared.rows:
            await copy.write_row(row)
