"""The hash chain: entry hashes (in :mod:`nexus_store.audit_proofs`) and checkpoint signatures.

The canonical form of an entry is JSON with sorted keys, no whitespace, and every datetime
written as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds: what BSON keeps), so a document
read back from MongoDB hashes to the same bytes it was written with. Version 2 entries
(``"v": 2``) also keep NaN, +Infinity, -Infinity and null apart; entries without ``v`` are
hashed as they were written (version 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from nexus_store.audit_proofs import (
    CURRENT_VERSION,
    GENESIS,
    HASHED_FIELDS_V2,
    canonical_json,
    entry_hash,
)

__all__ = [
    "CURRENT_VERSION",
    "GENESIS",
    "HASHED_FIELDS",
    "canonical_json",
    "checkpoint_signature",
    "entry_hash",
]

#: What the hash of an entry written now covers.
HASHED_FIELDS = HASHED_FIELDS_V2


def _millis(ts: dt.datetime) -> str:
    moment = ts.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def checkpoint_signature(seq: int, entry_hash_hex: str, ts: dt.datetime, key: bytes | None) -> str:
    """Signs that entry ``seq`` had ``entry_hash_hex``: HMAC with ``key``, else plain SHA-256."""
    message = f"checkpoint:{seq}:{entry_hash_hex}:{_millis(ts)}".encode("ascii")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()
