"""``nexus-store demo``: init, a small realistic workload through every route, then health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nexus_store.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOption,
    FormatOption,
    OutputFormat,
    emit_json,
    fail,
    load_settings,
    open_store,
    run,
    stderr,
    stdout,
    step_line,
    table,
)
from nexus_store.connections import BACKEND_NAMES, configured

if TYPE_CHECKING:
    from nexus_store.cli.demo.workload import DemoReport
    from nexus_store.health import HealthReport
    from nexus_store.settings import NexusSettings


def demo(
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    users: Annotated[int, typer.Option(min=1, max=1000, help="Users to sign up.")] = 5,
    skip_init: Annotated[
        bool, typer.Option("--skip-init", help="Do not run the init steps first.")
    ] = False,
) -> None:
    """Run `init`, then a small app workload through every route (entities, events, audit,
    sessions, cache, rate limit, queue, realtime), and print where each record went, counts,
    timings and the health report. Needs PostgreSQL, MongoDB and Redis.

    Exit 0 when everything worked, 1 otherwise.
    """
    settings = load_settings(config)
    missing = [name for name in BACKEND_NAMES if name not in configured(settings)]
    if missing:
        fail(
            "the demo needs every backend; not configured: "
            + ", ".join(f"{name} (NEXUS_{name.upper()}_URL)" for name in missing),
            2,
        )
    report, health = run(_demo(settings, users, skip_init))
    if output_format is OutputFormat.json:
        emit_json({**report.to_dict(), "health": health.to_dict()})
    else:
        _render(report, health)
    ok = not report.failures and health.status != "fail"
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


async def _demo(
    settings: NexusSettings, users: int, skip_init: bool
) -> tuple[DemoReport, HealthReport]:
    from nexus_store.cli.demo.workload import run_demo
    from nexus_store.cli.init import run_init

    async with open_store(settings) as store:
        if not skip_init:
            steps = await run_init(store)
            failed = [f"{s.backend} {s.step}: {s.error}" for s in steps if s.status == "failed"]
            if failed:
                fail("init failed, the demo cannot run: " + "; ".join(failed))
        report = await run_demo(store, users=users, progress=step_line)
        health = await store.health()
    return report, health


def _render(report: DemoReport, health: HealthReport) -> None:
    from nexus_store.cli.health import render_report

    stdout.print(
        table(
            "where each record went",
            ("kind", "backend", "location", "records", "time"),
            [
                (r.kind, r.backend, r.location, r.count, f"{r.seconds * 1000:.1f} ms")
                for r in report.routes
            ],
        )
    )
    stdout.print(
        table(
            "operations",
            ("operation", "count", "total", "per op"),
            [
                (
                    op.name,
                    op.count,
                    f"{op.seconds * 1000:.1f} ms",
                    f"{op.seconds * 1000 / max(op.count, 1):.2f} ms",
                )
                for op in report.operations
            ],
        )
    )
    for failure in report.failures:
        stderr.print(f"demo step failed: {failure}", markup=False)
    render_report(health)
