"""The audit log: recording, one gap-free chain under concurrency, tamper evidence, retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nexus_store.errors import TamperDetected, ValidationError
from nexus_store.mongo.audit.chain import GENESIS
from nexus_store.mongo.audit.log import AuditLog
from nexus_store.mongo.audit.model import AuditRecord
from nexus_store.mongo.schema import ensure_schema
from tests.support import REPO_ROOT, CommandRecorder

WRITER = Path(__file__).with_name("_writer_process.py")


def _collection(log: AuditLog) -> Any:
    return log._entries.with_options(write_concern=None)


def _independent_hash(prev_hash: str, document: dict[str, Any]) -> str:
    """The documented hash, recomputed with the json module rather than the SDK's code."""

    def iso(value: Any) -> str:
        value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"

    fields = [
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
    ]
    if "v" in document:  # version 2 also covers the version
        fields.append("v")
    payload = {field: document.get(field) for field in fields}
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), default=iso, ensure_ascii=False
    )
    return hashlib.sha256(prev_hash.encode() + canonical.encode()).hexdigest()


async def test_record_returns_the_stored_chained_entry(make_audit) -> None:
    recorder = CommandRecorder()
    log = await make_audit(recorder)
    first = await log.record(
        "admin:1",
        "update",
        "user",
        "42",
        before={"role": "member"},
        after={"role": "admin", "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        ip="203.0.113.9",
        user_agent="curl/8",
        reason="ticket 7",
    )
    second = await log.put(
        AuditRecord(actor="admin:1", action="delete", resource_type="user", resource_id="42")
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    stored = await _collection(log).find({}, sort=[("seq", 1)]).to_list()
    assert _independent_hash(GENESIS, stored[0]) == first.hash
    assert _independent_hash(first.hash, stored[1]) == second.hash
    inserts = [
        body for body in recorder.named("insert") if body["insert"] == log._settings.collection
    ]
    assert inserts[0]["writeConcern"] == {"w": "majority", "j": True}
    assert (await log.verify()).ok


async def test_there_is_no_update_or_delete_api() -> None:
    public = {name for name in dir(AuditLog) if not name.startswith("_")}
    assert public == {
        "put",
        "record",
        "verify",
        "by_actor",
        "by_resource",
        "in_range",
        "entries",
        "tree_head",
        "prove",
        "prove_consistency",
        "public_key",
        "check_tree_head",
        "aclose",
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"actor": ""}, "actor"),
        ({"before": {"$set": {"role": "x"}}}, "before.$set"),
        ({"after": {"a.b": 1}}, "after.a.b"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"reason": "a\x00b"}, "reason"),
        ({"resource_id": {"$ne": 1}}, "resource_id"),
    ],
)
def test_bad_records_name_the_field(fields: dict[str, Any], field: str) -> None:
    base = {"actor": "a", "action": "b", "resource_type": "c", "resource_id": "d"}
    with pytest.raises(ValidationError) as caught:
        AuditRecord(**{**base, **fields})
    assert caught.value.field == field


async def test_idempotency_key_returns_the_existing_entry(make_audit) -> None:
    log = await make_audit()
    first = await log.record("relay", "create", "order", "9", idempotency_key="outbox:1")
    again = await log.record("relay", "create", "order", "9", idempotency_key="outbox:1")
    other = await log.record("relay", "create", "order", "10", idempotency_key="outbox:2")
    assert again == first
    assert other.seq == first.seq + 1
    assert await _collection(log).count_documents({}) == 2


async def test_concurrent_tasks_and_writers_form_one_chain(
    make_audit, mongo_stack, open_backends
) -> None:
    log = await make_audit(checkpoint_every=5)
    # a second, independent writer (own lock, own client) races like another process would
    rival = AuditLog(await open_backends(mongo_stack.settings(audit={"checkpoint_every": 5})))

    async def write(writer: AuditLog, name: str) -> None:
        for index in range(6):
            await writer.record(name, "write", "doc", str(index))

    await asyncio.gather(*(write(log if n % 2 else rival, f"task{n}") for n in range(8)))
    seqs = await _collection(log).distinct("seq")
    assert sorted(seqs) == list(range(1, 49))
    result = await log.verify()
    assert (result.ok, result.checked, result.checkpoints_checked) == (True, 48, 9)


async def test_several_processes_form_one_chain(make_audit, mongo_stack) -> None:
    log = await make_audit(checkpoint_every=7)
    settings = log._settings
    url = mongo_stack.settings().mongo.url.get_secret_value()
    database = mongo_stack.settings().mongo.database
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITER),
            url,
            database,
            settings.collection,
            f"proc{n}",
            "15",
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
        )
        for n in range(3)
    ]
    await asyncio.gather(*(log.record("parent", "write", "doc", str(i)) for i in range(15)))
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, stderr.decode()
    stored = await _collection(log).find({}, projection={"seq": 1, "actor": 1}).to_list()
    assert sorted(doc["seq"] for doc in stored) == list(range(1, 61))
    assert {doc["actor"] for doc in stored} == {"parent", "proc0", "proc1", "proc2"}
    result = await log.verify()
    assert result.ok, result.reason
    assert result.checked == 60


async def _chain(make_audit, count: int = 10, **audit: Any) -> AuditLog:
    log = await make_audit(checkpoint_every=4, **audit)
    for index in range(count):
        await log.record("admin", "update", "user", str(index), after={"n": index})
    assert (await log.verify()).ok
    return log


async def _broken_at(log: AuditLog) -> int:
    with pytest.raises(TamperDetected) as caught:
        await log.verify(raise_on_tamper=True)
    result = await log.verify()
    assert not result.ok and result.first_broken_seq == caught.value.seq
    return caught.value.seq


