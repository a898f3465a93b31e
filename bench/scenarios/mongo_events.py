"""Analytics event ingestion: ``store.events.track()`` + ``flush()`` against raw PyMongo.

    python -m bench.run --only mongo --repeats 3

- events ingest CPU: client CPU (``time.process_time``) per event to ingest 100,000 events.
  nexus-store: ``track()`` (the Event rules: ids, names, aware ``ts``, value and key screens;
  BSON encoding, size check, bounded buffer) with the background flusher writing
  ``insert_many(ordered=False)`` batches of ``flush_at=1000``, then ``flush()``. Raw:
  ``insert_many(ordered=False)`` of dicts prepared before the clock starts, in batches of 1000
  (the issue's baseline; the driver still adds an ``_id`` to each). Both write to a fresh
  collection with the same indexes (the ones ``ensure_schema`` declares). The server runs in
  another process, so process_time measures the client only.
- events ingest CPU, raw builds each dict: the same SDK runs against what an application
  using the driver alone does per event inside the timed loop: build the dict (an
  ``event_id`` from ``str(ObjectId())``, ``datetime.now(UTC)``) and ``insert_many`` every
  1000. No validation on that side.
- events ingest throughput: end-to-end events/s of the very same runs as the first pair
  (recorded there, reported separately so each figure has its own ratio).
- events buffer, stalled MongoDB: peak traced memory (tracemalloc) while 100,000 events are
  tracked against a server that accepts connections and never answers, with
  ``max_queue_size=10,000`` and ``on_full="drop"``. Compared with holding the same encoded
  events in an unbounded list, which is what a buffer without a bound would do.
"""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import bson
from bson import ObjectId
from pymongo import AsyncMongoClient

from bench.harness import Pair
from devstack.servers import silent_port
from devstack.stack import Stack
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


def _raw_document(
    name: str, user_id: str, properties: dict[str, Any], ts: dt.datetime
) -> dict[str, Any]:
    """The document ``track()`` stores, as an application would build it for the driver."""
    return {
        "event_id": str(ObjectId()),
        "name": name,
        "ts": ts,
        "user_id": user_id,
        "properties": properties,
        "context": {},
    }


def _settings(env: Stack, collection: str, **events: Any) -> NexusSettings:
    return env.only("mongo").settings(
        events={"collection": collection, "flush_at": BATCH, **events},
        audit={"collection": f"{collection}_audit"},
        log={"level": "error"},
    )


async def scenarios(env: Stack) -> list[Pair]:
    payloads = _payloads()
    raw_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.mongo_url, tz_aware=True)
    recorded_runs: dict[str, list[float]] = {"sdk rate": [], "raw rate": [], "sdk cpu": []}

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
        recorded_runs["sdk rate"].append(EVENTS / wall)
        recorded_runs["sdk cpu"].append(cpu / EVENTS * 1e6)
        await drop(store, collection)
        return cpu / EVENTS * 1e6

    async def raw_cpu() -> float:
        store, collection = await fresh("raw")
        target = raw_client[env.mongo_database][collection]
        now = dt.datetime.now(dt.UTC)
        documents = [_raw_document(*payload, now) for payload in payloads]
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, EVENTS, BATCH):
            await target.insert_many(documents[start : start + BATCH], ordered=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        recorded_runs["raw rate"].append(EVENTS / wall)
        await drop(store, collection)
        return cpu / EVENTS * 1e6

    async def raw_building_cpu() -> float:
        """What an application does with the driver alone: a dict per event, then batches."""
        store, collection = await fresh("raw")
        target = raw_client[env.mongo_database][collection]
        batch: list[dict[str, Any]] = []
        cpu = time.process_time()
        for name, user_id, properties in payloads:
            batch.append(_raw_document(name, user_id, properties, dt.datetime.now(dt.UTC)))
            if len(batch) == BATCH:
                await target.insert_many(batch, ordered=False)
                batch = []
        cpu = time.process_time() - cpu
        assert not batch and await target.estimated_document_count() == EVENTS
        await drop(store, collection)
        return cpu / EVENTS * 1e6

    def recorded(figure: str) -> Callable[[], Awaitable[float]]:
        """A figure of the ingest CPU pair's runs, so that two pairs share one measurement."""

        async def value() -> float:
            if not recorded_runs[figure]:  # run alone (--filter): measure now
                await (raw_cpu if figure == "raw rate" else sdk_cpu)()
            return recorded_runs[figure].pop(0)

        return value

    async def sdk_stalled_memory() -> float:
        with silent_port() as port:
            settings = env.only("mongo").settings(
                mongo={
                    "url": f"mongodb://127.0.0.1:{port}",
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
            "events ingest CPU, raw builds each dict (same SDK runs)",
            "us/event CPU",
            recorded("sdk cpu"),
            raw_building_cpu,
            higher_is_better=False,
            raw_label="a dict per event (str(ObjectId()), datetime.now(UTC)), insert_many per 1000",
        ),
        Pair(
            "events ingest throughput (same runs)",
            "events/s",
            recorded("sdk rate"),
            recorded("raw rate"),
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
