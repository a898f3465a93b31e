"""Spans and the duration metric of every operation, recorded by the real OpenTelemetry SDK
(in-memory exporter and reader) against the real servers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode
from pymongo import monitoring
from sqlalchemy import event

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import BackendUnavailableError, ConflictError
from nexus_store.mongo.client import MongoBackend
from nexus_store.postgres.models import User
from nexus_store.telemetry import instrument, operation, uninstrument
from tests.support import FAST_FAILURE, PASSWORD, REPO_ROOT, Telemetry, tag, user_values

CONVENTIONS = {"db.system.name", "db.operation.name", "server.address", "server.port"}


def _named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert found, f"no {name} span among {sorted({span.name for span in spans})}"
    return found[-1]


def _assert_no_password(telemetry: Telemetry) -> None:
    for span in telemetry.spans.get_finished_spans():
        assert PASSWORD not in repr(dict(span.attributes or {})) + repr(span.status)
    assert PASSWORD not in str(telemetry.metrics.get_metrics_data())


async def test_each_operation_is_a_client_span_named_after_it(
    secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    key = tag()
    async with NexusStore(secret_settings) as store:
        user = await store.entities.create(User, **user_values())
        await store.entities.get(User, user.id)
        await store.entities.list(User, where={"id": user.id})
        await store.events.track("signup", user_id=str(user.id))
        await store.events.flush()
        await store.audit.record("tests", "create", "user", str(user.id))
        token = await store.sessions.create(str(user.id), {"role": "admin"})
        await store.sessions.get(token)
        await store.cache.set(key, {"v": 1}, ttl=30)
        await store.cache.get(key)
        await store.cache.get_or_set(f"{key}-loaded", lambda: 1, ttl=30)
        await store.limiter.hit(key, "5/second")
        await store.limiter.reset(key)
        await store.queue.enqueue(key, {"n": 1})
        await store.queue.stats(key)
        await store.realtime.publish(key, {"n": 1})
        await store.entities.update(User, user.id, full_name="Ada")
        await store.entities.delete(User, user.id)
    spans = telemetry.spans.get_finished_spans()
    databases = secret_settings.redis.databases
    expected = {
        "entities.create": ("postgresql", "users"),
        "entities.get": ("postgresql", "users"),
        "entities.list": ("postgresql", "users"),
        "events.flush": ("mongodb", secret_settings.events.collection),
        "audit.record": ("mongodb", secret_settings.audit.collection),
        "sessions.create": ("redis", None),
        "sessions.get": ("redis", None),
        "cache.set": ("redis", None),
        "cache.get": ("redis", None),
        "cache.get_or_set": ("redis", None),
        "limiter.hit": ("redis", None),
        "limiter.reset": ("redis", None),
        "queue.enqueue": ("redis", None),
        "queue.stats": ("redis", None),
        "realtime.publish": ("redis", None),
        "entities.update": ("postgresql", "users"),
        "entities.delete": ("postgresql", "users"),
    }
    urls = {
        "postgresql": str(secret_settings.postgres.url),
        "mongodb": str(secret_settings.mongo.url),
        "redis": str(secret_settings.redis.url),
    }
    namespaces = {
        "postgresql": secret_settings.postgres.url.masked.rsplit("/", 1)[1],  # type: ignore[union-attr]
        "mongodb": secret_settings.mongo.database,
    }
    for name, (system, collection) in expected.items():
        span = _named(spans, name)
        attributes = dict(span.attributes or {})
        assert span.kind is SpanKind.CLIENT
        assert attributes.keys() >= CONVENTIONS, (name, attributes)
        assert attributes["db.system.name"] == system
        assert attributes["db.operation.name"] == name
        server = f"{attributes['server.address']}:{attributes['server.port']}"
        assert server in urls[system], (server, urls[system])  # the configured host and port
        assert attributes.get("db.collection.name") == collection
        assert "error.type" not in attributes
        assert span.status.status_code is StatusCode.UNSET
        if system == "redis":  # the logical database of the area
            area = name.split(".")[0].replace("limiter", "ratelimit")
            assert attributes["db.namespace"] == str(getattr(databases, area))
        else:
            assert attributes["db.namespace"] == namespaces[system]
        # No statement or value is ever an attribute.
        assert not any(key.startswith("db.query") for key in attributes)
    _assert_no_password(telemetry)


async def test_the_operation_span_is_the_child_of_the_callers_and_the_parent_of_the_drivers(
    secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("tests")
    seen_by_driver: dict[str, Any] = {}
    statements: list[int] = []

    # Where the drivers' own instrumentations hook in: SQLAlchemy's cursor events and
    # PyMongo's command monitoring, both called while the driver runs the statement.
    def before_cursor_execute(*_args: Any) -> None:
        statements.append(trace.get_current_span().get_span_context().span_id)

    class MongoListener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "insert":
                with tracer.start_as_current_span("driver insert") as span:
                    seen_by_driver["mongo"] = span

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    store = NexusStore(secret_settings)
    store.backends._mongo = MongoBackend(secret_settings.mongo, event_listeners=[MongoListener()])
    engine = store.backends.postgres.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    async with store:
        with tracer.start_as_current_span("request") as request:
            user = await store.entities.create(User, **user_values())
            await store.audit.record("tests", "create", "user", str(user.id))
    spans = telemetry.spans.get_finished_spans()
    create, record = _named(spans, "entities.create"), _named(spans, "audit.record")
    for span in (create, record):
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.context.trace_id == request.get_span_context().trace_id
    assert create.context.span_id in statements  # the INSERT ran under entities.create
    driver = _named(spans, "driver insert")
    assert driver.parent is not None and driver.parent.span_id == record.context.span_id
    assert seen_by_driver["mongo"].get_span_context().span_id == driver.context.span_id


async def test_a_failed_operation_has_an_error_status_and_type(
    stack: Stack, secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    values = user_values()
    async with NexusStore(secret_settings) as store:
        await store.entities.create(User, **values)
        with pytest.raises(ConflictError):
            await store.entities.create(User, **{**user_values(), "email": values["email"]})
    port = servers.closed_port()
    down = stack.merged(redis={"url": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}).settings(
        redis=FAST_FAILURE
    )
    async with NexusStore(down) as store:
        with pytest.raises(BackendUnavailableError):
            await store.sessions.create("someone", {"a": 1})
    spans = telemetry.spans.get_finished_spans()
    failed = {span.name: span for span in spans if span.status.status_code is StatusCode.ERROR}
    assert failed.keys() == {"entities.create", "sessions.create"}
    conflict = dict(failed["entities.create"].attributes or {})
    assert conflict["error.type"] == "nexus_store.errors.ConflictError"
    refused = dict(failed["sessions.create"].attributes or {})
    assert refused["error.type"] == "nexus_store.errors.BackendUnavailableError"
    assert refused["server.port"] == port
    # The duration metric keeps the failures apart by error.type.
    points = telemetry.metric_points("db.client.operation.duration")
    by_error = {
        (point.attributes["db.operation.name"], point.attributes.get("error.type")): point
        for point in points
    }
    assert by_error[("entities.create", None)].count >= 1
    assert by_error[("entities.create", "nexus_store.errors.ConflictError")].count == 1
    assert by_error[("sessions.create", "nexus_store.errors.BackendUnavailableError")].count == 1
    _assert_no_password(telemetry)


async def test_durations_are_recorded_in_seconds_with_the_conventions_attributes(
    secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    key = tag()
    async with NexusStore(secret_settings) as store:
        await store.cache.set(key, 1, ttl=30)
        for _ in range(3):
            await store.cache.get(key)
    (point,) = [
        point
        for point in telemetry.metric_points("db.client.operation.duration")
        if point.attributes["db.operation.name"] == "cache.get"
    ]
    assert point.count == 3
    assert 0 < point.sum < 3 * 5.0  # seconds, not milliseconds
    assert point.attributes.keys() >= CONVENTIONS
    assert point.attributes["db.system.name"] == "redis"


async def test_nothing_is_traced_after_uninstrument(
    secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    uninstrument()
    async with NexusStore(secret_settings) as store:
        await store.cache.get(tag())
    assert telemetry.spans.get_finished_spans() == ()
    assert telemetry.metric_points("db.client.operation.duration") == []


async def test_an_operation_block_is_the_same_in_sync_code(
    secret_settings: NexusSettings, telemetry: Telemetry
) -> None:
    async with NexusStore(secret_settings) as store:
        assert store.limiter.hit_sync(f"sync-{uuid.uuid4().hex}", "5/second").allowed
        with pytest.raises(RuntimeError), operation(store.backends.redis, "tests.fail", "cache"):
            raise RuntimeError("boom")
    spans = telemetry.spans.get_finished_spans()
    assert _named(spans, "limiter.hit").kind is SpanKind.CLIENT
    failed = dict(_named(spans, "tests.fail").attributes or {})
    assert failed["error.type"] == "builtins.RuntimeError"
    assert trace.get_current_span() is trace.INVALID_SPAN  # every span was detached


def test_without_the_extras_the_store_works_and_instrument_names_the_extra(
    stack: Stack,
) -> None:
    """With opentelemetry and prometheus-client not installed (their imports fail here), a
    store works, and instrument() raises ConfigurationError naming the extra."""
    program = """
