"""Schema conventions hold for every built-in model (checked on the metadata the migration
was generated from; ``alembic check`` proves the database matches it)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, DateTime, Numeric, Table, UniqueConstraint, Uuid

from nexus_store.postgres.models import NEXUS_TABLES, Base
from nexus_store.postgres.models.base import CHOICES


def _tables() -> list[Table]:
    return [Base.metadata.tables[name] for name in sorted(NEXUS_TABLES)]


def _leading_columns(table: Table) -> set[str]:
    leading = {next(iter(index.columns)).name for index in table.indexes if index.columns}
    leading |= {
        next(iter(constraint.columns)).name
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint) and constraint.columns
    }
    return leading


def test_every_foreign_key_leads_an_index() -> None:
    for table in _tables():
        indexed = _leading_columns(table)
        for key in table.foreign_keys:
            assert key.parent.name in indexed, f"{table.name}.{key.parent.name} has no index"
            assert key.ondelete in {"CASCADE", "SET NULL", "RESTRICT"}, (
                f"{table.name}.{key.parent.name} has no deliberate ON DELETE rule"
            )


def test_no_index_duplicates_another() -> None:
    for table in _tables():
        shapes = [
            tuple(c.name for c in index.columns)
            for index in table.indexes
            if not index.dialect_options["postgresql"].get("using")
        ]
        shapes += [
            tuple(c.name for c in constraint.columns)
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint)
        ]
        for shape in shapes:
            covering = [
                other for other in shapes if other != shape and other[: len(shape)] == shape
            ]
            assert not covering, f"{table.name}: index on {shape} is covered by {covering}"


def test_entity_conventions() -> None:
    for table in _tables():
        if table.name == "outbox":
            continue
        assert isinstance(table.c.id.type, Uuid) and table.c.id.primary_key
        for name in ("created_at", "updated_at"):
            assert isinstance(table.c[name].type, DateTime) and table.c[name].type.timezone
        assert "version" in table.c


def test_choices_are_checked_in_the_database() -> None:
    for table in _tables():
        checks = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        for column in table.columns:
            if CHOICES in column.info:
                assert f"ck_{table.name}_{column.name}" in checks


def test_money_is_numeric_never_float() -> None:
    for table in _tables():
        for column in table.columns:
            if column.name in {"amount", "balance", "budget", "spent"}:
                assert type(column.type) is Numeric and column.type.scale == 2
