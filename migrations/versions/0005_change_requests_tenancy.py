"""change requests under row-level security: the tenant policy on change_requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 06:00:00

A change request names its target polymorphically (``resource_type``, ``resource_id``), so it
cannot be scoped through a parent row as 0002's child tables are: it gets its own
``organization_id``, the tenant scope it was requested in (``store.approvals`` sets it), and
the same ``ENABLE``/``FORCE`` row-level security and ``tenant_isolation`` policy.

A request made outside any scope has no organization. It is visible to every scope only
when its target table is not under row-level security itself (a change of ``users``): a
request with no organization that targets a tenant-scoped table (raw SQL could insert one)
is neither visible nor writable, so it can never be approved into another tenant's row.
``change_request_approvals`` is scoped through its request, like 0002's children.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT = "NULLIF(current_setting('app.tenant', true), '')::uuid"
# The target table is under row-level security (0002's tables, or an application's own).
TARGET_SCOPED = (
    "COALESCE((SELECT relrowsecurity FROM pg_class "
    "WHERE oid = to_regclass(quote_ident(resource_type))), false)"
)
POLICIES: dict[str, str] = {
    "change_requests": (
        f"organization_id = {TENANT} OR (organization_id IS NULL AND NOT {TARGET_SCOPED})"
    ),
    "change_request_approvals": (
        "EXISTS (SELECT 1 FROM change_requests "
        "WHERE change_requests.id = change_request_approvals.request_id)"
    ),
}


def upgrade() -> None:
    op.add_column("change_requests", sa.Column("organization_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_change_requests_organization_id_organizations"),
        "change_requests",
        "organizations",
        ["organization_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(
        op.f("ix_change_requests_organization_id"), "change_requests", ["organization_id"]
    )
    for table, condition in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING ({condition}) WITH CHECK ({condition})"
        )


def downgrade() -> None:
    for table in reversed(POLICIES):
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.drop_index(op.f("ix_change_requests_organization_id"), table_name="change_requests")
    op.drop_constraint(
        op.f("fk_change_requests_organization_id_organizations"),
        "change_requests",
        type_="foreignkey",
    )
    op.drop_column("change_requests", "organization_id")
