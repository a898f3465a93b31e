"""Filters, ordering and keyset cursors, built only from mapped columns and bound values.

Filter keys are ``column`` or ``column__operator``; the operators are a fixed whitelist.
Nothing a caller passes is ever spliced into SQL text: names select a ``Column`` object from
the table, values become bound parameters.

    where={"email": "ada@example.com"}
    where={"created_at__gte": since, "status__in": ["active", "on_hold"]}
    where={"username__ilike": "ad"}            # substring; % and _ match themselves
    where={"preferences__contains": {"theme": "dark"}, "deleted_at__is_null": False}
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, Column, ColumnElement, String, Table, and_, or_
from sqlalchemy import tuple_ as sql_tuple
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import OperatorType

from nexus_store.errors import ValidationError
from nexus_store.postgres._types import column_type
from nexus_store.postgres._values import TableRules

__all__ = ["OPERATORS", "Order", "Page", "keyset_condition", "order_for", "where_clause"]

T = TypeVar("T")

MAX_IN_VALUES = 10_000


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of ``list``: ``items`` and the cursor of the next page (None at the end).

    page = await store.entities.list(User, limit=100)
    while page.next_cursor:
        page = await store.entities.list(User, limit=100, after=page.next_cursor)
    """

    items: list[T]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _sequence(value: Any, field: str, rules: TableRules, name: str) -> list[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(
        value, list | tuple | set | frozenset
    ):
        raise ValidationError(field, f"needs a list of values, got {type(value).__name__}")
    if len(value) > MAX_IN_VALUES:
        raise ValidationError(field, f"has {len(value)} values; the limit is {MAX_IN_VALUES}")
    return [rules.convert(name, item, field) for item in value]


# A filter operator: (column, value, field, rules) -> the SQL condition.
Operator = Callable[[Column[Any], Any, str, TableRules], ColumnElement[bool]]


def _text_only(column: Column[Any], field: str, operator: str) -> None:
    if not isinstance(column.type, String):
        raise ValidationError(field, f"{operator} works on text columns only")


def _eq(column: Column[Any], value: Any, field: str, rules: TableRules) -> ColumnElement[bool]:
    return column.operate(operators.eq, rules.convert(column.name, value, field))


def _ne(column: Column[Any], value: Any, field: str, rules: TableRules) -> ColumnElement[bool]:
    return column.is_distinct_from(rules.convert(column.name, value, field))


def _comparison(name: str, compare: OperatorType) -> Operator:
    def operator(
        column: Column[Any], value: Any, field: str, rules: TableRules
    ) -> ColumnElement[bool]:
        if column.name not in rules.orderable:
            raise ValidationError(field, f"{column.name} cannot be compared with {name}")
        if value is None:
            raise ValidationError(field, "cannot compare with None; use is_null")
        return column.operate(compare, rules.convert(column.name, value, field))

    return operator


def _in(column: Column[Any], value: Any, field: str, rules: TableRules) -> ColumnElement[bool]:
    return column.in_(_sequence(value, field, rules, column.name))


def _not_in(column: Column[Any], value: Any, field: str, rules: TableRules) -> ColumnElement[bool]:
    return column.not_in(_sequence(value, field, rules, column.name))


def _like(name: str, match: OperatorType) -> Operator:
    def operator(
        column: Column[Any], value: Any, field: str, rules: TableRules
    ) -> ColumnElement[bool]:
        _text_only(column, field, name)
        text = rules.convert(column.name, value, field)
        if text is None:
            raise ValidationError(field, f"{name} needs a string")
        # A substring match; autoescape makes % _ and the escape character literal.
        return column.operate(match, text, autoescape=True)

    return operator


def _is_null(column: Column[Any], value: Any, field: str, rules: TableRules) -> ColumnElement[bool]:
    if not isinstance(value, bool):
        raise ValidationError(field, "is_null needs True or False")
    return column.is_(None) if value else column.is_not(None)


def _contains(
    column: Column[Any], value: Any, field: str, rules: TableRules
) -> ColumnElement[bool]:
    if isinstance(column.type, ARRAY):
        items = value if isinstance(value, list | tuple) else [value]
        converted = [rules.convert_element(column.name, item, field) for item in items]
        return column.contains(converted)
    if isinstance(column.type, JSON):
        if not isinstance(value, Mapping | list):
            raise ValidationError(field, "contains on JSONB needs a dict or a list")
        return column.contains(rules.convert(column.name, value, field))
    raise ValidationError(field, "contains works on JSONB and array columns; use like/ilike")


OPERATORS: dict[str, Operator] = {
    "eq": _eq,
    "ne": _ne,
    "lt": _comparison("lt", operators.lt),
    "lte": _comparison("lte", operators.le),
    "gt": _comparison("gt", operators.gt),
    "gte": _comparison("gte", operators.ge),
    "in": _in,
    "not_in": _not_in,
    "like": _like("like", operators.contains_op),
    "ilike": _like("ilike", operators.icontains_op),
    "is_null": _is_null,
    "contains": _contains,
}


def where_clause(table: Table, rules: TableRules, where: Mapping[str, Any] | None) -> list[Any]:
    """SQL conditions for ``where``; ValidationError names any bad key, operator or value."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise ValidationError("where", f"must be a dict, got {type(where).__name__}")
    conditions = []
    for key, value in where.items():
        field = f"where.{key}"
        if not isinstance(key, str):
            raise ValidationError("where", f"keys must be strings, got {type(key).__name__}")
        name, _, operator = key.partition("__")
        operator = operator or "eq"
        column = table.columns.get(name)
        if column is None:
            raise ValidationError(field, f"{name!r} is not a column of {table.name}")
        build = OPERATORS.get(operator)
        if build is None:
            raise ValidationError(
                field, f"unknown operator {operator!r}; use one of {', '.join(OPERATORS)}"
            )
        if name in rules.secrets and not (rules.secrets[name] and operator == "eq"):
            allowed = "only by exact match (eq)" if rules.secrets[name] else "not"
            raise ValidationError(field, f"{name} holds a secret: it can be filtered on {allowed}")
        conditions.append(build(column, value, field, rules))
    return conditions


@dataclass(frozen=True)
class Order:
    """A validated ``order_by``: columns with directions, always ending with the key."""

    columns: tuple[Any, ...]
    descending: tuple[bool, ...]

    @property
    def signature(self) -> str:
        return ",".join(
            f"-{column.name}" if desc else column.name
            for column, desc in zip(self.columns, self.descending, strict=True)
        )

    def clauses(self) -> list[UnaryExpression[Any]]:
        return [
            column.desc() if desc else column.asc()
            for column, desc in zip(self.columns, self.descending, strict=True)
        ]


def column_names(field: str, value: object) -> list[str]:
    """``value`` (a column name, or a list or tuple of them) as a list; ValidationError naming
    ``field`` for anything else, before an unhashable or non-iterable value reaches SQL."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValidationError(
            field, f"must be a column name or a list of them, got {type(value).__name__}"
        )
    for item in value:
        if not isinstance(item, str):
            raise ValidationError(field, f"must name columns, got {type(item).__name__}")
    return list(value)


