"""Traces and metrics of every backend operation, by OpenTelemetry's stable database
semantic conventions; Prometheus exposition in :mod:`nexus_store.telemetry.prometheus`.

Off by default, and then free: nothing of OpenTelemetry is imported. An application that
wants spans and metrics turns them on once, like any OpenTelemetry instrumentation::

    from nexus_store.telemetry import instrument
    instrument()                      # the global tracer and meter providers
    instrument(tracer_provider=tp, meter_provider=mp)

Every public operation (``entities.create``, ``events.flush``, ``audit.record``,
``limiter.hit``...) is then a CLIENT span named after it, current while the driver runs (so
the drivers' own instrumentations nest under it), with ``db.system.name``, ``db.namespace``,
``db.collection.name``, ``db.operation.name``, ``server.address``/``server.port`` and, on
failure, ``error.type`` and an error status. No query text, value or secret is ever an
attribute. Its duration goes to ``db.client.operation.duration``; the other metrics are in
:mod:`nexus_store.telemetry.metrics`. Only ``opentelemetry-api`` is needed (the ``otel``
extra); the application brings the SDK and its exporters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nexus_store.errors import ConfigurationError
from nexus_store.telemetry._operation import Operation, operation
from nexus_store.telemetry.metrics import watch

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["Operation", "instrument", "operation", "uninstrument", "watch"]


def instrument(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Trace and measure every operation of every store in this process from now on.

    Without arguments the global providers are used (set by the application's SDK set-up,
    before or after this call). Calling it again replaces the previous providers. Needs
    ``opentelemetry-api`` (``pip install nexus-store[otel]``).
    """
    try:
        from nexus_store.telemetry._otel import instrument as install
    except ImportError as exc:
        raise ConfigurationError(
            "telemetry needs opentelemetry-api: pip install 'nexus-store[otel]'"
        ) from exc
    install(tracer_provider, meter_provider)


def uninstrument() -> None:
    """Stop tracing and measuring (a no-op when telemetry is off)."""
    import sys

    installed = sys.modules.get("nexus_store.telemetry._otel")
    if installed is not None:
        installed.uninstrument()
