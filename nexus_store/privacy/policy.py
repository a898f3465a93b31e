"""Which PostgreSQL rows belong to a user, and what erasure does to each of them.

A row belongs to a user when one of its foreign keys points at ``users.id``. By default each
foreign key's own ``ON DELETE`` rule says what the schema's author meant, and erasure does
the same thing through that key without deleting the user (``user_roles.user_id`` cascades,
so the user's grants go; ``user_roles.granted_by_id`` sets null, so grants they made stay):

================  ==========================================================
``ON DELETE``     erasure
================  ==========================================================
``CASCADE``       ``delete``: the row goes (API keys, role grants, shares)
``SET NULL``      ``anonymise``: the link to the user is set to NULL
other / none      ``keep``: the row stays, linked to the anonymised user
================  ==========================================================

A model declares something else with ``__privacy__``; financial records, which the law
requires to keep, use ``keep`` and scrub their personal fields:

    class Invoice(Entity):
        __tablename__ = "invoices"
        __privacy__ = ErasurePolicy("keep", scrub={"billing_name": None, "billing_email": None})

        customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))

The ``users`` row itself is kept as an anonymised, soft-deleted tombstone (see
:data:`USER_TOMBSTONE`), so that kept rows still point at a valid id and a second erasure
finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Column, Table

from nexus_store.errors import ConfigurationError

__all__ = ["USER_TOMBSTONE", "ErasurePolicy", "UserLink", "user_links"]

Scrub = Mapping[str, Any | Callable[[str], Any]]


@dataclass(frozen=True, slots=True)
class ErasurePolicy:
    """What ``erase_user`` does to a row linked to the user.

    ``delete`` removes it; ``anonymise`` sets the user links to NULL and applies ``scrub``;
    ``keep`` leaves the links and applies ``scrub``. ``scrub`` maps a column to its
    replacement: a value, or a function of the user id returning one (for unique columns).
    """

    action: Literal["delete", "anonymise", "keep"]
    scrub: Scrub = field(default_factory=dict)

    def replacements(self, user_id: str) -> dict[str, Any]:
        return {
            name: value(user_id) if callable(value) else value for name, value in self.scrub.items()
        }


# The user row is kept with nothing personal left: unique columns get per-user placeholders,
# the password hash a value no password verifies against.
USER_TOMBSTONE = ErasurePolicy(
    "keep",
    scrub={
        "email": lambda user_id: f"erased-{user_id}@invalid",
        "username": lambda user_id: f"erased-{user_id}",
        "password_hash": "!erased",
        "full_name": None,
        "preferences": {},
        "last_login_at": None,
        "is_active": False,
        "email_verified": False,
    },
)

# nexus-store's own tables that the foreign-key default does not cover as wanted.
_BUILTIN: dict[str, ErasurePolicy] = {
    # An owner's uploads are theirs, not the project's.
    "files": ErasurePolicy("delete"),
}


@dataclass(frozen=True, slots=True)
class UserLink:
    """One column of ``table`` pointing at ``users.id``, and what erasure does through it."""

    table: Table
    column: Column[Any]
    policy: ErasurePolicy


def user_links(models: Mapping[str, type[Any]], users: Table) -> list[UserLink]:
    """Every column with a foreign key to ``users``, ordered by table and column name.

    ``models`` maps table names to mapped classes, for their ``__privacy__``.
    """
    found: list[UserLink] = []
    for name in sorted(models):
        model = models[name]
        table = model.__table__
        if table is users:
            continue
        keys = sorted(
            (fk for fk in table.foreign_keys if fk.column.table is users),
            key=lambda fk: fk.parent.name,
        )
        if not keys:
            continue
        declared = getattr(model, "__privacy__", None)
        if declared is not None and not isinstance(declared, ErasurePolicy):
            raise ConfigurationError(
                f"{name}.__privacy__ must be an ErasurePolicy, got {type(declared).__name__}",
                setting=f"{name}.__privacy__",
            )
        for key in keys:
            policy = declared or _BUILTIN.get(name) or _default_policy(key.ondelete)
            _check_columns(table, policy)
            found.append(UserLink(table, key.parent, policy))
    return found


def _default_policy(ondelete: str | None) -> ErasurePolicy:
    rule = (ondelete or "").upper()
    if rule == "CASCADE":
        return ErasurePolicy("delete")
    if rule == "SET NULL":
        return ErasurePolicy("anonymise")
    return ErasurePolicy("keep")


def _check_columns(table: Table, policy: ErasurePolicy) -> None:
    unknown = sorted(set(policy.scrub) - set(table.columns.keys()))
    if unknown:
        raise ConfigurationError(
            f"{table.name}.__privacy__ scrubs unknown column(s) {', '.join(unknown)}",
            setting=f"{table.name}.__privacy__",
        )
