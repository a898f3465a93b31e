"""``nexus-store init``: bring every configured backend to the schema this version expects.

Steps, in order (each skipped when its backend is not configured):

1. ``postgres migrate``: Alembic upgrade to head under ``pg_advisory_lock`` (concurrent pods
   wait for each other; the second finds nothing to do).
2. ``mongo schema``: collections, validators, indexes and TTLs (``collMod`` when a TTL
   changed), and the audit role where the server supports it.
3. ``redis check``: every logical DB answers; ``maxmemory-policy`` will not evict sessions or
   limits; the cluster is healthy in cluster mode. Redis has no schema: nothing is written.

Every step is idempotent. ``--dry-run`` prints what would change and writes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from nexus_store.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
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
from nexus_store.connections import configured
from nexus_store.errors import BackendUnavailableError
from nexus_store.health import describe_failure

if TYPE_CHECKING:
    from nexus_store.settings import NexusSettings
    from nexus_store.store import NexusStore

StepStatus = Literal["done", "unchanged", "planned", "warn", "failed", "skipped"]


class BackendName(StrEnum):
    postgres = "postgres"
    mongo = "mongo"
    redis = "redis"


@dataclass(slots=True)
class StepResult:
    """What one init step did (or would do, with ``--dry-run``)."""

    backend: str
    step: str
    status: StepStatus = "done"
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "step": self.step,
            "status": self.status,
            "changes": self.changes,
            "warnings": self.warnings,
            "error": self.error,
            "durationMs": round(self.seconds * 1000, 1),
        }

    @property
    def summary(self) -> str:
        if self.error:
            return self.error
        verb = "would change" if self.status == "planned" else "changed"
        parts = [f"{verb} {len(self.changes)}" if self.changes else "nothing to change"]
        parts += self.warnings
        return "; ".join(parts)


_Runner = Callable[["NexusStore", StepResult, bool], Awaitable[None]]


async def _postgres_step(store: NexusStore, result: StepResult, dry_run: bool) -> None:
    from nexus_store.postgres import migrate

    outcome = await migrate.upgrade(store.settings, dry_run=dry_run)
    result.changes = [f"migration {step.revision}: {step.description}" for step in outcome.steps]


async def _mongo_step(store: NexusStore, result: StepResult, dry_run: bool) -> None:
    from nexus_store.mongo.schema import ensure_schema

    changes = await ensure_schema(store.backends.mongo, store.settings, dry_run=dry_run)
    result.changes = [f"{c.collection}: {c.action} {c.detail}" for c in changes]


async def _redis_step(store: NexusStore, result: StepResult, dry_run: bool) -> None:
    from nexus_store.redis.health import area_pings, cluster_state, eviction_risk, server_info

    backend = store.backends.redis
    unanswered = [ping for ping in await area_pings(backend) if ping.status != "pass"]
    if unanswered:
        by_error: dict[str, list[str]] = {}
        for ping in unanswered:  # usually one error for every DB: say it once
            by_error.setdefault(ping.output, []).append(str(ping.component_id))
        raise _StepFailed("; ".join(f"{', '.join(ids)}: {e}" for e, ids in by_error.items()))
    if store.settings.redis.cluster:
        state = await cluster_state(backend)
        if state.status != "pass":
            raise _StepFailed(f"cluster is {state.observed_value}: {state.output}")
    for node, memory in await server_info(backend, "memory"):
        if risk := eviction_risk(memory):
            result.warnings.append(f"{node}: {risk}" if node else risk)


class _StepFailed(Exception):
    """A step found a problem it can name without a driver exception."""


_STEPS: tuple[tuple[BackendName, str, _Runner], ...] = (
    (BackendName.postgres, "migrate", _postgres_step),
    (BackendName.mongo, "schema", _mongo_step),
    (BackendName.redis, "check", _redis_step),
)


async def run_init(
    store: NexusStore,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[StepResult]:
    """Run the init steps against ``store`` and return one result per step.

    A step that fails is recorded (``status == "failed"``, ``error`` naming the problem
    without secrets) and the next steps still run: the backends are independent.
    """
    configured = store.backends.configured()
    results = []
    for backend, step, runner in _STEPS:
        if only and backend not in only:
            continue
        label = f"{backend} {step}"
        result = StepResult(backend.value, step)
        results.append(result)
        if backend not in configured:
            result.status = "skipped"
            result.warnings.append(f"not configured (set NEXUS_{backend.upper()}_URL)")
            if progress:
                step_line("skipped", label, result.summary)
            continue
        started = time.perf_counter()
        try:
            if progress:
                with stderr.status(f"{label}..."):
                    await runner(store, result, dry_run)
            else:
                await runner(store, result, dry_run)
        except Exception as exc:  # reported per step, never as a traceback
            result.status = "failed"
            result.error = str(exc) if isinstance(exc, _StepFailed) else describe_failure(exc)
        else:
            if dry_run:
                result.status = "planned" if result.changes else "unchanged"
            elif result.warnings:
                result.status = "warn"
            else:
                result.status = "done" if result.changes else "unchanged"
        result.seconds = time.perf_counter() - started
        if progress:
            step_line(result.status, label, f"{result.summary} ({result.seconds:.2f} s)")
    return results


def init(
    config: ConfigOption = None,
    output_format: FormatOption = OutputFormat.table,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    only: Annotated[
        list[BackendName] | None,
        typer.Option(help="Run only this backend's step (repeatable)."),
    ] = None,
) -> None:
    """Create or upgrade every configured backend's schema. Idempotent; safe to run from
    several pods at once.

    Exit 0 done, 1 a step failed, 2 usage or configuration error.
    """
    settings = load_settings(config)
    selected = [backend.value for backend in only] if only else None
    if selected:
        missing = [name for name in selected if name not in configured(settings)]
        if missing:
            fail(
                f"--only {', '.join(missing)}: not configured "
                f"(set {', '.join(f'NEXUS_{name.upper()}_URL' for name in missing)})",
                EXIT_USAGE,
            )
    results = run(_init(settings, dry_run, selected))
    failed = [result for result in results if result.status == "failed"]
    if output_format is OutputFormat.json:
        emit_json(
            {
                "status": "failed" if failed else ("planned" if dry_run else "done"),
                "dryRun": dry_run,
                "steps": [result.to_dict() for result in results],
            }
        )
    else:
        _render(results, dry_run)
    for result in failed:
        stderr.print(
            f"init failed at step '{result.backend} {result.step}' "
            f"({result.backend}): {result.error}",
            markup=False,
            highlight=False,
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


async def _init(settings: NexusSettings, dry_run: bool, only: list[str] | None) -> list[StepResult]:
    async with open_store(settings) as store:
        if not dry_run:
            # A killed restore's switch-over comes first; a store it needs that is down is
            # reported by that store's steps.
            with contextlib.suppress(BackendUnavailableError):
                await store.finish_restore()
        return await run_init(store, dry_run=dry_run, only=only)


def _render(results: list[StepResult], dry_run: bool) -> None:
    rows = []
    for result in results:
        details = result.changes + [f"warning: {w}" for w in result.warnings]
        if result.error:
            details.append(f"error: {result.error}")
        rows.append(
            (
                result.backend,
                result.step,
                result.status,
                "\n".join(details) or "nothing to change",
                f"{result.seconds:.2f} s",
            )
        )
    title = "init plan (dry run: nothing changed)" if dry_run else "init"
    stdout.print(table(title, ("backend", "step", "status", "changes", "time"), rows))
