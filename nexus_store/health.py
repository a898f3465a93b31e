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

The body follows the draft: ``output`` only on checks that do not pass (section 4.8), an
``observedUnit`` with every ``observedValue``, and the application's own ``serviceId``,
``version``, ``releaseId`` and ``description`` from ``health.*`` settings (omitted when
unset: they describe the application, which the SDK cannot guess).

The application adds its own checks; they run beside the built-in ones, under the same
timeout, and a failure or a timeout in one is reported like any other:

    async def queue_depth() -> CheckResult:
        depth = await jobs.depth()
        return CheckResult("component", "warn" if depth > 1000 else "pass", depth, "jobs")

    store.health_checks.add("jobs:depth", queue_depth)                  # readiness only
    store.health_checks.add("worker:heartbeat", beat, probe="liveness")  # both probes
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from nexus_store._errors import describe
from nexus_store._secrets import scrub
from nexus_store.errors import NexusStoreError, ValidationError
from nexus_store.log import get_logger

if TYPE_CHECKING:
    from nexus_store.connections import Backend, BackendName, Backends
    from nexus_store.settings import NexusSettings

__all__ = [
    "HIGH_USAGE",
    "PROBES",
    "RESERVED_COMPONENTS",
    "Backlog",
    "Check",
    "CheckFunction",
    "CheckResult",
    "Checks",
    "HealthChecks",
    "HealthReport",
    "HealthTarget",
    "OutboxReader",
    "Probe",
    "Status",
    "check_health",
    "describe_failure",
    "ms",
    "ping_check",
    "prepare",
    "version_check",
]

