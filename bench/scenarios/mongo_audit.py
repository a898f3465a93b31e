"""Audit log: ``store.audit`` against raw PyMongo doing the same work without a chain.

    python -m bench.run --only mongo_audit --repeats 3

- audit.record sequential: entries/s of one writer recording 300 entries in a row. Raw:
  ``insert_one`` of the same fields with the same write concern (majority, journaled), with
  no chain (no seq, no hash, no tree, no checkpoints): the price of tamper evidence.
- audit.record, 8 tasks on one store: 8 tasks recording 40 entries each through one
  ``NexusStore`` (group commit: their entries share ordered ``insert_many`` batches). Raw:
  8 tasks doing ``insert_one``.
- audit.record, 8 writer processes: 8 OS processes, each its own store recording
  ``PROCESS_ENTRIES`` entries in a row (one task), started together once all are connected;
  they take turns on the sequencer lease. Raw: 8 processes doing ``insert_one`` in a row.
- audit.record, 8 writer processes, a log each: the same 8 processes, each appending to an
  audit log of its own (its own chain and tree, no lease): what a chain per writer could
  reach at best, the per-entry cost of the chain with no turns taken.
- audit.record, 8 writer processes x 8 tasks: the same with 8 tasks in each process.
- 8 writer processes storing chained entries with insert_one: not the SDK, the floor under
  any design of it. Each process chains ``PROCESS_ENTRIES`` entries with the SDK's own code
  before "go" (a seq range of its own) and then stores them one ``insert_one`` at a time into
  one collection with the audit log's validator and indexes: no validation, no lease, no
  group commit on the clock. What a design could still save is at most the gap between this
  row and the SDK's.
- The process rows time from "go" until the last writer has appended and closed its
  client, as each writer reports it; the interpreters' exit afterwards is left out.
- audit.record, 8 stores in one process: 8 ``NexusStore`` instances (each its own client and
  appender, as 8 processes would have) appending ``PER_WRITER`` entries each at once,
  against 8 tasks doing ``insert_one`` on one client: the issue's baseline row (0.26x),
  measured as it was then.
- audit.verify: entries/s of ``verify()`` over a log of ``NEXUS_BENCH_AUDIT_SIZE`` (100,000)
  entries (chain, Merkle nodes, checkpoints). Raw: a cursor reading the same documents in
  seq order.
- audit.prove: milliseconds per inclusion proof of a random entry of that log, and the
  documents it reads (counted with command monitoring).
- audit.prove over ``NEXUS_BENCH_AUDIT_PROOF_SIZE`` entries (unset: not run; the issue's
  figure is 1000000): the same two rows on a log built directly, without the group commit's
  round trips: the entries are chained by the SDK's own code (``AuditLog._chain``: hashes,
  Merkle nodes, checkpoint frontiers) and written with ``insert_many``, so they verify like
  any other. Building 1M entries takes minutes on the substitute.

Each SDK run of the append rows verifies afterwards that the chain is gap-free and valid.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from typing import Any

from pymongo import AsyncMongoClient, WriteConcern, monitoring

from bench.harness import Pair
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.audit_proofs import check_entry
from nexus_store.connections import Backends
from nexus_store.mongo.audit._tree import Frontier
from nexus_store.mongo.audit.chain import GENESIS
from nexus_store.mongo.audit.log import AuditLog, _Head, _Pending
from nexus_store.mongo.audit.model import AuditRecord
from nexus_store.mongo.client import MongoBackend
from nexus_store.mongo.schema import ensure_schema

SEQUENTIAL = 300
WRITERS = 8
PER_WRITER = 40
PROCESS_ENTRIES = 60
LOG_SIZE = int(os.environ.get("NEXUS_BENCH_AUDIT_SIZE", "100000"))
PROOFS = 30
PROOF_LOG_SIZE = int(os.environ.get("NEXUS_BENCH_AUDIT_PROOF_SIZE", "0"))
BIG_PROOFS = 10
_CHUNK = 5000  # entries chained and inserted at once (well under audit.batch_max_bytes)
HMAC_KEY = "bench-hmac-key"


def _settings(url: str, database: str, collection: str) -> NexusSettings:
    return NexusSettings.load(
        # the substitute sorts 100k entries for a cursor's first batch: slow on a busy machine
        mongo={"url": url, "database": database, "socket_timeout": 300},
        audit={"collection": collection, "hmac_key": HMAC_KEY},
        events={"collection": f"{collection}_events"},
        log={"level": "error"},
    )


def _fields(writer: int, index: int) -> dict[str, Any]:
    return {
        "actor": f"admin:{writer}",
        "action": "update",
        "resource_type": "user",
        "resource_id": str(index),
        "before": {"role": "member"},
        "after": {"role": "admin"},
        "ip": "203.0.113.9",
        "user_agent": "bench/1",
        "reason": "benchmark",
    }


class _DocumentCounter(monitoring.CommandListener):
    """Counts the documents the server returns (first batches and getMores)."""

    def __init__(self) -> None:
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") or {}
        self.documents += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _median_proof_ms(
    audit: AuditLog,
    size: int,
    proofs: int,
    seed: int,
    counter: _DocumentCounter,
    documents: list[float],
    *,
    offline: bool = False,
) -> float:
    """Milliseconds of the median inclusion proof of ``proofs`` random entries of a log of
    ``size``; the documents each read go to ``documents``. ``offline``: each proof is also
    checked against a signed tree head, as a third party would."""
    head = await audit.tree_head() if offline else None
    timings = []
    for seq in random.Random(seed).sample(range(1, size + 1), proofs):
        counter.documents = 0
        started = time.perf_counter()
        proof = await audit.prove(seq)
        timings.append((time.perf_counter() - started) * 1000)
        documents.append(counter.documents)
        assert len(proof.path) <= size.bit_length()
        if head is not None:
            assert check_entry(proof.entry, proof, head, hmac_key=HMAC_KEY.encode()) is None
    return statistics.median(timings)


def _pending(writer: int, indexes: range) -> list[_Pending]:
    """Queue items for ``writer``'s records ``indexes``, as ``record()`` would make them."""
    loop = asyncio.get_running_loop()
    return [
        _Pending(AuditRecord(**_fields(writer, index)), None, loop.create_future())
        for index in indexes
    ]


