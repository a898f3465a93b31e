"""The transactional outbox: audited entity changes, relayed from PostgreSQL to MongoDB.

    from nexus_store.outbox import audit_context

    with audit_context("user:42", ip="203.0.113.9"):
        await store.entities.update(User, user_id, full_name="Ada L.", audit=True)
    store.outbox.start_relay()  # or run `nexus-store outbox relay`

See :mod:`nexus_store.outbox.changes` (records and redaction) and
:mod:`nexus_store.outbox.relay` (delivery).
"""

from __future__ import annotations

from nexus_store.outbox.changes import (
    REDACTED,
    AuditContext,
    AuditPolicy,
    Change,
    audit_context,
    policy_for,
)
from nexus_store.outbox.relay import OutboxLag, OutboxRelay

__all__ = [
    "REDACTED",
    "AuditContext",
    "AuditPolicy",
    "Change",
    "OutboxLag",
    "OutboxRelay",
    "audit_context",
    "policy_for",
]
