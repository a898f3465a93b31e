"""The metrics of :mod:`nexus_store.telemetry.metrics` for Prometheus (``prometheus-client``,
the ``prometheus`` extra), without OpenTelemetry.

    from starlette.routing import Route
    from nexus_store.telemetry.prometheus import metrics_app

    app = Starlette(routes=[..., Route("/metrics", metrics_app())])

:func:`metrics_app` is an ASGI app serving the text exposition format of ``registry``
(prometheus-client's default one unless given), after :func:`enable` has added nexus-store's
metrics to it. Names follow OpenTelemetry's Prometheus mapping: dots become underscores, a
unit in seconds adds ``_seconds``, counters end in ``_total``:
``db_client_operation_duration_seconds`` (histogram; labels ``db_system_name``,
``db_namespace``, ``db_collection_name``, ``db_operation_name``, ``server_address``,
``server_port``, ``error_type``), ``nexus_store_events_written_total``,
``nexus_store_limiter_decisions_total``, ``nexus_store_outbox_lag_seconds``,
``db_client_connection_count``...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, make_asgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nexus_store.telemetry import _operation
from nexus_store.telemetry._operation import Attributes
from nexus_store.telemetry.metrics import METRICS, OPERATION_DURATION, observe
from nexus_store.telemetry.metrics import Metric as MetricSpec

__all__ = ["MetricsApp", "disable", "enable", "metrics_app", "prometheus_name"]

#: The attributes an operation may carry, in label order.
_OPERATION_LABELS = (
    "db.system.name",
    "db.namespace",
    "db.collection.name",
    "db.operation.name",
    "server.address",
    "server.port",
    "error.type",
)


def prometheus_name(metric: MetricSpec) -> str:
    """``metric``'s Prometheus name (without the ``_total`` a counter family adds)."""
    name = metric.name.replace(".", "_")
    return f"{name}_seconds" if metric.unit == "s" else name


def _label(attribute: str) -> str:
    return attribute.replace(".", "_")


class _Collector(Collector):
    """Reads every watched instance's counters when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        for spec in METRICS:
            if spec.source is None:
                continue  # recorded by the operations, into the registered Histogram
            observations = observe(spec)
            names = sorted({key for _value, attributes in observations for key in attributes})
            labels = [_label(name) for name in names]
            family: CounterMetricFamily | GaugeMetricFamily
            if spec.kind == "counter":
                family = CounterMetricFamily(prometheus_name(spec), spec.description, labels=labels)
            else:
                family = GaugeMetricFamily(prometheus_name(spec), spec.description, labels=labels)
            for value, attributes in observations:
                family.add_metric([str(attributes.get(name, "")) for name in names], value)
            yield family


class _Exporter:
    """What :func:`enable` added to one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.collector = _Collector()
        self.duration = Histogram(
            prometheus_name(OPERATION_DURATION).removesuffix("_seconds"),
            OPERATION_DURATION.description,
            [_label(name) for name in _OPERATION_LABELS],
            unit="seconds",
            buckets=OPERATION_DURATION.buckets,
            registry=registry,
        )
        registry.register(self.collector)

    def record(self, seconds: float, attributes: Attributes) -> None:
        labels = [str(attributes.get(name, "")) for name in _OPERATION_LABELS]
        self.duration.labels(*labels).observe(seconds)


_exporters: dict[int, tuple[CollectorRegistry, _Exporter]] = {}


def enable(registry: CollectorRegistry = REGISTRY) -> None:
    """Add nexus-store's metrics to ``registry`` (once; later calls do nothing) and record
    every operation's duration from now on."""
    if id(registry) in _exporters:
        return
    exporter = _Exporter(registry)
    _exporters[id(registry)] = (registry, exporter)
    _operation.add_recorder(exporter.record)


def disable(registry: CollectorRegistry = REGISTRY) -> None:
    """Take nexus-store's metrics out of ``registry`` again."""
    found = _exporters.pop(id(registry), None)
    if found is None:
        return
    _registry, exporter = found
    _operation.remove_recorder(exporter.record)
    registry.unregister(exporter.collector)
    registry.unregister(exporter.duration)


class MetricsApp:
    """An ASGI app answering any request with ``registry`` in Prometheus' text format.

    A class, not a function, so that Starlette's ``Route`` serves it as an ASGI app."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        enable(registry)
        self._app: Callable[..., Any] = make_asgi_app(registry)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def metrics_app(registry: CollectorRegistry = REGISTRY) -> MetricsApp:
    """The ``/metrics`` endpoint: nexus-store's metrics (and everything else in
    ``registry``), mountable in any ASGI framework."""
    return MetricsApp(registry)
