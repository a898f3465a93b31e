"""Health checks: ``await store.health()`` against the same probes written by hand.

    python -m bench.run --only health --repeats 3

- readiness report: ``store.health()`` (every check concurrently, each under a timeout,
  report built) vs the same server round trips with the raw async drivers on open
  connections: PostgreSQL ``SELECT 1``, ``SHOW server_version`` and the Alembic revision;
  MongoDB ``ping``, ``buildInfo``, ``listCollections`` and ``listIndexes``; Redis ``PING`` on
  each of the six logical DBs and ``INFO server/memory/clients``. Milliseconds per report, the
  median of a burst (lower is better).
- liveness report: ``store.health(probe="liveness")`` (no I/O), microseconds, SDK only.
- exec probe: ``nexus-store health --probe readiness --format json``, the wall time of the
  whole process (interpreter start, imports, connections, checks, JSON), what a Kubernetes
  exec probe pays; the median of 10 runs, next to the median of 10 bare
  ``python -c 'import redis, psycopg, pymongo'`` (the drivers it cannot do without); and
  the same pair in CPU time (user + sys of the child), which a shared machine skews less;
  and the probe's CPU time against the same report through typer and rich (``--count 1``
  keeps a command on the typer path).
- exec probe, every backend hanging (a port that accepts and never answers), with
  ``--timeout 1``: the whole process, median of 3; it should cost one timeout more than the
  healthy probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio
from pymongo import AsyncMongoClient

from bench.harness import Pair, median_seconds
from devstack.servers import silent_port
from devstack.stack import Stack
from nexus_store import NexusStore

REPORTS = 30  # per measurement
PROBE_RUNS = 10  # whole processes per measurement
HANGING_RUNS = 3
# The console script a Kubernetes exec probe runs, from the same environment.
NEXUS_STORE = str(Path(sys.executable).with_name("nexus-store"))
PROBE = [NEXUS_STORE, "health", "--probe", "readiness", "--format", "json"]
BARE_IMPORTS = [sys.executable, "-c", "import redis, psycopg, pymongo"]


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

    def process_ms(
        command: list[str], environment: dict[str, str], runs: int
    ) -> Callable[[], Awaitable[float]]:
        def measure() -> Awaitable[float]:
            return _median_ms(
                lambda: subprocess.run(command, env=environment, capture_output=True, check=False),
                runs,
            )

        return measure

    def process_cpu_ms(command: list[str], environment: dict[str, str], runs: int) -> float:
        # CPU time (user + sys) of the child: on a shared machine it drifts far less than
        # wall time, which waits for the other processes' turns.
        samples = []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(command, env=environment, capture_output=True, check=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            samples.append(used * 1000)
        return statistics.median(samples)

    probe_env = {**env.environment(), "PATH": "/usr/bin:/bin"}
    hanging = contextlib.ExitStack()
    hanging_env: dict[str, str] = {}

    async def hang() -> None:
        address = f"127.0.0.1:{hanging.enter_context(silent_port())}"
        hanging_env.update(
            PATH="/usr/bin:/bin",
            NEXUS_POSTGRES_URL=f"postgresql://postgres@{address}/nexus",
            NEXUS_MONGO_URL=f"mongodb://{address}",
            NEXUS_REDIS_URL=f"redis://{address}",
        )

    async def unhang() -> None:
        hanging.close()

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
            "health: exec probe `nexus-store health --probe readiness --format json` "
            "(whole process, median of 10)",
            "ms/run",
            sdk=process_ms(PROBE, probe_env, PROBE_RUNS),
            raw=process_ms(BARE_IMPORTS, probe_env, PROBE_RUNS),
            higher_is_better=False,
            target="< 500 ms idle",
            raw_label="python -c 'import redis, psycopg, pymongo'",
        ),
        Pair(
            "health: exec probe, CPU time (user + sys, median of 10)",
            "ms/run",
            sdk=lambda: process_cpu_ms(PROBE, probe_env, PROBE_RUNS),
            raw=lambda: process_cpu_ms(BARE_IMPORTS, probe_env, PROBE_RUNS),
            higher_is_better=False,
            raw_label="python -c 'import redis, psycopg, pymongo'",
        ),
        Pair(
            "health: exec probe, CPU time, fast path vs typer and rich (median of 10)",
            "ms/run",
            sdk=lambda: process_cpu_ms(PROBE, probe_env, PROBE_RUNS),
            raw=lambda: process_cpu_ms([*PROBE, "--count", "1"], probe_env, PROBE_RUNS),
            higher_is_better=False,
            raw_label="the same report through typer (--count 1)",
        ),
        Pair(
            "health: exec probe, every backend hanging, --timeout 1 (whole process, median of 3)",
            "ms/run",
            sdk=process_ms([*PROBE, "--timeout", "1"], hanging_env, HANGING_RUNS),
            higher_is_better=False,
            target="< timeout + 500 ms idle",
            setup=hang,
            teardown=unhang,
        ),
    ]
