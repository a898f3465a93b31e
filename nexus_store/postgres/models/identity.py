"""Identity: users, roles, organizations and their members, API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.postgres.models.base import Entity, SoftDeletable, choice, secret

__all__ = ["ApiKey", "Organization", "OrganizationMember", "Role", "User", "UserRole"]


class User(SoftDeletable, Entity):
    """A person who signs in. Only a password hash is ever stored."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    username: Mapped[str] = mapped_column(String(50), unique=True, index=True)
    password_hash: Mapped[str] = secret(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    preferences: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'::jsonb")
    )
    last_login_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_users_preferences", "preferences", postgresql_using="gin"),
        # Substring search on names (``username__ilike``) uses pg_trgm.
        Index(
            "ix_users_username_trgm",
            "username",
            postgresql_using="gin",
            postgresql_ops={"username": "gin_trgm_ops"},
        ),
    )


class Role(Entity):
    """A named set of permissions granted to users."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    description: Mapped[str | None] = mapped_column(String(500))
    permissions: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'::jsonb"))


class UserRole(Entity):
    """Many-to-many between users and roles; removing either removes the grant."""

    __tablename__ = "user_roles"

    # Indexed by uq_user_roles_user_id_role_id (leading column).
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("roles.id", ondelete="CASCADE"), index=True
    )
    granted_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )

    __table_args__ = (UniqueConstraint("user_id", "role_id"),)


class Organization(SoftDeletable, Entity):
    """A tenant: owns projects, documents and financial data."""

    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True, index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'::jsonb")
    )


class OrganizationMember(Entity):
    """A user's membership of an organization, with their role in it."""

    __tablename__ = "organization_members"

    # Indexed by uq_organization_members_organization_id_user_id (leading column).
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = choice("owner", "admin", "member", "viewer", default="member")

    __table_args__ = (UniqueConstraint("organization_id", "user_id"),)


class ApiKey(Entity):
    """An API key. Only its SHA-256 hash is stored; ``prefix`` identifies it to people."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = secret(String(64), lookup=True, unique=True, index=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'::jsonb"))
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
