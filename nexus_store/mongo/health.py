"""MongoDB health checks: response time, version, schema (indexes, TTLs, validators), and
the counters of this process's event writer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nexus_store.health import (
    Check,
    CheckResult,
    HealthTarget,
    Status,
    ping_check,
    prepare,
    version_check,
)

if TYPE_CHECKING:
    from nexus_store.mongo.schema import SchemaProblem

__all__ = ["event_writer_checks", "mongo_checks"]


def mongo_checks(target: HealthTarget) -> list[Check]:
    """The MongoDB checks, none when MongoDB is not configured."""
    if "mongo" not in target.backends.configured():
        return []
    prepare(target, "mongo", "nexus_store.mongo.schema")
    inspection: list[asyncio.Task[list[SchemaProblem] | Exception]] = []

    async def settled() -> list[SchemaProblem] | Exception:
        # The failure is returned, not raised: when both checks time out the inspection
        # outlives them, and a task that ends with an exception is reported, with a
        # traceback, when the event loop shuts down.
        from nexus_store.mongo.schema import inspect_schema

        try:
            return await inspect_schema(target.backends.mongo, target.settings)
        except Exception as exc:
            return exc

    async def inspect() -> list[SchemaProblem]:
        # Both schema checks of one run share one inspection (one listCollections and a
        # listIndexes per collection).
        if not inspection:
            inspection.append(asyncio.ensure_future(settled()))
        # Shielded: a check that times out must not cancel the other check's inspection.
        outcome = await asyncio.shield(inspection[0])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def schema_check(key: str, validators: bool, ok: str) -> Check:
        async def measure() -> list[CheckResult]:
            # What could not be read (a user without listCollections/listIndexes) is
            # reported by both checks: neither could verify its part.
            problems = [
                problem
                for problem in await inspect()
                if (problem.problem == "validator_mismatch") == validators
                or problem.problem == "not_authorized"
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

        return Check(key, "datastore", measure)

    return [
        ping_check(target, "mongo"),
        version_check(target, "mongo"),
        schema_check("mongo:indexes", False, "collections, indexes and TTLs match the settings"),
        schema_check("mongo:validators", True, "validators match the schema"),
    ]


def event_writer_checks(target: HealthTarget) -> list[Check]:
    """The event writer's counters, when this process has one running."""
    # Only a writer this process already started has counters; health never starts one.
    events = target.started("events")
    if events is None:
        return []
    from nexus_store.mongo.events.service import Events  # already loaded: it started

    if not isinstance(events, Events):
        raise TypeError(f"the events sub-API is a {type(events).__name__}, not Events")

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

    return [Check("events:writer", "component", writer)]
