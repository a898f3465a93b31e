"""The routing table: which kind of record goes to which store, and through which sub-API.

It is the only place that decides routing. Record types are named by import path so that
reading the table imports no driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nexus_store.connections import BackendName

if TYPE_CHECKING:
    from nexus_store.redis.client import Area

__all__ = ["ROUTES", "Route", "RouteSpec"]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A static routing rule: records of ``record_type`` go to ``api.put``."""

    kind: str
    backend: BackendName
    api: str
    record_type: str  # "module:Class"
    description: str
    redis_area: Area | None = None  # the logical DB or key prefix of a Redis kind

    def resolve_type(self) -> type:
        module, _, name = self.record_type.partition(":")
        found: type = getattr(importlib.import_module(module), name)
        return found


@dataclass(frozen=True, slots=True)
class Route:
    """A routing rule resolved against settings: where records of ``kind`` are stored."""

    kind: str
    backend: BackendName
    location: str
    api: str
    record_type: str
    description: str


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "entity",
        "postgres",
        "entities",
        "nexus_store.postgres.models:Base",
        "structured entities (users, projects, finance...)",
    ),
    RouteSpec(
        "event",
        "mongo",
        "events",
        "nexus_store.mongo.events.model:Event",
        "analytics events, batched, TTL retention",
    ),
    RouteSpec(
        "audit",
        "mongo",
        "audit",
        "nexus_store.mongo.audit.model:AuditRecord",
        "append-only, hash-chained audit log",
    ),
    RouteSpec(
        "session",
        "redis",
        "sessions",
        "nexus_store.redis.sessions:NewSession",
        "login sessions (token stored hashed)",
        redis_area="sessions",
    ),
    RouteSpec(
        "cache",
        "redis",
        "cache",
        "nexus_store.redis.cache:CacheEntry",
        "cache entries with TTL and tags",
        redis_area="cache",
    ),
    RouteSpec(
        "ratelimit",
        "redis",
        "limiter",
        "nexus_store.redis.ratelimit.limiter:RateLimitHit",
        "rate-limit counters (GCRA by default)",
        redis_area="ratelimit",
    ),
    RouteSpec(
        "realtime",
        "redis",
        "realtime",
        "nexus_store.redis.realtime:RealtimeMessage",
        "pub/sub messages",
        redis_area="realtime",
    ),
    RouteSpec(
        "queue",
        "redis",
        "queue",
        "nexus_store.redis.queue:QueueMessage",
        "reliable queue on Redis Streams",
        redis_area="queue",
    ),
)
