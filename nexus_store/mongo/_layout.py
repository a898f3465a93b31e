"""What nexus-store's MongoDB documents hold: field names, text limits, collection names.

The one home of the facts that the models, the audit hash and the collection validators
share. A leaf (nothing from nexus_store at run time), so that :mod:`nexus_store.mongo.schema`
reads it without loading the models and writers: health checks import the schema module
while their timeout runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from nexus_store.settings import NexusSettings

__all__ = [
    "AUDIT_CHAIN_LINKS",
    "AUDIT_ENTRY_FIELDS",
    "AUDIT_LEFT_FIELD",
    "AUDIT_TREE_FIELD",
    "EVENT_ID_MAX_LENGTH",
    "EVENT_NAME_MAX_LENGTH",
    "AuditField",
    "audit_max_length",
    "checkpoint_collection",
    "lease_collection",
]

#: Longest ``event_id``, ``user_id``, ``anonymous_id`` and ``session_id``.
EVENT_ID_MAX_LENGTH = 128
#: Longest event name.
EVENT_NAME_MAX_LENGTH = 200


class AuditField(NamedTuple):
    required: bool
    schema: dict[str, Any]  # the $jsonSchema of the stored value


def _text(max_length: int) -> dict[str, Any]:
    return {"bsonType": "string", "maxLength": max_length}


_HASH = {"bsonType": "string", "pattern": "^[0-9a-f]{64}$"}
_DATE = {"bsonType": "date"}
_OPTIONAL_TEXT = {"bsonType": ["string", "null"]}
_OPTIONAL_OBJECT = {"bsonType": ["object", "null"]}

#: The links of the hash chain: the previous entry's hash and this entry's.
AUDIT_CHAIN_LINKS = ("prev_hash", "hash")

#: The Merkle tree nodes an entry completes (``tree[level]``, hex; ``tree[0]`` its leaf hash):
#: derived from the entries, so neither hashed nor part of the leaf; verify recomputes them.
AUDIT_TREE_FIELD = "tree"
#: With retention, the Merkle nodes left of an entry since the last checkpoint (hex): what a
#: proof needs once the entries before it expired. Derived too, and checked by verify.
AUDIT_LEFT_FIELD = "left"

#: Every field of a stored audit entry, in the order the collection validator lists them.
#: The entry hash covers every field but :data:`AUDIT_CHAIN_LINKS` and the tree nodes (absent
#: ones as null). What it covers is versioned (``v``) in :mod:`nexus_store.audit_proofs`: a
#: field added here needs a new version there, or chains written before would not verify.
AUDIT_ENTRY_FIELDS: dict[str, AuditField] = {
    "seq": AuditField(True, {"bsonType": ["int", "long"], "minimum": 1}),
    "ts": AuditField(True, _DATE),
    "actor": AuditField(True, _text(256)),
    "action": AuditField(True, _text(128)),
    "resource_type": AuditField(True, _text(128)),
    "resource_id": AuditField(True, _text(256)),
    "before": AuditField(False, _OPTIONAL_OBJECT),
    "after": AuditField(False, _OPTIONAL_OBJECT),
    "ip": AuditField(False, _OPTIONAL_TEXT),
    "user_agent": AuditField(False, _OPTIONAL_TEXT),
    "reason": AuditField(False, _OPTIONAL_TEXT),
    "idempotency_key": AuditField(False, _text(256)),  # absent, never null, when not given
    "expires_at": AuditField(False, _DATE),  # absent without retention
    "prev_expires_at": AuditField(False, _DATE),
    "v": AuditField(False, {"bsonType": ["int", "long"], "minimum": 2}),  # absent: version 1
    "prev_hash": AuditField(True, _HASH),
    "hash": AuditField(True, _HASH),
    AUDIT_TREE_FIELD: AuditField(False, {"bsonType": "array", "items": _HASH}),
    AUDIT_LEFT_FIELD: AuditField(False, {"bsonType": "array", "items": _HASH}),
}


def audit_max_length(field: str) -> int:
    """The longest text the validator allows in the audit entry's ``field``."""
    return int(AUDIT_ENTRY_FIELDS[field].schema["maxLength"])


def checkpoint_collection(settings: NexusSettings) -> str:
    """Name of the collection of signed audit checkpoints (``<audit>_checkpoints``)."""
    return f"{settings.audit.collection}_checkpoints"


def lease_collection(settings: NexusSettings) -> str:
    """Name of the collection holding the audit sequencer lease (``<audit>_lease``)."""
    return f"{settings.audit.collection}_lease"
