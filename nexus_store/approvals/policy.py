"""What a model declares about approvals: the fields whose changes need one, and how many.

    class Expense(Entity):
        __tablename__ = "expenses"
        __approval__ = ApprovalPolicy(fields=frozenset({"amount"}), approvals=2)

``store.entities.update`` touching ``amount`` then raises :class:`ApprovalRequiredError` and
writes nothing; ``store.approvals.request(Expense, id, changes={"amount": ...}, ...)`` asks
for it. This module imports nothing else of the package, so the write path can consult it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ApprovalPolicy", "approval_policy"]


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """``fields``: columns whose changes need approval. ``approvals``: how many distinct
    approvers (never the requester) a request needs by default. ``approver_role``: if set, an
    approver must hold this role (``roles.name`` through ``user_roles``) by default."""

    fields: frozenset[str]
    approvals: int = 1
    approver_role: str | None = None

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("ApprovalPolicy needs at least one field")
        if self.approvals < 1:
            raise ValueError("ApprovalPolicy.approvals must be at least 1")


def approval_policy(model: type[Any]) -> ApprovalPolicy | None:
    """The model's ``__approval__`` policy, if it declares one."""
    declared = getattr(model, "__approval__", None)
    return declared if isinstance(declared, ApprovalPolicy) else None