async def _build_directly(audit: AuditLog, size: int) -> float:
    """Append ``size`` entries chained by the SDK's own code, written with ``insert_many``
    (no lease, no per-batch waiting); returns the seconds it took."""
    started = time.perf_counter()
    head = await audit._load_head()
    frontier = head.frontier

    async def write(documents: list[dict[str, Any]], frontiers: dict[int, list[bytes]]) -> None:
        await audit._entries.insert_many(documents, ordered=True)
        await audit._write_checkpoints(documents, frontiers)

    writing: asyncio.Future[None] | None = None
    for first in range(0, size, _CHUNK):
        batch = _pending(0, range(first, min(first + _CHUNK, size)))
        documents, _owners, head, frontiers = audit._chain(batch, head, frontier)
        assert len(documents) == len(batch) and not audit._queue
        if writing is not None:
            await writing  # the server stores one chunk while the next is chained
        writing = asyncio.ensure_future(write(documents, frontiers))
        if (first // _CHUNK) % 20 == 0:
            print(f"  proof log: {first + len(batch):,}/{size:,}", file=sys.stderr)
    if writing is not None:
        await writing
    return time.perf_counter() - started


def _chained_entries(audit: AuditLog, writer: int, count: int) -> list[dict[str, Any]]:
    """``count`` entries chained by the SDK's own code in a seq range of ``writer``'s own."""
    batch = _pending(writer, range(count))
    head = _Head(writer * count, GENESIS, None, Frontier())  # writers are pids: ranges apart
    documents, _owners, _head, _frontiers = audit._chain(batch, head, Frontier())
    assert len(documents) == count
    return documents


async def _writer(
    mode: str, url: str, database: str, collection: str, count: int, tasks: int
) -> None:
    """One writer process: connect, say ready, wait for "go" on stdin, append, close, say
    when it finished (the interpreter's exit afterwards is not the writer's work)."""
    store: NexusStore | None = None
    chained: list[dict[str, Any]] = []
    if mode == "stored-chained":
        chain_store = NexusStore(_settings(url, database, collection))
        chained = _chained_entries(chain_store.audit, os.getpid(), count * tasks)
        await chain_store.close()
    if mode in {"sdk", "sdk-own-log"}:
        if mode == "sdk-own-log":  # a log of this writer's own: no lease, nobody to wait for
            collection = f"{collection}_{os.getpid()}"
        store = NexusStore(_settings(url, database, collection))
        if mode == "sdk-own-log":
            await ensure_schema(store.backends.mongo, store.settings, manage_roles=False)
        await store.backends.mongo.ping()
        audit = store.audit
    else:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
        target = client[database].get_collection(
            collection, write_concern=WriteConcern(w="majority", j=True)
        )
        await client.admin.command("ping")
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    writer = os.getpid()

    async def task(number: int) -> None:
        for index in range(count):
            if store is not None:
                await audit.record(**_fields(writer, number * count + index))
            elif chained:
                await target.insert_one(chained[number * count + index])
            else:
                await target.insert_one(_fields(writer, number * count + index))

    await asyncio.gather(*(task(number) for number in range(tasks)))
    if store is not None:
        await store.close()
    else:
        await client.close()
    print(f"done {time.monotonic()}", flush=True)


async def _run_processes(mode: str, env: Stack, collection: str, tasks: int) -> float:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scenarios.mongo_audit",
            mode,
            env.mongo_url,
            env.mongo_database,
            collection,
            str(PROCESS_ENTRIES),
            str(tasks),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # slow_operation warnings under load
        )
        for _ in range(WRITERS)
    ]
    for process in processes:
        assert process.stdout is not None
        assert (await process.stdout.readline()).strip() == b"ready"
    # time.monotonic() is CLOCK_MONOTONIC on Linux: one clock for every process here
    started = time.monotonic()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
    finished = []
    for process in processes:
        assert process.stdout is not None
        word, _, when = (await process.stdout.readline()).decode().partition(" ")
        assert word == "done", word
        finished.append(float(when))
    codes = [await process.wait() for process in processes]
    assert codes == [0] * WRITERS, codes
    # until the last writer has appended and closed; eight interpreters exiting at once
    # take longer than the appends themselves on two cores, and are not the work measured
    return WRITERS * PROCESS_ENTRIES * tasks / (max(finished) - started)


