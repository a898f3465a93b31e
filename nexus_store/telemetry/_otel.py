"""OpenTelemetry traces and metrics (``opentelemetry-api`` only), plugged into
:func:`nexus_store.telemetry.operation` by :func:`nexus_store.telemetry.instrument`.

Imported only when telemetry is turned on, so an application without the ``otel`` extra
never loads OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from nexus_store._version import __version__
from nexus_store.telemetry import _operation
from nexus_store.telemetry._operation import Attributes
from nexus_store.telemetry.metrics import METRICS, OPERATION_DURATION, Metric, observe

__all__ = ["instrument", "uninstrument"]

_SCOPE = "nexus_store"
#: The version of the semantic conventions the attributes follow.
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.33.0"


class _Scope:
    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def end(self, error_type: str | None) -> None:
        context.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            # The type only: a message may quote values the caller sent.
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()


class _NoScope:
    """The scope of an invalid span (no SDK configured): nothing to make current or end."""

    __slots__ = ()

    def end(self, error_type: str | None) -> None:
        pass


_NO_SCOPE = _NoScope()


class _Tracing:
    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start(self, name: str, attributes: Attributes) -> _Scope | _NoScope:
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        if not span.get_span_context().is_valid:
            return _NO_SCOPE  # a sampled-out span is valid, and still made current
        return _Scope(span, context.attach(trace.set_span_in_context(span)))


class _Metrics:
    """The instruments of :data:`METRICS` on one meter; observables read while active."""

    def __init__(self, meter: Meter) -> None:
        self.active = True
        try:
            self.duration = meter.create_histogram(
                OPERATION_DURATION.name,
                OPERATION_DURATION.unit,
                OPERATION_DURATION.description,
                explicit_bucket_boundaries_advisory=OPERATION_DURATION.buckets,
            )
        except TypeError:  # opentelemetry-api < 1.30 takes no advice: the SDK's buckets
            self.duration = meter.create_histogram(
                OPERATION_DURATION.name, OPERATION_DURATION.unit, OPERATION_DURATION.description
            )
        create = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "updowncounter": meter.create_observable_up_down_counter,
        }
        for metric in METRICS:
            if metric.source is not None:
                create[metric.kind](
                    metric.name, [self._callback(metric)], metric.unit, metric.description
                )

    def _callback(self, metric: Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(_options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return []
            return [Observation(value, dict(attributes)) for value, attributes in observe(metric)]

        return read

    def record(self, seconds: float, attributes: Attributes) -> None:
        self.duration.record(seconds, attributes)


_installed: dict[str, Any] = {}


def instrument(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """See :func:`nexus_store.telemetry.instrument`."""
    uninstrument()
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider, schema_url=_SCHEMA_URL)
    meter = metrics.get_meter(_SCOPE, __version__, meter_provider, schema_url=_SCHEMA_URL)
    instruments = _Metrics(meter)
    _operation.set_tracing(_Tracing(tracer))
    _operation.add_recorder(instruments.record)
    _installed["metrics"] = instruments


def uninstrument() -> None:
    """See :func:`nexus_store.telemetry.uninstrument`."""
    _operation.set_tracing(None)
    instruments: _Metrics | None = _installed.pop("metrics", None)
    if instruments is not None:
        instruments.active = False
        _operation.remove_recorder(instruments.record)
