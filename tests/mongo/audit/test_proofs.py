"""Signed tree heads and RFC 9162 proofs, checked offline with nexus_store.audit_proofs."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nexus_store import audit_proofs
from nexus_store.audit_proofs import (
    ConsistencyProof,
    InclusionProof,
    TreeHead,
    check_entry,
    verify_consistency,
    verify_tree_head,
)
from nexus_store.errors import ConfigurationError, NotFoundError, ValidationError
from tests.support import CommandRecorder

KEY = "hmac-k3y-for-proofs"


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162's MTH, written out recursively (independent of the SDK's compact ranges)."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:split]) + _mth(leaves[split:])).digest()


async def _filled(make_audit, count: int, **settings):
    log = await make_audit(**settings)
    for index in range(count):
        await log.record("admin", "update", "doc", str(index), after={"n": index})
    return log


async def test_tree_head_root_is_rfc9162_mth_of_the_entries(make_audit, raw) -> None:
    log = await _filled(make_audit, 13, hmac_key=KEY)
    head = await log.tree_head()
    assert head.size == 13 and head.algorithm == "hmac-sha256"
    documents = await raw(log).find({}, sort=[("seq", 1)]).to_list()
    leaves = [
        hashlib.sha256(
            b"\x00"
            + doc["prev_hash"].encode()
            + doc["hash"].encode()
            + audit_proofs.canonical_json(doc)
        ).digest()
        for doc in documents
    ]
    assert head.root_hash == _mth(leaves).hex()
    assert verify_tree_head(head, hmac_key=KEY.encode())
    assert not verify_tree_head(head, hmac_key=b"another key")


async def test_inclusion_proofs_verify_offline_from_json(make_audit) -> None:
    log = await _filled(make_audit, 21, hmac_key=KEY)
    head = TreeHead.from_json((await log.tree_head()).to_json())  # kept outside, read back
    for seq in (1, 2, 8, 13, 21):
        proof = InclusionProof.from_json((await log.prove(seq)).to_json())
        assert len(proof.path) <= (21).bit_length()
        assert check_entry(proof.entry, proof, head, hmac_key=KEY.encode()) is None
        edited = {**proof.entry, "actor": "someone else"}
        assert check_entry(edited, proof, head, hmac_key=KEY.encode()) is not None
    with pytest.raises(NotFoundError):
        await log.prove(22, tree_size=30)
    with pytest.raises(ValidationError):
        await log.prove(0)
    # Found by the fuzz harness: these raised TypeError / AttributeError (issue 18).
    for tree_size, field in ((30, "tree_size"), ("3", "tree_size"), (0, "tree_size")):
        with pytest.raises(ValidationError) as caught:
            await log.prove(1, tree_size=tree_size)
        assert caught.value.field == field
    with pytest.raises(ValidationError) as caught:
        log.check_tree_head("not a head")
    assert caught.value.field == "head"
    with pytest.raises(ValidationError) as caught:  # was OverflowError from BSON
        await log.by_actor("a", cursor=2**64)
    assert caught.value.field == "cursor"
    for batch_size in (0, "10", 10**9):
        with pytest.raises(ValidationError) as caught:
            await log.verify(batch_size=batch_size)
        assert caught.value.field == "batch_size"


async def test_ed25519_heads_verify_with_the_public_key_alone(make_audit) -> None:
    private = Ed25519PrivateKey.generate().private_bytes_raw().hex()
    log = await _filled(make_audit, 5, signing_key=private)
    head = await log.tree_head()
    assert head.algorithm == "ed25519"
    public = log.public_key()
    assert public is not None and "PUBLIC KEY" in public and private not in public
    proof = await log.prove(3)
    assert check_entry(proof.entry, proof, head, public_key=public) is None
    other = Ed25519PrivateKey.generate().private_bytes_raw().hex()
    assert check_entry(proof.entry, proof, head, public_key=audit_proofs.public_key_pem(other))
    assert private not in repr(log) and private not in head.to_json()


async def test_unsigned_log_cannot_hand_out_tree_heads(make_audit) -> None:
    log = await _filled(make_audit, 1)
    with pytest.raises(ConfigurationError) as caught:
        await log.tree_head()
    assert caught.value.setting == "audit.signing_key"


async def test_consistency_between_heads_taken_before_and_after(make_audit) -> None:
    log = await _filled(make_audit, 6, hmac_key=KEY)
    old = await log.tree_head()
    for index in range(11):
        await log.record("admin", "later", "doc", str(index))
    new = await log.tree_head()
    for old_size in (1, 2, 4, 6, 17):
        proof = await log.prove_consistency(old_size, new.size)
        text = json.loads(proof.to_json())
        parsed = ConsistencyProof(text["old_size"], text["new_size"], text["path"])
        old_root = bytes.fromhex(
            old.root_hash if old_size == 6 else (await _root(log, old_size)).root_hash
        )
        path = [bytes.fromhex(item) for item in parsed.path]
        assert verify_consistency(old_size, new.size, old_root, bytes.fromhex(new.root_hash), path)
    path = [bytes.fromhex(h) for h in (await log.prove_consistency(6, new.size)).path]
    forged = bytes.fromhex(old.root_hash)[::-1]
    assert not verify_consistency(6, new.size, forged, bytes.fromhex(new.root_hash), path)


async def _root(log, size: int) -> TreeHead:
    from nexus_store.mongo.audit._tree import range_hash

    root = await range_hash(log._committed, 0, size)
    return log._sign(size, root)


async def test_a_proof_reads_log_n_documents_not_the_log(make_audit, raw) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder, hmac_key=KEY, batch_max_entries=500)
    for chunk in range(4):  # 1,000 entries through group commit
        await asyncio.gather(
            *(log.record("bulk", "write", "doc", f"{chunk}-{n}") for n in range(250))
        )
    recorder.clear()
    seq = random.Random(7).randrange(1, 1001)
    proof = await log.prove(seq)
    finds = [body for body in recorder.named("find") if body["find"] == log._settings.collection]
    assert len(finds) <= 3  # the size, the entry, one $in for the subtrees
    fetched = [body for body in finds if "$in" in str(body["filter"])]
    assert len(fetched[0]["filter"]["seq"]["$in"]) <= 2 * (1000).bit_length()
    head = await log.tree_head()
    assert check_entry(proof.entry, proof, head, hmac_key=KEY.encode()) is None


async def test_entries_written_before_the_tree_still_verify_and_prove(make_audit, raw) -> None:
    log = await make_audit(hmac_key=KEY, checkpoint_every=1000)
    key = KEY.encode()
    prev = audit_proofs.GENESIS
    legacy = []
    for seq in range(1, 6):  # version 1: no "v", no "tree", as the previous release wrote
        doc = {
            "seq": seq,
            "ts": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "actor": "old",
            "action": "write",
            "resource_type": "doc",
            "resource_id": str(seq),
            "before": None,
            "after": {"n": seq},
            "ip": None,
            "user_agent": None,
            "reason": None,
            "prev_hash": prev,
        }
        doc["hash"] = audit_proofs.entry_hash(prev, doc, key)
        prev = doc["hash"]
        legacy.append(doc)
    await raw(log).insert_many(legacy)
    assert (await log.verify()).ok
    for index in range(4):
        await log.record("new", "write", "doc", str(index))
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 9), result.reason
    head = await log.tree_head()
    for seq in (2, 5, 9):
        proof = await log.prove(seq)
        assert check_entry(proof.entry, proof, head, hmac_key=key) is None


@pytest.mark.parametrize("expired", [11, 12, 7])
async def test_proofs_for_live_entries_after_older_entries_expired(
    make_audit, raw, expired: int
) -> None:
    """Retention deleted entries 1..expired, which stored subtrees that proofs of the live
    entries need: those come from the checkpoint before the gap and the oldest live entry's
    ``left`` (checkpoints at 4 and 8 here; the gap ends off and on a checkpoint)."""
    log = await make_audit(retention_days=1, checkpoint_every=4, hmac_key="k" * 32)
    now = dt.datetime.now(dt.UTC)
    log._clock = lambda: now - dt.timedelta(days=2)  # these entries are past retention
    for n in range(expired):
        await log.record("a", "b", "c", str(n))
    log._clock = lambda: now
    await asyncio.gather(*(log.record("a", "b", "c", str(n)) for n in range(9)))
    size = expired + 9
    head_before = await log.tree_head()
    await raw(log).delete_many({"expires_at": {"$lt": now}})  # what the TTL index does
    assert await raw(log).count_documents({}) == 9

    head = await log.tree_head()
    assert (head.size, head.root_hash) == (size, head_before.root_hash)
    for seq in range(expired + 1, size + 1):
        proof = await log.prove(seq)
        assert check_entry(proof.entry, proof, head, hmac_key=b"k" * 32) is None
    with pytest.raises(NotFoundError):
        await log.prove(expired)  # an expired entry itself cannot be shown
    result = await log.verify(since=head_before)
    assert (result.ok, result.checked, result.tree_head_checked) == (True, 9, True)

    fresh = await make_audit(retention_days=1, checkpoint_every=4, hmac_key="k" * 32)
    fresh._clock = lambda: now
    entry = await fresh.record("a", "b", "c", "after the restart")
    assert entry.tree, "a writer that starts after the expiry still keeps the tree"
    later = await fresh.tree_head()
    proof = await fresh.prove(entry.seq)
    assert check_entry(proof.entry, proof, later, hmac_key=b"k" * 32) is None
    consistency = await fresh.prove_consistency(size, size + 1)
    old_root, new_root = bytes.fromhex(head.root_hash), bytes.fromhex(later.root_hash)
    path = [bytes.fromhex(node) for node in consistency.path]
    assert verify_consistency(size, size + 1, old_root, new_root, path)
    assert (await fresh.verify()).ok


async def test_verify_detects_an_edited_left_node(make_audit, raw) -> None:
    log = await make_audit(retention_days=1, checkpoint_every=4)
    for n in range(7):
        await log.record("a", "b", "c", str(n))
    stored = await raw(log).find_one({"seq": 7})
    assert stored["left"], "entry 7 keeps the nodes of entries 5 and 6"
    await raw(log).update_one({"seq": 7}, {"$set": {"left": ["0" * 64] * len(stored["left"])}})
    result = await log.verify()
    assert (result.ok, result.first_broken_seq) == (False, 7)
