"""Health checks in the ``application/health+json`` shape (draft-inadarei-api-health-check).

The same report backs ``nexus-store health`` and ``await store.health()``, so a web app can
serve it as is:

    report = await store.health()                  # readiness: every configured datastore
    return JSONResponse(report.to_dict(), status_code=report.http_status,
                        media_type=HealthReport.media_type)

    live = await store.health(probe="liveness")    # process and settings only, no I/O

Every check runs concurrently with its own timeout (``health.timeout``, 2 s by default), so a
backend that hangs costs at most that timeout, never the sum. A check that fails or times out
says why in ``output``, with any secret masked; it never raises.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from nexus_store._errors import describe
from nexus_store._secrets import scrub
from nexus_store.errors import NexusStoreError, ValidationError
from nexus_store.log import get_logger

if TYPE_CHECKING:
    from nexus_store.mongo.schema import SchemaProblem
    from nexus_store.redis.client import RedisBackend
    from nexus_store.store import NexusStore

__all__ = [
    "PROBES",
    "CheckResult",
    "HealthReport",
    "Probe",
    "Status",
    "check_health",
    "describe_failure",
    "redis_eviction_risk",
    "redis_info",
]

Status = Literal["pass", "warn", "fail"]
Probe = Literal["liveness", "readiness"]
PROBES: tuple[Probe, ...] = ("liveness", "readiness")
_log = get_logger("nexus_store.health")
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
# Share of a limit (memory, clients, pool) above which a check warns.
_HIGH_USAGE = 0.9
_SLOW_LOOP_MS = 100.0


def describe_failure(exc: BaseException) -> str:
    """One secret-free line: our own errors as they read (they name the backend), driver
    errors with their type."""
    if isinstance(exc, NexusStoreError) and str(exc).strip():
        return scrub(str(exc).strip().splitlines()[0])
    return describe(exc)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _worst(statuses: list[Status]) -> Status:
    """The most severe of ``statuses`` (``pass`` when there are none)."""
    return max(statuses, key=_RANK.__getitem__, default="pass")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One measurement of one component (an entry of a ``checks`` list)."""

    component_type: str
    status: Status
    observed_value: Any = None
    observed_unit: str | None = None
    output: str = ""
    component_id: str | None = None
    time: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.component_id is not None:
            data["componentId"] = self.component_id
        data["componentType"] = self.component_type
        data["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            data["observedUnit"] = self.observed_unit
        data["status"] = self.status
        data["time"] = self.time
        data["output"] = scrub(self.output)
        return data


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of one health run; ``to_dict()`` is the ``application/health+json`` body."""

    status: Status
    checks: dict[str, list[CheckResult]]
    probe: Probe
    duration: float
    media_type = "application/health+json"

    @property
    def http_status(self) -> int:
        """200 for pass and warn (still serving), 503 for fail."""
        return 503 if self.status == "fail" else 200

    @property
    def exit_code(self) -> int:
        """0 pass, 1 warn, 2 fail (the ``nexus-store health`` exit code)."""
        return _RANK[self.status]

    def failing(self) -> list[str]:
        """Keys of the checks that did not pass, worst first."""
        keys = [
            key
            for key, results in self.checks.items()
            if _worst([r.status for r in results]) != "pass"
        ]
        return sorted(keys, key=lambda key: -_RANK[_worst([r.status for r in self.checks[key]])])

    def to_dict(self) -> dict[str, Any]:
        from nexus_store import __version__

        body: dict[str, Any] = {
            "status": self.status,
            "version": __version__.split(".")[0],
            "releaseId": __version__,
            "serviceId": "nexus-store",
            "description": f"nexus-store {self.probe} probe",
        }
        if self.status != "pass":
            body["output"] = "not passing: " + ", ".join(self.failing())
        body["checks"] = {
            key: [result.to_dict() for result in results] for key, results in self.checks.items()
        }
        return body


# -- the check runner ------------------------------------------------------------------------

_Measure = Callable[[], Awaitable[list[CheckResult]]]


@dataclass(frozen=True, slots=True)
class _Check:
    key: str
    component_type: str
    measure: _Measure


async def _run(check: _Check, seconds: float) -> list[CheckResult]:
    try:
        async with asyncio.timeout(seconds):
            return await check.measure()
    except TimeoutError:
        output = f"no answer within {seconds:g}s"
    except Exception as exc:  # a health check reports failures; it never raises them
        output = describe_failure(exc)
    return [CheckResult(check.component_type, "fail", output=output)]


async def check_health(store: NexusStore, *, probe: str = "readiness") -> HealthReport:
    """Run the checks of ``probe`` against ``store`` and return the report.

    ``liveness`` looks only at the process and its settings (no I/O, so a slow database
    never restarts a pod); ``readiness`` adds every configured datastore.
    """
    if probe not in PROBES:
        raise ValidationError("probe", f"must be one of {', '.join(PROBES)}, got {probe!r}")
    checked_probe: Probe = "liveness" if probe == "liveness" else "readiness"
    started = time.perf_counter()
    timeout = store.settings.health.timeout
    # Liveness first and alone: it does no I/O, and the loop lag it measures must not
    # include the driver imports that the readiness checks trigger.
    checks = _liveness_checks(store)
    results = list(await asyncio.gather(*(_run(check, timeout) for check in checks)))
    if checked_probe == "readiness":
        datastore_checks = _readiness_checks(store)
        checks += datastore_checks
        results += await asyncio.gather(*(_run(check, timeout) for check in datastore_checks))
    by_key: dict[str, list[CheckResult]] = {}
    for check, found in zip(checks, results, strict=True):
        by_key.setdefault(check.key, []).extend(found)
    status = _worst([r.status for found in by_key.values() for r in found])
    return HealthReport(status, by_key, checked_probe, time.perf_counter() - started)


def _liveness_checks(store: NexusStore) -> list[_Check]:
    async def event_loop() -> list[CheckResult]:
        # A loop blocked by synchronous work answers late; that is what liveness is for.
        started = time.perf_counter()
        await asyncio.sleep(0)
        lag = _ms(time.perf_counter() - started)
        status: Status = "warn" if lag >= _SLOW_LOOP_MS else "pass"
        return [CheckResult("system", status, lag, "ms")]

    async def config() -> list[CheckResult]:
        configured = store.backends.configured()
        if not configured:
            return [
                CheckResult(
                    "system",
                    "warn",
                    [],
                    output=(
                        "no backend configured: set NEXUS_POSTGRES_URL, NEXUS_MONGO_URL or "
                        "NEXUS_REDIS_URL"
                    ),
                )
            ]
        return [
            CheckResult("system", "pass", configured, output="configured: " + ", ".join(configured))
        ]

    return [
        _Check("process:eventLoopLag", "system", event_loop),
        _Check("nexus:config", "system", config),
    ]


# Modules the checks of each backend use, loaded before any check's clock starts.
_CHECK_MODULES = {
    "postgres": ("alembic.migration", "nexus_store.postgres.migrate"),
    "mongo": ("nexus_store.mongo.schema",),
    "redis": (),
}


def _prepare(store: NexusStore, configured: list[str]) -> None:
    """Create the backends and import their drivers now: a cold import can take longer than
    a check's timeout on a busy machine, and must not count as the server being slow."""
    for name in configured:
        try:
            getattr(store.backends, name)
            for module in _CHECK_MODULES[name]:
                importlib.import_module(module)
            if name == "postgres":
                _migration_heads()
        except Exception as exc:  # the check that needs it reports the same failure
            _log.debug("health_prepare_failed", backend=name, error=describe(exc))


def _readiness_checks(store: NexusStore) -> list[_Check]:
    configured = store.backends.configured()
    _prepare(store, configured)
    checks: list[_Check] = []
    if "postgres" in configured:
        checks += _postgres_checks(store)
    if "mongo" in configured:
        checks += _mongo_checks(store)
    if "redis" in configured:
        checks += _redis_checks(store)
    checks += _event_writer_checks(store)
    return checks


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _version_check(backend_name: str, store: NexusStore) -> _Check:
    async def version() -> list[CheckResult]:
        backend = getattr(store.backends, backend_name)
        return [CheckResult("datastore", "pass", await backend.server_version())]

    return _Check(f"{backend_name}:version", "datastore", version)


def _ping_check(backend_name: str, store: NexusStore) -> _Check:
    async def response_time() -> list[CheckResult]:
        backend = getattr(store.backends, backend_name)
        return [CheckResult("datastore", "pass", _ms(await backend.ping()), "ms")]

    return _Check(f"{backend_name}:responseTime", "datastore", response_time)


# -- PostgreSQL ------------------------------------------------------------------------------


@functools.cache
def _migration_heads() -> list[str]:
    """The head revision(s) of the shipped migrations: they cannot change while we run."""
    from nexus_store.postgres import migrate

    return sorted(revision.revision for revision in migrate.history() if revision.is_head)


def _postgres_checks(store: NexusStore) -> list[_Check]:
    # Pool usage is read before the other checks borrow connections: it shows the app's use.
    backend = store.backends.postgres
    pool: Any = backend.engine.pool
    capacity = backend.settings.pool_size + backend.settings.max_overflow
    in_use = int(pool.checkedout())

    async def connections() -> list[CheckResult]:
        status: Status = "warn" if in_use >= _HIGH_USAGE * capacity else "pass"
        output = f"pool: {in_use} of {capacity} in use"
        return [CheckResult("datastore", status, in_use, "connections", output)]

    async def migrations() -> list[CheckResult]:
        # Read on a pooled connection with Alembic's own reader, against heads parsed once
        # per process: a readiness probe runs every few seconds.
        from alembic.migration import MigrationContext

        with backend.unavailable():
            async with backend.engine.connect() as conn:
                current = sorted(
                    await conn.run_sync(
                        lambda sync: MigrationContext.configure(sync).get_current_heads()
                    )
                )
        heads = _migration_heads()
        shown = ", ".join(current) or None
        if current == heads:
            return [CheckResult("datastore", "pass", shown, output=f"at head {shown}")]
        if not current:
            return [
                CheckResult(
                    "datastore",
                    "fail",
                    None,
                    output=(f"no schema (head is {', '.join(heads)}): run `nexus-store init`"),
                )
            ]
        return [
            CheckResult(
                "datastore",
                "warn",
                shown,
                output=(f"behind: head is {', '.join(heads)}: run `nexus-store migrate upgrade`"),
            )
        ]

    async def outbox_lag() -> list[CheckResult]:
        lag = await store.outbox.lag()
        late = (lag.oldest_age_seconds or 0.0) > store.settings.outbox.lag_warning_seconds
        status: Status = "warn" if late or lag.last_error else "pass"
        output = f"{lag.pending} undelivered"
        if lag.oldest_age_seconds is not None:
            output += f", oldest {lag.oldest_age_seconds:.1f} s"
        if lag.last_error:
            output += f"; last error: {lag.last_error}"
        return [CheckResult("component", status, lag.pending, "rows", output)]

    return [
        _ping_check("postgres", store),
        _version_check("postgres", store),
        _Check("postgres:connections", "datastore", connections),
        _Check("postgres:migrations", "datastore", migrations),
        _Check("outbox:lag", "component", outbox_lag),
    ]


# -- MongoDB ---------------------------------------------------------------------------------


def _mongo_checks(store: NexusStore) -> list[_Check]:
    inspection: list[asyncio.Task[list[SchemaProblem]]] = []

    async def inspect() -> list[SchemaProblem]:
        # Both schema checks of one run share one inspection (one listCollections and a
        # listIndexes per collection).
        from nexus_store.mongo.schema import inspect_schema

        if not inspection:
            inspection.append(
                asyncio.ensure_future(inspect_schema(store.backends.mongo, store.settings))
            )
        return await inspection[0]

    def schema_check(key: str, validators: bool, ok: str) -> _Check:
        async def measure() -> list[CheckResult]:
            problems = [
                problem
                for problem in await inspect()
                if (problem.problem == "validator_mismatch") == validators
            ]
            if not problems:
                return [CheckResult("datastore", "pass", 0, "problems", ok)]
            listed = "; ".join(f"{p.collection}: {p.problem} ({p.detail})" for p in problems)
            return [
                CheckResult(
                    "datastore",
                    "warn",
                    len(problems),
                    "problems",
                    f"{listed} (run `nexus-store init`)",
                )
            ]

        return _Check(key, "datastore", measure)

    return [
        _ping_check("mongo", store),
        _version_check("mongo", store),
        schema_check("mongo:indexes", False, "collections, indexes and TTLs match the settings"),
        schema_check("mongo:validators", True, "validators match the schema"),
    ]


# -- Redis -----------------------------------------------------------------------------------


def redis_eviction_risk(info: dict[str, Any]) -> str | None:
    """Why Redis may evict sessions or rate-limit counters, or None when it will not.

    ``info`` is ``INFO memory``. With no ``maxmemory`` nothing is evicted; with a limit, any
    policy but ``noeviction`` may drop sessions and limits (``volatile-*`` too: they carry
    TTLs), which logs users out and resets limits.
    """
    policy = str(info.get("maxmemory_policy", "noeviction"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if maxmemory == 0 or policy == "noeviction":
        return None
    return (
        f"maxmemory-policy {policy} with maxmemory {maxmemory} bytes may evict sessions "
        "and rate limits; use noeviction or a separate Redis for the cache"
    )


async def redis_area_pings(backend: RedisBackend) -> list[CheckResult]:
    """One response time per logical DB (each must answer), or one for a cluster."""
    from nexus_store.redis.client import AREAS

    areas = AREAS[:1] if backend.settings.cluster else AREAS

    async def ping(area: Any) -> CheckResult:
        where = f"{area} ({backend.location(area)})"
        try:
            seconds = await backend.ping(area)
        except Exception as exc:
            return CheckResult("datastore", "fail", None, "ms", describe_failure(exc), where)
        return CheckResult("datastore", "pass", _ms(seconds), "ms", component_id=where)

    return list(await asyncio.gather(*(ping(area) for area in areas)))


async def redis_cluster_state(backend: RedisBackend) -> CheckResult:
    """``cluster_state`` and slot coverage of a Redis Cluster."""
    with backend.unavailable():
        cluster: Any = backend.client("sessions")  # a RedisCluster in cluster mode
        info = await cluster.cluster_info()
    state = str(info.get("cluster_state", "unknown"))
    assigned = int(info.get("cluster_slots_assigned", 0))
    failing = int(info.get("cluster_slots_fail", 0)) + int(info.get("cluster_slots_pfail", 0))
    status: Status = "pass" if state == "ok" and assigned == 16384 and failing == 0 else "fail"
    return CheckResult(
        "datastore",
        status,
        state,
        output=(
            f"{assigned}/16384 slots assigned, {failing} failing, "
            f"{info.get('cluster_known_nodes', '?')} nodes"
        ),
    )


async def redis_info(backend: RedisBackend, section: str) -> list[tuple[str | None, Any]]:
    """``INFO section`` of the server, or of every primary of a cluster (each has its own
    memory limit and policy), as ``(node or None, info)`` pairs."""
    client: Any = backend.client("sessions")
    with backend.unavailable():
        if not backend.settings.cluster:
            return [(None, await client.info(section))]
        await client.initialize()
        nodes = client.get_primaries()
        infos = await asyncio.gather(*(client.info(section, target_nodes=n) for n in nodes))
    return [(node.name, info) for node, info in zip(nodes, infos, strict=True)]


def _redis_memory_result(node: str | None, info: dict[str, Any]) -> CheckResult:
    used = int(info.get("used_memory", 0))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    problems = []
    if risk := redis_eviction_risk(info):
        problems.append(risk)
    if maxmemory and used >= _HIGH_USAGE * maxmemory:
        problems.append(f"{used} of {maxmemory} bytes used")
    limit = f"of {maxmemory}" if maxmemory else "(no maxmemory)"
    policy = info.get("maxmemory_policy", "?")
    output = "; ".join(problems) or f"{used} bytes {limit}, policy {policy}"
    status: Status = "warn" if problems else "pass"
    return CheckResult("datastore", status, used, "bytes", output, node)


def _redis_checks(store: NexusStore) -> list[_Check]:
    async def response_time() -> list[CheckResult]:
        return await redis_area_pings(store.backends.redis)

    async def memory() -> list[CheckResult]:
        return [
            _redis_memory_result(node, info)
            for node, info in await redis_info(store.backends.redis, "memory")
        ]

    async def connections() -> list[CheckResult]:
        results = []
        for node, info in await redis_info(store.backends.redis, "clients"):
            clients = int(info.get("connected_clients", 0))
            maxclients = int(info.get("maxclients", 0) or 0)
            high = bool(maxclients) and clients >= _HIGH_USAGE * maxclients
            output = f"{clients} of {maxclients or '?'} server connections"
            status: Status = "warn" if high else "pass"
            results.append(CheckResult("datastore", status, clients, "clients", output, node))
        return results

    async def cluster() -> list[CheckResult]:
        return [await redis_cluster_state(store.backends.redis)]

    checks = [
        _Check("redis:responseTime", "datastore", response_time),
        _version_check("redis", store),
        _Check("redis:memory", "datastore", memory),
        _Check("redis:connections", "datastore", connections),
    ]
    if store.settings.redis.cluster:
        checks.append(_Check("redis:cluster", "datastore", cluster))
    return checks


# -- in-process writers ----------------------------------------------------------------------


def _event_writer_checks(store: NexusStore) -> list[_Check]:
    """The event writer's counters, when this process has one running."""
    # Only a writer this process already started has counters; health never starts one.
    events = store.started("events")
    if events is None:
        return []

    async def writer() -> list[CheckResult]:
        stats = events.stats()
        output = (
            f"queued {stats.queued}, written {stats.written}, retried {stats.retried}, "
            f"dropped {stats.dropped}, rejected {stats.rejected}"
        )
        if stats.last_error:
            output += f"; last error: {stats.last_error}"
        status: Status = "warn" if stats.dropped or stats.rejected or stats.last_error else "pass"
        return [CheckResult("component", status, stats.queued, "events queued", output)]

    return [_Check("events:writer", "component", writer)]
