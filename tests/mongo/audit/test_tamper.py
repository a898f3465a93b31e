"""Attacks by someone with write access to the database, each detected: by ``verify()``
where the database alone shows it, else by ``verify(since=head)`` against a signed tree head
kept outside the database (the CLI's ``audit verify --since-tree-head FILE``)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nexus_store.audit_proofs import InclusionProof, TreeHead, check_entry
from nexus_store.errors import TamperDetected, ValidationError
from nexus_store.mongo.audit.chain import entry_hash
from tests.support import run_cli

KEY = "k3y-kept-outside-the-db"
ENTRIES = 10  # checkpoints at 4 and 8


async def _signed_log(make_audit, **settings: Any):
    log = await make_audit(checkpoint_every=4, **{"hmac_key": KEY, **settings})
    for index in range(ENTRIES):
        await log.record("admin", "update", "user", str(index), after={"n": index})
    head = await log.tree_head()  # the auditor's copy, outside the database
    assert (await log.verify(since=head)).ok
    return log, head


async def _broken(log, since: TreeHead | None = None) -> tuple[int, str]:
    with pytest.raises(TamperDetected) as caught:
        await log.verify(since=since, raise_on_tamper=True)
    result = await log.verify(since=since)
    assert not result.ok and result.first_broken_seq == caught.value.seq
    return caught.value.seq, result.reason or ""


# -- what verify() shows from the database alone --------------------------------------------


async def test_edit(make_audit, raw) -> None:
    log, _ = await _signed_log(make_audit)
    await raw(log).update_one({"seq": 6}, {"$set": {"after": {"n": 600}}})
    assert (await _broken(log))[0] == 6


async def test_delete(make_audit, raw) -> None:
    log, _ = await _signed_log(make_audit)
    await raw(log).delete_one({"seq": 5})
    seq, reason = await _broken(log)
    assert seq == 5 and "missing" in reason


async def test_reorder(make_audit, raw) -> None:
    log, _ = await _signed_log(make_audit)
    collection = raw(log)
    await collection.update_one({"seq": 3}, {"$set": {"seq": 1000}})
    await collection.update_one({"seq": 4}, {"$set": {"seq": 3}})
    await collection.update_one({"seq": 1000}, {"$set": {"seq": 4}})
    assert (await _broken(log))[0] == 3


async def test_insert(make_audit, raw) -> None:
    log, _ = await _signed_log(make_audit)
    head = await raw(log).find_one({"seq": ENTRIES})
    forged = {
        **{key: value for key, value in head.items() if key not in ("_id", "tree")},
        "seq": ENTRIES + 1,
        "prev_hash": head["hash"],
        "actor": "intruder",
    }
    forged["hash"] = entry_hash(forged["prev_hash"], forged, None)  # no key: unkeyed hash
    await raw(log).insert_one(forged)
    assert (await _broken(log))[0] == ENTRIES + 1


@pytest.mark.parametrize("seq", [4, 8])
async def test_deleting_one_checkpoint(make_audit, raw, seq: int) -> None:
    log, _ = await _signed_log(make_audit)
    await raw(log, "checkpoints").delete_one({"seq": seq})
    found, reason = await _broken(log)
    assert found == seq and "checkpoint" in reason


async def test_cutting_the_tail_back_to_a_checkpoint(make_audit, raw) -> None:
    log, _ = await _signed_log(make_audit)
    await raw(log).delete_many({"seq": {"$gte": 7}})  # checkpoint 8 remains
    assert (await _broken(log))[0] == 7


# -- what only a signed tree head kept outside shows -----------------------------------------


async def test_cutting_the_tail_after_the_last_checkpoint(make_audit, raw) -> None:
    log, head = await _signed_log(make_audit)
    await raw(log).delete_many({"seq": {"$gte": 9}})
    assert (await log.verify()).ok  # the database alone cannot tell
    seq, reason = await _broken(log, head)
    assert seq == 9 and "truncated" in reason


async def test_cutting_the_tail_with_its_checkpoints(make_audit, raw) -> None:
    log, head = await _signed_log(make_audit)
    await raw(log).delete_many({"seq": {"$gte": 7}})
    await raw(log, "checkpoints").delete_many({"seq": {"$gte": 7}})
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 6)
    assert (await _broken(log, head))[0] == 7


async def test_wiping_the_log(make_audit, raw) -> None:
    log, head = await _signed_log(make_audit)
    await raw(log).delete_many({})
    await raw(log, "checkpoints").delete_many({})
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 0)
    assert (await _broken(log, head))[0] == 1


async def test_rewriting_history_consistently_without_the_chain_key(make_audit, raw) -> None:
    """No HMAC on the chain (heads signed with Ed25519): whoever can write the database can
    rebuild a consistent chain, tree and checkpoints. Only the outside head shows it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate().private_bytes_raw().hex()
    log, head = await _signed_log(make_audit, hmac_key=None, signing_key=private)
    original = await raw(log).find({}, sort=[("seq", 1)]).to_list()
    await raw(log).delete_many({})
    await raw(log, "checkpoints").delete_many({})
    forger = await make_audit(checkpoint_every=4)  # the attacker: same code, no keys
    for doc in original:
        actor = "someone else" if doc["seq"] == 3 else doc["actor"]
        await forger.record(actor, doc["action"], doc["resource_type"], doc["resource_id"])
    assert (await log.verify()).ok  # consistent: the database alone cannot tell
    seq, reason = await _broken(log, head)
    assert seq == ENTRIES and "rewritten" in reason


