"""``nexus-store health --probe ... --format json`` without typer, rich or structlog.

A Kubernetes exec probe starts a new interpreter every few seconds, under a 1 s default
timeout. Most of the command's time used to be start-up: typer, click, rich and pygments
alone cost more than the checks. :func:`parse` recognises exactly the health command's
machine form, and :func:`run` answers it with the SDK alone; anything else (a table,
``--watch``, ``--help``, a value typer would refuse) goes to typer, which stays the one
definition of the command's options and their help.

The answer is bounded: the checks take at most ``health.timeout``, and closing the store
afterwards gets :data:`CLOSE_GRACE` seconds. Whatever a hanging server leaves pending then
is abandoned: the document is written and the process ends, since a probe that outlives its
timeout is as bad as a failing one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_store.cli._plain import EXIT_INTERRUPTED, EXIT_USAGE, cli_log_level, emit_json, json_logs

if TYPE_CHECKING:
    from nexus_store.health import HealthReport
    from nexus_store.settings import NexusSettings

__all__ = ["CLOSE_GRACE", "ProbeRequest", "parse", "run"]

#: Seconds to close the store after the report (a healthy stack closes in milliseconds).
CLOSE_GRACE = 0.25
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
    """Answer ``request``: the report on stdout, the exit code returned (0 pass, ``warn_exit``
    on warn, 2 fail; 2 for invalid settings, with the reason on stderr)."""
    from nexus_store.errors import ConfigurationError
    from nexus_store.settings import NexusSettings

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
    loop = asyncio.new_event_loop()
    try:
        report, abandoned = loop.run_until_complete(_report(settings, request.probe))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    emit_json(report.to_dict())
    code = report.exit_code_for(warn=request.warn_exit)
    if abandoned:
        # A hanging server left tasks behind (a connection attempt, a close): waiting for
        # them, or for the interpreter's shutdown to collect them, would outlive the probe.
        sys.stderr.flush()
        os._exit(code)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    return code


async def _report(settings: NexusSettings, probe: str) -> tuple[HealthReport, bool]:
    """The report, and whether closing the store left tasks unfinished."""
    from nexus_store.store import NexusStore

    store = NexusStore(settings)
    try:
        report = await store.health(probe=probe)
    finally:
        closing = asyncio.ensure_future(store.close())
        await asyncio.wait({closing}, timeout=CLOSE_GRACE)
        error = closing.exception() if closing.done() and not closing.cancelled() else None
        if error is not None:
            from nexus_store._errors import describe

            sys.stderr.write(f"warning: closing the store: {describe(error)}\n")
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=0.05)
    return report, any(not task.done() for task in pending)


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
