"""PostgreSQL health checks: response time, version, pool usage, migrations, outbox lag."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from nexus_store.postgres.engine import PostgresBackend

__all__ = ["postgres_checks"]

_log = get_logger("nexus_store.postgres.health")


@functools.cache
def _migration_heads() -> list[str]:
    """The head revision(s) of the shipped migrations: they cannot change while we run."""
    from nexus_store.postgres import migrate

    return sorted(revision.revision for revision in migrate.history() if revision.is_head)


def postgres_checks(target: HealthTarget) -> list[Check]:
    """The PostgreSQL checks, none when PostgreSQL is not configured."""
    if "postgres" not in target.backends.configured():
        return []
    prepare(target, "postgres", "alembic.migration")
    try:
        _migration_heads()
    except Exception as exc:  # the migrations check reports the same failure
        _log.debug("health_prepare_failed", backend="postgres", error=describe(exc))
    # Pool usage is read before the other checks borrow connections: it shows the app's use.
    backend = target.backends.postgres
    pool: Any = backend.engine.pool
    capacity = backend.pool_capacity
    in_use = int(pool.checkedout())

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
        ping_check(target, "postgres"),
        version_check(target, "postgres"),
        Check("postgres:connections", "datastore", connections),
        Check("postgres:migrations", "datastore", migrations),
        Check("outbox:lag", "component", outbox_lag),
    ]


async def _migrations(backend: PostgresBackend) -> CheckResult:
    # Read on a pooled connection with Alembic's own reader, against heads parsed once per
    # process: a readiness probe runs every few seconds.
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
