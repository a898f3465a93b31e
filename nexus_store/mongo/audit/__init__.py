"""The append-only, hash-chained audit log.

entry = await store.audit.record("admin:7", "update", "user", "42", before=old, after=new)
result = await store.audit.verify()
assert result.ok, result.reason
"""

from nexus_store.mongo.audit.log import AuditLog, AuditPage, VerifyResult
from nexus_store.mongo.audit.model import AuditEntry, AuditRecord

__all__ = ["AuditEntry", "AuditLog", "AuditPage", "AuditRecord", "VerifyResult"]
