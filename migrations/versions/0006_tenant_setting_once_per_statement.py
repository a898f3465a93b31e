"""tenant policies read the tenant setting once per statement

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 06:10:00

0002 and 0005 compare with ``NULLIF(current_setting('app.tenant', true), '')::uuid``: a
stable expression that the planner evaluates while planning to estimate how many rows match.
A statement that sets the tenant itself (``store.entities`` in a tenant scope, outside a
transaction: see ``nexus_store/postgres/_transaction.py``) is planned before the setting
exists, so the estimate is "no row of this organization", and a lookup by key took the
organization index and filtered 10,000 rows. As a scalar sub-select the setting becomes an
InitPlan: read once per statement, when the scan first needs it, and estimated like any
parameter (the column's number of distinct organizations). Same conditions otherwise.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PER_ROW = "NULLIF(current_setting('app.tenant', true), '')::uuid"
ONCE = f"(SELECT {PER_ROW})"
TARGET_SCOPED = (
    "COALESCE((SELECT relrowsecurity FROM pg_class "
    "WHERE oid = to_regclass(quote_ident(resource_type))), false)"
)


def _policies(tenant: str) -> dict[str, str]:
    """The policies of 0002 and 0005 that compare with ``tenant`` (children are unchanged:
    they go through their parent's policy)."""
    return {
        "organizations": f"id = {tenant}",
        "organization_members": f"organization_id = {tenant}",
        "projects": f"organization_id = {tenant}",
        "documents": f"organization_id = {tenant}",
        "financial_accounts": f"organization_id = {tenant}",
        "budgets": f"organization_id = {tenant}",
        "change_requests": (
            f"organization_id = {tenant} OR (organization_id IS NULL AND NOT {TARGET_SCOPED})"
        ),
    }


def _alter(tenant: str) -> None:
    for table, condition in _policies(tenant).items():
        op.execute(
            f"ALTER POLICY tenant_isolation ON {table} USING ({condition}) WITH CHECK ({condition})"
        )


def upgrade() -> None:
    _alter(ONCE)


def downgrade() -> None:
    _alter(PER_ROW)
