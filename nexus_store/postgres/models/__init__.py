"""Entity models: identity, work, finance, change requests and the outbox, on one ``Base``.

    from nexus_store.postgres.models import Base, User, Project

Applications define their own models on :class:`Base` (or :class:`Entity` for the
conventions) and use them with ``store.entities`` like the built-in ones.
"""

from __future__ import annotations

from nexus_store.postgres.models.approvals import ChangeRequest, ChangeRequestApproval
from nexus_store.postgres.models.base import (
    NAMING_CONVENTION,
    Base,
    Entity,
    SoftDeletable,
    choice,
    non_negative,
    positive,
)
from nexus_store.postgres.models.finance import Budget, BudgetAlert, FinancialAccount, Transaction
from nexus_store.postgres.models.identity import (
    ApiKey,
    Organization,
    OrganizationMember,
    Role,
    User,
    UserRole,
)
from nexus_store.postgres.models.outbox import Outbox
from nexus_store.postgres.models.work import (
    Document,
    DocumentShare,
    DocumentVersion,
    File,
    Project,
    Task,
    TaskDependency,
)

__all__ = [
    "NAMING_CONVENTION",
    "NEXUS_TABLES",
    "ApiKey",
    "Base",
    "Budget",
    "BudgetAlert",
    "ChangeRequest",
    "ChangeRequestApproval",
    "Document",
    "DocumentShare",
    "DocumentVersion",
    "Entity",
    "File",
    "FinancialAccount",
    "Organization",
    "OrganizationMember",
    "Outbox",
    "Project",
    "Role",
    "SoftDeletable",
    "Task",
    "TaskDependency",
    "Transaction",
    "User",
    "UserRole",
    "choice",
    "non_negative",
    "positive",
]

# The tables nexus-store's own migrations manage; application tables on the same Base are
# left to the application's migrations.
NEXUS_TABLES: frozenset[str] = frozenset(
    model.__tablename__
    for model in (
        User,
        Role,
        UserRole,
        Organization,
        OrganizationMember,
        ApiKey,
        Project,
        Task,
        TaskDependency,
        Document,
        DocumentVersion,
        DocumentShare,
        File,
        FinancialAccount,
        Transaction,
        Budget,
        BudgetAlert,
        Outbox,
        ChangeRequest,
        ChangeRequestApproval,
    )
)
