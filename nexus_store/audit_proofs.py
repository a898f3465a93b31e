"""Checking the audit log from outside: entries, Merkle proofs and signed tree heads.

Pure functions, no database and no settings: an auditor who holds the log's public key (or
its HMAC key) verifies what ``store.audit`` hands out, with this module alone.

    head = TreeHead.from_json(open("head.json").read())
    assert verify_tree_head(head, public_key=PEM)            # or hmac_key=b"..."
    proof = InclusionProof.from_json(proof_text)             # `nexus-store audit prove SEQ`
    assert check_entry(proof.entry, proof, head, public_key=PEM) is None

Hashing follows RFC 9162 (Certificate Transparency v2): a leaf hash is
``SHA-256(0x00 || leaf)``, an interior node ``SHA-256(0x01 || left || right)``; inclusion and
consistency proofs are those of sections 2.1.3 and 2.1.4, verified with the algorithms given
there. The leaf of an audit entry is its chain links and canonical JSON (:func:`leaf_bytes`);
leaf index = ``seq - 1``. A tree head is signed over the TLS encoding of RFC 9162's
``TreeHeadDataV2`` (timestamp, tree size, root hash, no extensions) with Ed25519
(``cryptography``, the ``crypto`` extra, imported only when used) or HMAC-SHA-256.

Canonical JSON, version 2 (``"v": 2`` in the entry): sorted keys, no whitespace, datetimes as
``YYYY-MM-DDTHH:MM:SS.mmmZ``, and, unlike version 1 (entries without ``v``, which wrote NaN,
+Infinity, -Infinity and null all as ``null``), an injective form for what JSON cannot say:
a non-finite float is ``{"$float": "NaN" | "Infinity" | "-Infinity"}`` and a mapping with a
key starting with ``$`` is wrapped as ``{"$map": {...}}``, so no stored value can imitate a tag.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from nexus_store.errors import ValidationError

__all__ = [
    "GENESIS",
    "HASHED_FIELDS_V1",
    "HASHED_FIELDS_V2",
    "ConsistencyProof",
    "InclusionProof",
    "TreeHead",
    "canonical_json",
    "check_entry",
    "consistency_ranges",
    "entry_hash",
    "inclusion_ranges",
    "leaf_bytes",
    "leaf_hash",
    "node_hash",
    "perfect_pieces",
    "root_of",
    "sign_tree_head",
    "tree_head_message",
    "verify_consistency",
    "verify_inclusion",
    "verify_tree_head",
]

GENESIS = "0" * 64
#: What the hash of an entry without ``v`` covers. Frozen: entries written so still verify.
HASHED_FIELDS_V1 = (
    "seq",
    "ts",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "before",
    "after",
    "ip",
    "user_agent",
    "reason",
    "idempotency_key",
    "expires_at",
    "prev_expires_at",
)
#: What the hash of a version 2 entry covers: the version too.
HASHED_FIELDS_V2 = (*HASHED_FIELDS_V1, "v")
CURRENT_VERSION = 2

_FLOAT_TAGS = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value.astimezone(dt.UTC) if value.utcoffset() else value
        return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    raise TypeError(f"{type(value).__name__} is not part of the canonical form")


_PLAIN = frozenset({str, int, bool, type(None), dt.datetime})


def _plain(value: Any) -> bool:  # noqa: PLR0911 - one return per kind of value
    """Whether ``value`` needs no tag (the common case, checked without copying)."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or key[:1] == "$":
                return False
            if type(item) not in _PLAIN and not _plain(item):
                return False
        return True
    if kind is list:
        return all(type(item) in _PLAIN or _plain(item) for item in value)
    return False  # anything else goes through _tagged, which keeps it as it is


