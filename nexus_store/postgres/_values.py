"""Checking caller values against column types before any SQL is sent.

Each mapped column gets one converter, built once per table: it accepts a value that the
column can store exactly, normalises it (``"…uuid…"`` → ``UUID``) and otherwise raises
:class:`ValidationError` naming the field. Nothing is truncated, rounded or coerced silently:
a float for a NUMERIC column, a naive datetime for a ``timestamptz``, NaN, a string longer
than its column or a NUL character are all refused.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY

from nexus_store.errors import ValidationError
from nexus_store.postgres.models.base import CHOICES, MINIMUM

__all__ = ["InvalidValue", "TableRules", "rules_for"]

Convert = Callable[[Any, str], Any]

_INT_BOUNDS = {SmallInteger: 2**15, BigInteger: 2**63, Integer: 2**31}
_MAX_JSON_DEPTH = 64


class InvalidValue(Exception):
    """Raised by converters; turned into ValidationError with the field path."""

    def __init__(self, problem: str, field: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.field = field


def _text(length: int | None) -> Convert:
    def convert(value: Any, _field: str) -> Any:
        if not isinstance(value, str):
            raise InvalidValue(f"must be a string, got {type(value).__name__}")
        if length is not None and len(value) > length:
            raise InvalidValue(f"is {len(value)} characters long; the limit is {length}")
        if "\x00" in value:
            raise InvalidValue("contains a NUL character, which PostgreSQL cannot store")
        return value

    return convert


def _integer(bound: int) -> Convert:
    def convert(value: Any, _field: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"must be an integer, got {type(value).__name__}")
        if not -bound <= value < bound:
            raise InvalidValue(f"{value} is out of range for this column")
        return value

    return convert


def _numeric(precision: int | None, scale: int | None) -> Convert:
    def convert(value: Any, _field: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            if isinstance(value, float):
                raise InvalidValue("must be a Decimal (or int), not a float: money is never float")
            raise InvalidValue(f"must be a Decimal, got {type(value).__name__}")
        number = Decimal(value)
        if not number.is_finite():
            raise InvalidValue(f"{number} is not a finite number")
        exponent = number.as_tuple().exponent
        if scale is not None and isinstance(exponent, int) and -exponent > scale:
            raise InvalidValue(f"{number} has more than {scale} decimal places")
        if precision is not None and number != 0:
            digits = number.adjusted() + 1
            if digits > precision - (scale or 0):
                raise InvalidValue(f"{number} does not fit NUMERIC({precision}, {scale or 0})")
        return number

    return convert


def _float(value: Any, _field: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidValue(f"must be a number, got {type(value).__name__}")
    return float(value)


def _boolean(value: Any, _field: str) -> Any:
    if not isinstance(value, bool):
        raise InvalidValue(f"must be a bool, got {type(value).__name__}")
    return value


def _datetime(timezone: bool) -> Convert:
    def convert(value: Any, _field: str) -> Any:
        if not isinstance(value, datetime):
            raise InvalidValue(f"must be a datetime, got {type(value).__name__}")
        if timezone and (value.tzinfo is None or value.utcoffset() is None):
            raise InvalidValue("is a naive datetime; give it a timezone (datetime.now(UTC))")
        return value

    return convert


def _date(value: Any, _field: str) -> Any:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise InvalidValue(f"must be a date, got {type(value).__name__}")
    return value


def _uuid(value: Any, _field: str) -> Any:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
        raise InvalidValue("is not a valid UUID")
    raise InvalidValue(f"must be a UUID, got {type(value).__name__}")


def _json(value: Any, field: str) -> Any:
    _check_json(value, field, 0)
    return value


def _check_json(value: Any, path: str, depth: int) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise InvalidValue(f"nests deeper than {_MAX_JSON_DEPTH} levels", path)
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidValue("contains a NUL character, which JSONB cannot store", path)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{value} is not valid JSON", path)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValue(
                    f"JSON object keys must be strings, got {type(key).__name__}", path
                )
            if "\x00" in key:
                raise InvalidValue("a key contains a NUL character", path)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
        return
    raise InvalidValue(
        f"{type(value).__name__} is not JSON (use str, int, float, bool, None, list or dict)", path
    )


def _array(item: Convert) -> Convert:
    def convert(value: Any, field: str) -> Any:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise InvalidValue(f"must be a list, got {type(value).__name__}")
        converted = []
        for index, element in enumerate(value):
            try:
                converted.append(item(element, f"{field}[{index}]"))
            except InvalidValue as exc:
                raise InvalidValue(exc.problem, exc.field or f"{field}[{index}]") from None
        return converted

    return convert


def _passthrough(value: Any, _field: str) -> Any:
    return value


def _type_converter(type_: Any) -> Convert:
    converter: Convert
    if isinstance(type_, ARRAY):
        return _array(_type_converter(type_.item_type))
    if isinstance(type_, Boolean):
        converter = _boolean
    elif isinstance(type_, Integer):
        bound = next(b for cls, b in _INT_BOUNDS.items() if isinstance(type_, cls))
        converter = _integer(bound)
    elif isinstance(type_, Float):
        converter = _float
    elif isinstance(type_, Numeric):
        converter = _numeric(type_.precision, type_.scale)
    elif isinstance(type_, String):
        converter = _text(type_.length)
    elif isinstance(type_, DateTime):
        converter = _datetime(bool(type_.timezone))
    elif isinstance(type_, Date):
        converter = _date
    elif isinstance(type_, Uuid):
        converter = _uuid
    elif isinstance(type_, JSON):
        converter = _json
    else:  # a type this module does not know: PostgreSQL's own checks apply
        converter = _passthrough
    return converter


def _with_rules(column: Column[Any], convert: Convert) -> Convert:
    """Add the column's declared choices and minimum, and its nullability."""
    choices = column.info.get(CHOICES)
    minimum = column.info.get(MINIMUM)
    nullable = bool(column.nullable)

    def checked(value: Any, field: str) -> Any:
        if value is None:
            if nullable:
                return None
            raise InvalidValue("must not be null")
        value = convert(value, field)
        if choices is not None and value not in choices:
            raise InvalidValue(f"must be one of {', '.join(choices)}")
        if minimum is not None:
            bound, inclusive = minimum
            if value < bound or (not inclusive and value == bound):
                raise InvalidValue(f"must be {'>=' if inclusive else '>'} {bound}")
        return value

    return checked


