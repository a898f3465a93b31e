"""``nexus-store health`` and ``await store.health()`` against the real services."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import redis as redis_lib
from devstack.servers import closed_port
from nexus_store import NexusSettings, NexusStore
from nexus_store.cli._probe import ProbeRequest, parse
from nexus_store.health import HealthReport
from nexus_store.redis.health import eviction_risk
from tests.support import CliResult, assert_camel_case_keys, assert_health_json, run_cli

DATASTORE_KEYS = {
    "postgres:responseTime",
    "postgres:version",
    "postgres:connections",
    "postgres:migrations",
    "outbox:lag",
    "mongo:responseTime",
    "mongo:version",
    "mongo:indexes",
    "mongo:validators",
    "redis:responseTime",
    "redis:version",
    "redis:memory",
    "redis:connections",
}


def test_health_json_passes_on_every_backend_after_init(
    initialised_env: dict[str, str], real_mongodb: bool
) -> None:
    result = run_cli("health", "--format", "json", env=initialised_env)

    body = result.json()
    assert_health_json(body)
    assert set(body["checks"]) >= DATASTORE_KEYS
    failing = {k: v for k, v in body["checks"].items() if any(r["status"] != "pass" for r in v)}
    if not real_mongodb:
        # nx-27017 ignores $jsonSchema validators, so it cannot report them back.
        validators = failing.pop("mongo:validators")[0]
        assert validators["status"] == "warn" and "validator_mismatch" in validators["output"]
    assert failing == {}
    assert result.returncode == (0 if real_mongodb else 1)
    # Each logical Redis DB answered, each named.
    areas = [r["componentId"] for r in body["checks"]["redis:responseTime"]]
    assert len(areas) == 6 and areas[0] == "sessions (db 0)"
    assert body["checks"]["postgres:responseTime"][0]["observedUnit"] == "ms"


def test_health_before_init_fails_on_migrations_and_warns_on_indexes(
    fresh_env: Callable[[], dict[str, str]],
) -> None:
    result = run_cli("health", "-f", "json", env=fresh_env())

    body = result.json()
    assert_health_json(body)
    assert result.returncode == 2
    migrations = body["checks"]["postgres:migrations"][0]
    assert migrations["status"] == "fail" and "nexus-store init" in migrations["output"]
    assert body["checks"]["mongo:indexes"][0]["status"] != "pass"
    assert body["checks"]["postgres:responseTime"][0]["status"] == "pass"


def test_redis_on_a_closed_port_fails_names_redis_and_reports_the_others(
    initialised_env: dict[str, str],
) -> None:
    env = {**initialised_env, "NEXUS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}"}

    result = run_cli("health", "--format", "json", env=env)

    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    body = result.json()
    assert_health_json(body)
    assert body["status"] == "fail"
    assert "redis:responseTime" in body["output"]
    redis_checks = {k: v for k, v in body["checks"].items() if k.startswith("redis:")}
    assert redis_checks and all(r["status"] == "fail" for v in redis_checks.values() for r in v)
    assert "redis" in body["checks"]["redis:version"][0]["output"]
    others = {k: v for k, v in body["checks"].items() if k.split(":")[0] in ("postgres", "mongo")}
    assert len(others) == 8
    assert all(
        r["status"] == "pass" for k, v in others.items() for r in v if k != "mongo:validators"
    )

    table = run_cli("health", env=env)
    assert table.returncode == 2
    assert "redis:responseTime" in table.stdout and "fail" in table.stdout
    assert "Traceback" not in table.output


def test_a_hanging_backend_costs_one_timeout_not_one_per_check(silent_port: int) -> None:
    hanging = f"127.0.0.1:{silent_port}"
    env = {
        "NEXUS_POSTGRES_URL": f"postgresql://postgres@{hanging}/nexus",
        "NEXUS_MONGO_URL": f"mongodb://{hanging}",
        "NEXUS_REDIS_URL": f"redis://{hanging}",
    }

    # The timeout counts from the start of the process: 3 s leave the checks time to start
    # on a busy machine (start-up alone can pass 1 s there), the case the bound is about.
    timeout = 3.0
    result = run_cli("health", "-f", "json", "--timeout", str(timeout), env=env, timeout=30)

    assert result.returncode == 2, result.output
    body = result.json()
    timed_out = [
        k for k, v in body["checks"].items() if "no answer within" in v[0].get("output", "")
    ]
    assert {"postgres:responseTime", "mongo:responseTime", "redis:responseTime"} <= set(timed_out)
    # 11 checks hang, concurrently, each limited to what is left of the timeout (Kubernetes'
    # timeoutSeconds covers the whole exec), and what the hanging servers leave behind is
    # abandoned. Checks in series would take 11 timeouts; the drivers' own connect timeouts
    # (psycopg and pymongo: 5 s) at least 5 s.
    assert timeout - 0.5 < result.seconds < timeout + 0.5, result.seconds


def test_liveness_does_no_io(silent_port: int) -> None:
    env = {
        "NEXUS_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/x",
        "NEXUS_REDIS_URL": f"redis://127.0.0.1:{silent_port}",
    }

    result = run_cli("health", "--probe", "liveness", "-f", "json", env=env)

    assert result.returncode == 0, result.output
    body = result.json()
    assert set(body["checks"]) == {"process:eventLoopLag", "nexus:config"}
    assert body["checks"]["nexus:config"][0]["observedValue"] == ["postgres", "redis"]


def test_watch_repeats_count_times_one_json_document_per_line(
    initialised_env: dict[str, str],
) -> None:
    result = run_cli("health", "-f", "json", "--watch", "0.2", "--count", "3", env=initialised_env)

    assert result.returncode in (0, 1), result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    documents = [json.loads(line) for line in lines]
    for document in documents:
        assert_camel_case_keys(document)
    times = [document["checks"]["redis:version"][0]["time"] for document in documents]
    assert times == sorted(times) and len(set(times)) == 3


def test_no_backend_configured_warns_and_exits_1() -> None:
    result = run_cli("health", "-f", "json", env={})
    assert result.returncode == 1, result.output
    assert result.json()["checks"]["nexus:config"][0]["status"] == "warn"


def test_eviction_policy_risk_is_judged_from_info() -> None:
    assert eviction_risk({"maxmemory": 0, "maxmemory_policy": "allkeys-lru"}) is None
    assert eviction_risk({"maxmemory": 10**8, "maxmemory_policy": "noeviction"}) is None
    risk = eviction_risk({"maxmemory": 10**8, "maxmemory_policy": "allkeys-lru"})
    assert risk is not None and "allkeys-lru" in risk
    assert eviction_risk({"maxmemory": 10**8, "maxmemory_policy": "volatile-ttl"})


@pytest.mark.redis_server
def test_an_evicting_redis_warns_in_health_and_init(
    redis_process: Any, fresh_env: Callable[[], dict[str, str]]
) -> None:
    client = redis_lib.Redis(port=redis_process.port)
    client.config_set("maxmemory", "64mb")
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    env = {**fresh_env(), "NEXUS_REDIS_URL": redis_process.url}

    init = run_cli("init", "--only", "redis", "-f", "json", env=env)
    assert init.returncode == 0, init.output
    (step,) = init.json()["steps"]
    assert step["status"] == "warn" and "allkeys-lru" in step["warnings"][0]

    health = run_cli("health", "-f", "json", env=env)
    memory = health.json()["checks"]["redis:memory"][0]
    assert memory["status"] == "warn" and "allkeys-lru" in memory["output"]


async def test_store_health_in_code_is_the_same_report(settings: NexusSettings) -> None:
    async with NexusStore(settings) as store:
        live = await store.health(probe="liveness")
        assert isinstance(live, HealthReport)
        assert live.status == "pass" and live.http_status == 200 and live.exit_code == 0

        await store.events.track("cli_health_probe", user_id="u1")
        report = await store.health()
        body = report.to_dict()
        assert_health_json(body)
        assert report.media_type == "application/health+json"
        assert "events:writer" in body["checks"]
        assert body["checks"]["events:writer"][0]["componentType"] == "component"
        assert report.http_status == (503 if report.status == "fail" else 200)


async def test_store_health_reports_an_unreachable_redis_as_503() -> None:
    broken = NexusSettings.load(
        redis={"url": f"redis://127.0.0.1:{closed_port()}"}, health={"timeout": 1.0}
    )
    async with NexusStore(broken) as store:
        report = await store.health()
    assert report.status == "fail" and report.http_status == 503 and report.exit_code == 2
    assert "redis:responseTime" in report.failing()


@pytest.mark.redis_server
def test_cluster_mode_checks_cluster_state(redis_cluster: str) -> None:
    env = {
        "NEXUS_REDIS_URL": redis_cluster,
        "NEXUS_REDIS__CLUSTER": "true",
        "NEXUS_HEALTH__TIMEOUT": "10",  # room for start-up on a loaded machine (conftest)
    }

    health = run_cli("health", "-f", "json", env=env)

    assert health.returncode == 0, health.output
    checks = health.json()["checks"]
    cluster = checks["redis:cluster"][0]
    assert cluster["status"] == "pass" and cluster["observedValue"] == "ok"
    assert "output" not in cluster  # the draft omits it on pass; the table shows it
    assert "16384/16384 slots" in run_cli("health", env=env).stdout
    (ping,) = checks["redis:responseTime"]
    assert ping["status"] == "pass" and "cluster prefix" in ping["componentId"]
    memory = checks["redis:memory"]  # one per primary: each has its own limit and policy
    assert len(memory) == 3 and all(node["status"] == "pass" for node in memory)
    nodes = {node["componentId"] for node in memory}
    assert len(nodes) == 3 and redis_cluster.removeprefix("redis://") in nodes

    init = run_cli("init", "-f", "json", env=env)
    assert init.returncode == 0, init.output
    assert [step["status"] for step in init.json()["steps"]] == ["skipped", "skipped", "unchanged"]


# --- the exec-probe fast path ------------------------------------------------------------

# Loaded only for a table or by typer, or (SQLAlchemy) by the store's PostgreSQL backend:
# the probe's JSON path must not pay for them.
HEAVY = {"typer", "click", "rich", "pygments", "structlog", "alembic", "mako", "sqlalchemy"}


def imported_modules(result: CliResult) -> set[str]:
    """Modules a ``-X importtime`` run imported (from its stderr)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def imported(result: CliResult) -> set[str]:
    """Top-level packages a ``-X importtime`` run imported."""
    return {module.split(".")[0] for module in imported_modules(result)}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["health", "-f", "json"], ProbeRequest()),
        (["health", "--format=JSON", "--probe", "liveness"], ProbeRequest(probe="liveness")),
        (
            ["health", "--probe=readiness", "--timeout", "0.5", "--warn-exit", "0", "-f", "json"],
            ProbeRequest(timeout=0.5, warn_exit=0),
        ),
        (["health", "-c", "nexus.toml", "-f", "json"], ProbeRequest(config="nexus.toml")),
        # Everything else is typer's: tables, --watch, help, and values typer refuses.
        (["health"], None),
        (["health", "-f", "table"], None),
        (["health", "-f", "json", "--watch", "1"], None),
        (["health", "-f", "json", "--count", "1"], None),
        (["health", "-f", "json", "--help"], None),
        (["health", "-f", "json", "--probe", "startup"], None),
        (["health", "-f", "json", "--timeout", "0"], None),
        (["health", "-f", "json", "--timeout", "nan"], None),
        (["health", "-f", "json", "--warn-exit", "2"], None),
        (["health", "-f", "json", "-f", "json"], None),
        (["health", "-f=json"], None),
        (["health", "-f"], None),
        (["init", "-f", "json"], None),
        ([], None),
    ],
)
def test_the_fast_path_takes_exactly_the_probe_form(
    argv: list[str], expected: ProbeRequest | None
) -> None:
    assert parse(argv) == expected


