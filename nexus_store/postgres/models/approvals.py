"""Change requests: changes to approval-guarded fields, waiting for (or past) a decision."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.postgres.models.base import Entity, choice, non_negative, positive

__all__ = ["REQUEST_STATUSES", "ChangeRequest", "ChangeRequestApproval"]

REQUEST_STATUSES = (
    "pending",
    "approved",
    "rejected",
    "applied",
    "conflicted",
    "expired",
    "cancelled",
)


class ChangeRequest(Entity):
    """A requested change of one row: the diff, the version it was asked against, who asked,
    who may approve, how many approvals it needs, and where it stands."""

    __tablename__ = "change_requests"

    # The tenant scope it was requested in (None outside any); migration 0005's policy.
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    resource_type: Mapped[str] = mapped_column(String(63))  # the table
    resource_id: Mapped[str] = mapped_column(String(64))
    changes: Mapped[dict[str, Any]]  # column -> requested value (JSON form)
    before: Mapped[dict[str, Any]]  # column -> value when requested (JSON form)
    expected_version: Mapped[int | None]
    requester: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    required_approvals: Mapped[int] = positive(Integer, default=1, server_default=text("1"))
    approvals_given: Mapped[int] = non_negative(Integer, default=0, server_default=text("0"))
    # Who may approve: SQL NULL is anyone but the requester; else these ids (JSON list).
    approvers: Mapped[list[Any] | None] = mapped_column(JSONB(none_as_null=True))
    approver_role: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = choice(*REQUEST_STATUSES, default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_change_requests_status_expires_at", "status", "expires_at"),
        Index("ix_change_requests_resource_type_resource_id", "resource_type", "resource_id"),
        Index("ix_change_requests_requester", "requester"),
    )


class ChangeRequestApproval(Entity):
    """One approver's approval of one request (an approver counts once)."""

    __tablename__ = "change_request_approvals"

    # Indexed by uq_change_request_approvals_request_id_approver (leading column).
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("change_requests.id", ondelete="CASCADE")
    )
    approver: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("request_id", "approver"),)
