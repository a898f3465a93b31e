"""Health checks: ``await store.health()`` against the same probes written by hand.

    python -m bench.run --only health --repeats 3

- readiness report: ``store.health()`` (every check concurrently, each under a timeout,
  report built) vs the same server round trips with the raw async drivers on open
  connections: PostgreSQL ``SELECT 1``, ``SHOW server_version`` and the Alembic revision;
  MongoDB ``ping``, ``buildInfo``, ``listCollections`` and ``listIndexes``; Redis ``PING`` on
  each of the six logical DBs and ``INFO server/memory/clients``. Milliseconds per report, the
  median of a burst (lower is better).
- liveness report: ``store.health(probe="liveness")`` (no I/O), microseconds, SDK only.
- ``nexus-store health --format json``: wall time of the whole command (interpreter start,
  imports, connections, checks), what a Kubernetes exec probe pays. SDK only.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import redis.asyncio
from pymongo import AsyncMongoClient

from bench.harness import Pair, median_seconds
from devstack.stack import Stack
from nexus_store import NexusStore

REPORTS = 30  # per measurement
CLI_RUNS = 3


async def _median_ms(
    call: Callable[[], object], count: int = REPORTS, scale: float = 1000
) -> float:
    return await median_seconds(call, count) * scale


async def scenarios(env: Stack) -> list[Pair]:
    from nexus_store.cli.init import run_init

    raw: dict[str, Any] = {}
    databases = env.settings().redis.databases.model_dump()

    def store() -> NexusStore:
        found: NexusStore = raw["store"]
        return found

    async def setup() -> None:
        raw["store"] = NexusStore(env.settings())
        await run_init(store(), progress=False)
        raw["pg"] = await psycopg.AsyncConnection.connect(env.postgres_url, autocommit=True)
        raw["mongo"] = AsyncMongoClient(env.mongo_url)
        raw["redis"] = {
            area: redis.asyncio.Redis.from_url(env.redis_url, db=db)
            for area, db in databases.items()
        }
        await store().health()  # warm pools on both sides
        await raw_readiness()

    async def teardown() -> None:
        await raw["pg"].close()
        await raw["mongo"].close()
        for client in raw["redis"].values():
            await client.aclose()
        await store().close()

    async def postgres() -> None:
        conn = raw["pg"]
        for statement in (
            "SELECT 1",
            "SHOW server_version",
            "SELECT version_num FROM alembic_version",
        ):
            await (await conn.execute(statement)).fetchall()

    async def mongo() -> None:
        client = raw["mongo"]
        await client.admin.command("ping")
        await client.admin.command("buildInfo")
        db = client[env.mongo_database]
        for name in await db.list_collection_names():
            await (await db[name].list_indexes()).to_list()

    async def redis_checks() -> None:
        clients = raw["redis"]
        await asyncio.gather(*(client.ping() for client in clients.values()))
        sessions = clients["sessions"]
        await asyncio.gather(
            sessions.info("server"), sessions.info("memory"), sessions.info("clients")
        )

    async def raw_readiness() -> None:
        await asyncio.gather(postgres(), mongo(), redis_checks())

    async def cli_health_ms() -> float:
        command = [sys.executable, "-m", "nexus_store.cli", "health", "--format", "json"]
        environment = {**env.environment(), "PATH": "/usr/bin:/bin"}
        return await _median_ms(
            lambda: subprocess.run(command, env=environment, capture_output=True, check=False),
            CLI_RUNS,
        )

    return [
        Pair(
            "health: readiness report",
            "ms/report",
            sdk=lambda: _median_ms(store().health),
            raw=lambda: _median_ms(raw_readiness),
            higher_is_better=False,
            target="< 2x the bare round trips",
            setup=setup,
            teardown=teardown,
            raw_label="same probes, raw async drivers",
        ),
        Pair(
            "health: liveness report",
            "us/report",
            sdk=lambda: _median_ms(lambda: store().health(probe="liveness"), scale=1_000_000),
            higher_is_better=False,
            setup=setup,
            teardown=teardown,
        ),
        Pair(
            "health: `nexus-store health --format json` (whole process)",
            "ms/run",
            sdk=cli_health_ms,
            higher_is_better=False,
            target="< health.timeout + 1 s",
        ),
    ]
