"""The metrics nexus-store reports, in one table.

Both exports are built from :data:`METRICS`: the OpenTelemetry instruments
(:func:`nexus_store.telemetry.instrument`) and the Prometheus collector
(:mod:`nexus_store.telemetry.prometheus`). The first row is recorded by every operation
(:func:`nexus_store.telemetry.operation`); the others are read when they are collected,
from the counters the SDK keeps anyway (``stats()``), of every live object that registered
with :func:`watch`. Several stores in one process add up.

- ``db.client.operation.duration`` (histogram, s): ``db.system.name``, ``db.namespace``,
  ``db.collection.name``, ``db.operation.name``, ``server.address``, ``server.port``,
  ``error.type``;
- ``nexus_store.events.queued`` (gauge: buffered, not yet written), ``.written``,
  ``.retried`` (batch retries), ``.dropped``, ``.rejected`` (counters);
- ``nexus_store.limiter.decisions`` (counter by ``nexus_store.limiter.decision``: allowed,
  refused) and ``nexus_store.limiter.fail_mode`` (counter by ``nexus_store.limiter.fail_mode``:
  decisions taken without Redis);
- ``nexus_store.outbox.pending`` and ``nexus_store.outbox.lag`` (gauges, rows and seconds, at
  the last lag measurement);
- ``db.client.connection.count`` (by ``db.client.connection.state``: idle, used) and
  ``db.client.connection.max``, per ``db.client.connection.pool.name``.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "METRICS",
    "OPERATION_DURATION",
    "Metric",
    "Observation",
    "Source",
    "observe",
    "watch",
]

Attributes = Mapping[str, str | int]
#: One value of a metric and the attributes it is reported with.
Observation = tuple[float, Attributes]
#: What a metric is read from: event writers, rate limiters, outbox relays, the connections
#: of each store (:class:`nexus_store.connections.Backends`).
Source = Literal["events", "limiter", "outbox", "backends"]
Kind = Literal["histogram", "counter", "gauge", "updowncounter"]


@dataclass(frozen=True)
class Metric:
    """One metric: its name and unit by the OpenTelemetry conventions, and how it is read."""

    name: str
    kind: Kind
    unit: str
    description: str
    source: Source | None = None  # None: recorded by each operation
    read: Callable[[Any], Iterable[Observation]] | None = None
    buckets: tuple[float, ...] = ()


_watched: dict[Source, weakref.WeakSet[Any]] = defaultdict(weakref.WeakSet)


def watch(source: Source, instance: object) -> None:
    """Report ``instance``'s counters in the metrics of ``source`` while it lives. Costs one
    set insertion; nothing is read until a metric is collected."""
    _watched[source].add(instance)


def observe(metric: Metric) -> list[Observation]:
    """The current values of ``metric``, summed over every watched instance per attribute set."""
    assert metric.source is not None and metric.read is not None
    totals: dict[tuple[tuple[str, str | int], ...], float] = {}
    for instance in list(_watched[metric.source]):
        for value, attributes in metric.read(instance):
            key = tuple(sorted(attributes.items()))
            totals[key] = totals.get(key, 0.0) + value
    return [(value, dict(key)) for key, value in totals.items()]


# -- readers of the SDK's own counters ---------------------------------------------------------


def _writer(field: str) -> Callable[[Any], Iterable[Observation]]:
    def read(writer: Any) -> Iterable[Observation]:
        return [(getattr(writer.stats(), field), {})]

    return read


def _decisions(limiter: Any) -> Iterable[Observation]:
    counts = limiter.stats()
    return [(counts[d], {"nexus_store.limiter.decision": d}) for d in ("allowed", "refused")]


def _fail_mode_decisions(limiter: Any) -> Iterable[Observation]:
    errors = limiter.stats()["backend_errors"]
    return [(count, {"nexus_store.limiter.fail_mode": mode}) for mode, count in errors.items()]


def _outbox(field: str) -> Callable[[Any], Iterable[Observation]]:
    def read(relay: Any) -> Iterable[Observation]:
        lag = relay.last_lag
        value = None if lag is None else getattr(lag, field)
        return [] if value is None else [(value, {})]

    return read


def _pools(backends: Any) -> Iterator[tuple[str, int, int, int]]:
    """(pool name, used, idle, capacity) of each connection pool opened so far."""
    postgres = backends._postgres  # created backends only: reading must not connect
    if postgres is not None:
        engines = {"writes": postgres.engine, "reads": postgres.autocommit_engine}
        for index, engine in enumerate(postgres.read_engines, start=1):
            engines[f"replica{index}"] = engine
        for role, engine in engines.items():
            pool = engine.pool
            if hasattr(pool, "checkedout"):  # a QueuePool (not NullPool)
                used, idle = int(pool.checkedout()), int(pool.checkedin())
                yield f"postgres.{role}", used, idle, postgres.pool_capacity
        for target, lookups in postgres._read_pools.items():
            stats = lookups.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            yield f"postgres.lookups{target or ''}", size - idle, idle, lookups.max_size
    redis = backends._redis
    if redis is not None:
        for kind, clients in (("", redis._async), ("sync:", redis._sync)):
            for area, client in list(clients.items()):
                pool = getattr(client, "connection_pool", None)  # none on a cluster client
                if pool is None:
                    continue
                if hasattr(pool, "_in_use_connections"):  # redis.asyncio
                    used, idle = len(pool._in_use_connections), len(pool._available_connections)
                else:  # redis-py's blocking pool: every connection made, the idle ones queued
                    idle = sum(c is not None for c in list(pool.pool.queue))
                    used = len(pool._connections) - idle
                yield f"redis.{kind}{area}", used, idle, pool.max_connections


def _connections(backends: Any) -> Iterable[Observation]:
    for name, used, idle, _capacity in _pools(backends):
        yield used, {"db.client.connection.pool.name": name, "db.client.connection.state": "used"}
        yield idle, {"db.client.connection.pool.name": name, "db.client.connection.state": "idle"}


def _capacities(backends: Any) -> Iterable[Observation]:
    for name, _used, _idle, capacity in _pools(backends):
        yield capacity, {"db.client.connection.pool.name": name}


# -- the table ---------------------------------------------------------------------------------

OPERATION_DURATION = Metric(
    "db.client.operation.duration",
    "histogram",
    "s",
    "Duration of nexus-store operations on their database.",
    # The conventions' advised boundaries for this histogram.
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0),
)

METRICS: tuple[Metric, ...] = (
    OPERATION_DURATION,
    Metric(
        "nexus_store.events.queued",
        "gauge",
        "{event}",
        "Tracked events buffered and not yet written to MongoDB.",
        "events",
        _writer("queued"),
    ),
    Metric(
        "nexus_store.events.written",
        "counter",
        "{event}",
        "Events written to MongoDB.",
        "events",
        _writer("written"),
    ),
    Metric(
        "nexus_store.events.retried",
        "counter",
        "{batch}",
        "Event batches retried after a MongoDB failure.",
        "events",
        _writer("retried"),
    ),
    Metric(
        "nexus_store.events.dropped",
        "counter",
        "{event}",
        "Events dropped (full buffer with events.on_full=drop, or abandoned at close).",
        "events",
        _writer("dropped"),
    ),
    Metric(
        "nexus_store.events.rejected",
        "counter",
        "{event}",
        "Events MongoDB refused (validation).",
        "events",
        _writer("rejected"),
    ),
    Metric(
        "nexus_store.limiter.decisions",
        "counter",
        "{decision}",
        "Rate-limit hits allowed and refused, whoever decided.",
        "limiter",
        _decisions,
    ),
    Metric(
        "nexus_store.limiter.fail_mode",
        "counter",
        "{decision}",
        "Rate-limit calls decided by ratelimit.fail_mode because Redis was unreachable.",
        "limiter",
        _fail_mode_decisions,
    ),
    Metric(
        "nexus_store.outbox.pending",
        "gauge",
        "{row}",
        "Outbox rows not yet delivered to the audit log, at the last lag measurement.",
        "outbox",
        _outbox("pending"),
    ),
    Metric(
        "nexus_store.outbox.lag",
        "gauge",
        "s",
        "Age of the oldest undelivered outbox row, at the last lag measurement.",
        "outbox",
        _outbox("oldest_age_seconds"),
    ),
    Metric(
        "db.client.connection.count",
        "updowncounter",
        "{connection}",
        "Connections of each pool, by state.",
        "backends",
        _connections,
    ),
    Metric(
        "db.client.connection.max",
        "updowncounter",
        "{connection}",
        "The most connections each pool holds.",
        "backends",
        _capacities,
    ),
)