async def scenarios(env: Stack) -> list[Pair]:
    raw_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.mongo_url, tz_aware=True)
    concern = WriteConcern(w="majority", j=True)
    db = raw_client[env.mongo_database]

    def settings(collection: str) -> NexusSettings:
        return _settings(env.mongo_url, env.mongo_database, collection)

    async def new_store() -> tuple[NexusStore, str]:
        collection = f"bench_audit_{uuid.uuid4().hex[:8]}"
        store = NexusStore(settings(collection))
        await ensure_schema(store.backends.mongo, store.settings, manage_roles=False)
        return store, collection

    async def drop_log(collection: str) -> None:
        """Drop an audit log's collections (and the store's events collection)."""
        for suffix in ("", "_checkpoints", "_events", "_lease"):
            await db.drop_collection(collection + suffix)

    async def finish(store: NexusStore, collection: str, expected: int) -> None:
        result = await store.audit.verify()
        assert result.ok and result.checked == expected, result
        await drop_log(collection)
        await store.close()

    def raw_collection() -> Any:
        return db.get_collection(f"bench_audit_raw_{uuid.uuid4().hex[:8]}", write_concern=concern)

    async def sdk_sequential() -> float:
        store, collection = await new_store()
        started = time.perf_counter()
        for index in range(SEQUENTIAL):
            await store.audit.record(**_fields(0, index))
        rate = SEQUENTIAL / (time.perf_counter() - started)
        await finish(store, collection, SEQUENTIAL)
        return rate

    async def raw_sequential() -> float:
        target = raw_collection()
        started = time.perf_counter()
        for index in range(SEQUENTIAL):
            await target.insert_one(_fields(0, index))
        rate = SEQUENTIAL / (time.perf_counter() - started)
        await target.drop()
        return rate

    async def sdk_tasks() -> float:
        store, collection = await new_store()

        async def write(writer: int) -> None:
            for index in range(PER_WRITER):
                await store.audit.record(**_fields(writer, index))

        started = time.perf_counter()
        await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
        rate = WRITERS * PER_WRITER / (time.perf_counter() - started)
        await finish(store, collection, WRITERS * PER_WRITER)
        return rate

    async def raw_tasks() -> float:
        target = raw_collection()

        async def write(writer: int) -> None:
            for index in range(PER_WRITER):
                await target.insert_one(_fields(writer, index))

        started = time.perf_counter()
        await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
        rate = WRITERS * PER_WRITER / (time.perf_counter() - started)
        await target.drop()
        return rate

    def processes(tasks: int) -> tuple[Any, Any]:
        async def sdk() -> float:
            store, collection = await new_store()
            rate = await _run_processes("sdk", env, collection, tasks)
            await finish(store, collection, WRITERS * PROCESS_ENTRIES * tasks)
            return rate

        async def raw() -> float:
            collection = f"bench_audit_raw_{uuid.uuid4().hex[:8]}"
            rate = await _run_processes("raw", env, collection, tasks)
            await db.drop_collection(collection)
            return rate

        return sdk, raw

    async def stored_chained() -> float:
        """The floor: chained entries stored with ``insert_one``, no SDK code on the clock."""
        store, collection = await new_store()
        rate = await _run_processes("stored-chained", env, collection, 1)
        assert await db[collection].count_documents({}) == WRITERS * PROCESS_ENTRIES
        await drop_log(collection)
        await store.close()
        return rate

    async def sdk_stores() -> float:
        """8 stores in one process, one task each, on one log (the issue's baseline row)."""
        first, collection = await new_store()
        others = [NexusStore(settings(collection)) for _ in range(WRITERS - 1)]
        stores = [first, *others]
        for store in others:
            await store.backends.mongo.ping()

        async def write(writer: int) -> None:
            for index in range(PER_WRITER):
                await stores[writer].audit.record(**_fields(writer, index))

        started = time.perf_counter()
        await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
        rate = WRITERS * PER_WRITER / (time.perf_counter() - started)
        for store in others:
            await store.close()
        await finish(first, collection, WRITERS * PER_WRITER)
        return rate

    async def sdk_own_logs() -> float:
        """What a chain per writer could reach: each process appends to a log of its own."""
        collection = f"bench_audit_own_{uuid.uuid4().hex[:8]}"
        rate = await _run_processes("sdk-own-log", env, collection, 1)
        logs = [
            name
            for name in await db.list_collection_names()
            if name.startswith(collection) and name.removeprefix(collection + "_").isdigit()
        ]
        assert len(logs) == WRITERS, logs
        for name in logs:
            store = NexusStore(settings(name))
            await finish(store, name, PROCESS_ENTRIES)
        return rate

    # -- verify and prove over one big log, built once ----------------------------------
    big = f"bench_audit_big_{uuid.uuid4().hex[:8]}"
    counter = _DocumentCounter()
    built: list[AuditLog] = []

    async def counted_log(collection: str, listener: _DocumentCounter) -> AuditLog:
        """An audit log on ``collection`` whose reads ``listener`` counts, its schema made."""
        backends = Backends(settings(collection))
        backends._mongo = MongoBackend(backends.settings.mongo, event_listeners=[listener])
        await ensure_schema(backends.mongo, backends.settings, manage_roles=False)
        return AuditLog(backends)

    async def build_big_log() -> None:
        audit = await counted_log(big, counter)
        started = time.perf_counter()
        chunk = 2000
        for first in range(0, LOG_SIZE, chunk):
            await asyncio.gather(
                *(
                    audit.record(**_fields(0, index))
                    for index in range(first, min(first + chunk, LOG_SIZE))
                )
            )
            print(f"  audit log: {min(first + chunk, LOG_SIZE):,}/{LOG_SIZE:,}", file=sys.stderr)
        print(
            f"  built {LOG_SIZE:,} entries in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        built.append(audit)

    async def sdk_verify() -> float:
        started = time.perf_counter()
        result = await built[0].verify()
        assert result.ok and result.checked == LOG_SIZE, result
        return LOG_SIZE / (time.perf_counter() - started)

    async def raw_read() -> float:
        started = time.perf_counter()
        read = 0
        async for _document in db[big].find({}, sort=[("seq", 1)], batch_size=1000):
            read += 1
        assert read == LOG_SIZE
        return read / (time.perf_counter() - started)

    proof_documents: list[float] = []

    async def sdk_prove() -> float:
        return await _median_proof_ms(built[0], LOG_SIZE, PROOFS, 9, counter, proof_documents)

    async def documents_read() -> float:
        return max(proof_documents)

    # -- prove over a log built directly (NEXUS_BENCH_AUDIT_PROOF_SIZE) -------------------
    huge = f"bench_audit_proof_{uuid.uuid4().hex[:8]}"
    huge_counter = _DocumentCounter()
    huge_log: list[AuditLog] = []
    huge_documents: list[float] = []

    async def build_proof_log() -> None:
        audit = await counted_log(huge, huge_counter)
        seconds = await _build_directly(audit, PROOF_LOG_SIZE)
        print(f"  built {PROOF_LOG_SIZE:,} entries directly in {seconds:.0f} s", file=sys.stderr)
        huge_log.append(audit)

    async def sdk_prove_huge() -> float:
        return await _median_proof_ms(
            huge_log[0], PROOF_LOG_SIZE, BIG_PROOFS, 7, huge_counter, huge_documents, offline=True
        )

    async def huge_documents_read() -> float:
        return max(huge_documents)

    async def drop_huge() -> None:
        await drop_log(huge)
        await huge_log[0]._mongo.close()
        await raw_client.close()

    proof_rows = (
        [
            Pair(
                f"audit.prove, random entry of {PROOF_LOG_SIZE:,} (log built directly)",
                "ms/proof",
                sdk_prove_huge,
                higher_is_better=False,
                target="report (O(log n))",
                setup=build_proof_log,
            ),
            Pair(
                f"audit.prove of {PROOF_LOG_SIZE:,} (log built directly), documents read "
                f"(max of {BIG_PROOFS})",
                "documents",
                huge_documents_read,
                higher_is_better=False,
                target=f"O(log n): <= {2 * PROOF_LOG_SIZE.bit_length()}",
                teardown=drop_huge,
            ),
        ]
        if PROOF_LOG_SIZE
        else []
    )

    async def drop_big() -> None:
        await drop_log(big)
        await built[0]._mongo.close()
        if not PROOF_LOG_SIZE:
            await raw_client.close()

    label = "insert_one, same fields and write concern, no chain"
    one_task, eight_tasks = processes(1), processes(8)
    return [
        Pair(
            "audit.record sequential",
            "entries/s",
            sdk_sequential,
            raw_sequential,
            target="report",
            raw_label=label,
        ),
        Pair(
            "audit.record, 8 tasks on one store",
            "entries/s",
            sdk_tasks,
            raw_tasks,
            target=">= 3x 1,087 and >= 1.0x",
            raw_label="8 tasks, " + label,
        ),
        Pair(
            "audit.record, 8 writer processes",
            "entries/s",
            *one_task,
            target=">= 1.0x",
            raw_label="8 processes, " + label,
        ),
        Pair(
            "audit.record, 8 stores in one process",
            "entries/s",
            sdk_stores,
            raw_tasks,
            target="report (the issue's baseline row: 0.26x)",
            raw_label="8 tasks, " + label,
        ),
        Pair(
            "8 writer processes storing chained entries with insert_one",
            "entries/s",
            stored_chained,
            one_task[1],
            target="report (not the SDK: the floor under any design)",
            raw_label="8 processes, " + label,
        ),
        Pair(
            "audit.record, 8 writer processes, a log each",
            "entries/s",
            sdk_own_logs,
            one_task[1],
            target="report (no lease: the ceiling of a chain per writer)",
            raw_label="8 processes, " + label,
        ),
        Pair(
            "audit.record, 8 writer processes x 8 tasks",
            "entries/s",
            *eight_tasks,
            target="report",
            raw_label="8 processes x 8 tasks, " + label,
        ),
        Pair(
            f"audit.verify, {LOG_SIZE:,} entries",
            "entries/s",
            sdk_verify,
            raw_read,
            target=">= 0.8x",
            raw_label="cursor over the same documents",
            setup=build_big_log,
        ),
        Pair(
            f"audit.prove, random entry of {LOG_SIZE:,}",
            "ms/proof",
            sdk_prove,
            higher_is_better=False,
            target="report (O(log n))",
        ),
        Pair(
            f"audit.prove, documents read (max of {PROOFS})",
            "documents",
            documents_read,
            higher_is_better=False,
            target=f"O(log n): <= {2 * LOG_SIZE.bit_length()}",
            teardown=drop_big,
        ),
        *proof_rows,
    ]


if __name__ == "__main__":
    mode, url, database, collection, count, tasks = sys.argv[1:7]
    asyncio.run(_writer(mode, url, database, collection, int(count), int(tasks)))
