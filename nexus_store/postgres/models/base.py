"""The declarative ``Base`` every entity derives from, and the conventions shared by models.

Applications add their own models on the same ``Base`` (or on :class:`Entity`, which brings
the conventions) and use them with the same repository:

    from nexus_store.postgres.models import Entity, choice, non_negative

    class Invoice(Entity):
        __tablename__ = "invoices"

        number: Mapped[str] = mapped_column(String(32), unique=True)
        status: Mapped[str] = choice("draft", "sent", "paid", default="draft")
        total: Mapped[Decimal] = non_negative(Numeric(15, 2))

``choice`` and ``non_negative`` columns get a named CHECK constraint in the database and the
same rule is enforced in Python by the repository before anything is sent.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, declared_attr, mapped_column
from sqlalchemy.types import TypeEngine

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Entity",
    "SoftDeletable",
    "choice",
    "non_negative",
    "positive",
    "secret",
]

# Every constraint and index gets a predictable name, so that errors can name them and
# migrations can drop them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Column ``info`` keys understood by the Base (CHECK constraints) and the repository
# (validation before any SQL is sent).
CHOICES = "nexus_choices"
MINIMUM = "nexus_minimum"  # (bound, inclusive)
SECRET = "nexus_secret"  # noqa: S105  # True: exact lookups (eq) allowed; False: no filter


class Base(DeclarativeBase):
    """SQLAlchemy 2.0 typed declarative base of all nexus-store entities."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, TypeEngine[Any]] = {
        uuid.UUID: Uuid(),
        datetime: DateTime(timezone=True),
        date: Date(),
        dict[str, Any]: JSONB(),
        list[Any]: JSONB(),
        Decimal: Numeric(15, 2),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            _add_declared_checks(table)

    def __repr__(self) -> str:
        # Only the key: entity fields may hold personal data or hashes.
        key = getattr(self, "id", None)
        return f"<{type(self).__name__} id={key!s}>"


def _add_declared_checks(table: Table) -> None:
    """Turn ``choice``/``non_negative`` column info into named CHECK constraints."""
    existing = {constraint.name for constraint in table.constraints}
    for column in table.columns:
        checks: list[tuple[str, Any]] = []
        if CHOICES in column.info:
            checks.append((column.name, column.in_(column.info[CHOICES])))
        if MINIMUM in column.info:
            bound, inclusive = column.info[MINIMUM]
            condition = column >= bound if inclusive else column > bound
            checks.append(
                (f"{column.name}_{'non_negative' if inclusive else 'positive'}", condition)
            )
        for name, condition in checks:
            if name not in existing:
                table.append_constraint(
                    CheckConstraint(condition, name=name, info={"field": column.name})
                )


def choice(*values: str, default: str | None = None, nullable: bool = False) -> MappedColumn[Any]:
    """A short text column limited to ``values`` (CHECK constraint + Python validation)."""
    return mapped_column(
        String(max(len(value) for value in values)),
        default=default,
        server_default=default,
        nullable=nullable,
        info={CHOICES: tuple(values)},
    )


def non_negative(
    type_: TypeEngine[Any] | type[TypeEngine[Any]], **kwargs: Any
) -> MappedColumn[Any]:
    """A numeric column that must be >= 0 (hours, sizes, budgets, counters)."""
    return mapped_column(type_, info={MINIMUM: (0, True)}, **kwargs)


def positive(type_: TypeEngine[Any] | type[TypeEngine[Any]], **kwargs: Any) -> MappedColumn[Any]:
    """A numeric column that must be > 0 (transaction amounts, budget limits)."""
    return mapped_column(type_, info={MINIMUM: (0, False)}, **kwargs)


def secret(
    type_: TypeEngine[Any] | type[TypeEngine[Any]], *, lookup: bool = False, **kwargs: Any
) -> MappedColumn[Any]:
    """A column holding a secret (a password hash, a key hash): never orderable, never a
    filter. A ``like`` filter or an ordering would let whoever controls a filter dict read
    it back a prefix at a time. ``lookup=True`` opts in to exact matches (``eq``) only, for a
    high-entropy value looked up whole (the SHA-256 of an API key)."""
    return mapped_column(type_, info={SECRET: lookup}, **kwargs)


class Entity(Base):
    """Conventions: UUID key, ``created_at``/``updated_at`` (timestamptz) and ``version``.

    ``updated_at`` and ``version`` are maintained by the repository on every update;
    ``version`` is the optimistic-concurrency token (``update(..., expected_version=3)``).
    """

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True,
        default=uuid.uuid4,
        server_default=func.gen_random_uuid(),
        sort_order=-100,
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), sort_order=100)
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), onupdate=func.now(), sort_order=100
    )
    version: Mapped[int] = mapped_column(default=1, server_default=text("1"), sort_order=100)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # Applications that use ORM sessions on these models get the same optimistic
        # concurrency: SQLAlchemy bumps ``version`` and raises StaleDataError on a race.
        return {"version_id_col": cls.__table__.c.version}


class SoftDeletable:
    """Mixin: ``delete(soft=True)`` sets ``deleted_at``; such rows are hidden by default."""

    deleted_at: Mapped[datetime | None] = mapped_column(default=None, sort_order=101)