import asyncio, sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from nexus_store import NexusStore
from nexus_store.errors import ConfigurationError
from nexus_store.telemetry import instrument

async def main():
    async with NexusStore.from_env() as store:
        await store.cache.set("off", 1, ttl=5)
        assert await store.cache.get("off") == 1
        assert (await store.limiter.hit("off", "5/second")).allowed
    try:
        instrument()
    except ConfigurationError as exc:
        print(exc)

asyncio.run(main())
"""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("NEXUS_")}
    finished = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        env={**inherited, **stack.environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert "nexus-store[otel]" in finished.stdout


async def test_instrumented_without_an_sdk_the_callers_span_context_carries_on(
    secret_settings: NexusSettings,
) -> None:
    """nexus-store on OpenTelemetry's no-op providers (the API alone): inside an operation
    the current span context is still the application's (so whatever runs there keeps its
    parent), and the store answers as usual."""
    application = TracerProvider().get_tracer("application")
    instrument(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())
    seen = []
    try:
        async with NexusStore(secret_settings) as store:
            with operation(store.backends.redis, "tests.noop", "cache"):
                seen.append(trace.get_current_span().get_span_context())
            with application.start_as_current_span("request") as request:
                with operation(store.backends.redis, "tests.noop", "cache"):
                    seen.append(trace.get_current_span().get_span_context())
                await store.cache.set("noop", 1, ttl=5)
                assert await store.cache.get("noop") == 1
    finally:
        uninstrument()
    assert seen == [trace.INVALID_SPAN_CONTEXT, request.get_span_context()]