def test_the_probe_loads_neither_typer_nor_rich_nor_sqlalchemy(session_env: dict[str, str]) -> None:
    probe = run_cli(
        "health",
        "--probe",
        "readiness",
        "-f",
        "json",
        env=session_env,
        interpreter=("-X", "importtime"),
    )
    checks = probe.json()["checks"]
    assert checks["postgres:responseTime"][0]["status"] == "pass"
    assert checks["postgres:migrations"][0]["output"].startswith("no schema")  # it read
    loaded = imported(probe)
    assert {"psycopg", "pymongo", "redis"} <= loaded  # the checks ran
    assert not loaded & HEAVY, loaded & HEAVY
    ours = {m for m in imported_modules(probe) if m.startswith("nexus_store.")}
    assert not {"nexus_store.store", "nexus_store.postgres.models"} & ours, sorted(ours)
    # The table still goes through typer and rich.
    table = run_cli(
        "health", "--probe", "liveness", env=session_env, interpreter=("-X", "importtime")
    )
    assert table.returncode == 0 and {"typer", "rich"} <= imported(table)


def test_both_paths_give_the_same_answer_and_warn_exit_maps_warn(
    session_env: dict[str, str],
) -> None:
    fast = run_cli("health", "-f", "json", env=session_env)
    typer_path = run_cli("health", "-f", "json", "--count", "1", env=session_env)  # not parsed
    assert fast.returncode == typer_path.returncode, (fast.output, typer_path.output)
    fast_body, typer_body = fast.json(), typer_path.json()
    assert_health_json(fast_body)
    assert fast_body["status"] == typer_body["status"]
    assert set(fast_body["checks"]) == set(typer_body["checks"]) >= DATASTORE_KEYS
    # The same content: per check, the same components, units, statuses and reasons (the
    # values are measurements; the probe's PostgreSQL "pool" is its one connection).
    for key, results in fast_body["checks"].items():
        assert shape(results) == shape(typer_body["checks"][key]), key

    # Nothing configured: nexus:config warns. 1 by default; 0 with --warn-exit 0, as the
    # HTTP route answers 200.
    for path in ((), ("--count", "1")):
        default = run_cli("health", "-f", "json", *path, env={})
        assert default.returncode == 1 and default.json()["status"] == "warn", default.output
        agreed = run_cli("health", "-f", "json", "--warn-exit", "0", *path, env={})
        assert agreed.returncode == 0 and agreed.json()["status"] == "warn", agreed.output
    failing = {"NEXUS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}"}
    assert run_cli("health", "-f", "json", "--warn-exit", "0", env=failing).returncode == 2


