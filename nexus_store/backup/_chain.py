"""The audit hash chain inside an archive, checked without a server.

Uses only ``GENESIS``, ``entry_hash`` and ``checkpoint_signature`` of
:mod:`nexus_store.mongo.audit.chain`: the hashing rules stay in their one home, the walk over
an archive's documents is here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nexus_store.mongo.audit.chain import GENESIS, checkpoint_signature, entry_hash

__all__ = ["ChainCheck", "check_chain"]


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
