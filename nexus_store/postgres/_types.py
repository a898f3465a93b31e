"""Everything nexus-store knows about a SQLAlchemy column type, in one table.

Each supported type has one :class:`ColumnType`: how a caller's value is checked and
normalised, the PostgreSQL type name binary COPY dumps it as, whether psycopg returns rows of
it exactly as SQLAlchemy would (the ``get`` fast path), whether it can order a keyset page,
and how a keyset cursor's JSON value turns back into it. The validation of values
(``_values``), ``bulk_create`` (``_copy``), ``get`` (``_reads``) and filters and cursors
(``_query``) all read this table, so a new type is supported by adding one row.

Converters accept a value the column can store exactly, normalise it (``"…uuid…"`` →
``UUID``) and otherwise raise :class:`InvalidValue`. Nothing is truncated, rounded or coerced
silently: a float for a NUMERIC column, a naive datetime for a ``timestamptz``, NaN, a string
longer than its column or a NUL character are all refused.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import TypeEngine

from nexus_store._text import text_problem

__all__ = ["AllValid", "ColumnType", "Convert", "InvalidValue", "column_type"]

Convert = Callable[[Any, str], Any]
# (values, the set of their types) -> True when every value would pass its converter
# unchanged: a column of a bulk insert checked at once (see ``ColumnType.all_valid``).
AllValid = Callable[[Sequence[Any], AbstractSet[type]], bool]

_MAX_JSON_DEPTH = 64
_FLOAT_WITH_EXPONENT = 1e16  # the smallest integral float that repr() writes with an exponent


class InvalidValue(Exception):
    """Raised by converters; turned into ValidationError with the field path."""

    def __init__(self, problem: str, field: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.field = field


# -- converters ---------------------------------------------------------------------------


def _text(length: int | None) -> Convert:
    def convert(value: Any, _field: str) -> Any:
        if not isinstance(value, str):
            raise InvalidValue(f"must be a string, got {type(value).__name__}")
        if length is not None and len(value) > length:
            raise InvalidValue(f"is {len(value)} characters long; the limit is {length}")
        problem = text_problem(value)
        if problem is not None:
            raise InvalidValue(f"{problem}, which PostgreSQL cannot store")
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
        problem = text_problem(value)
        if problem is not None:
            raise InvalidValue(f"{problem}, which JSONB cannot store", path)
        return
    if isinstance(value, float):
        _check_json_float(value, path)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValue(
                    f"JSON object keys must be strings, got {type(key).__name__}", path
                )
            problem = text_problem(key)
            if problem is not None:
                raise InvalidValue(f"a key {problem}", path)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
        return
    raise InvalidValue(
        f"{type(value).__name__} is not JSON (use str, int, float, bool, None, list or dict)", path
    )


def _check_json_float(value: float, path: str) -> None:
    if not math.isfinite(value):
        raise InvalidValue(f"{value} is not valid JSON", path)
    if value.is_integer() and abs(value) >= _FLOAT_WITH_EXPONENT:
        # JSON writes it as 2.669420326515355e+16, JSONB keeps 26694203265153550, which reads
        # back as an int that is not the float given: refuse a silent change.
        raise InvalidValue(f"{value!r} would read back as an int from JSONB; pass an int", path)


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


# -- whole columns at once (bulk_create) -----------------------------------------------------
# Each answers "would every value pass its converter unchanged?" with C-level passes over the
# column (map, set, join, min/max); False sends the caller to the converter, value by value,
# for the exact error or the normalised value.


def _all_text(length: int | None) -> AllValid:
    def all_valid(values: Sequence[Any], types: AbstractSet[type]) -> bool:
        if not types <= {str}:
            return False
        if length is not None and max(map(len, values), default=0) > length:
            return False
        joined = "".join(values)  # NUL or a lone surrogate in any value is in the joined text
        return text_problem(joined) is None

    return all_valid


def _all_integers(bound: int) -> AllValid:
    def all_valid(values: Sequence[Any], types: AbstractSet[type]) -> bool:
        return types <= {int} and (not values or (-bound <= min(values) and max(values) < bound))

    return all_valid


def _all_of(kind: type) -> AllValid:
    def all_valid(values: Sequence[Any], types: AbstractSet[type]) -> bool:
        return types <= {kind}

    return all_valid


def _all_datetimes(timezone: bool) -> AllValid:
    def all_valid(values: Sequence[Any], types: AbstractSet[type]) -> bool:
        if not types <= {datetime}:
            return False
        return not timezone or None not in {value.utcoffset() for value in values}

    return all_valid


# -- cursor values (JSON) back to column values ----------------------------------------------


def _decimal_from_json(value: Any) -> Any:
    return Decimal(value) if isinstance(value, str) else value


def _same(value: Any) -> Any:
    return value


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """What nexus-store does with values of one column type.

    ``copy_type``: the name psycopg dumps values as in binary COPY; None when ``bulk_create``
    cannot COPY the type. ``driver_native``: psycopg returns exactly what SQLAlchemy's result
    processing would, so a lookup can skip SQLAlchemy. ``orderable``: usable in ``order_by``
    and in comparisons. ``from_json``: a keyset cursor's JSON value back to a column value
    (before it is converted like any other value).
    """

    convert: Convert
    copy_type: str | None
    driver_native: bool
    orderable: bool = True
    from_json: Callable[[Any], Any] = _same
    #: The whole-column form of ``convert`` for values it returns unchanged; None: value by
    #: value only (types whose converter normalises, such as NUMERIC, or nests, such as JSON).
    all_valid: AllValid | None = None


# Types this module does not know: PostgreSQL's own checks apply, COPY and the lookup fast
# path are not used.
_UNKNOWN = ColumnType(_passthrough, copy_type=None, driver_native=False)


def _numeric_type(type_: Numeric[Any]) -> ColumnType:
    return ColumnType(
        _numeric(type_.precision, type_.scale),
        "numeric",
        driver_native=bool(type_.asdecimal),  # psycopg always returns Decimal
        from_json=_decimal_from_json,
    )


def _integer_type(bound: int, copy_type: str) -> ColumnType:
    return ColumnType(
        _integer(bound), copy_type, driver_native=True, all_valid=_all_integers(bound)
    )


def _text_type(length: int | None, copy_type: str) -> ColumnType:
    return ColumnType(_text(length), copy_type, driver_native=True, all_valid=_all_text(length))


# (type, its ColumnType): a subclass comes before its base, the first isinstance match wins.
_TABLE: tuple[tuple[type[TypeEngine[Any]], Callable[[Any], ColumnType]], ...] = (
    (
        Boolean,
        lambda _: ColumnType(
            _boolean, "bool", driver_native=True, orderable=False, all_valid=_all_of(bool)
        ),
    ),
    (SmallInteger, lambda _: _integer_type(2**15, "int2")),
    (BigInteger, lambda _: _integer_type(2**63, "int8")),
    (Integer, lambda _: _integer_type(2**31, "int4")),
    (
        Float,
        lambda _: ColumnType(_float, "float8", driver_native=True, from_json=_decimal_from_json),
    ),
    (Numeric, _numeric_type),
    # SQLAlchemy maps a PostgreSQL enum's strings to Python enum members: not driver-native.
    (Enum, lambda t: ColumnType(_text(t.length), "varchar", driver_native=False)),
    (Text, lambda t: _text_type(t.length, "text")),
    (String, lambda t: _text_type(t.length, "varchar")),
    (
        DateTime,
        lambda t: ColumnType(
            _datetime(bool(t.timezone)),
            "timestamptz" if t.timezone else "timestamp",
            driver_native=True,
            from_json=datetime.fromisoformat,
            all_valid=_all_datetimes(bool(t.timezone)),
        ),
    ),
    (
        Date,
        lambda _: ColumnType(
            _date,
            "date",
            driver_native=True,
            from_json=date.fromisoformat,
            all_valid=_all_of(date),
        ),
    ),
    (
        Uuid,
        lambda t: ColumnType(
            _uuid, "uuid", driver_native=bool(t.as_uuid), all_valid=_all_of(uuid.UUID)
        ),
    ),
    (JSONB, lambda _: ColumnType(_json, "jsonb", driver_native=True, orderable=False)),
    (JSON, lambda _: ColumnType(_json, "json", driver_native=True, orderable=False)),
)


def _array_type(type_: ARRAY[Any]) -> ColumnType:
    item = column_type(type_.item_type)
    return ColumnType(
        _array(item.convert),
        None if item.copy_type is None else f"{item.copy_type}[]",
        driver_native=item.driver_native,
        orderable=False,
    )


def column_type(type_: TypeEngine[Any]) -> ColumnType:
    """The row of the table for a column's SQLAlchemy type."""
    if isinstance(type_, ARRAY):
        return _array_type(type_)
    for cls, make in _TABLE:
        if isinstance(type_, cls):
            return make(type_)
    return _UNKNOWN