def _tagged(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    """``value`` with non-finite floats and ``$`` keys in their injective, tagged form."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {"$float": "NaN" if math.isnan(value) else _FLOAT_TAGS[value]}
    if kind is dict or isinstance(value, Mapping):
        mapping = {key: _tagged(item) for key, item in value.items()}
        if any(isinstance(key, str) and key.startswith("$") for key in mapping):
            return {"$map": mapping}
        return mapping
    if kind is list or kind is tuple:
        return [_tagged(item) for item in value]
    return value


def canonical_json(document: Mapping[str, Any], fields: Sequence[str] | None = None) -> bytes:
    """The bytes an entry's hash covers: its hashed fields (absent ones as null), in the
    canonical form of the entry's version (``v``; version 1 when absent)."""
    version = document.get("v")
    if fields is None:
        fields = HASHED_FIELDS_V1 if version is None else HASHED_FIELDS_V2
    payload = {name: document.get(name) for name in fields}
    if version is not None:
        for value in payload.values():
            if type(value) not in _PLAIN and not _plain(value):
                payload = {name: _tagged(item) for name, item in payload.items()}
                break
    return orjson.dumps(
        payload, default=_datetime, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
    )


def entry_hash(
    prev_hash: str, document: Mapping[str, Any], key: bytes | None, canonical: bytes | None = None
) -> str:
    """``SHA-256(prev_hash || canonical JSON)``, or its HMAC with ``key``, in hex
    (``canonical`` when the caller has them already)."""
    if canonical is None:
        canonical = canonical_json(document)
    message = prev_hash.encode() + canonical  # hex; a tampered one still hashes (UTF-8)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# -- the Merkle tree (RFC 9162 section 2.1) -------------------------------------------------


def leaf_bytes(document: Mapping[str, Any], canonical: bytes | None = None) -> bytes:
    """The Merkle leaf of an entry: ``prev_hash || hash || canonical JSON`` (ASCII hex
    hashes, 64 characters each, then the bytes its hash covers; ``canonical`` when the
    caller has them already)."""
    if canonical is None:
        canonical = canonical_json(document)
    links = f"{document.get('prev_hash')}{document.get('hash')}"
    return links.encode() + canonical


def leaf_hash(document: Mapping[str, Any], canonical: bytes | None = None) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf_bytes(document, canonical)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` that make up leaves ``[start, end)``, largest
    first: leaves ``[index * 2**level, (index + 1) * 2**level)``. Every range a proof names
    (:func:`inclusion_ranges`, :func:`consistency_ranges`) decomposes so."""
    pieces = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        pieces.append((level, start >> level))
        start += 1 << level
    return pieces


def root_of(piece_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162's MTH of a range from the hashes of its :func:`perfect_pieces`."""
    if not piece_hashes:
        return hashlib.sha256(b"").digest()
    root = piece_hashes[-1]
    for piece in reversed(piece_hashes[:-1]):
        root = node_hash(piece, root)
    return root


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make up ``PATH(index, D[size])`` (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValidationError("seq", f"entry {index + 1} is not in a tree of {size} entries")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _split(end - start)
        if index < split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((start, split))
            start = split
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH make up ``PROOF(old_size, D[new_size])`` (RFC 9162 2.1.4.1)."""
    if not 0 < old_size <= new_size:
        raise ValidationError("old_size", f"must be between 1 and {new_size}")
    ranges: list[tuple[int, int]] = []
    start, end, complete = 0, new_size, True
    first = old_size
    while first != end - start:
        size = end - start
        split = _split(size)
        if first <= split:
            ranges.append((start + split, end))
            end = start + split
        else:
            ranges.append((start, start + split))
            start += split
            first -= split
            complete = False
    if not complete:
        ranges.append((start, end))
    return ranges[::-1]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(result, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does ``path`` prove the tree of ``new_size`` extends that of
    ``old_size`` unchanged?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not path and hmac.compare_digest(old_root, new_root)
    nodes = list(path)
    if old_size & (old_size - 1) == 0:
        nodes.insert(0, old_root)
    if not nodes:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = nodes[0]
    for sibling in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first = node_hash(sibling, first)
            second = node_hash(sibling, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, sibling)
        fn >>= 1
        sn >>= 1
    return (
        sn == 0 and hmac.compare_digest(first, old_root) and hmac.compare_digest(second, new_root)
    )


# -- signed tree heads -----------------------------------------------------------------------

Algorithm = Literal["ed25519", "hmac-sha256"]


def _hex(value: bytes) -> str:
    return value.hex()


def _unhex(text: str, name: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        raise ValidationError(name, "not a hex string") from None


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head: the log had ``size`` entries with Merkle root ``root_hash`` (hex)
    at ``timestamp`` (milliseconds since the epoch), signed with ``algorithm``."""

    size: int
    root_hash: str
    timestamp: int
    algorithm: Algorithm
    signature: str

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> TreeHead:
        """Read :meth:`to_json` (or the CLI's camelCase ``--format json``) back."""
        data = _json_object(text, "tree_head")
        try:
            head = cls(
                size=int(data["size"]),
                root_hash=str(data.get("root_hash", data.get("rootHash"))),
                timestamp=int(data["timestamp"]),
                algorithm=data["algorithm"],
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("tree_head", f"not a signed tree head ({exc})") from None
        if head.algorithm not in ("ed25519", "hmac-sha256") or head.size < 0:
            raise ValidationError("tree_head", "unknown algorithm or negative size")
        return head


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """``entry`` (as stored, JSON-ready) is leaf ``seq - 1`` of the tree of ``tree_size``:
    ``path`` are the RFC 9162 audit path's hashes (hex), O(log n) of them."""

    seq: int
    tree_size: int
    path: list[str]
    entry: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), default=_datetime, option=orjson.OPT_INDENT_2).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> InclusionProof:
        data = _json_object(text, "proof")
        try:
            return cls(
                int(data["seq"]),
                int(data["tree_size"] if "tree_size" in data else data["treeSize"]),
                [str(item) for item in data["path"]],
                _entry_from_json(data.get("entry") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("proof", f"not an inclusion proof ({exc})") from None


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """The tree of ``new_size`` extends the tree of ``old_size`` unchanged: ``path`` (hex)."""

    old_size: int
    new_size: int
    path: list[str]

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2).decode()


def _json_object(text: str | bytes, name: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValidationError(name, "not JSON") from None
    if not isinstance(data, dict):
        raise ValidationError(name, "not a JSON object")
    return data


def _entry_from_json(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry read back from JSON: its datetimes are datetimes again."""
    result = dict(entry)
    for name in ("ts", "expires_at", "prev_expires_at"):
        if isinstance(result.get(name), str):
            result[name] = dt.datetime.fromisoformat(result[name].replace("Z", "+00:00"))
    return result


def tree_head_message(size: int, root: bytes, timestamp: int) -> bytes:
    """The TLS encoding of RFC 9162's ``TreeHeadDataV2`` (no extensions): what is signed."""
    return (
        timestamp.to_bytes(8, "big")
        + size.to_bytes(8, "big")
        + len(root).to_bytes(1, "big")
        + root
        + b"\x00\x00"
    )


def _private_key(private_key: str | bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = private_key.encode() if isinstance(private_key, str) else private_key
    if raw.lstrip().startswith(b"-----"):
        key = serialization.load_pem_private_key(raw, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValidationError("audit.signing_key", "not an Ed25519 private key")
        return key
    seed = bytes.fromhex(raw.decode()) if len(raw) == 64 else raw
    if len(seed) != 32:
        raise ValidationError("audit.signing_key", "expected PEM or 32 bytes (64 hex digits)")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_pem(private_key: str | bytes) -> str:
    """The PEM public key that verifies heads signed with ``private_key``."""
    from cryptography.hazmat.primitives import serialization

    public = _private_key(private_key).public_key()
    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def sign_tree_head(
    size: int,
    root: bytes,
    timestamp: int,
    *,
    private_key: str | bytes | None = None,
    hmac_key: bytes | None = None,
) -> TreeHead:
    """Sign with Ed25519 when ``private_key`` (PEM or 32-byte seed) is given, else HMAC."""
    message = tree_head_message(size, root, timestamp)
    if private_key is not None:
        signature = _private_key(private_key).sign(message)
        return TreeHead(
            size, _hex(root), timestamp, "ed25519", base64.b64encode(signature).decode()
        )
    if hmac_key is None:
        raise ValidationError("audit.hmac_key", "signing a tree head needs a key")
    mac = hmac.new(hmac_key, message, hashlib.sha256).hexdigest()
    return TreeHead(size, _hex(root), timestamp, "hmac-sha256", mac)


def verify_tree_head(
    head: TreeHead, *, public_key: str | bytes | None = None, hmac_key: bytes | None = None
) -> bool:
    """Is ``head``'s signature valid: Ed25519 with ``public_key`` (PEM), or HMAC?"""
    message = tree_head_message(head.size, _unhex(head.root_hash, "root_hash"), head.timestamp)
    if head.algorithm == "ed25519":
        if public_key is None:
            return False
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        raw = public_key.encode() if isinstance(public_key, str) else public_key
        key = serialization.load_pem_public_key(raw)
        if not isinstance(key, Ed25519PublicKey):
            return False
        try:
            key.verify(base64.b64decode(head.signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True
    if hmac_key is None:
        return False
    expected = hmac.new(hmac_key, message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, head.signature)


def check_entry(
    entry: Mapping[str, Any],
    proof: InclusionProof,
    head: TreeHead,
    *,
    public_key: str | bytes | None = None,
    hmac_key: bytes | None = None,
) -> str | None:
    """Why ``entry`` is not proven to be in the log ``head`` signs, or None when it is.

    Checks the head's signature, that the proof is for this entry and this head, and the
    audit path from the entry's leaf hash to the signed root.
    """
    if not verify_tree_head(head, public_key=public_key, hmac_key=hmac_key):
        return "the tree head's signature does not verify"
    if proof.tree_size != head.size or entry.get("seq") != proof.seq:
        return "the proof is for another entry or another tree head"
    path = [_unhex(item, "path") for item in proof.path]
    root = _unhex(head.root_hash, "root_hash")
    if not verify_inclusion(leaf_hash(entry), proof.seq - 1, head.size, path, root):
        return "the audit path does not lead from the entry to the signed root"
    return None


def hashes(items: Iterable[bytes]) -> list[str]:
    """Hex form of node hashes, as proofs carry them."""
    return [_hex(item) for item in items]
