"""nexus-store logs where the application logs, and never configures logging itself.

Every test starts with structlog unconfigured (tests/conftest.py): events then go to stdlib
``logging``, which pytest's ``caplog`` records. Tests that need a whole process of their own
(what the store leaves configured, what any output may contain) run tests/_log_app.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.log import get_logger, set_slow_threshold
from nexus_store.settings import LogSettings
from nexus_store.telemetry import _operation
from tests.support import FAST_FAILURE, PASSWORD, REPO_ROOT, with_password

NEXUS_LOG = Path(sys.modules["nexus_store.log"].__file__ or "")
OPERATION_MODULE = Path(_operation.__file__ or "")


@pytest.fixture(autouse=True)
def _default_slow_threshold() -> Iterator[None]:
    """Stores made here lower the process-wide threshold; later tests get the default."""
    yield
    set_slow_threshold(LogSettings().slow_threshold_ms)


def nexus_records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("nexus_store.") and record.getMessage() == event
    ]


# --- stdlib logging (the application did not configure structlog) ---------------------------


async def test_each_backend_operation_emits_a_debug_event(
    settings: NexusSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus_store")
    async with NexusStore(settings) as store:
        token = await store.sessions.create("log-user", {"a": 1})
        await store.sessions.get(token)
        await store.audit.record("tests", "log", "logging", "1")
    records = nexus_records(caplog, "backend_operation")
    operations = {(record.backend, record.operation) for record in records}
    assert {("redis", "sessions.create"), ("redis", "sessions.get")} <= operations
    assert any(backend == "mongo" for backend, _ in operations)
    durations = [record.duration_ms for record in records]
    assert all(isinstance(value, float) and value >= 0 for value in durations)
    for record in records:
        assert record.levelno == logging.DEBUG
        assert record.name == f"nexus_store.{record.backend}"
        # The record names the SDK line that ran the operation, not the logging or
        # instrumentation code.
        assert Path(record.pathname) not in {NEXUS_LOG, OPERATION_MODULE}
        assert "nexus_store" in record.pathname


async def test_slow_operations_warn_above_the_threshold(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nexus_store")
    async with NexusStore(stack.settings(log={"slow_threshold_ms": 0.0})) as store:
        await store.cache.set("slow-key", {"v": 1}, ttl=30)
    slow = nexus_records(caplog, "slow_operation")
    assert slow and slow[0].levelno == logging.WARNING
    assert slow[0].backend == "redis" and hasattr(slow[0], "duration_ms")
    assert not nexus_records(caplog, "backend_operation")


def test_fields_named_like_record_attributes_get_a_suffix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nexus_store")
    get_logger("nexus_store.tests").info("clash", name="mine", message="kept", backend="x")
    (record,) = nexus_records(caplog, "clash")
    assert (record.name, record.name_, record.message_, record.backend) == (
        "nexus_store.tests",
        "mine",
        "kept",
        "x",
    )


def test_fields_are_scrubbed_before_they_reach_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nexus_store")
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    get_logger("nexus_store.tests").warning("leak", error=f"cannot reach {url}", urls=[url])
    (record,) = nexus_records(caplog, "leak")
    assert PASSWORD not in repr(vars(record))
    assert record.error == "cannot reach redis://:***@127.0.0.1:6379/0"


# --- an application that configured structlog ------------------------------------------------


async def test_a_structlog_application_gets_the_events_through_its_pipeline(
    settings: NexusSettings, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def remember(_logger: Any, method: str, event_dict: Any) -> Any:
        seen.append((method, dict(event_dict)))
        raise structlog.DropEvent

    structlog.configure(
        processors=[remember], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    caplog.set_level(logging.DEBUG, logger="nexus_store")
    async with NexusStore(settings) as store:
        await store.sessions.create("log-user", {"a": 1})
    operations = {
        (method, fields["backend"], fields["operation"])
        for method, fields in seen
        if fields["event"] == "backend_operation"
    }
    assert ("debug", "redis", "sessions.create") in operations
    assert not [record for record in caplog.records if record.name.startswith("nexus_store")]


async def test_the_applications_structlog_level_decides_what_is_emitted(
    settings: NexusSettings,
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    with capture_logs() as logs:
        async with NexusStore(settings) as store:
            await store.sessions.create("log-user", {"a": 1})
        get_logger("nexus_store.tests").info("kept")
    assert [entry["event"] for entry in logs] == ["kept"]


async def test_the_destination_is_chosen_when_each_event_is_emitted(
    settings: NexusSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus_store")
    async with NexusStore(settings) as store:
        await store.cache.set("route-key", 1, ttl=30)
        assert nexus_records(caplog, "backend_operation")
        caplog.clear()
        # The application configures structlog after creating the store.
        with capture_logs() as logs:
            await store.cache.get("route-key")
        assert any(entry["event"] == "backend_operation" for entry in logs)
        assert not nexus_records(caplog, "backend_operation")
        structlog.reset_defaults()
        await store.cache.get("route-key")
        assert nexus_records(caplog, "backend_operation")


# --- whole application processes -------------------------------------------------------------


def _broken_urls() -> dict[str, dict[str, str]]:
    port = servers.closed_port()
    return {
        "postgres": {"url": f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/nexus"},
        "mongo": {"url": f"mongodb://app:{PASSWORD}@127.0.0.1:{port}/?authSource=admin"},
        "redis": {"url": f"redis://:{PASSWORD}@127.0.0.1:{port}"},
    }


def _app_environment(stack: Stack, backends: str) -> dict[str, str]:
    """The session's backends with the password in every URL, or closed ports; debug level
    and short timeouts, so failures are quick and log all they can."""
    if backends == "down":
        urls = _broken_urls()
    else:
        mongo = stack.mongo_url
        # MongoDB takes a password only with a user name (nx-27017 then refuses the login).
        mongo = mongo if "@" in mongo else mongo.replace("://", "://app@", 1)
        urls = {
            "postgres": {"url": with_password(stack.postgres_url)},
            "mongo": {"url": with_password(mongo)},
            "redis": {"url": with_password(stack.redis_url)},
        }
    nexus = stack.merged(**urls).environment(
        log={"level": "debug"},
        redis=FAST_FAILURE,
        mongo={"server_selection_timeout": 1.0},
        postgres={"connect_timeout": 1.0},
        health={"timeout": 1.0},
        events={"close_timeout": 1.0},
    )
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("NEXUS_")}
    return {**inherited, **nexus}


@pytest.mark.slow
@pytest.mark.parametrize("backends", ["up", "down"])
@pytest.mark.parametrize("setup", ["bare", "stdlib", "structlog"])
def test_an_application_keeps_its_logging_and_its_logs_keep_no_password(
    stack: Stack, setup: str, backends: str
) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "tests._log_app", setup],
        cwd=REPO_ROOT,
        env=_app_environment(stack, backends),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert json.loads(finished.stdout.splitlines()[-1]) == [], output  # nothing it changed
    assert PASSWORD not in output
    if backends == "down":
        assert "backend_unreachable" in finished.stderr  # warnings reach even a bare process
    elif setup != "bare":
        assert "backend_operation" in finished.stderr