def order_for(
    table: Table, rules: TableRules, order_by: str | Sequence[str] | None, default: str | None
) -> Order:
    """Validate ``order_by`` ("name" ascending, "-name" descending); append the primary key."""
    keys = column_names("order_by", order_by) if order_by is not None else []
    if not keys and default is not None:
        keys = [default]
    (primary_key,) = table.primary_key.columns
    columns: list[Any] = []
    descending: list[bool] = []
    for key in keys:
        name = key.removeprefix("-")
        column = table.columns.get(name)
        if column is None:
            raise ValidationError("order_by", f"{name!r} is not a column of {table.name}")
        if name not in rules.orderable:
            raise ValidationError("order_by", f"{name} cannot be ordered by")
        if column.nullable:
            raise ValidationError(
                "order_by", f"{name} is nullable; keyset pagination needs NOT NULL columns"
            )
        if column in columns:
            raise ValidationError("order_by", f"{name} is listed twice")
        columns.append(column)
        descending.append(key.startswith("-"))
    if primary_key not in columns:
        columns.append(primary_key)
        descending.append(descending[-1] if descending else False)
    return Order(tuple(columns), tuple(descending))


def keyset_condition(order: Order, values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in ``order`` (a row-value comparison when possible)."""
    if len(set(order.descending)) == 1:
        left = sql_tuple(*order.columns)
        right = sql_tuple(*values)
        return left < right if order.descending[0] else left > right
    alternatives = []
    for index, (column, desc) in enumerate(zip(order.columns, order.descending, strict=True)):
        equal = [c == v for c, v in zip(order.columns[:index], values[:index], strict=True)]
        beyond = column < values[index] if desc else column > values[index]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


# -- cursors --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def encode_cursor(order: Order, row: Sequence[Any]) -> str:
    """An opaque cursor: the last row's ordering values and the order they belong to."""
    payload = {"o": order.signature, "v": [_plain(value) for value in row]}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(order: Order, rules: TableRules, cursor: str) -> list[Any]:
    """The values in ``cursor``, each checked like any other value for its column."""
    bad = ValidationError("after", "is not a cursor of this query (order_by must not change)")
    if not isinstance(cursor, str) or len(cursor) > 4096:
        raise bad
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = payload["v"]
        if payload["o"] != order.signature or len(values) != len(order.columns):
            raise bad
        parsed = [
            column_type(column.type).from_json(value)
            for column, value in zip(order.columns, values, strict=True)
        ]
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise bad from None
    try:
        return [
            rules.convert(column.name, value, "after")
            for column, value in zip(order.columns, parsed, strict=True)
        ]
    except ValidationError:
        raise bad from None
