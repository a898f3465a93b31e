"""What goes into the audit log (:class:`AuditRecord`) and what comes out (:class:`AuditEntry`).

record = AuditRecord(actor="admin:7", action="update", resource_type="user",
                     resource_id="42", before={"role": "member"}, after={"role": "admin"})
entry = await store.put(record)
entry.seq, entry.hash
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from typing import Any

import pydantic
from pydantic import Field, field_validator

from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import NO_NUL, InputModel, clean_document
from nexus_store.mongo._layout import audit_max_length

__all__ = ["AuditEntry", "AuditRecord"]


class AuditRecord(InputModel):
    """Who did what to which resource, and why. ``before``/``after`` are JSON-like snapshots."""

    actor: str = Field(min_length=1, max_length=audit_max_length("actor"), pattern=NO_NUL)
    action: str = Field(min_length=1, max_length=audit_max_length("action"), pattern=NO_NUL)
    resource_type: str = Field(
        min_length=1, max_length=audit_max_length("resource_type"), pattern=NO_NUL
    )
    resource_id: str = Field(
        min_length=1, max_length=audit_max_length("resource_id"), pattern=NO_NUL
    )
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    ip: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=1024, pattern=NO_NUL)
    reason: str | None = Field(None, max_length=4096, pattern=NO_NUL)

    @field_validator("before", "after", mode="plain")
    @classmethod
    def _safe_snapshot(cls, value: Any, info: pydantic.ValidationInfo) -> dict[str, Any] | None:
        field = str(info.field_name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValidationError(field, f"must be a mapping or None, got {type(value).__name__}")
        return clean_document(value, field)

    @field_validator("ip")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return _normal_ip(value)
        except ValueError:
            raise ValidationError("ip", "not an IPv4 or IPv6 address") from None


class AuditEntry(AuditRecord):
    """A stored audit entry: the record plus its place and proof in the hash chain.

    ``hash = SHA-256(prev_hash || canonical JSON of the entry)`` (HMAC-SHA-256 when
    ``audit.hmac_key`` is set). ``expires_at`` is set when retention is on;
    ``prev_expires_at`` is the previous entry's, which lets verification tell an expired
    predecessor from a deleted one.
    """

    seq: int = Field(ge=1)
    ts: dt.datetime
    prev_hash: str
    hash: str
    idempotency_key: str | None = Field(None, max_length=audit_max_length("idempotency_key"))
    expires_at: dt.datetime | None = None
    prev_expires_at: dt.datetime | None = None
    v: int | None = None  # the hash's canonical form (None: version 1, before NaN was kept)
    tree: list[str] | None = Field(None, repr=False)  # Merkle nodes this entry completes
    # with retention: the Merkle nodes left of it since the last checkpoint (for proofs
    # once the entries before it expired)
    left: list[str] | None = Field(None, repr=False)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> AuditEntry:
        """Rebuild an entry read back from MongoDB (``_id`` and unknown fields are ignored)."""
        return cls(**{key: document[key] for key in cls.model_fields if key in document})


@functools.lru_cache(maxsize=4096)
def _normal_ip(value: str) -> str:
    """``value``'s normal form (parsing costs as much as the rest of an entry's checks,
    and a service sees the same few addresses again and again)."""
    return str(ipaddress.ip_address(value))
