"""The column-type table: what validation, COPY and the lookup fast path make of each type."""

from __future__ import annotations

from datetime import date, datetime
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
