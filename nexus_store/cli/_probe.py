"""``nexus-store health --probe ... --format json`` without typer, rich or structlog.

A Kubernetes exec probe starts a new interpreter every few seconds, under a 1 s default
timeout. Most of the command's time used to be start-up: typer, click, rich and pygments
alone cost more than the checks. :func:`parse` recognises exactly the health command's
machine form, and :func:`run` answers it with the SDK alone; anything else (a table,
``--watch``, ``--help``, a value typer would refuse) goes to typer, which stays the one
definition of the command's options and their help.

The checks are the store's own (:func:`nexus_store.health.check_health` with the same
builders, so the report has the same keys), except that PostgreSQL is read through
:class:`~nexus_store.postgres._status.DirectPostgres`: one psycopg connection and the same
SQL, without SQLAlchemy and the ORM models.

The answer is bounded from the start of the process, since Kubernetes' ``timeoutSeconds``
covers the whole exec: the checks get ``health.timeout`` minus the time already spent
starting, the document is written, and closing the connections afterwards gets at most
:data:`CLOSE_GRACE` seconds. Whatever a hanging server leaves pending then is abandoned and
the process ends, since a probe that outlives its timeout is as bad as a failing one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_store.cli._plain import EXIT_INTERRUPTED, EXIT_USAGE, cli_log_level, emit_json, json_logs

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.health import Checks
    from nexus_store.postgres._status import DirectPostgres
    from nexus_store.settings import NexusSettings

__all__ = ["CLOSE_GRACE", "ProbeRequest", "parse", "process_start", "run"]

#: Seconds to close the store after the report (a healthy stack closes in milliseconds).
CLOSE_GRACE = 0.25
# An age beyond this is a misread clock, not a start-up: it would leave the checks no time.
_PLAUSIBLE_AGE = 60.0
_WARN_EXITS = ("0", "1")


@dataclass(frozen=True)
class ProbeRequest:
    """``nexus-store health --format json`` with the options the fast path answers."""

    probe: str = "readiness"
    timeout: float | None = None
    warn_exit: int = 1
    config: str | None = None


def parse(argv: list[str]) -> ProbeRequest | None:
    """The request in ``argv`` (the arguments after the program name), or None when it is
    anything but ``health ... --format json`` with valid ``--probe``, ``--timeout``,
    ``--warn-exit`` and ``--config`` values (typer then handles it, errors included)."""
    if not argv or argv[0] != "health":
        return None
    values: dict[str, str] = {}
    names = {
        "--probe": "probe",
        "--format": "format",
        "-f": "format",
        "--timeout": "timeout",
        "--warn-exit": "warn_exit",
        "--config": "config",
        "-c": "config",
    }
    rest = argv[1:]
    while rest:
        option, *given = rest.pop(0).split("=", 1)
        name = names.get(option)
        if name is None or name in values or (not given and not rest):
            return None
        value = given[0] if given else rest.pop(0)
        if given and not option.startswith("--"):
            return None  # -f=json is not an option typer accepts
        values[name] = value
    request = _validated(values)
    return request if values.get("format", "").lower() == "json" else None


def _validated(values: dict[str, str]) -> ProbeRequest | None:
    from nexus_store.health import PROBES

    probe = values.get("probe", "readiness")
    warn_exit = values.get("warn_exit", "1")
    if probe not in PROBES or warn_exit not in _WARN_EXITS:
        return None
    timeout: float | None = None
    if "timeout" in values:
        try:
            timeout = float(values["timeout"])
        except ValueError:
            return None
        if not math.isfinite(timeout) or timeout < 0.01:
            return None
    config = values.get("config") or None  # NEXUS_CONFIG is read by the settings
    return ProbeRequest(probe, timeout, int(warn_exit), config)


def run(request: ProbeRequest) -> int:
    """Answer ``request`` and end the process: the report on stdout, exit code 0 pass,
    ``warn_exit`` on warn, 2 fail. Returns the exit code when there is no report: 2 for
    invalid settings (the reason on stderr), 130 when interrupted."""
    from nexus_store.errors import ConfigurationError
    from nexus_store.health import check_health
    from nexus_store.settings import NexusSettings

    started = process_start()
    overrides: dict[str, Any] = {}
    if request.timeout is not None:
        overrides["health"] = {"timeout": request.timeout}
    try:
        settings = NexusSettings.load(config_file=request.config, **overrides)
    except ConfigurationError as exc:
        from nexus_store._secrets import scrub

        sys.stderr.write(f"error: {scrub(str(exc))}\n")
        return EXIT_USAGE
    _log_to_stderr(settings)
    deadline = started + settings.health.timeout
    target = _ProbeTarget(settings)
    readiness = target.readiness() if request.probe == "readiness" else ()
    loop = asyncio.new_event_loop()
    try:
        report = loop.run_until_complete(
            check_health(target, probe=request.probe, readiness=readiness, deadline=deadline)
        )
        emit_json(report.to_dict())
        grace = min(CLOSE_GRACE, max(0.0, deadline + CLOSE_GRACE - time.monotonic()))
        loop.run_until_complete(_close(target, grace))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    # The answer is out and the connections are closed or abandoned. What is left is the
    # interpreter's shutdown: tasks a hanging server left behind (a connection attempt, a
    # close) and the teardown of some 700 modules, a tenth of a second or more on a busy
    # machine that the probe's deadline does not have.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report.exit_code_for(warn=request.warn_exit))


def process_start() -> float:
    """The ``time.monotonic()`` instant this process started: interpreter start-up and
    imports count against an exec probe's timeout. Read from ``/proc/self/stat`` (to the
    clock tick); where there is none, the instant of the call."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as stat:
            # Fields after the command name, which is in parentheses and may hold spaces:
            # field 22 of proc(5), the start time in clock ticks since boot, is the 20th.
            start_ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        age = since_boot - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - min(max(age, 0.0), _PLAUSIBLE_AGE)


