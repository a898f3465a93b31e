"""The OpenTelemetry SDK (a test-only dependency) recording in memory what the SDK emits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.stack import Stack
from nexus_store import NexusSettings
from nexus_store.postgres import migrate
from nexus_store.telemetry import instrument, uninstrument
from tests.support import Telemetry, with_password


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """nexus-store instrumented with SDK providers of this test's own (not the globals)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(spans, reader, tracer_provider)
    finally:
        uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture(scope="session")
async def secret_settings(stack: Stack) -> NexusSettings:
    """The session's servers with a password in the PostgreSQL and Redis URLs (trust auth
    and a password-less Redis ignore it; the MongoDB substitute would refuse one)."""
    secret = stack.merged(
        postgres={"url": with_password(stack.postgres_url)},
        redis={"url": with_password(stack.redis_url)},
    ).settings()
    await migrate.upgrade(secret)
    return secret
