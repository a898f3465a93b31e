"""Audit log appends: ``store.audit.record()`` against raw ``insert_one`` of the same documents.

    python -m bench.run --only mongo --repeats 3

- audit.record sequential: entries/s of one writer recording 300 entries in a row. Raw:
  ``insert_one`` of the same fields with the same write concern (majority, journaled), with
  no chain (no seq, no hash, no checkpoints): the price of tamper evidence.
- audit.record, 8 concurrent writers: 8 independent ``AuditLog`` instances (each its own
  client and lock, as 8 processes would be) appending 40 entries each at once; they race
  for sequence numbers through the unique index and retry. Raw: 8 tasks doing ``insert_one``.
- audit.record, 8 tasks on one store: the same load through one ``NexusStore`` (its lock
  serialises the appends of one process).

Each SDK run verifies afterwards that the chain is gap-free and valid.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from pymongo import AsyncMongoClient, WriteConcern

from bench.harness import Pair
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.mongo.schema import ensure_schema

SEQUENTIAL = 300
WRITERS = 8
PER_WRITER = 40


def _settings(env: Stack, collection: str) -> NexusSettings:
    return env.only("mongo").settings(
        events={"collection": f"{collection}_events"},
        audit={"collection": collection},
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


async def scenarios(env: Stack) -> list[Pair]:
    raw_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env.mongo_url, tz_aware=True)
    concern = WriteConcern(w="majority", j=True)

    async def open_stores(count: int) -> tuple[list[NexusStore], str]:
        collection = f"bench_audit_{uuid.uuid4().hex[:8]}"
        stores = [NexusStore(_settings(env, collection)) for _ in range(count)]
        await ensure_schema(stores[0].backends.mongo, stores[0].settings, manage_roles=False)
        return stores, collection

    async def finish(stores: list[NexusStore], collection: str, expected: int) -> None:
        result = await stores[0].audit.verify()
        assert result.ok and result.checked == expected, result
        db = stores[0].backends.mongo.db
        for name in (collection, f"{collection}_checkpoints", f"{collection}_events"):
            await db.drop_collection(name)
        for store in stores:
            await store.close()

    async def raw_collection() -> Any:
        collection = f"bench_audit_raw_{uuid.uuid4().hex[:8]}"
        return raw_client[env.mongo_database].get_collection(collection, write_concern=concern)

    async def sdk_sequential() -> float:
        stores, collection = await open_stores(1)
        audit = stores[0].audit
        started = time.perf_counter()
        for index in range(SEQUENTIAL):
            await audit.record(**_fields(0, index))
        rate = SEQUENTIAL / (time.perf_counter() - started)
        await finish(stores, collection, SEQUENTIAL)
        return rate

    async def raw_sequential() -> float:
        target = await raw_collection()
        started = time.perf_counter()
        for index in range(SEQUENTIAL):
            await target.insert_one(_fields(0, index))
        rate = SEQUENTIAL / (time.perf_counter() - started)
        await target.drop()
        return rate

    async def sdk_concurrent(independent: bool) -> float:
        stores, collection = await open_stores(WRITERS if independent else 1)

        async def write(writer: int) -> None:
            audit = stores[writer % len(stores)].audit
            for index in range(PER_WRITER):
                await audit.record(**_fields(writer, index))

        started = time.perf_counter()
        await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
        rate = WRITERS * PER_WRITER / (time.perf_counter() - started)
        await finish(stores, collection, WRITERS * PER_WRITER)
        return rate

    async def raw_concurrent() -> float:
        target = await raw_collection()

        async def write(writer: int) -> None:
            for index in range(PER_WRITER):
                await target.insert_one(_fields(writer, index))

        started = time.perf_counter()
        await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
        rate = WRITERS * PER_WRITER / (time.perf_counter() - started)
        await target.drop()
        return rate

    async def independent() -> float:
        return await sdk_concurrent(independent=True)

    async def shared() -> float:
        return await sdk_concurrent(independent=False)

    async def close_raw() -> None:
        await raw_client.close()

    label = "insert_one, same fields and write concern, no chain"
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
            "audit.record, 8 independent writers",
            "entries/s",
            independent,
            raw_concurrent,
            target="report",
            raw_label=label,
        ),
        Pair(
            "audit.record, 8 tasks on one store",
            "entries/s",
            shared,
            raw_concurrent,
            target="report",
            raw_label=label,
            teardown=close_raw,
        ),
    ]
