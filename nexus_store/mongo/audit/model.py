"""What goes into the audit log (:class:`AuditRecord`) and what comes out (:class:`AuditEntry`).

record = AuditRecord(actor="admin:7", action="update", resource_type="user",
                     resource_id="42", before={"role": "member"}, after={"role": "admin"})
entry = await store.put(record)
entry.seq, entry.hash
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import TYPE_CHECKING, Any

import annotated_types
import pydantic
from pydantic import Field, field_validator

from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import NO_NUL, InputModel, clean_document

if TYPE_CHECKING:
    from nexus_store.settings import NexusSettings

__all__ = [
    "CHAIN_LINKS",
    "ENTRY_FIELDS",
    "AuditEntry",
    "AuditRecord",
    "checkpoint_collection",
    "max_length",
]


class AuditRecord(InputModel):
    """Who did what to which resource, and why. ``before``/``after`` are JSON-like snapshots."""

    actor: str = Field(min_length=1, max_length=256, pattern=NO_NUL)
    action: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    resource_type: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    resource_id: str = Field(min_length=1, max_length=256, pattern=NO_NUL)
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
            return str(ipaddress.ip_address(value))
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
    idempotency_key: str | None = Field(None, max_length=256)
    expires_at: dt.datetime | None = None
    prev_expires_at: dt.datetime | None = None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> AuditEntry:
        """Rebuild an entry read back from MongoDB (``_id`` and unknown fields are ignored)."""
        return cls(**{key: document[key] for key in cls.model_fields if key in document})


def checkpoint_collection(settings: NexusSettings) -> str:
    """Name of the collection of signed audit checkpoints (``<audit>_checkpoints``)."""
    return f"{settings.audit.collection}_checkpoints"


def max_length(field: str) -> int:
    """The longest text :class:`AuditEntry` accepts in ``field``."""
    for rule in AuditEntry.model_fields[field].metadata:
        if isinstance(rule, annotated_types.MaxLen):
            return rule.max_length
    raise LookupError(f"{field} has no length limit")


def _text(field: str) -> dict[str, Any]:
    return {"bsonType": "string", "maxLength": max_length(field)}


_HASH = {"bsonType": "string", "pattern": "^[0-9a-f]{64}$"}
_DATE = {"bsonType": "date"}
_OPTIONAL_TEXT = {"bsonType": ["string", "null"]}
_OPTIONAL_OBJECT = {"bsonType": ["object", "null"]}

#: The links of the hash chain: the previous entry's hash and this entry's.
CHAIN_LINKS = ("prev_hash", "hash")

#: Every field of a stored entry, with the ``$jsonSchema`` of its value, in the order the
#: collection validator lists them. The entry hash covers every field but
#: :data:`CHAIN_LINKS` (absent ones as null), so adding a field changes the hash of every
#: entry and chains written before would no longer verify.
ENTRY_FIELDS: dict[str, dict[str, Any]] = {
    "seq": {"bsonType": ["int", "long"], "minimum": 1},
    "ts": _DATE,
    "actor": _text("actor"),
    "action": _text("action"),
    "resource_type": _text("resource_type"),
    "resource_id": _text("resource_id"),
    "before": _OPTIONAL_OBJECT,
    "after": _OPTIONAL_OBJECT,
    "ip": _OPTIONAL_TEXT,
    "user_agent": _OPTIONAL_TEXT,
    "reason": _OPTIONAL_TEXT,
    "idempotency_key": _text("idempotency_key"),  # absent, never null, when not given
    "expires_at": _DATE,  # absent without retention
    "prev_expires_at": _DATE,
    "prev_hash": _HASH,
    "hash": _HASH,
}
