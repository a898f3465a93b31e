"""``entities.get`` against ``entities.create`` under 200 concurrent tasks (issue 18).

    python -m bench.run --only postgres_concurrency --repeats 3

Each side runs 200 tasks of 10 calls on one store and reports its p99 latency (ms): ``get``
by key (the psycopg fast-lookup pool) on the "sdk" side, ``create`` (the SQLAlchemy pool, a
write) on the other. The target is ``get`` p99 <= ``create`` p99: a read by key must not
queue longer than a write. p50 and the pool's queue statistics are printed on stderr.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from bench.harness import Pair
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.postgres import migrate
from nexus_store.postgres.models import User

TASKS = 200
CALLS_PER_TASK = 10


def _percentile(seconds: list[float], fraction: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


async def scenarios(env: Stack) -> list[Pair]:
    settings = env.settings()
    await migrate.upgrade(settings)
    store = NexusStore(settings)
    ids: list[uuid.UUID] = []

    async def create_one(latencies: list[float]) -> None:
        tag = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        user = await store.entities.create(
            User, email=f"{tag}@example.com", username=f"c{tag}", password_hash="x" * 40
        )
        latencies.append(time.perf_counter() - started)
        ids.append(user.id)

    async def get_one(latencies: list[float], index: int) -> None:
        started = time.perf_counter()
        await store.entities.get(User, ids[index % len(ids)])
        latencies.append(time.perf_counter() - started)

    async def under_load(name: str, call: str) -> float:
        latencies: list[float] = []

        async def task(number: int) -> None:
            for step in range(CALLS_PER_TASK):
                if call == "create":
                    await create_one(latencies)
                else:
                    await get_one(latencies, number * CALLS_PER_TASK + step)

        await asyncio.gather(*(task(number) for number in range(TASKS)))
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        print(f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)
        if call == "get":
            stats = (await store.backends.postgres.read_pool(0)).pop_stats()
            print(f"  fast-lookup pool: {stats}", file=sys.stderr)
        return p99

    async def setup() -> None:
        if not ids:  # rows to look up, and warm pools on both sides
            await under_load("warm-up create", "create")

    async def teardown() -> None:
        await store.close()

    return [
        Pair(
            "entities.get p99 vs entities.create p99, 200 tasks x 10 calls",
            "ms",
            sdk=lambda: under_load("get", "get"),
            raw=lambda: under_load("create", "create"),
            raw_label="entities.create",
            higher_is_better=False,
            target="get p99 <= create p99 (ratio <= 1)",
            setup=setup,
            teardown=teardown,
        )
    ]
