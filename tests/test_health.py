"""``nexus_store.health``: the draft's rules for the body, the application's identity from
settings, and the application's own checks, against the real services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import ValidationError
from nexus_store.health import CheckResult, HealthChecks, HealthReport
from tests.support import PASSWORD, assert_health_json


def test_a_value_needs_a_unit_and_a_status_must_be_the_drafts() -> None:
    with pytest.raises(ValidationError) as missing:
        CheckResult("component", "pass", 12)
    assert missing.value.field == "observed_unit"
    with pytest.raises(ValidationError) as status:
        CheckResult("component", "ok", 12, "ms")  # type: ignore[arg-type]
    assert status.value.field == "status"
    # A failure without a measurement carries neither.
    body = CheckResult("component", "fail", None, "ms", "no answer").to_dict()
    assert "observedValue" not in body and "observedUnit" not in body
    assert body["output"] == "no answer"


def test_output_is_left_out_of_passing_checks_only() -> None:
    passing = CheckResult("datastore", "pass", 3, "connections", "pool: 3 of 20 in use")
    warning = CheckResult("datastore", "warn", 19, "connections", "pool: 19 of 20 in use")
    assert "output" not in passing.to_dict()
    assert warning.to_dict()["output"] == "pool: 19 of 20 in use"
    assert passing.output == "pool: 3 of 20 in use"  # still there for the CLI's table


def test_warn_maps_to_the_exit_code_asked_for() -> None:
    def report(status: str) -> HealthReport:
        result = CheckResult("component", status, 1, "x", "" if status == "pass" else "why")  # type: ignore[arg-type]
        return HealthReport(result.status, {"a:b": [result]}, "readiness", 0.0)

    assert [report(s).exit_code for s in ("pass", "warn", "fail")] == [0, 1, 2]
    assert [report(s).exit_code_for(warn=0) for s in ("pass", "warn", "fail")] == [0, 0, 2]
    assert [report(s).exit_code_for(warn=1) for s in ("pass", "warn", "fail")] == [0, 1, 2]
    assert [report(s).http_status for s in ("pass", "warn", "fail")] == [200, 200, 503]


async def test_the_application_names_itself_in_settings(stack: Stack) -> None:
    named = stack.settings(
        health={"service_id": "orders-api", "version": "3", "release_id": "3.2.1-9f1c2ab"}
    )
    async with NexusStore(named) as store:
        body = (await store.health()).to_dict()
        live = (await store.health(probe="liveness")).to_dict()
    assert_health_json(body)
    assert (body["serviceId"], body["version"], body["releaseId"]) == (
        "orders-api",
        "3",
        "3.2.1-9f1c2ab",
    )
    assert body["description"] == "readiness probe" and live["description"] == "liveness probe"

    async with NexusStore(stack.settings(health={"description": "orders"})) as store:
        unnamed = (await store.health(probe="liveness")).to_dict()
    # Unset, they are left out: nexus-store's own name and version would misdescribe the app.
    assert not {"serviceId", "version", "releaseId"} & set(unnamed)
    assert unnamed["description"] == "orders"


async def test_every_value_of_a_full_report_has_its_unit(stack: Stack) -> None:
    async with NexusStore(stack.settings()) as store:
        await store.events.track("health_units", user_id="u1")  # events:writer is reported
        body = (await store.health()).to_dict()
    assert_health_json(body)
    units = {
        key: results[0].get("observedUnit")
        for key, results in body["checks"].items()
        if "observedValue" in results[0]
    }
    assert units["postgres:version"] == "version" and units["nexus:config"] == "backends"
    assert units.get("postgres:migrations", "revision") == "revision"  # None before init
    assert len(units) >= 12, units


async def test_application_checks_run_with_the_builtin_ones(stack: Stack) -> None:
    calls: list[str] = []

    async def depth() -> CheckResult:
        calls.append("depth")
        return CheckResult("component", "pass", 7, "jobs")

    async def heartbeat() -> list[CheckResult]:
        calls.append("heartbeat")
        return [
            CheckResult("component", "pass", 0.2, "s", component_id="worker-1"),
            CheckResult("component", "warn", 9.5, "s", "no beat for 9.5 s", "worker-2"),
        ]

    async with NexusStore(stack.settings()) as store:
        store.health_checks.add("jobs:depth", depth)
        store.health_checks.add("worker:heartbeat", heartbeat, probe="liveness")
        live = await store.health(probe="liveness")
        ready = await store.health()

    assert calls == ["heartbeat", "depth", "heartbeat"]
    assert set(live.checks) == {"process:eventLoopLag", "nexus:config", "worker:heartbeat"}
    assert live.status == "warn" and live.http_status == 200
    body = ready.to_dict()
    assert_health_json(body)
    assert body["checks"]["jobs:depth"] == [
        {
            "componentType": "component",
            "observedValue": 7,
            "observedUnit": "jobs",
            "status": "pass",
            "time": body["checks"]["jobs:depth"][0]["time"],
        }
    ]
    assert [r["componentId"] for r in body["checks"]["worker:heartbeat"]] == [
        "worker-1",
        "worker-2",
    ]
    assert {"postgres:responseTime", "redis:responseTime"} <= set(body["checks"])
    assert "worker:heartbeat" in body["output"]


async def test_a_failing_or_hanging_application_check_is_reported_not_raised(
    stack: Stack,
) -> None:
    async def broken() -> CheckResult:
        raise ConnectionError(f"postgresql://app:{PASSWORD}@db/app refused")

    async def hangs() -> CheckResult:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    async def wrong() -> CheckResult:
        return "fine"  # type: ignore[return-value]

    timeout = 0.5
    async with NexusStore(stack.settings(health={"timeout": timeout})) as store:
        store.health_checks.add("billing:api", broken, probe="liveness")
        store.health_checks.add("search:index", hangs, probe="liveness")
        store.health_checks.add("cache:warmth", wrong, probe="liveness", component_type="system")
        started = time.perf_counter()
        report = await store.health(probe="liveness")
        took = time.perf_counter() - started

    body = report.to_dict()
    assert_health_json(body)
    assert report.status == "fail" and report.http_status == 503
    billing = body["checks"]["billing:api"][0]
    assert billing["status"] == "fail" and "ConnectionError" in billing["output"]
    assert PASSWORD not in str(body)
    assert body["checks"]["search:index"][0]["output"] == f"no answer within {timeout:g}s"
    wrong_type = body["checks"]["cache:warmth"][0]
    assert wrong_type["componentType"] == "system" and "CheckResult" in wrong_type["output"]
    # One timeout, not one per check; generous margin for a loaded machine.
    assert took < timeout + 2.0, took


def test_registration_is_checked_when_it_is_made() -> None:
    checks = HealthChecks()

    async def measure() -> CheckResult:
        return CheckResult("component", "pass")

    def blocking() -> CheckResult:
        return CheckResult("component", "pass")

    checks.add("jobs:depth", measure)
    refused: dict[str, tuple[str, Callable[[], None]]] = {
        "jobs": ("key", lambda: checks.add("jobs", measure)),
        "duplicate": ("key", lambda: checks.add("jobs:depth", measure)),
        "reserved": ("key", lambda: checks.add("redis:mine", measure)),
        "probe": ("probe", lambda: checks.add("a:b", measure, probe="startup")),  # type: ignore[arg-type]
        "sync": ("check", lambda: checks.add("a:c", blocking)),  # type: ignore[arg-type]
    }
    for name, (field, register) in refused.items():
        with pytest.raises(ValidationError) as refusal:
            register()
        assert refusal.value.field == field, name
    assert list(checks) == ["jobs:depth"] and "jobs:depth" in checks and len(checks) == 1
    checks.remove("jobs:depth")
    checks.remove("jobs:depth")  # idempotent
    assert len(checks) == 0


async def test_a_hanging_stack_costs_readiness_one_timeout_and_liveness_nothing(
    silent_port: int,
) -> None:
    """Readiness also finishes a restore killed after its commit, alongside its checks and
    not before them: with every backend hanging the report still comes within one timeout.
    Liveness touches no backend."""
    hanging = f"127.0.0.1:{silent_port}"
    settings = NexusSettings.load(
        None,
        postgres={"url": f"postgresql://postgres@{hanging}/nexus"},
        mongo={"url": f"mongodb://{hanging}"},
        redis={"url": f"redis://{hanging}"},
        health={"timeout": 1.0},
    )
    store = NexusStore(settings)
    try:
        started = time.perf_counter()
        live = await store.health(probe="liveness")
        live_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ready = await store.health()
        ready_seconds = time.perf_counter() - started
    finally:
        await asyncio.wait_for(store.close(), 15)
    assert live.status == "pass" and live_seconds < 0.5, live_seconds
    assert ready.status == "fail"
    assert 0.9 < ready_seconds < 1.9, ready_seconds  # one timeout, not one for each step
