"""What every command shares: options, settings, the store's lifetime, and output.

Progress and errors go to stderr, results to stdout, so ``--format json`` output can be
piped as is. Every string printed passes through :func:`nexus_store._secrets.scrub`.
Every ``--format json`` document goes through :func:`emit_json` (in ``_plain``, which the
health probe's fast path uses without typer or rich): keys are camelCase, the style of
``application/health+json`` (``componentType``, ``observedValue``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import structlog
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nexus_store._secrets import scrub
from nexus_store.cli._plain import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    camel_case,
    cli_log_level,
    emit_json,
    json_logs,
    json_ready,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigOption",
    "FormatOption",
    "OutputFormat",
    "call",
    "camel_case",
    "cell",
    "configure_cli_logging",
    "emit_json",
    "fail",
    "json_ready",
    "load_settings",
    "open_store",
    "run",
    "step_line",
    "table",
]

if TYPE_CHECKING:
    from nexus_store.settings import LogSettings, NexusSettings
    from nexus_store.store import NexusStore

T = TypeVar("T")

# A store that cannot close (a backend that hangs) must not hold the command past this.
_CLOSE_TIMEOUT = 5.0


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="NEXUS_CONFIG",
        dir_okay=False,
        help="TOML settings file; NEXUS_* environment variables override it.",
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        help="table for people, json for machines (stdout only).",
    ),
]

# Piped output (CI logs, files) gets wide tables instead of 80 columns.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` (secrets masked) on stderr and exit with ``code``."""
    stderr.print(Text(f"error: {scrub(message)}", style="bold red"))
    raise typer.Exit(code)


def load_settings(config: Path | None, **overrides: Any) -> NexusSettings:
    """Settings from ``--config``, the environment and ``overrides``; exit 2 when invalid."""
    from nexus_store.errors import ConfigurationError
    from nexus_store.settings import NexusSettings

    try:
        settings = NexusSettings.load(config_file=config, **overrides)
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    configure_cli_logging(settings.log)
    return settings


def configure_cli_logging(log: LogSettings) -> None:
    """The CLI's own log output, set up the way an application does: structlog prints the
    SDK's events on stderr, JSON or console lines per ``log.format``, from ``log.level`` up.

    Commands report their own progress, and SDK info events would interleave with it:
    ``info`` logs from warning up, an explicit ``debug`` is kept. The SDK scrubs secrets
    from every field before its events reach this pipeline.
    """
    level = cli_log_level(log)
    use_json = json_logs(log)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        # A number, not the name: structlog 24.1 (the floor) accepts only numbers here.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion; Ctrl-C exits 130 without a traceback."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def call(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro``; a failure exits 1 naming ``what`` (2 for a configuration error),
    without a traceback."""
    from nexus_store.errors import ConfigurationError
    from nexus_store.health import describe_failure

    async def guarded() -> T:
        try:
            return await coro
        except ConfigurationError as exc:
            fail(f"{what}: {exc}", EXIT_USAGE)
        except Exception as exc:
            fail(f"{what}: {describe_failure(exc)}")

    return run(guarded())


@asynccontextmanager
async def open_store(settings: NexusSettings) -> AsyncIterator[NexusStore]:
    """A store that is closed (flushing buffers) on exit, within a bounded time."""
    from nexus_store._errors import describe
    from nexus_store.store import NexusStore

    store = NexusStore(settings)
    try:
        yield store
    finally:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await store.close()
        except Exception as exc:
            stderr.print(Text(f"warning: closing the store: {describe(exc)}", style="yellow"))


STATUS_STYLES = {
    "pass": "green",
    "done": "green",
    "ok": "green",
    "unchanged": "green",
    "warn": "yellow",
    "planned": "cyan",
    "skipped": "dim",
    "fail": "bold red",
    "failed": "bold red",
}


def cell(value: Any) -> Text:
    """A table cell: scrubbed, never parsed as rich markup, statuses coloured."""
    if value is None:
        return Text("")
    if isinstance(value, float):
        value = f"{value:g}"
    text = scrub(str(value))
    return Text(text, style=STATUS_STYLES.get(text, ""))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table whose every cell goes through :func:`cell`."""
    found = Table(title=title, title_justify="left", min_width=min(len(title), 160))
    for column in columns:
        found.add_column(column, overflow="fold")
    for row in rows:
        found.add_row(*(cell(value) for value in row))
    return found


def step_line(status: str, label: str, detail: str = "") -> None:
    """One progress line on stderr: ``[done] postgres migrate: 3 applied (0.41 s)``."""
    line = Text()
    line.append(f"[{status}] ", style=STATUS_STYLES.get(status, ""))
    line.append(label)
    if detail:
        line.append(f": {scrub(detail)}")
    stderr.print(line)
