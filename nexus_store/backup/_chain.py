"""The audit hash chain inside an archive, checked without a server.

Uses only ``GENESIS``, ``entry_hash`` and ``checkpoint_signature`` of
:mod:`nexus_store.mongo.audit.chain`: the hashing rules stay in their one home, the walk over
an archive's documents is here; so is the check of a signed tree head against them, with
:mod:`nexus_store.audit_proofs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nexus_store.audit_proofs import (
    TreeHead,
    leaf_hash,
    node_hash,
    perfect_pieces,
    root_of,
    verify_tree_head,
)
from nexus_store.mongo.audit.chain import GENESIS, checkpoint_signature, entry_hash

__all__ = ["ChainCheck", "check_chain", "tree_head_problem"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    checkpoints: int
    first_broken_seq: int | None = None
    reason: str | None = None


def _link_problem(
    document: Mapping[str, Any],
    expected_prev: str,
    checkpoint: Mapping[str, Any] | None,
    key: bytes | None,
) -> str | None:
    seq = document["seq"]
    if document.get("prev_hash") != expected_prev:
        return "prev_hash does not match"
    if entry_hash(expected_prev, document, key) != document.get("hash"):
        return "hash does not match the content"
    if checkpoint is not None:
        signature = checkpoint_signature(seq, checkpoint["hash"], checkpoint["ts"], key)
        if checkpoint["hash"] != document["hash"] or checkpoint.get("signature") != signature:
            return "does not match its checkpoint"
    return None


def check_chain(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Mapping[str, Any]],
    key: bytes | None,
    now: dt.datetime,
) -> ChainCheck:
    """Walk the entries in seq order: links, hashes, and the signed checkpoints.

    A gap is accepted only where the entry after it records (``prev_expires_at``) that its
    predecessor had expired by ``now``; a checkpoint past the last entry means a cut tail.
    """
    anchors = {int(cp["seq"]): cp for cp in checkpoints}
    expected_seq, expected_prev = 1, GENESIS
    checked = compared = 0
    for document in sorted(entries, key=lambda d: int(d.get("seq", 0))):
        seq = document.get("seq")
        if not isinstance(seq, int) or seq < expected_seq:
            return ChainCheck(False, checked, compared, expected_seq, f"unexpected seq {seq!r}")
        if seq > expected_seq:
            expired = document.get("prev_expires_at")
            if expired is None or expired > now:
                return ChainCheck(
                    False, checked, compared, expected_seq, f"entry {expected_seq} is missing"
                )
            anchor = anchors.get(seq - 1)
            expected_prev = anchor["hash"] if anchor else str(document.get("prev_hash"))
        problem = _link_problem(document, expected_prev, anchors.get(seq), key)
        if problem is not None:
            return ChainCheck(False, checked, compared, seq, problem)
        compared += seq in anchors
        checked += 1
        expected_seq, expected_prev = seq + 1, str(document["hash"])
    for seq, checkpoint in sorted(anchors.items()):
        expires_at = checkpoint.get("expires_at")
        if seq >= expected_seq and (expires_at is None or expires_at > now):
            return ChainCheck(
                False,
                checked,
                compared,
                expected_seq,
                f"entries cut: checkpoint {seq} records them",
            )
    return ChainCheck(True, checked, compared)


def _perfect_root(leaves: list[bytes]) -> bytes:
    """The root of a perfect subtree (a power-of-two number of leaf hashes)."""
    level = leaves
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tree_head_problem(
    entries: Iterable[Mapping[str, Any]],
    head: TreeHead,
    *,
    public_key: str | None,
    hmac_key: bytes | None,
    signature: bool = True,
) -> str | None:
    """Why the archived ``entries`` do not extend the log ``head`` signs, or None.

    The head's signature is checked (unless not ``signature``) with the configured key (a
    key carried in the archive would prove nothing), then RFC 9162's root of the first
    ``head.size`` entries (leaf = :func:`leaf_hash`, index ``seq - 1``) is compared with
    the signed root.
    """
    if signature and not verify_tree_head(head, public_key=public_key, hmac_key=hmac_key):
        return f"the tree head of size {head.size} does not carry this log's valid signature"
    by_seq = {int(entry["seq"]): entry for entry in entries}
    missing = next((seq for seq in range(1, head.size + 1) if seq not in by_seq), None)
    if missing is not None:
        return f"the archive lacks entry {missing} of the {head.size} the tree head signs"
    leaves = [leaf_hash(by_seq[seq]) for seq in range(1, head.size + 1)]
    pieces = perfect_pieces(0, head.size)
    root = root_of([_perfect_root(leaves[i << lvl : (i + 1) << lvl]) for lvl, i in pieces])
    if root.hex() != head.root_hash:
        return f"the first {head.size} entries do not hash to the tree head's root"
    return None
