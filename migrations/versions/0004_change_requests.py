"""change requests: the approval workflow

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 03:14:43.938426

``change_requests`` holds each requested change (table, key, diff, expected version), who
asked, who may approve and how many approvals it needs, and its status; one
``change_request_approvals`` row per approver (unique: an approver counts once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("resource_type", sa.String(length=63), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expected_version", sa.Integer(), nullable=True),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("required_approvals", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("approvals_given", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("approvers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("approver_role", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=10), server_default="pending", nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'applied', 'conflicted', "
            "'expired', 'cancelled')",
            name=op.f("ck_change_requests_status"),
        ),
        sa.CheckConstraint(
            "approvals_given >= 0", name=op.f("ck_change_requests_approvals_given_non_negative")
        ),
        sa.CheckConstraint(
            "required_approvals > 0", name=op.f("ck_change_requests_required_approvals_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_requests")),
    )
    op.create_index("ix_change_requests_requester", "change_requests", ["requester"], unique=False)
    op.create_index(
        "ix_change_requests_resource_type_resource_id",
        "change_requests",
        ["resource_type", "resource_id"],
        unique=False,
    )
    op.create_index(
        "ix_change_requests_status_expires_at",
        "change_requests",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_table(
        "change_request_approvals",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["change_requests.id"],
            name=op.f("fk_change_request_approvals_request_id_change_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_request_approvals")),
        sa.UniqueConstraint(
            "request_id", "approver", name=op.f("uq_change_request_approvals_request_id_approver")
        ),
    )


def downgrade() -> None:
    op.drop_table("change_request_approvals")
    op.drop_index("ix_change_requests_status_expires_at", table_name="change_requests")
    op.drop_index("ix_change_requests_resource_type_resource_id", table_name="change_requests")
    op.drop_index("ix_change_requests_requester", table_name="change_requests")
    op.drop_table("change_requests")
