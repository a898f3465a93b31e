"""Analytics event ingestion: ``store.events.track()`` + ``flush()`` against raw PyMongo.

    python -m bench.run --only mongo --repeats 3

- events ingest CPU: client CPU (``time.process_time``) per event to ingest 100,000 events.
  nexus-store: ``track()`` (pydantic validation, key checks, BSON encoding, size check,
  bounded buffer) with the background flusher writing ``insert_many(ordered=False)`` batches
  of ``flush_at=1000``, then ``flush()``. Raw: ``insert_many(ordered=False)`` of prepared dicts
  in batches of 1000. Both write to a fresh collection with the same indexes (the ones
  ``ensure_schema`` declares). The server runs in another process, so process_time measures
  the client only.
- events ingest throughput: end-to-end events/s of the very same runs (recorded by the CPU
  pair, reported separately so each figure has its own ratio).
- events buffer, stalled MongoDB: peak traced memory (tracemalloc) while 100,000 events are
  tracked against a server that accepts connections and never answers, with
  ``max_queue_size=10,000`` and ``on_full="drop"``. Compared with holding the same encoded
  events in an unbounded list, which is what a buffer without a bound would do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import bson
from bson import ObjectId
from pymongo import AsyncMongoClient

from bench.env import BenchEnv
from bench.harness import Pair
from nexus_store import NexusSettings, NexusStore
from nexus_store.mongo.events.model import Event
from nexus_store.mongo.schema import ensure_schema

EVENTS = 100_000
BATCH = 1_000
STALL_QUEUE = 10_000
NAMES = ["page_view", "click", "signup", "add_to_cart", "checkout"]


def _payloads() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            NAMES[i % len(NAMES)],
            f"user-{i % 5000}",
            {
                "path": f"/products/{i % 700}",
                "price": (i % 100) + 0.99,
                "qty": i % 5,
                "tags": ["a", "b"],
            },
        )
        for i in range(EVENTS)
    ]


def _settings(env: BenchEnv, collection: str, **events: Any) -> NexusSettings:
    return NexusSettings.load(
        mongo={"url": env.mongo_url, "database": env.mongo_database},
        events={"collection": collection, "flush_at": BATCH, **events},
        audit={"collection": f"{collection}_audit"},
        log={"level": "error"},
    )


async def _stalled_port(held: list[asyncio.StreamWriter]) -> tuple[asyncio.Server, int]:
    """A port that accepts connections and never answers (the connections are kept open)."""

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def scenarios(env: BenchEnv) -> list[Pair]:
    payloads = _payloads()
    raw_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.mongo_url, tz_aware=True)
    throughput: dict[str, list[float]] = {"sdk": [], "raw": []}

    async def fresh(side: str) -> tuple[NexusStore, str]:
        collection = f"bench_events_{side}_{uuid.uuid4().hex[:8]}"
        store = NexusStore(_settings(env, collection))
        await ensure_schema(store.backends.mongo, store.settings, manage_roles=False)
        return store, collection

    async def drop(store: NexusStore, collection: str) -> None:
        await store.backends.mongo.db.drop_collection(collection)
        await store.backends.mongo.db.drop_collection(f"{collection}_audit")
        await store.backends.mongo.db.drop_collection(f"{collection}_audit_checkpoints")
        await store.close()

    async def sdk_cpu() -> float:
        store, collection = await fresh("sdk")
        events = store.events
        wall, cpu = time.perf_counter(), time.process_time()
        for name, user_id, properties in payloads:
            await events.track(name, user_id=user_id, properties=properties)
        await events.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert events.stats().written == EVENTS
        throughput["sdk"].append(EVENTS / wall)
        await drop(store, collection)
        return cpu / EVENTS * 1e6

    async def raw_cpu() -> float:
        store, collection = await fresh("raw")
        target = raw_client[env.mongo_database][collection]
        now = dt.datetime.now(dt.UTC)
        documents = [
            {
                "event_id": str(ObjectId()),
                "name": name,
                "ts": now,
                "user_id": user_id,
                "properties": properties,
                "context": {},
            }
            for name, user_id, properties in payloads
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, EVENTS, BATCH):
            await target.insert_many(documents[start : start + BATCH], ordered=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        throughput["raw"].append(EVENTS / wall)
        await drop(store, collection)
        return cpu / EVENTS * 1e6

    def recorded(side: str) -> Callable[[], Awaitable[float]]:
        async def value() -> float:
            if not throughput[side]:  # run alone (--filter): measure now
                await (sdk_cpu if side == "sdk" else raw_cpu)()
            return throughput[side].pop(0)

        return value

    async def sdk_stalled_memory() -> float:
        held: list[asyncio.StreamWriter] = []
        server, port = await _stalled_port(held)
        settings = NexusSettings.load(
            mongo={
                "url": f"mongodb://127.0.0.1:{port}",
                "database": env.mongo_database,
                "server_selection_timeout": 0.5,
                "connect_timeout": 0.5,
            },
            events={
                "flush_at": BATCH,
                "max_queue_size": STALL_QUEUE,
                "on_full": "drop",
                "close_timeout": 0.1,
            },
            log={"level": "error"},
        )
        store = NexusStore(settings)
        tracemalloc.start()
        try:
            for name, user_id, properties in payloads:
                await store.events.track(name, user_id=user_id, properties=properties)
            _, peak = tracemalloc.get_traced_memory()
            stats = store.events.stats()
            assert stats.queued <= STALL_QUEUE and stats.dropped >= EVENTS - STALL_QUEUE
        finally:
            tracemalloc.stop()
            await store.close()
            for writer in held:
                writer.close()
            server.close()
        return peak / 2**20

    async def raw_unbounded_memory() -> float:
        tracemalloc.start()
        try:
            held = [
                bson.encode(Event(name=name, user_id=user_id, properties=properties).to_document())
                for name, user_id, properties in payloads
            ]
            _, peak = tracemalloc.get_traced_memory()
            assert len(held) == EVENTS
        finally:
            tracemalloc.stop()
        return peak / 2**20

    async def close_raw() -> None:
        await raw_client.close()

    return [
        Pair(
            "events ingest CPU (100k, track+flush)",
            "us/event CPU",
            sdk_cpu,
            raw_cpu,
            higher_is_better=False,
            target="<= 1.5x raw",
            raw_label="insert_many of prepared dicts, batches of 1000",
        ),
        Pair(
            "events ingest throughput (same runs)",
            "events/s",
            recorded("sdk"),
            recorded("raw"),
            raw_label="insert_many of prepared dicts, batches of 1000",
        ),
        Pair(
            "events buffer, stalled MongoDB (100k tracked)",
            "MiB peak",
            sdk_stalled_memory,
            raw_unbounded_memory,
            higher_is_better=False,
            target="bounded",
            raw_label="unbounded list of the same encoded events",
            teardown=close_raw,
        ),
    ]