class _ProbeTarget:
    """What the checks read of a store, as :class:`NexusStore` offers it, with PostgreSQL
    (and the outbox's backlog, which no relay runs here) read by a ``DirectPostgres``."""

    def __init__(self, settings: NexusSettings) -> None:
        from nexus_store.connections import Backends

        self.settings = settings
        self.backends: Backends = Backends(settings)
        self._postgres: DirectPostgres | None = None

    @property
    def postgres(self) -> DirectPostgres:
        if self._postgres is None:
            from nexus_store.postgres._status import DirectPostgres

            self._postgres = DirectPostgres(self.settings.postgres)
        return self._postgres

    @property
    def outbox(self) -> DirectPostgres:
        return self.postgres

    def started(self, name: str) -> object | None:
        return None  # no sub-API runs in the probe

    def readiness(self) -> tuple[Checks, ...]:
        """The store's readiness checks, PostgreSQL's read by our ``DirectPostgres``."""
        from nexus_store._readiness import readiness_checks

        # Unconfigured, the PostgreSQL checks build nothing, and there is nothing to read.
        configured = "postgres" in self.backends.configured()
        return readiness_checks(self.postgres if configured else None)

    async def close(self) -> None:
        await self.backends.close()
        if self._postgres is not None:
            await self._postgres.close()


async def _close(target: _ProbeTarget, grace: float) -> None:
    """Close ``target``'s connections within ``grace`` seconds, then cancel what is left."""
    closing = asyncio.ensure_future(target.close())
    await asyncio.wait({closing}, timeout=grace)
    error = closing.exception() if closing.done() and not closing.cancelled() else None
    if error is not None:
        from nexus_store._errors import describe

        sys.stderr.write(f"warning: closing the connections: {describe(error)}\n")
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=0.05)


class _Lines(logging.Formatter):
    """The SDK's events as the CLI prints them elsewhere: JSON lines, or console lines."""

    # The attributes every LogRecord has; the others are the event's fields.
    _RECORD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        fields = {k: v for k, v in vars(record).items() if k not in self._RECORD}
        level = record.levelname.lower()
        timestamp = datetime.fromtimestamp(record.created, UTC).isoformat()
        if self._as_json:
            line = {"event": record.getMessage(), **fields, "level": level}
            line["timestamp"] = timestamp
            return orjson.dumps(line, default=str).decode()
        shown = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{timestamp} [{level}] {record.getMessage()} {shown}".rstrip()


def _log_to_stderr(settings: NexusSettings) -> None:
    """Print the SDK's events (already scrubbed of secrets) on stderr from the CLI's level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lines(json_logs(settings.log)))
    logger = logging.getLogger("nexus_store")
    logger.addHandler(handler)
    logger.setLevel(cli_log_level(settings.log))