async def test_a_forged_tree_head_is_refused(make_audit) -> None:
    log, head = await _signed_log(make_audit)
    forged = TreeHead(head.size - 2, head.root_hash, head.timestamp, head.algorithm, "0" * 64)
    with pytest.raises(ValidationError) as caught:
        await log.verify(since=forged)
    assert caught.value.field == "since"


@pytest.mark.real_mongodb
async def test_nan_to_null(make_audit, raw) -> None:
    """nx-27017 cannot store NaN; the canonical form is checked offline in
    test_group_commit.test_canonical_form_keeps_nan_infinities_and_null_apart."""
    log = await make_audit(hmac_key=KEY)
    await log.record("a", "update", "metric", "1", before={"x": math.nan}, after={"x": 1.0})
    await raw(log).update_one({"seq": 1}, {"$set": {"before.x": None}})
    assert (await _broken(log))[0] == 1


# -- the CLI ----------------------------------------------------------------------------------


async def test_cli_tree_head_prove_and_verify_since(make_audit, raw, mongo_stack, tmp_path) -> None:
    log, _ = await _signed_log(make_audit)
    env = mongo_stack.environment(audit={"hmac_key": KEY, "checkpoint_every": 4})
    saved = tmp_path / "head.json"
    made = run_cli("audit", "tree-head", "--out", str(saved), "-f", "json", env=env)
    assert made.returncode == 0, made.output
    assert made.json()["size"] == ENTRIES and KEY not in made.output
    head = TreeHead.from_json(saved.read_text())
    proved = run_cli("audit", "prove", "7", "-f", "json", env=env)
    assert proved.returncode == 0, proved.output
    proof = InclusionProof.from_json(proved.stdout)
    assert check_entry(proof.entry, proof, head, hmac_key=KEY.encode()) is None
    intact = run_cli("audit", "verify", "--since-tree-head", str(saved), "-f", "json", env=env)
    assert intact.returncode == 0 and intact.json()["treeHeadChecked"] is True
    await raw(log).delete_many({"seq": {"$gte": 9}})
    cut = run_cli("audit", "verify", "--since-tree-head", str(saved), env=env)
    assert cut.returncode == 1 and "seq 9" in cut.stderr and "Traceback" not in cut.output
    assert run_cli("audit", "verify", env=env).returncode == 0  # without the outside head
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run_cli("audit", "verify", "--since-tree-head", str(bad), env=env).returncode == 2
