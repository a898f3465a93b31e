"""The column-type table: what validation, COPY and the lookup fast path make of each type."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Enum,
    Float,
    Integer,
    Interval,
    Numeric,
    PickleType,
    SmallInteger,
    String,
    Text,
    Time,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from nexus_store.postgres._types import InvalidValue, column_type
from nexus_store.postgres._values import rules_for
from nexus_store.postgres.models import Base


@pytest.mark.parametrize(
    ("type_", "copy_type", "driver_native", "orderable"),
    [
        (Boolean(), "bool", True, False),
        (SmallInteger(), "int2", True, True),
        (Integer(), "int4", True, True),
        (BigInteger(), "int8", True, True),
        (Float(), "float8", True, True),
        (Double(), "float8", True, True),
        (Numeric(15, 2), "numeric", True, True),
        (Numeric(15, 2, asdecimal=False), "numeric", False, True),
        (String(50), "varchar", True, True),
        (Text(), "text", True, True),
        (Enum("a", "b", name="letters"), "varchar", False, True),
        (DateTime(timezone=True), "timestamptz", True, True),
        (DateTime(), "timestamp", True, True),
        (Date(), "date", True, True),
        (Uuid(), "uuid", True, True),
        (Uuid(as_uuid=False), "uuid", False, True),
        (JSONB(), "jsonb", True, False),
        (JSON(), "json", True, False),
        (ARRAY(String(50)), "varchar[]", True, False),
        (ARRAY(Enum("a", name="one")), "varchar[]", False, False),
        (Interval(), None, False, True),
        (PickleType(), None, False, True),
        (Time(), None, False, True),
        (ARRAY(Interval()), None, False, False),
    ],
)
def test_each_type_has_one_row(
    type_: Any, copy_type: str | None, driver_native: bool, orderable: bool
) -> None:
    row = column_type(type_)
    assert (row.copy_type, row.driver_native, row.orderable) == (
        copy_type,
        driver_native,
        orderable,
    )


def test_converters_and_cursor_values_follow_the_type() -> None:
    assert column_type(SmallInteger()).convert(2**15 - 1, "n") == 2**15 - 1
    with pytest.raises(InvalidValue):
        column_type(SmallInteger()).convert(2**15, "n")
    with pytest.raises(InvalidValue):
        column_type(ARRAY(String(2))).convert(["abc"], "tags")
    assert column_type(Numeric(10, 2)).from_json("1.50") == Decimal("1.50")
    assert column_type(DateTime(timezone=True)).from_json("2024-01-02T03:04:05+00:00") == (
        datetime.fromisoformat("2024-01-02T03:04:05+00:00")
    )
    assert column_type(Date()).from_json("2024-01-02") == date(2024, 1, 2)
    assert column_type(String(5)).from_json("x") == "x"


def test_every_built_in_column_can_be_copied_and_looked_up_natively() -> None:
    for table in Base.metadata.tables.values():
        for column in table.columns:
            row = column_type(column.type)
            assert row.copy_type is not None, f"{table.name}.{column.name}"
            assert row.driver_native, f"{table.name}.{column.name}"


class _Name(str):
    """A str subclass: its converter takes it, the whole-column check leaves it to it."""


def _battery() -> list[Any]:
    return [
        *("", "a", "planning", "high", "medium", "é", "a\x00b", "\ud800", "x" * 70, "y" * 400),
        *(0, 1, -1, 2**15, 2**31 - 1, 2**31, -(2**63), 2**63, True, False, None, 1.5, 2.0),
        *(Decimal("1"), Decimal("NaN"), uuid.uuid4(), str(uuid.uuid4()), b"x", [1], {"a": 1}),
        *(datetime.now(UTC), datetime(2026, 1, 1), date(2026, 1, 1), _Name("subclass")),
    ]


def test_whole_column_checks_agree_with_the_converters() -> None:
    """``TableRules.all_valid`` (bulk_create's fast path) accepts a column exactly when every
    value would pass the column's converter unchanged; anything else goes value by value."""
    checked = 0
    for table in Base.metadata.sorted_tables:
        rules = rules_for(table)
        for name, all_valid in rules.all_valid.items():
            passes = []
            for value in _battery():
                try:
                    unchanged = rules.converters[name](value, name) is value
                except InvalidValue:
                    unchanged = False
                passes.append(unchanged)
                # Sound always; complete for the built-in types (a subclass of str goes
                # value by value, where the converter takes it).
                expected = unchanged and not isinstance(value, _Name)
                assert all_valid([value, value]) is expected, (table.name, name, value)
                checked += 1
            good = [
                value
                for value, ok in zip(_battery(), passes, strict=True)
                if ok and all_valid([value])
            ]
            bad = [value for value, ok in zip(_battery(), passes, strict=True) if not ok]
            if good:
                assert all_valid(good * 3)
                for value in bad:  # one bad value anywhere fails the column
                    assert not all_valid([*good, value, *good]), (table.name, name, value)
    assert checked > 1000
