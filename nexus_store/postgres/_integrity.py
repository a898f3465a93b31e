"""Database errors turned into nexus-store errors that name the constraint and the field.

Messages never quote the offending values (they may be personal data); they name the table,
the column and the constraint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg.errors
import sqlalchemy.exc
from sqlalchemy import CheckConstraint, ForeignKeyConstraint, MetaData

from nexus_store._errors import describe
from nexus_store.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    NexusStoreError,
    ValidationError,
)
from nexus_store.postgres.models.base import Base

__all__ = ["translate_errors"]

_UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
)
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)


def _constraint_fields(metadata: MetaData, name: str | None) -> tuple[str | None, str | None]:
    """(field, referred table) of the constraint or unique index called ``name``."""
    if not name:
        return None, None
    for table in metadata.tables.values():
        for index in table.indexes:
            if index.name == name:
                return ",".join(column.name for column in index.columns), None
        for constraint in table.constraints:
            if constraint.name != name:
                continue
            if isinstance(constraint, CheckConstraint):
                return constraint.info.get("field"), None
            if isinstance(constraint, ForeignKeyConstraint):
                return ",".join(constraint.column_keys), constraint.referred_table.name
            columns = getattr(constraint, "columns", ())
            return ",".join(column.name for column in columns) or None, None
    return None, None


def _integrity(orig: Any, metadata: MetaData) -> NexusStoreError:
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    table = getattr(diag, "table_name", None) or "?"
    column = getattr(diag, "column_name", None)
    field, referred = _constraint_fields(metadata, constraint)
    field = field or column
    if isinstance(orig, psycopg.errors.UniqueViolation):
        return ConflictError(
            f"{table}.{field or '?'} already has this value (constraint {constraint})",
            field=field,
            constraint=constraint,
        )
    if isinstance(orig, psycopg.errors.ForeignKeyViolation):
        detail = getattr(diag, "message_detail", "") or ""
        if "is still referenced" in detail:
            message = f"rows of {table} still refer to this row through {field} ({constraint})"
        else:
            message = f"{table}.{field} refers to a {referred or 'row'} that does not exist"
        return IntegrityError(message, field=field, constraint=constraint)
    if isinstance(orig, psycopg.errors.NotNullViolation):
        return ValidationError(column or "?", "is required")
    if isinstance(orig, psycopg.errors.CheckViolation):
        return ValidationError(field or "?", f"breaks the rule {constraint} of {table}")
    return IntegrityError(describe(orig), field=field, constraint=constraint)


def _translate(  # noqa: PLR0911 - one answer per kind of driver error
    orig: BaseException | None, exc: BaseException, metadata: MetaData
) -> Exception:
    if isinstance(orig, psycopg.errors.InsufficientPrivilege) and "row-level security" in str(orig):
        # A write outside the current tenant (or outside any tenant scope) under a role
        # subject to the tenant_isolation policies.
        return IntegrityError(
            f"{describe(orig)}: the row is outside the current tenant scope",
            field=None,
            constraint="tenant_isolation",
        )
    if isinstance(orig, psycopg.IntegrityError):
        return _integrity(orig, metadata)
    if isinstance(orig, _RETRYABLE):
        return ConflictError(f"concurrent update, retry the transaction: {describe(orig)}")
    if isinstance(orig, psycopg.errors.UndefinedTable):
        return ConfigurationError(
            f"{describe(orig)}; run the migrations (nexus-store init)", setting="postgres.url"
        )
    if isinstance(orig, psycopg.DataError):
        return ValidationError("value", describe(orig))
    if isinstance(exc, _UNAVAILABLE) or isinstance(
        orig, psycopg.OperationalError | psycopg.InterfaceError
    ):
        return BackendUnavailableError("postgres", describe(exc))
    return NexusStoreError(f"postgres: {describe(orig or exc)}")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy/psycopg errors raised inside as nexus-store errors; constraints
    are looked up among the tables on ``Base``."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        raise _translate(exc.orig, exc, Base.metadata) from exc
    except psycopg.Error as exc:  # raw driver calls (lookups, COPY)
        raise _translate(exc, exc, Base.metadata) from exc
    except (*_UNAVAILABLE, TimeoutError, OSError) as exc:
        raise BackendUnavailableError("postgres", describe(exc)) from exc
