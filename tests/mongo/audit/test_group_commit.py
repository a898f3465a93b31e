"""Group commit, the sequencer lease, majority reads and the canonical form (version 2)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from nexus_store.audit_proofs import canonical_json, entry_hash
from nexus_store.errors import BackendUnavailableError
from nexus_store.mongo.audit.chain import GENESIS
from nexus_store.mongo.audit.log import _handover
from tests.support import CommandRecorder


def _inserts(recorder: CommandRecorder, collection: str) -> list[dict[str, Any]]:
    return [body for body in recorder.named("insert") if body["insert"] == collection]


async def test_concurrent_records_share_one_ordered_insert(make_audit, raw) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder)
    await log.record("warm", "up", "doc", "0")  # takes the lease and reads the head
    recorder.clear()
    entries = await asyncio.gather(
        *(log.record(f"task{n}", "write", "doc", str(n)) for n in range(16))
    )
    inserts = _inserts(recorder, log._settings.collection)
    assert len(inserts) < 16  # fewer round trips than entries
    assert all(body["ordered"] is True for body in inserts)
    assert sum(len(body["documents"]) for body in inserts) == 16
    # each caller got its own entry, consecutive and chained
    assert sorted(entry.seq for entry in entries) == list(range(2, 18))
    assert {entry.actor for entry in entries} == {f"task{n}" for n in range(16)}
    by_seq = {entry.seq: entry for entry in entries}
    for seq in range(3, 18):
        assert by_seq[seq].prev_hash == by_seq[seq - 1].hash
    assert (await log.verify()).ok


async def test_batches_are_bounded_by_count_and_bytes(make_audit) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder, batch_max_entries=3)
    await asyncio.gather(*(log.record("a", "b", "c", str(n)) for n in range(10)))
    sizes = [len(body["documents"]) for body in _inserts(recorder, log._settings.collection)]
    assert max(sizes) <= 3 and sum(sizes) == 10
    recorder.clear()
    big = {"blob": "x" * 9000}
    bounded = await make_audit(recorder, batch_max_bytes=16 * 1024)
    await asyncio.gather(*(bounded.record("a", "b", "c", str(n), after=big) for n in range(6)))
    sizes = [len(body["documents"]) for body in _inserts(recorder, bounded._settings.collection)]
    assert max(sizes) <= 2 and sum(sizes) == 6  # two 9 KB entries pass 16 KiB
    assert (await bounded.verify()).ok


async def test_idempotency_key_stored_once_within_and_across_batches(make_audit, raw) -> None:
    log = await make_audit()
    first = await log.record("relay", "create", "order", "1", idempotency_key="outbox:1")
    results = await asyncio.gather(
        *(
            log.record("relay", "create", "order", str(n % 3), idempotency_key=f"outbox:{n % 3}")
            for n in range(12)
        )
    )
    assert {entry.idempotency_key: entry.seq for entry in results}["outbox:1"] == first.seq
    stored = await raw(log).find({}, projection={"idempotency_key": 1}).to_list()
    keys = [doc["idempotency_key"] for doc in stored]
    assert sorted(keys) == ["outbox:0", "outbox:1", "outbox:2"]
    for key in ("outbox:0", "outbox:2"):
        assert len({entry.seq for entry in results if entry.idempotency_key == key}) == 1
    assert (await log.verify()).ok


async def test_head_and_idempotency_reads_are_majority(make_audit) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder)
    await log.record("a", "b", "c", "1", idempotency_key="k1")
    finds = [body for body in recorder.named("find") if body["find"] == log._settings.collection]
    assert finds, "the head and the key were read"
    assert all(body.get("readConcern") == {"level": "majority"} for body in finds)
    recorder.clear()
    local = await make_audit(recorder, write_concern="1")
    await local.record("a", "b", "c", "1", idempotency_key="k2")
    finds = [body for body in recorder.named("find") if body["find"] == local._settings.collection]
    assert finds and all("readConcern" not in body for body in finds)


async def test_independent_writers_take_turns_on_the_lease(make_audit, raw) -> None:
    recorder = CommandRecorder()
    writers = [await make_audit(recorder, checkpoint_every=5) for _ in range(4)]

    async def write(n: int) -> None:
        for index in range(8):
            await writers[n % 4].record(f"w{n}", "write", "doc", str(index))

    await asyncio.gather(*(write(n) for n in range(8)))
    seqs = sorted(await raw(writers[0]).distinct("seq"))
    assert seqs == list(range(1, 65))
    lease = f"{writers[0]._settings.collection}_lease"
    assert [body for body in recorder.named("findAndModify") if body["findAndModify"] == lease]
    result = await writers[0].verify()
    assert (result.ok, result.checked, result.checkpoints_checked) == (True, 64, 12)


def test_canonical_form_keeps_nan_infinities_and_null_apart() -> None:
    base = {"seq": 1, "actor": "a", "v": 2}
    values = [math.nan, math.inf, -math.inf, None, {"$float": "NaN"}, "NaN"]
    forms = {canonical_json({**base, "before": {"x": value}}) for value in values}
    assert len(forms) == len(values)
    hashes = {entry_hash(GENESIS, {**base, "before": {"x": value}}, None) for value in values}
    assert len(hashes) == len(values)
    # version 1 (entries written before) is hashed as it was: NaN and null alike
    legacy = {**base, "v": None}
    legacy.pop("v")
    assert canonical_json({**legacy, "before": {"x": math.nan}}) == canonical_json(
        {**legacy, "before": {"x": None}}
    )


async def test_a_caller_holding_its_entry_finds_its_checkpoint(make_audit) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder, checkpoint_every=6)
    await asyncio.gather(*(log.record("a", "b", "c", str(n)) for n in range(4)))
    # seqs 5-8 in one batch; checkpoint 6's frontier needs the stored subtree of seqs 1-4
    await asyncio.gather(*(log.record("a", "b", "c", str(n)) for n in range(4)))
    recorder.commands.append(("answered", {}))
    names = [
        name
        if name != "insert" or body["insert"] != f"{log._settings.collection}_checkpoints"
        else "checkpoint"
        for name, body in recorder.commands
    ]
    assert names.index("checkpoint") < names.index("answered")
    assert (await log.verify()).ok


async def test_a_holder_hands_its_head_over_with_the_lease(make_audit, raw) -> None:
    """The next holder chains onto the head the previous one left in the lease document
    (no head read); a head left in an earlier term is not trusted (read again)."""
    a = await make_audit(checkpoint_every=5)
    c = await make_audit(checkpoint_every=5)
    recorder = CommandRecorder()
    b = await make_audit(recorder, checkpoint_every=5)
    for n in range(7):
        await a.record("a", "write", "doc", str(n))
    await a._lease.release(_handover(a._head))  # what a holder does when someone waits
    recorder.clear()
    entry = await b.record("b", "write", "doc", "handed over")
    assert entry.seq == 8 and entry.prev_hash == (await raw(a).find_one({"seq": 7}))["hash"]
    entry_finds = [body for body in recorder.named("find") if body["find"] == b._entries.name]
    assert entry_finds == [], "no head read after a hand-over"

    await b._lease.release(_handover(b._head))
    await c.record("c", "write", "doc", "took the lease, never handed over")
    # c's term ends without a release: the head b left is stale now
    c._lease.lost()
    await c._lease._collection.update_one({"_id": "sequencer"}, {"$set": {"until": 0}})
    recorder.clear()
    entry = await b.record("b", "write", "doc", "after c")
    assert entry.seq == 10
    assert [body for body in recorder.named("find") if body["find"] == b._entries.name]
    result = await a.verify()
    assert (result.ok, result.checked) == (True, 10)


async def test_a_closing_writer_hands_its_lease_and_head_over(make_audit, raw) -> None:
    """aclose() ends the term at once and leaves the head: the next writer does not wait
    for the term of one that stopped, and reads no head."""
    a = await make_audit(lease_seconds=30)  # without the release, b would wait 30 s
    recorder = CommandRecorder()
    b = await make_audit(recorder, lease_seconds=30)
    for n in range(3):
        await a.record("a", "write", "doc", str(n))
    await a.aclose()
    lease = await a._lease._collection.find_one({"_id": "sequencer"})
    assert lease is not None and lease["until"] == 0 and lease["head"]["seq"] == 3
    entry = await asyncio.wait_for(b.record("b", "write", "doc", "next"), timeout=10)
    assert entry.seq == 4 and entry.prev_hash == (await raw(a).find_one({"seq": 3}))["hash"]
    assert [body for body in recorder.named("find") if body["find"] == b._entries.name] == []
    await a.aclose()  # closing twice is harmless
    assert (await b.verify()).ok


async def test_a_cancelled_caller_leaves_its_batch_alone(make_audit, raw) -> None:
    """A caller that gives up cancels only its own wait; its entry is written with the
    batch, and the others get theirs."""
    log = await make_audit()
    tasks = [asyncio.create_task(log.record("a", "write", "doc", str(n))) for n in range(6)]
    await asyncio.sleep(0)  # every record() has queued its entry
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    written = [result for result in results if not isinstance(result, BaseException)]
    assert len(written) == 5 and "2" not in {entry.resource_id for entry in written}
    await log.aclose()
    assert await raw(log).count_documents({}) == 6
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 6)


async def test_a_crash_between_entries_and_their_checkpoint_is_repaired(make_audit, raw) -> None:
    """A writer that died after its batch was written but before the checkpoint left
    none; the next writer that reads the head writes it, with the right frontier."""
    log = await make_audit(checkpoint_every=4)
    for n in range(6):
        await log.record("a", "write", "doc", str(n))
    checkpoint = await raw(log, "checkpoints").find_one({"seq": 4})
    await raw(log, "checkpoints").delete_one({"seq": 4})  # as if the writer died there
    broken = await log.verify()
    assert (broken.ok, broken.first_broken_seq) == (False, 4)
    successor = await make_audit(checkpoint_every=4)
    entry = await successor.record("b", "write", "doc", "next")
    assert entry.seq == 7
    repaired = await raw(log, "checkpoints").find_one({"seq": 4})
    assert repaired is not None
    for field in ("hash", "signature", "frontier"):
        assert repaired[field] == checkpoint[field]
    result = await log.verify()
    assert (result.ok, result.checked, result.checkpoints_checked) == (True, 7, 1)


async def test_a_store_closing_after_a_failed_write_leaves_the_lease_alone(
    make_audit, monkeypatch
) -> None:
    """After a failed write the head is unknown and the server may be gone: closing does
    not wait for it to release the lease (the term runs out by itself)."""
    recorder = CommandRecorder()
    log = await make_audit(recorder, lease_seconds=30)
    await log.record("a", "write", "doc", "1")

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(log._entries, "insert_one", lost)
    with pytest.raises(BackendUnavailableError):
        await log.record("a", "write", "doc", "2")
    recorder.clear()
    await log.aclose()
    assert recorder.commands == []
