"""structlog output: one debug event per backend operation, a warning for slow ones."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from typing import Any

from nexus_store import NexusSettings, NexusStore
from nexus_store.log import configure_logging


@contextmanager
def json_logs(settings: NexusSettings, **log: Any) -> Iterator[io.StringIO]:
    captured = io.StringIO()
    with redirect_stderr(captured):
        configure_logging(settings.log.model_copy(update={"format": "json", **log}), force=True)
        try:
            yield captured
        finally:
            configure_logging(settings.log, force=True)


def events(captured: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]


async def test_each_backend_operation_emits_a_debug_event(settings: NexusSettings) -> None:
    with json_logs(settings, level="debug") as captured:
        async with NexusStore(settings) as store:
            token = await store.sessions.create("log-user", {"a": 1})
            await store.sessions.get(token)
            await store.audit.record("tests", "log", "logging", "1")
    operations = {
        (event["backend"], event["operation"])
        for event in events(captured)
        if event["event"] == "backend_operation"
    }
    assert {("redis", "sessions.create"), ("redis", "sessions.get")} <= operations
    assert any(backend == "mongo" for backend, _ in operations)
    durations = [e["duration_ms"] for e in events(captured) if e["event"] == "backend_operation"]
    assert all(isinstance(value, float) and value >= 0 for value in durations)


async def test_slow_operations_warn_above_the_threshold(settings: NexusSettings) -> None:
    with json_logs(settings, level="warning", slow_threshold_ms=0.0) as captured:
        async with NexusStore(settings) as store:
            await store.cache.set("slow-key", {"v": 1}, ttl=30)
    slow = [event for event in events(captured) if event["event"] == "slow_operation"]
    assert slow and slow[0]["level"] == "warning"
    assert slow[0]["backend"] == "redis" and "duration_ms" in slow[0]
    assert not [event for event in events(captured) if event["event"] == "backend_operation"]
