"""Checking caller values against a table's columns before any SQL is sent.

Each mapped column gets one converter, built once per table: its type's converter (see
``_types``) plus the column's declared choices, minimum and nullability. A bad value raises
:class:`ValidationError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.dialects.postgresql import ARRAY

from nexus_store.errors import ValidationError
from nexus_store.postgres._types import AllValid, Convert, InvalidValue, column_type
from nexus_store.postgres.models.base import CHOICES, MINIMUM, SECRET

__all__ = ["TableRules", "rules_for"]


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


def _all_valid_with_rules(
    column: Column[Any], all_valid: AllValid | None
) -> Callable[[Sequence[Any]], bool] | None:
    """The whole-column form of :func:`_with_rules`: True when every value of ``values``
    would pass the column's converter and rules unchanged (None: no whole-column form)."""
    if all_valid is None:
        return None
    choices = column.info.get(CHOICES)
    allowed = None if choices is None else frozenset(choices)
    minimum = column.info.get(MINIMUM)
    nullable = bool(column.nullable)

    def check(values: Sequence[Any]) -> bool:
        types = set(map(type, values))
        if type(None) in types:
            if not nullable:
                return False
            types.discard(type(None))
            values = [value for value in values if value is not None]
        if not all_valid(values, types):
            return False
        if allowed is not None and not allowed.issuperset(values):
            return False
        if minimum is not None and values:
            bound, inclusive = minimum
            lowest = min(values)
            if lowest < bound or (not inclusive and lowest == bound):
                return False
        return True

    return check


@dataclass(frozen=True)
class TableRules:
    """Converters and facts about one table's columns, keyed by column name."""

    table: Table
    converters: dict[str, Convert]
    required: frozenset[str]
    orderable: frozenset[str]
    #: Columns marked ``secret()``: name -> whether exact lookups (``eq``) are allowed.
    secrets: dict[str, bool]
    #: Column name -> a check of many values at once (``bulk_create``), where the type has one.
    all_valid: dict[str, Callable[[Sequence[Any]], bool]]

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
        item = column_type(type_.item_type if isinstance(type_, ARRAY) else type_).convert
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
            field = f"{prefix}{name}" if isinstance(name, str) and name else f"{prefix}{name!r}"
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
            column.name: _with_rules(column, column_type(column.type).convert)
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
        secrets = {
            column.name: bool(column.info[SECRET])
            for column in table.columns
            if SECRET in column.info
        }
        orderable = frozenset(
            column.name
            for column in table.columns
            if column_type(column.type).orderable and column.name not in secrets
        )
        all_valid = {
            column.name: check
            for column in table.columns
            if (check := _all_valid_with_rules(column, column_type(column.type).all_valid))
        }
        rules = _cache[table] = TableRules(
            table, converters, required, orderable, secrets, all_valid
        )
    return rules
