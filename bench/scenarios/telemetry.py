"""Telemetry overhead on three hot paths: ``cache.get`` (a hit), ``limiter.hit`` and
``entities.get`` by id, with telemetry off against telemetry on.

    python -m bench.run --only telemetry --repeats 3

Each figure is microseconds per sequential call (one task), the median call of the best of
several bursts. Each pair alternates one mode with "off" (not instrumented, the default) on
the same store and the same keys:

- API, no SDK: ``instrument()`` with the global providers left at OpenTelemetry's defaults
  (no SDK installed or configured), so every span and measurement is a no-op object;
- SDK, no-op exporter: ``instrument()`` with an SDK ``TracerProvider`` (a
  ``BatchSpanProcessor`` whose exporter drops the spans) and an SDK ``MeterProvider`` (a
  reader that is never collected): what an application pays besides its exporter.

"Off" against the code before telemetry is measured by the existing scenarios run from both
trees (see the README's Benchmarks section).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.harness import Measure, Pair, median_seconds
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.postgres import migrate
from nexus_store.postgres.models import User
from nexus_store.telemetry import _operation, instrument, uninstrument

BURSTS = 7
CALLS = 300  # per burst

Call = Callable[[], Awaitable[object]]
Mode = tuple[Any, tuple[Any, ...]]  # the operation hooks: (tracing, recorders)


class _DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _modes() -> dict[str, Mode]:
    """The hooks each mode installs; switched per burst without creating instruments again."""
    hooks = _operation._hooks
    instrument()  # global providers: OpenTelemetry's no-op defaults in this process
    api = (hooks.tracing, hooks.recorders)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_DroppingExporter()))
    instrument(tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))
    sdk = (hooks.tracing, hooks.recorders)
    uninstrument()
    return {"off": (None, ()), "API, no SDK": api, "SDK, no-op exporter": sdk}


def _measure(call: Call, mode: Mode) -> Measure:
    async def latency_us() -> float:
        _operation._hooks.tracing, _operation._hooks.recorders = mode
        try:
            return await median_seconds(call, CALLS) * 1_000_000
        finally:
            _operation._hooks.tracing, _operation._hooks.recorders = None, ()

    return latency_us


async def scenarios(env: Stack) -> list[Pair]:
    settings = env.settings()
    await migrate.upgrade(settings)
    store = NexusStore(settings)
    modes = _modes()
    state: dict[str, Any] = {}

    async def setup() -> None:
        if state:
            return
        await store.cache.set("bench-telemetry", {"id": 42, "name": "Ada"}, ttl=600)
        user = await store.entities.create(
            User, email="telemetry@example.com", username="telemetry_bench", password_hash="x" * 40
        )
        state["user"] = user.id

    async def teardown() -> None:
        await store.entities.delete(User, state["user"], soft=False)
        await store.cache.delete("bench-telemetry")
        await store.close()

    paths: list[tuple[str, Call]] = [
        ("cache get hit", lambda: store.cache.get("bench-telemetry")),
        ("limiter.hit", lambda: store.limiter.hit("bench-telemetry", "1000000/second")),
        ("entities.get by id", lambda: store.entities.get(User, state["user"])),
    ]
    pairs = [
        Pair(
            f"telemetry {path}: {mode} vs off",
            "us/call",
            sdk=_measure(call, modes[mode]),
            raw=_measure(call, modes["off"]),
            higher_is_better=False,
            target="report",
            setup=setup,
            raw_label="off (not instrumented)",
            bursts=BURSTS,
        )
        for path, call in paths
        for mode in ("API, no SDK", "SDK, no-op exporter")
    ]
    pairs[-1].teardown = teardown
    return pairs
