"""The approval workflow: changes to guarded fields applied only once approved.

``ApprovalPolicy`` (declared on a model as ``__approval__``) lives in :mod:`.policy`; the
``store.approvals`` API in :mod:`.service`.
"""

from nexus_store.approvals.policy import ApprovalPolicy

__all__ = ["ApprovalPolicy"]
