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
- the same pair (probe, bare imports) in a virtual environment holding only nexus-store's
  runtime dependencies, copied file by file from this one (no network, no
  ``--system-site-packages``): the test environment adds packages that the drivers import
  when present (redis-py 8 loads ``opentelemetry.sdk.metrics`` if it is installed).
- exec probe, every backend hanging (a port that accepts and never answers), with
  ``--timeout 1``: the whole process, median of 3. The probe's deadline counts from the start
  of its process, so this is about the timeout plus the closing grace (0.25 s), when start-up
  takes less than the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pymongo import AsyncMongoClient

import nexus_store
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


def _runtime_distributions() -> dict[str, metadata.Distribution]:
    """nexus-store's runtime dependencies, with theirs, as installed here (no extras)."""
    found: dict[str, metadata.Distribution] = {}
    extras_seen: dict[str, frozenset[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [("nexus-store", frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in extras_seen and extras <= extras_seen[key]:
            continue
        extras_seen[key] = extras_seen.get(key, frozenset()) | extras
        distribution = found[key] = metadata.distribution(name)
        for text in distribution.requires or ():
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((requirement.name, frozenset(requirement.extras)))
    del found["nexus-store"]
    return found


def runtime_only_environment(where: Path) -> Path:
    """A virtual environment in ``where`` with nexus-store (this checkout) and only its
    runtime dependencies, copied from this environment; returns its ``nexus-store`` script."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    here = Path(sysconfig.get_paths()["purelib"]).resolve()
    for distribution in _runtime_distributions().values():
        for file in distribution.files or ():
            source = Path(str(distribution.locate_file(file))).resolve()
            if source.is_file() and source.is_relative_to(here):  # not bin/ scripts
                target = site / source.relative_to(here)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    package = Path(nexus_store.__file__).parent
    shutil.copytree(package, site / "nexus_store", ignore=shutil.ignore_patterns("__pycache__"))
    script = where / "bin" / "nexus-store"
    script.write_text(
        f"#!{python}\nimport sys\nfrom nexus_store.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    # Compiled once, as an installer does: the measured runs must not write .pyc files.
    subprocess.run([str(python), "-m", "compileall", "-q", str(site)], check=False)
    return script


def _run_process(
    command: list[str], environment: dict[str, str], exits: tuple[int, ...] = (0, 1)
) -> None:
    """Run ``command``, which must exit one of ``exits``: a probe that fails where it should
    pass or warn (a loaded machine can delay the event loop), or the reverse, did not do the
    work being measured."""
    done = subprocess.run(command, env=environment, capture_output=True, check=False, text=True)
    if done.returncode not in exits:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stdout[:300]}")


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

    async def create_schema() -> None:
        # What the healthy probe checks must be there, whichever pairs --filter runs.
        async with NexusStore(env.settings()) as initialising:
            await run_init(initialising, progress=False)

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
        command: list[str], environment: dict[str, str], runs: int, exits: tuple[int, ...] = (0, 1)
    ) -> Callable[[], Awaitable[float]]:
        def measure() -> Awaitable[float]:
            return _median_ms(lambda: _run_process(command, environment, exits), runs)

        return measure

    def process_cpu_ms(command: list[str], environment: dict[str, str], runs: int) -> float:
        # CPU time (user + sys) of the child: on a shared machine it drifts far less than
        # wall time, which waits for the other processes' turns.
        samples = []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            _run_process(command, environment)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            samples.append(used * 1000)
        return statistics.median(samples)

    # The probe's timeout counts from the start of its process: on a loaded machine the
    # default 2 s can go to start-up, and a probe whose checks got no time measures nothing.
    probe_env = {**env.environment(health={"timeout": 10}), "PATH": "/usr/bin:/bin"}
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

    runtime_dir = tempfile.TemporaryDirectory(prefix="nexus-runtime-venv-")
    runtime: dict[str, list[str]] = {}

    async def build_runtime() -> None:
        await create_schema()
        script = runtime_only_environment(Path(runtime_dir.name) / "venv")
        runtime["probe"] = [str(script), *PROBE[1:]]
        runtime["bare"] = [str(script.with_name("python")), *BARE_IMPORTS[1:]]

    async def remove_runtime() -> None:
        runtime_dir.cleanup()

    def in_runtime(which: str) -> Callable[[], Awaitable[float]]:
        def measure() -> Awaitable[float]:  # the environment exists once setup has run
            return process_ms(runtime[which], probe_env, PROBE_RUNS)()

        return measure

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
            setup=create_schema,
            raw_label="python -c 'import redis, psycopg, pymongo'",
        ),
        Pair(
            "health: exec probe, runtime dependencies only (whole process, median of 10)",
            "ms/run",
            sdk=in_runtime("probe"),
            raw=in_runtime("bare"),
            higher_is_better=False,
            target="< 500 ms idle",
            setup=build_runtime,
            teardown=remove_runtime,
            raw_label="python -c 'import redis, psycopg, pymongo' (same environment)",
        ),
        Pair(
            "health: exec probe, CPU time (user + sys, median of 10)",
            "ms/run",
            sdk=lambda: process_cpu_ms(PROBE, probe_env, PROBE_RUNS),
            raw=lambda: process_cpu_ms(BARE_IMPORTS, probe_env, PROBE_RUNS),
            higher_is_better=False,
            setup=create_schema,
            raw_label="python -c 'import redis, psycopg, pymongo'",
        ),
        Pair(
            "health: exec probe, CPU time, fast path vs typer and rich (median of 10)",
            "ms/run",
            sdk=lambda: process_cpu_ms(PROBE, probe_env, PROBE_RUNS),
            raw=lambda: process_cpu_ms([*PROBE, "--count", "1"], probe_env, PROBE_RUNS),
            higher_is_better=False,
            setup=create_schema,
            raw_label="the same report through typer (--count 1)",
        ),
        Pair(
            "health: exec probe, every backend hanging, --timeout 1 (whole process, median of 3)",
            "ms/run",
            sdk=process_ms([*PROBE, "--timeout", "1"], hanging_env, HANGING_RUNS, exits=(2,)),
            higher_is_better=False,
            target="< timeout + 500 ms idle",
            setup=hang,
            teardown=unhang,
        ),
    ]