def _orderable(column: Column[Any]) -> bool:
    return not isinstance(column.type, JSON | ARRAY | Boolean)


@dataclass(frozen=True)
class TableRules:
    """Converters and facts about one table's columns, keyed by column name."""

    table: Table
    converters: dict[str, Convert]
    required: frozenset[str]
    orderable: frozenset[str]

    def convert(self, name: str, value: Any, field: str | None = None) -> Any:
        """``value`` checked and normalised for column ``name``; ValidationError otherwise."""
        field = field or name
        converter = self.converters.get(name)
        if converter is None:
            raise ValidationError(field, f"is not a column of {self.table.name}")
        try:
            return converter(value, field)
        except InvalidValue as exc:
            raise ValidationError(exc.field or field, exc.problem) from None

    def convert_element(self, name: str, value: Any, field: str) -> Any:
        """One element for an ARRAY column (``tags__contains="x"``)."""
        type_ = self.table.columns[name].type
        item = _type_converter(type_.item_type if isinstance(type_, ARRAY) else type_)
        try:
            return item(value, field)
        except InvalidValue as exc:
            raise ValidationError(exc.field or field, exc.problem) from None

    def values(
        self,
        values: Mapping[str, Any],
        *,
        managed: frozenset[str],
        insert: bool,
        prefix: str = "",
    ) -> dict[str, Any]:
        """All ``values`` converted; on insert, every required column must be present."""
        converted: dict[str, Any] = {}
        for name, value in values.items():
            field = f"{prefix}{name}"
            if not isinstance(name, str) or name not in self.converters:
                raise ValidationError(field, f"is not a column of {self.table.name}")
            if name in managed:
                raise ValidationError(field, "is maintained by nexus-store and cannot be set")
            converted[name] = self.convert(name, value, field)
        if insert:
            missing = self.required.difference(converted)
            if missing:
                raise ValidationError(f"{prefix}{sorted(missing)[0]}", "is required")
        return converted


_cache: dict[Table, TableRules] = {}


def rules_for(table: Table) -> TableRules:
    """The (cached) rules of ``table``."""
    rules = _cache.get(table)
    if rules is None:
        converters = {
            column.name: _with_rules(column, _type_converter(column.type))
            for column in table.columns
        }
        required = frozenset(
            column.name
            for column in table.columns
            if not column.nullable
            and column.default is None
            and column.server_default is None
            and column.identity is None
            and column is not table.autoincrement_column
        )
        orderable = frozenset(column.name for column in table.columns if _orderable(column))
        rules = _cache[table] = TableRules(table, converters, required, orderable)
    return rules
