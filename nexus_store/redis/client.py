"""Redis connectivity: one bounded pool per logical DB, or one cluster client with prefixes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

import redis
from nexus_store._errors import unavailable_on
from nexus_store.errors import ConfigurationError, ValidationError
from nexus_store.redis.keys import Keyspace

if TYPE_CHECKING:
    from nexus_store.settings import RedisSettings

__all__ = ["AREAS", "Area", "RedisBackend"]

Area = Literal["sessions", "cache", "ratelimit", "realtime", "queue", "analytics_cache"]
AREAS: tuple[Area, ...] = ("sessions", "cache", "ratelimit", "realtime", "queue", "analytics_cache")
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
)


def _without_database(url: str) -> str:
    """Drop ``/N`` and ``?db=N``: redis-py lets them override ``db=``, and the area map decides."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit((parts.scheme, parts.netloc, "", query, parts.fragment))


class RedisBackend:
    """Clients per area. Standalone: one ``BlockingConnectionPool`` per logical DB (it waits
    for a free connection instead of failing). Cluster: one client, areas as key prefixes."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "Redis is not configured: set NEXUS_REDIS_URL (or REDIS_URL)", setting="redis.url"
            )
        self.settings = settings
        self._url = _without_database(settings.url.get_secret_value())
        self._async: dict[str, Any] = {}
        self._sync: dict[str, Any] = {}

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.settings.socket_timeout,
            "socket_connect_timeout": self.settings.connect_timeout,
            "health_check_interval": self.settings.health_check_interval,
        }

    def location(self, area: Area) -> str:
        """Where an area lives, for the routing table and health output."""
        if self.settings.cluster:
            return f"cluster prefix {self.keyspace(area).prefix}"
        return f"db {getattr(self.settings.databases, area)}"

    def keyspace(self, area: Area) -> Keyspace:
        self._check_area(area)
        namespace = self.settings.namespace
        prefix = f"{namespace}:{area}:" if self.settings.cluster else f"{namespace}:"
        return Keyspace(area=area, prefix=prefix)

    def client(self, area: Area) -> redis.asyncio.Redis:
        """The asyncio client of ``area`` (created on first use)."""
        self._check_area(area)
        key = "*" if self.settings.cluster else area
        found = self._async.get(key)
        if found is None:
            if self.settings.cluster:
                found = redis.asyncio.cluster.RedisCluster.from_url(
                    self._url, max_connections=self.settings.max_connections, **self._options()
                )
            else:
                pool = redis.asyncio.BlockingConnectionPool.from_url(
                    self._url,
                    db=getattr(self.settings.databases, area),
                    max_connections=self.settings.max_connections,
                    timeout=self.settings.pool_timeout,
                    **self._options(),
                )
                found = redis.asyncio.Redis(connection_pool=pool)
            self._async[key] = found
        return found  # type: ignore[no-any-return]

    def sync_client(self, area: Area) -> redis.Redis:
        """The blocking client of ``area``, for sync decorators and threads."""
        self._check_area(area)
        key = "*" if self.settings.cluster else area
        found = self._sync.get(key)
        if found is None:
            if self.settings.cluster:
                found = redis.cluster.RedisCluster.from_url(self._url, **self._options())
            else:
                pool = redis.BlockingConnectionPool.from_url(
                    self._url,
                    db=getattr(self.settings.databases, area),
                    max_connections=self.settings.max_connections,
                    timeout=self.settings.pool_timeout,
                    **self._options(),
                )
                found = redis.Redis(connection_pool=pool)
            self._sync[key] = found
        return found  # type: ignore[no-any-return]

    @staticmethod
    def _check_area(area: str) -> None:
        if area not in AREAS:
            raise ValidationError("area", f"unknown Redis area {area!r}; expected one of {AREAS}")

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Translate connection failures raised inside the block."""
        with unavailable_on(self.name, *_UNAVAILABLE):
            yield

    async def ping(self, area: Area = "sessions") -> float:
        started = time.perf_counter()
        with self.unavailable():
            await self.client(area).ping()
        return time.perf_counter() - started

    async def server_version(self) -> str:
        with self.unavailable():
            info = await self.client("sessions").info("server")
        return str(info.get("redis_version", "unknown"))

    async def close(self) -> None:
        for client in self._async.values():
            await client.aclose()
        for client in self._sync.values():
            client.close()
        self._async.clear()
        self._sync.clear()
