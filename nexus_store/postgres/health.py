"""PostgreSQL health checks: response time, version, pool usage, migrations, outbox lag.

They read the server through a :class:`PostgresSource`: the store's
:class:`~nexus_store.postgres.engine.PostgresBackend`, or the exec probe's
:class:`~nexus_store.postgres._status.DirectPostgres` (no SQLAlchemy). Both run the SQL of
:mod:`nexus_store.postgres._status`, so the two reports cannot drift apart.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nexus_store._errors import describe
from nexus_store.health import (
    HIGH_USAGE,
    Check,
    CheckResult,
    HealthTarget,
    Status,
    ping_check,
    prepare,
    version_check,
)
from nexus_store.log import get_logger
from nexus_store.postgres._status import current_revisions

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSource", "heads_of", "migration_heads", "postgres_checks"]

_log = get_logger("nexus_store.postgres.health")


class PostgresSource(Protocol):
    """What the PostgreSQL checks read (a ``PostgresBackend`` or a ``DirectPostgres``)."""

    @property
    def name(self) -> str: ...

    @property
    def pool_capacity(self) -> int: ...

    def pool_in_use(self) -> int: ...

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...

    async def ping(self) -> float: ...

    async def server_version(self) -> str: ...

    async def close(self) -> None: ...


@functools.cache
def migration_heads() -> list[str]:
    """The head revision(s) of the shipped migrations: they cannot change while we run."""
    return heads_of(Path(str(importlib.resources.files("nexus_store.postgres._migrations"))))


def heads_of(script_location: Path) -> list[str]:
    """The head revision(s) of the Alembic scripts in ``script_location``/versions.

    Read from each script's ``revision`` and ``down_revision`` assignments without running
    it: Alembic's ScriptDirectory imports every script, and through ``alembic.op`` all of
    Alembic (its dialects, autogenerate, mako, pygments), which costs a health probe about a
    fifth of its start-up. ``tests/postgres/test_health.py`` holds the answer to Alembic's.
    """
    revisions: set[str] = set()
    replaced: set[str] = set()
    for script in (script_location / "versions").glob("*.py"):
        assigned = _revision_assignments(ast.parse(script.read_bytes(), str(script)))
        if "revision" not in assigned:
            continue  # __init__.py
        revisions.add(str(assigned["revision"]))
        down = assigned.get("down_revision")
        replaced.update([down] if isinstance(down, str) else down or ())
    return sorted(revisions - replaced)


def _revision_assignments(module: ast.Module) -> dict[str, Any]:
    found: dict[str, Any] = {}
    targets: list[ast.expr]
    for statement in module.body:
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        elif isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                found[target.id] = ast.literal_eval(value)
    return found


def postgres_checks(target: HealthTarget, backend: PostgresSource | None = None) -> list[Check]:
    """The PostgreSQL checks, none when PostgreSQL is not configured: on ``backend``, by
    default the store's (the outbox lag always comes from ``target.outbox``)."""
    if "postgres" not in target.backends.configured():
        return []
    if backend is None:
        prepare(target, "postgres")
        backend = target.backends.postgres
    try:
        migration_heads()
    except Exception as exc:  # the migrations check reports the same failure
        _log.debug("health_prepare_failed", backend="postgres", error=describe(exc))
    # Pool usage is read before the other checks borrow connections: it shows the app's use.
    capacity, in_use = backend.pool_capacity, backend.pool_in_use()

    async def connections() -> list[CheckResult]:
        status: Status = "warn" if in_use >= HIGH_USAGE * capacity else "pass"
        output = f"pool: {in_use} of {capacity} in use"
        return [CheckResult("datastore", status, in_use, "connections", output)]

    async def migrations() -> list[CheckResult]:
        return [await _migrations(backend)]

    async def outbox_lag() -> list[CheckResult]:
        lag = await target.outbox.lag()
        late = (lag.oldest_age_seconds or 0.0) > target.settings.outbox.lag_warning_seconds
        status: Status = "warn" if late or lag.last_error else "pass"
        output = f"{lag.pending} undelivered"
        if lag.oldest_age_seconds is not None:
            output += f", oldest {lag.oldest_age_seconds:.1f} s"
        if lag.last_error:
            output += f"; last error: {lag.last_error}"
        return [CheckResult("component", status, lag.pending, "rows", output)]

    return [
        ping_check(target, "postgres", backend),
        version_check(target, "postgres", backend),
        Check("postgres:connections", "datastore", connections),
        Check("postgres:migrations", "datastore", migrations),
        Check("outbox:lag", "component", outbox_lag),
    ]


async def _migrations(backend: PostgresSource) -> CheckResult:
    # Read against heads parsed once per process: a readiness probe runs every few seconds.
    async with backend.connection() as conn:
        current = await current_revisions(conn)
    heads = migration_heads()
    shown = ", ".join(current) or None
    if current == heads:
        return CheckResult("datastore", "pass", shown, "revision", f"at head {shown}")
    if not current:
        return CheckResult(
            "datastore",
            "fail",
            None,
            output=f"no schema (head is {', '.join(heads)}): run `nexus-store init`",
        )
    return CheckResult(
        "datastore",
        "warn",
        shown,
        "revision",
        output=f"behind: head is {', '.join(heads)}: run `nexus-store migrate upgrade`",
    )