def shape(results: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a check's results say, without what they measured."""
    return [
        (r.get("componentId"), r["componentType"], r.get("observedUnit"), r["status"])
        + ((r.get("output"),) if r["status"] != "pass" else ())
        for r in results
    ]


def test_the_probe_reports_bad_settings_as_a_usage_error() -> None:
    bad = run_cli("health", "-f", "json", env={"NEXUS_HEALTH__TIMEOUT": "-1"})
    assert bad.returncode == 2 and "health.timeout" in bad.stderr, bad.output
    assert bad.stdout == "" and "Traceback" not in bad.output


@pytest.fixture(scope="module")
def probe_timings(session_env: dict[str, str]) -> dict[str, list[float]]:
    """Wall seconds (``probe``, ``bare``) and CPU seconds (``*_cpu``) of three interleaved
    runs each: the readiness probe of the session's stack and a bare ``import redis,
    psycopg, pymongo``, so that load on the machine hits both alike."""
    bare = [sys.executable, "-c", "import redis, psycopg, pymongo"]
    runs: dict[str, Callable[[], object]] = {
        "probe": lambda: run_cli("health", "--probe", "readiness", "-f", "json", env=session_env),
        "bare": lambda: subprocess.run(bare, capture_output=True, check=True, timeout=60),
    }
    timings: dict[str, list[float]] = {}
    for _ in range(3):
        for name, run in runs.items():
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = run()
            timings.setdefault(name, []).append(time.perf_counter() - started)
            cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
            timings.setdefault(f"{name}_cpu", []).append(
                cpu.ru_utime - cpu_before.ru_utime + cpu.ru_stime - cpu_before.ru_stime
            )
            # The session's database has no schema: the migrations check fails (exit 2),
            # after the same queries as on a migrated one.
            assert not isinstance(done, CliResult) or done.returncode in (0, 1, 2), done
    return timings


def test_the_probe_costs_little_more_than_importing_the_drivers(
    probe_timings: dict[str, list[float]],
) -> None:
    # The target is under 0.5 s on an idle machine (bench/scenarios/health.py reports it). On
    # a shared machine wall time mostly measures the queue for the cores (and the servers'
    # own), so CPU time is compared: the probe's (settings, connections, 17 checks, JSON)
    # within 3x a bare import of the drivers it needs. (What typer and rich would add, about
    # a tenth, drowns in the noise of three runs: the import test above asserts their
    # absence, and the bench compares the two paths.)
    assert min(probe_timings["probe_cpu"]) < 3 * min(probe_timings["bare_cpu"]) + 0.3, probe_timings