Status = Literal["pass", "warn", "fail"]
Probe = Literal["liveness", "readiness"]
PROBES: tuple[Probe, ...] = ("liveness", "readiness")
_log = get_logger("nexus_store.health")
_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
#: Share of a limit (memory, clients, pool) above which a check warns.
HIGH_USAGE = 0.9
_SLOW_LOOP_MS = 100.0
#: The least time a check gets when a deadline has (nearly) passed: enough for one that
#: answers without I/O, so that the report still says which checks could not answer.
_LEAST_SECONDS = 0.01


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
    """One measurement of one component (an entry of a ``checks`` list).

    ``observed_unit`` is required with any ``observed_value`` (a value without a unit says
    nothing to a dashboard). ``output`` says why a check did not pass; on a passing check it
    is shown in the CLI's table but left out of the ``application/health+json`` body, as the
    draft asks.
    """

    component_type: str
    status: Status
    observed_value: Any = None
    observed_unit: str | None = None
    output: str = ""
    component_id: str | None = None
    time: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.status not in _RANK:
            raise ValidationError("status", f"must be one of pass, warn, fail, got {self.status!r}")
        if self.observed_value is not None and not self.observed_unit:
            raise ValidationError(
                "observed_unit", f"required with observed_value {self.observed_value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.component_id is not None:
            data["componentId"] = self.component_id
        data["componentType"] = self.component_type
        if self.observed_value is not None:
            data["observedValue"] = self.observed_value
            data["observedUnit"] = self.observed_unit
        data["status"] = self.status
        data["time"] = self.time
        if self.status != "pass" and self.output:
            data["output"] = scrub(self.output)
        return data


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of one health run; ``to_dict()`` is the ``application/health+json`` body."""

    status: Status
    checks: dict[str, list[CheckResult]]
    probe: Probe
    duration: float
    #: ``serviceId``, ``version``, ``releaseId``, ``description`` (``health.*`` settings).
    service: dict[str, str] = field(default_factory=dict)
    media_type = "application/health+json"

    @property
    def http_status(self) -> int:
        """200 for pass and warn (still serving), 503 for fail."""
        return 503 if self.status == "fail" else 200

    @property
    def exit_code(self) -> int:
        """0 pass, 1 warn, 2 fail (the ``nexus-store health`` exit code)."""
        return _RANK[self.status]

    def exit_code_for(self, *, warn: int) -> int:
        """The exit code with ``warn`` reported as ``warn`` (0 makes a Kubernetes exec probe
        agree with the HTTP route, which answers 200 on warn)."""
        return warn if self.status == "warn" else self.exit_code

    def failing(self) -> list[str]:
        """Keys of the checks that did not pass, worst first."""
        keys = [
            key
            for key, results in self.checks.items()
            if _worst([r.status for r in results]) != "pass"
        ]
        return sorted(keys, key=lambda key: -_RANK[_worst([r.status for r in self.checks[key]])])

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, **self.service}
        if self.status != "pass":
            body["output"] = "not passing: " + ", ".join(self.failing())
        body["checks"] = {
            key: [result.to_dict() for result in results] for key, results in self.checks.items()
        }
        return body


# -- the check runner ------------------------------------------------------------------------


class Backlog(Protocol):
    """The outbox's delivery backlog (an ``OutboxLag``)."""

    @property
    def pending(self) -> int: ...

    @property
    def oldest_age_seconds(self) -> float | None: ...

    @property
    def last_error(self) -> str | None: ...


class OutboxReader(Protocol):
    """What the ``outbox:lag`` check reads (the store's ``OutboxRelay``)."""

    async def lag(self) -> Backlog: ...


class HealthTarget(Protocol):
    """What the checks read of a store (``NexusStore`` is one)."""

    @property
    def settings(self) -> NexusSettings: ...

    @property
    def backends(self) -> Backends: ...

    @property
    def outbox(self) -> OutboxReader: ...

    def started(self, name: str) -> object | None: ...


_Measure = Callable[[], Awaitable[list[CheckResult]]]


@dataclass(frozen=True, slots=True)
class Check:
    """One named measurement; the runner gives it ``health.timeout`` seconds."""

    key: str
    component_type: str
    measure: _Measure


#: Builds the checks of one backend (none when it is not configured). Builders run before
#: any check starts: what they prepare (driver imports, pool usage) is not timed.
Checks = Callable[[HealthTarget], list[Check]]


#: An application's check: returns one result, or several (one per ``componentId``).
CheckFunction = Callable[[], Awaitable[CheckResult | Sequence[CheckResult]]]
#: Components the built-in checks report on: an application's check keys use others.
RESERVED_COMPONENTS = frozenset(
    {"postgres", "mongo", "redis", "outbox", "events", "process", "nexus"}
)
_KEY = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")


class HealthChecks:
    """The application's own checks (``store.health_checks``), run by ``store.health()``.

    A check is an async function returning a :class:`CheckResult` (or a list of them). It
    runs concurrently with the built-in checks under ``health.timeout``; one that raises or
    does not answer in time is reported as ``fail`` with the reason, never raised.
    ``probe="liveness"`` runs it in both probes (keep it free of I/O on other services, or a
    slow dependency restarts every pod); ``"readiness"`` (the default) only in readiness.
    """

    def __init__(self) -> None:
        self._checks: dict[str, tuple[Probe, Check]] = {}

    def add(
        self,
        key: str,
        check: CheckFunction,
        *,
        probe: Probe = "readiness",
        component_type: str = "component",
    ) -> None:
        """Register ``check`` under ``key`` (``"component:measurement"``, e.g. ``"jobs:depth"``)."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValidationError("key", f"must read component:measurement, got {key!r}")
        if key.split(":", 1)[0] in RESERVED_COMPONENTS:
            raise ValidationError(
                "key", f"{key!r}: the component {key.split(':', 1)[0]!r} is nexus-store's own"
            )
        if key in self._checks:
            raise ValidationError("key", f"{key!r} is already registered")
        if probe not in PROBES:
            raise ValidationError("probe", f"must be one of {', '.join(PROBES)}, got {probe!r}")
        if not inspect.iscoroutinefunction(check):
            raise ValidationError("check", f"{key!r}: must be an async function")

        async def measure() -> list[CheckResult]:
            found = await check()
            if isinstance(found, CheckResult):
                return [found]
            listed = list(found) if isinstance(found, Sequence) else []
            if listed and all(isinstance(result, CheckResult) for result in listed):
                return listed
            raise ValidationError(
                "check", f"{key!r} returned {type(found).__name__}, not CheckResult(s)"
            )

        self._checks[key] = (probe, Check(key, component_type, measure))

    def remove(self, key: str) -> None:
        """Unregister ``key`` (no error when it is not registered)."""
        if not isinstance(key, str):
            raise ValidationError("key", f"must be a string, got {type(key).__name__}")
        self._checks.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)

    def __contains__(self, key: object) -> bool:
        return key in self._checks

    def for_probe(self, probe: Probe) -> list[Check]:
        """The checks ``probe`` runs: liveness ones in both, readiness ones in readiness."""
        return [
            check
            for registered, check in self._checks.values()
            if registered == "liveness" or probe == "readiness"
        ]


async def _run(check: Check, seconds: float) -> list[CheckResult]:
    # The report never waits for a cancelled check to unwind: a driver that ignores
    # cancellation (PyMongo finishing its server selection, say) would otherwise hold the
    # whole report past its timeout. The check is cancelled and left to end on its own.
    measuring = asyncio.ensure_future(_measure(check))
    try:
        done, _ = await asyncio.wait({measuring}, timeout=seconds)
    except asyncio.CancelledError:
        measuring.cancel()
        raise
    if done:
        return measuring.result()
    measuring.cancel()
    return [CheckResult(check.component_type, "fail", output=f"no answer within {seconds:.3g}s")]


async def _measure(check: Check) -> list[CheckResult]:
    """``check.measure()`` as a task that never ends with an exception: one still running
    when the event loop shuts down must not be reported there, with a traceback."""
    try:
        return await check.measure()
    except Exception as exc:  # a health check reports failures; it never raises them
        return [CheckResult(check.component_type, "fail", output=describe_failure(exc))]


async def check_health(
    target: HealthTarget,
    *,
    probe: str = "readiness",
    readiness: Sequence[Checks] = (),
    custom: HealthChecks | None = None,
    deadline: float | None = None,
) -> HealthReport:
    """Run the checks of ``probe`` against ``target`` and return the report.

    ``liveness`` looks only at the process and its settings (no I/O, so a slow database
    never restarts a pod), plus the application's liveness checks in ``custom``;
    ``readiness`` adds the checks that ``readiness`` builds and the application's readiness
    checks. Each check gets ``health.timeout``, or what is left until ``deadline`` (a
    ``time.monotonic()`` instant) when that is less: the exec probe's, whose time counts
    from the start of its process.
    """
    if probe not in PROBES:
        raise ValidationError("probe", f"must be one of {', '.join(PROBES)}, got {probe!r}")
    checked_probe: Probe = "liveness" if probe == "liveness" else "readiness"
    started = time.perf_counter()
    settings = target.settings.health

    def time_left() -> float:
        if deadline is None:
            return settings.timeout
        return max(_LEAST_SECONDS, min(settings.timeout, deadline - time.monotonic()))

    # Liveness first and alone: it does no I/O, and the loop lag it measures must not
    # include the driver imports that the readiness checks trigger.
    checks = _liveness_checks(target)
    timeout = time_left()
    results = list(await asyncio.gather(*(_run(check, timeout) for check in checks)))
    later: list[Check] = []
    if custom is not None:
        later += custom.for_probe(checked_probe)
    if checked_probe == "readiness":
        later = [check for build in readiness for check in build(target)] + later
    checks += later
    timeout = time_left()
    results += await asyncio.gather(*(_run(check, timeout) for check in later))
    by_key: dict[str, list[CheckResult]] = {}
    for check, found in zip(checks, results, strict=True):
        by_key.setdefault(check.key, []).extend(found)
    status = _worst([r.status for found in by_key.values() for r in found])
    service = {
        name: value
        for name, value in (
            ("serviceId", settings.service_id),
            ("version", settings.version),
            ("releaseId", settings.release_id),
            ("description", settings.description or f"{checked_probe} probe"),
        )
        if value
    }
    return HealthReport(status, by_key, checked_probe, time.perf_counter() - started, service)


def _liveness_checks(target: HealthTarget) -> list[Check]:
    async def event_loop() -> list[CheckResult]:
        # A loop blocked by synchronous work answers late; that is what liveness is for.
        started = time.perf_counter()
        await asyncio.sleep(0)
        lag = ms(time.perf_counter() - started)
        if lag < _SLOW_LOOP_MS:
            return [CheckResult("system", "pass", lag, "ms")]
        output = f"the event loop answered after {lag:g} ms (blocked by synchronous work?)"
        return [CheckResult("system", "warn", lag, "ms", output)]

    async def config() -> list[CheckResult]:
        configured = target.backends.configured()
        if not configured:
            return [
                CheckResult(
                    "system",
                    "warn",
                    [],
                    "backends",
                    output=(
                        "no backend configured: set NEXUS_POSTGRES_URL, NEXUS_MONGO_URL or "
                        "NEXUS_REDIS_URL"
                    ),
                )
            ]
        return [
            CheckResult(
                "system", "pass", configured, "backends", "configured: " + ", ".join(configured)
            )
        ]

    return [
        Check("process:eventLoopLag", "system", event_loop),
        Check("nexus:config", "system", config),
    ]


def prepare(target: HealthTarget, name: BackendName, *modules: str) -> None:
    """Create backend ``name`` and import ``modules`` now, before any check's clock starts:
    a cold import can take longer than a check's timeout on a busy machine, and must not
    count as the server being slow."""
    try:
        target.backends.get(name)
        for module in modules:
            importlib.import_module(module)
    except Exception as exc:  # the check that needs it reports the same failure
        _log.debug("health_prepare_failed", backend=name, error=describe(exc))


def ms(seconds: float) -> float:
    """``seconds`` as milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)


def version_check(target: HealthTarget, name: BackendName, backend: Backend | None = None) -> Check:
    """``<name>:version``: the server's version (asked of ``backend``, by default the
    store's)."""

    async def version() -> list[CheckResult]:
        asked = backend if backend is not None else target.backends.get(name)
        return [CheckResult("datastore", "pass", await asked.server_version(), "version")]

    return Check(f"{name}:version", "datastore", version)


def ping_check(target: HealthTarget, name: BackendName, backend: Backend | None = None) -> Check:
    """``<name>:responseTime``: one round trip (to ``backend``, by default the store's)."""

    async def response_time() -> list[CheckResult]:
        asked = backend if backend is not None else target.backends.get(name)
        return [CheckResult("datastore", "pass", ms(await asked.ping()), "ms")]

    return Check(f"{name}:responseTime", "datastore", response_time)
