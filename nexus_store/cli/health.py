"""``nexus-store health``: the health report as a table or ``application/health+json``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from nexus_store.cli._common import (
    ConfigOption,
    FormatOption,
    OutputFormat,
    emit_json,
    load_settings,
    open_store,
    run,
    stdout,
    table,
)

if TYPE_CHECKING:
    from nexus_store.health import HealthReport
    from nexus_store.settings import NexusSettings


class ProbeOption(StrEnum):
    liveness = "liveness"
    readiness = "readiness"


def render_report(report: HealthReport) -> None:
    """Print ``report`` as a table on stdout."""
    rows = []
    for key, results in report.checks.items():
        for result in results:
            unit = f" {result.observed_unit}" if result.observed_unit else ""
            value = result.observed_value
            if isinstance(value, list):
                value = ", ".join(str(item) for item in value)
            shown = "" if value is None else f"{value}{unit}"
            rows.append((key, result.component_id, result.status, shown, result.output))
    title = (
        f"health ({report.probe}): {report.status} in {report.duration * 1000:.0f} ms, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    )
    stdout.print(table(title, ("check", "component", "status", "observed", "output"), rows))


def health(
    *,
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    probe: Annotated[
        ProbeOption,
        typer.Option(help="liveness: process and settings only; readiness: every datastore."),
    ] = ProbeOption.readiness,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help=(
                "Seconds per check (default: health.timeout, 2 s). With --format json and no "
                "--watch, counted from the start of the process, as an exec probe's timeout is."
            ),
        ),
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(min=0.1, metavar="SECONDS", help="Repeat every SECONDS until Ctrl-C."),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(min=1, help="With --watch: stop after COUNT reports."),
    ] = None,
    warn_exit: Annotated[
        int,
        typer.Option(
            min=0,
            max=1,
            help=(
                "Exit code on warn. 0 for a Kubernetes exec probe: the HTTP route answers "
                "200 on warn (still serving)."
            ),
        ),
    ] = 1,
) -> None:
    """Check every configured backend. Exit 0 pass, 1 warn (--warn-exit), 2 fail.

    With --format json, stdout is application/health+json (one document per line with
    --watch). `health --format json` without --watch runs without loading typer or rich
    (a fast path for exec probes).
    """
    overrides = {"health": {"timeout": timeout}} if timeout is not None else {}
    settings = load_settings(config, **overrides)
    code = run(
        _health(
            settings,
            output_format=output_format,
            probe=probe.value,
            watch=watch,
            count=count,
            warn_exit=warn_exit,
        )
    )
    raise typer.Exit(code)


async def _health(
    settings: NexusSettings,
    *,
    output_format: OutputFormat,
    probe: str,
    watch: float | None,
    count: int | None,
    warn_exit: int,
) -> int:
    runs = 1 if watch is None else count
    done = 0
    code = 0
    async with open_store(settings) as store:
        while runs is None or done < runs:
            if done:
                await asyncio.sleep(watch or 0)
            report = await store.health(probe=probe)
            if output_format is OutputFormat.json:
                emit_json(report.to_dict(), compact=watch is not None)
            else:
                render_report(report)
            code = report.exit_code_for(warn=warn_exit)
            done += 1
    return code
