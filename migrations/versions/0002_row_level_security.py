"""row-level security: tenant isolation on every organization-owned table

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 03:20:00

Each organization-owned table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (so the owning
migrator is subject too, unless it has ``BYPASSRLS``) and one policy, ``tenant_isolation``,
for every command, keyed on the transaction-local setting ``app.tenant``. Child tables are
scoped through their parent (see docs/postgres.md, Tenancy): a row is visible, and may be
written, only when its parent row is; the parent's own policy applies inside the sub-select.
Outside a tenant scope the setting is empty, compares as NULL: no rows, every write refused.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# After a transaction-local set_config the setting reads '' (not NULL) for the rest of the
# session, hence the NULLIF: '' must mean "no tenant", never a cast error.
TENANT = "NULLIF(current_setting('app.tenant', true), '')::uuid"


def _through(parent: str, column: str, table: str) -> str:
    # Fixed table and column names of this file, never input.
    return f"EXISTS (SELECT 1 FROM {parent} WHERE {parent}.id = {table}.{column})"  # noqa: S608


POLICIES: dict[str, str] = {
    "organizations": f"id = {TENANT}",
    "organization_members": f"organization_id = {TENANT}",
    "projects": f"organization_id = {TENANT}",
    "documents": f"organization_id = {TENANT}",
    "financial_accounts": f"organization_id = {TENANT}",
    "budgets": f"organization_id = {TENANT}",
    "tasks": _through("projects", "project_id", "tasks"),
    "task_dependencies": (
        f"{_through('tasks', 'task_id', 'task_dependencies')} AND "
        f"{_through('tasks', 'depends_on_id', 'task_dependencies')}"
    ),
    "document_versions": _through("documents", "document_id", "document_versions"),
    "document_shares": _through("documents", "document_id", "document_shares"),
    "transactions": _through("financial_accounts", "account_id", "transactions"),
    "budget_alerts": _through("budgets", "budget_id", "budget_alerts"),
    # A file belongs to its owner; one attached to a project is that organization's.
    "files": f"project_id IS NULL OR {_through('projects', 'project_id', 'files')}",
}


def upgrade() -> None:
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
