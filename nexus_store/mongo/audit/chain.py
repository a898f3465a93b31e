"""The hash chain: canonical JSON, entry hashes and checkpoint signatures.

The canonical form of an entry is JSON with sorted keys, no whitespace, and every datetime
written as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds: what BSON keeps), so a document
read back from MongoDB hashes to the same bytes it was written with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from nexus_store.mongo._layout import AUDIT_CHAIN_LINKS, AUDIT_ENTRY_FIELDS

__all__ = ["GENESIS", "HASHED_FIELDS", "canonical_json", "checkpoint_signature", "entry_hash"]

GENESIS = "0" * 64
#: What an entry's hash covers: its content, every stored field but the chain links.
HASHED_FIELDS = tuple(field for field in AUDIT_ENTRY_FIELDS if field not in AUDIT_CHAIN_LINKS)


def _datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value.astimezone(dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    raise TypeError(f"{type(value).__name__} is not part of the canonical form")


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes hashed for ``document``: its :data:`HASHED_FIELDS`, absent ones as null."""
    payload = {field: document.get(field) for field in HASHED_FIELDS}
    return orjson.dumps(
        payload, default=_datetime, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
    )


def entry_hash(prev_hash: str, document: Mapping[str, Any], key: bytes | None) -> str:
    """``SHA-256(prev_hash || canonical JSON)``, or its HMAC with ``key``, in hex."""
    message = prev_hash.encode("ascii") + canonical_json(document)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def checkpoint_signature(seq: int, entry_hash_hex: str, ts: dt.datetime, key: bytes | None) -> str:
    """Signs that entry ``seq`` had ``entry_hash_hex``: HMAC with ``key``, else plain SHA-256."""
    message = f"checkpoint:{seq}:{entry_hash_hex}:{_datetime(ts)}".encode("ascii")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()
