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

"Off" against the code before telemetry: the instrumentation point alone, a ``with
operation(...)`` block with telemetry off against the ``observe()`` call it replaced, loaded
from commit 538dc6f with ``git show`` (the pair is left out where git or that commit is
missing), in nanoseconds per operation; the difference, set against the hot paths' own
latency, is the "off" overhead. The existing scenarios run from both trees measure the same
end to end, but drift more than 2% between runs here.
"""

from __future__ import annotations

import subprocess
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
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
from nexus_store.telemetry import _operation, instrument, operation, uninstrument

BURSTS = 7
CALLS = 300  # per burst
BLOCKS = 50_000  # per burst of the instrumentation point alone
BEFORE = "538dc6f"  # the last commit with observe()

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


def _observe_before() -> Callable[..., float] | None:
    """``observe`` from nexus_store/log.py as of :data:`BEFORE`, or None without git."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BEFORE}:nexus_store/log.py"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"nexus_store_log_{BEFORE}")
    exec(compile(source, f"{BEFORE}:nexus_store/log.py", "exec"), module.__dict__)
    observe: Callable[..., float] = module.observe
    return observe


def _point_pair(backend: Any) -> Pair | None:
    observe = _observe_before()
    if observe is None:
        return None

    async def block_ns() -> float:
        started = time.perf_counter()
        for _ in range(BLOCKS):
            with operation(backend, "cache.get", "cache"):
                pass
        return (time.perf_counter() - started) / BLOCKS * 1e9

    async def observe_ns() -> float:
        started = time.perf_counter()
        for _ in range(BLOCKS):
            began = time.perf_counter()
            observe("redis", "cache.get", began)
        return (time.perf_counter() - started) / BLOCKS * 1e9

    return Pair(
        "telemetry off: operation block vs observe() before it",
        "ns/op",
        sdk=block_ns,
        raw=observe_ns,
        higher_is_better=False,
        target="delta < 2% of a hot path",
        raw_label=f"perf_counter + observe() of {BEFORE}",
        bursts=BURSTS,
    )


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
    point = _point_pair(store.backends.redis)
    return pairs if point is None else [point, *pairs]