async def test_edit_with_recomputed_hash_breaks_its_merkle_leaf_and_the_next_link(make_audit):
    log = await _chain(make_audit)
    entry = await _collection(log).find_one({"seq": 6})
    entry["actor"] = "someone else"
    forged = _independent_hash(entry["prev_hash"], entry)
    await _collection(log).update_one(
        {"seq": 6}, {"$set": {"actor": "someone else", "hash": forged}}
    )
    assert await _broken_at(log) == 6  # its stored leaf hash no longer matches
    assert "Merkle" in ((await log.verify()).reason or "")
    # with the derived nodes gone too, the chain still breaks at the next link
    await _collection(log).update_many({}, {"$unset": {"tree": ""}, "$set": {"v": None}})
    await _collection(log).update_many({}, {"$unset": {"v": ""}})
    assert await _broken_at(log) == 1  # dropping the version changes every hash


async def test_with_hmac_a_recomputed_hash_does_not_verify(make_audit):
    log = await _chain(make_audit, hmac_key="k3y-for-tests")
    entry = await _collection(log).find_one({"seq": 3})
    assert _independent_hash(entry["prev_hash"], entry) != entry["hash"]  # keyed
    await _collection(log).update_one(
        {"seq": 3}, {"$set": {"hash": _independent_hash(entry["prev_hash"], entry)}}
    )
    assert await _broken_at(log) == 3


async def test_checkpoint_tampering_is_detected(make_audit) -> None:
    log = await _chain(make_audit)
    await log._checkpoints.update_one({"seq": 8}, {"$set": {"signature": "0" * 64}})
    assert await _broken_at(log) == 8


async def test_verify_a_range(make_audit) -> None:
    log = await _chain(make_audit)
    result = await log.verify(start=4, end=7)
    assert (result.ok, result.checked) == (True, 4)
    with pytest.raises(ValidationError):
        await log.verify(start=0)


async def test_retention_expired_head_still_verifies(make_audit) -> None:
    log = await make_audit(retention_days=1, checkpoint_every=4)
    now = dt.datetime.now(dt.UTC)
    log._clock = lambda: now - dt.timedelta(days=2)  # these entries are past retention
    for index in range(6):
        await log.record("admin", "old", "doc", str(index))
    log._clock = lambda: now
    for index in range(5):
        await log.record("admin", "new", "doc", str(index))
    # what the TTL monitor does (nx-27017 applies TTL lazily; real MongoDB within ~60 s)
    await _collection(log).delete_many({"expires_at": {"$lt": now}})
    assert sorted(await _collection(log).distinct("seq")) == list(range(7, 12))
    result = await log.verify()
    assert result.ok, result.reason
    assert (result.checked, result.skipped_expired, result.checkpoints_checked) == (5, 6, 1)
    # deleting an entry that has not expired is still tampering
    await _collection(log).delete_one({"seq": 7})
    assert await _broken_at(log) == 7


async def test_chain_continues_from_checkpoint_after_everything_expired(
    make_audit, mongo_stack, open_backends
) -> None:
    log = await make_audit(retention_days=1, checkpoint_every=4)
    now = dt.datetime.now(dt.UTC)
    log._clock = lambda: now - dt.timedelta(days=2)
    for index in range(8):
        await log.record("admin", "old", "doc", str(index))
    await _collection(log).delete_many({"expires_at": {"$lt": now}})
    log._clock = lambda: now
    # a new writer (as in another process): no cached head, reads the checkpoint
    fresh = AuditLog(
        await open_backends(
            mongo_stack.settings(audit={"retention_days": 1, "checkpoint_every": 4})
        )
    )
    fresh._clock = lambda: now
    entry = await fresh.record("admin", "new", "doc", "x")
    checkpoint = await log._checkpoints.find_one({"seq": 8})
    assert (entry.seq, entry.prev_hash) == (9, checkpoint["hash"])
    assert (await fresh.verify()).ok


async def test_queries_paginate_newest_first(make_audit) -> None:
    log = await make_audit()
    for index in range(7):
        await log.record("alice" if index % 2 else "bob", "edit", "doc", str(index % 3))
    page = await log.by_actor("bob", limit=2)
    assert [e.seq for e in page.entries] == [7, 5]
    page = await log.by_actor("bob", limit=2, cursor=page.next_cursor)
    assert [e.seq for e in page.entries] == [3, 1] and page.next_cursor is None
    page = await log.by_resource("doc", "0", limit=10)
    assert [e.seq for e in page.entries] == [7, 4, 1]
    now = dt.datetime.now(dt.UTC)
    page = await log.in_range(now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=1), limit=4)
    assert [e.seq for e in page.entries] == [7, 6, 5, 4] and page.next_cursor == 4
    with pytest.raises(ValidationError) as caught:
        await log.by_actor({"$ne": ""})  # type: ignore[arg-type]
    assert caught.value.field == "actor"
    with pytest.raises(ValidationError):
        await log.by_resource("doc", "a\x00")


async def test_store_put_routes_events_and_audit_records(mongo_stack) -> None:
    from nexus_store import NexusStore
    from nexus_store.mongo.events.model import Event

    settings = mongo_stack.settings()
    async with NexusStore(settings) as store:
        await ensure_schema(store.backends.mongo, settings)
        event = await store.put(Event(name="signup", user_id="u1"))
        entry = await store.put(
            AuditRecord(actor="a", action="create", resource_type="user", resource_id="u1")
        )
        await store.events.flush()
        db = store.backends.mongo.db
        assert (
            await db[settings.events.collection].count_documents({"event_id": event.event_id}) == 1
        )
        assert entry.seq == 1 and (await store.audit.verify()).ok
