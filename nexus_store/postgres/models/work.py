"""Work: projects, tasks and their dependencies, documents with versions and shares, files."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.postgres.models.base import Entity, SoftDeletable, choice, non_negative

__all__ = [
    "Document",
    "DocumentShare",
    "DocumentVersion",
    "File",
    "Project",
    "Task",
    "TaskDependency",
]

PRIORITIES = ("low", "medium", "high", "critical")


class Project(SoftDeletable, Entity):
    """A piece of work of an organization, with a timeline and a budget."""

    __tablename__ = "projects"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # Projects outlive the people who created them.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = choice(
        "planning", "active", "on_hold", "completed", "cancelled", default="planning"
    )
    priority: Mapped[str] = choice(*PRIORITIES, default="medium")
    start_date: Mapped[date | None]
    end_date: Mapped[date | None]
    budget: Mapped[Decimal | None] = non_negative(Numeric(15, 2))

    __table_args__ = (
        CheckConstraint(
            "end_date IS NULL OR start_date IS NULL OR end_date >= start_date",
            name="timeline",
            info={"field": "end_date"},
        ),
        Index("ix_projects_status", "status"),
        # Typo-tolerant search on names (search(..., fuzzy=True)) uses pg_trgm.
        Index(
            "ix_projects_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
    )


class Task(SoftDeletable, Entity):
    """A unit of work in a project."""

    __tablename__ = "tasks"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = choice(
        "todo", "in_progress", "review", "done", "cancelled", default="todo"
    )
    priority: Mapped[str] = choice(*PRIORITIES, default="medium")
    estimated_hours: Mapped[Decimal | None] = non_negative(Numeric(7, 2))
    actual_hours: Mapped[Decimal | None] = non_negative(Numeric(7, 2))
    due_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    tags: Mapped[list[str]] = mapped_column(
        ARRAY(String(50)), default=list, server_default=text("'{}'::varchar[]")
    )

    __table_args__ = (
        Index("ix_tasks_status", "status"),
        Index("ix_tasks_due_at", "due_at"),
        Index("ix_tasks_tags", "tags", postgresql_using="gin"),
        Index(
            "ix_tasks_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ),
    )


class TaskDependency(Entity):
    """``task`` cannot start before ``depends_on`` is done."""

    __tablename__ = "task_dependencies"

    # Indexed by uq_task_dependencies_task_id_depends_on_id (leading column).
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    depends_on_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )

    __table_args__ = (
        UniqueConstraint("task_id", "depends_on_id"),
        CheckConstraint(
            "task_id <> depends_on_id", name="not_self", info={"field": "depends_on_id"}
        ),
    )


class Document(SoftDeletable, Entity):
    """Structured content (JSONB), versioned in ``document_versions``, shared per user."""

    __tablename__ = "documents"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'::jsonb")
    )
    current_revision: Mapped[int] = non_negative(Integer, default=0, server_default=text("0"))

    __table_args__ = (
        Index("ix_documents_content", "content", postgresql_using="gin"),
        Index(
            "ix_documents_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ),
    )


class DocumentVersion(Entity):
    """One saved revision of a document's content (history is kept, never edited)."""

    __tablename__ = "document_versions"

    # Indexed by uq_document_versions_document_id_revision (leading column).
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    revision: Mapped[int] = non_negative(Integer)
    content: Mapped[dict[str, Any]]
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    comment: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (UniqueConstraint("document_id", "revision"),)


class DocumentShare(Entity):
    """A document shared with a user, with a permission level."""

    __tablename__ = "document_shares"

    # Indexed by uq_document_shares_document_id_user_id (leading column).
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    permission: Mapped[str] = choice("view", "comment", "edit", "admin", default="view")

    __table_args__ = (UniqueConstraint("document_id", "user_id"),)


class File(SoftDeletable, Entity):
    """An uploaded file's metadata. ``sha256`` dedupes: one owner stores a content once."""

    __tablename__ = "files"

    # Indexed by uq_files_owner_id_sha256 (leading column).
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = non_negative(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(1024))
    is_public: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    download_count: Mapped[int] = non_negative(BigInteger, default=0, server_default=text("0"))

    __table_args__ = (
        UniqueConstraint("owner_id", "sha256"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex", info={"field": "sha256"}),
    )
