"""Redis connectivity: one bounded pool per logical DB, or one cluster client with prefixes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.exceptions
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff

import redis
from nexus_store._errors import describe
from nexus_store.errors import (
    BackendUnavailableError,
    ConfigurationError,
    NexusStoreError,
    ValidationError,
)
from nexus_store.redis.keys import Keyspace
from nexus_store.redis.names import AREAS, CACHE_AREAS, Area

if TYPE_CHECKING:
    from nexus_store.settings import RedisSettings

__all__ = ["AREAS", "CACHE_AREAS", "Area", "RedisBackend"]

_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,  # a replica promoted away from us: writes fail until failover
    redis.exceptions.OutOfMemoryError,  # maxmemory reached under noeviction
)
_UNAVAILABLE_ALL = (*_UNAVAILABLE, TimeoutError, OSError)


def _without_database(url: str) -> str:
    """Drop ``/N`` and ``?db=N``: redis-py lets them override ``db=``, and the area map decides."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])
    return urlunsplit((parts.scheme, parts.netloc, "", query, parts.fragment))


class _WaitingPool(redis.asyncio.BlockingConnectionPool):
    """A ``BlockingConnectionPool`` (bounded; waits for a free connection instead of raising
    "Too many connections") whose uncontended path skips the condition variable and the
    timeout scope: about 10 us per command, an eighth of a loopback GET."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.can_get_connection() and not getattr(self, "_in_maintenance", False):
            connection = self.get_available_connection()  # type: ignore[no-untyped-call]
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        return await super().get_connection()  # type: ignore[no-untyped-call]


class RedisBackend:
    """Clients per area. Standalone: one bounded pool per logical DB (it waits for a free
    connection instead of failing). Cluster: one client, areas as key prefixes. With
    ``redis.cache_url``, the cache areas use that server and the others the main one."""

    name = "redis"
    #: Everything redis-py may raise, for hot paths that catch it without a context manager;
    #: turn one into the SDK's error with :meth:`translate`.
    errors: tuple[type[BaseException], ...] = (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        OSError,
        TimeoutError,
    )

    def __init__(self, settings: RedisSettings) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "Redis is not configured: set NEXUS_REDIS_URL (or REDIS_URL)", setting="redis.url"
            )
        self.settings = settings
        self._url = _without_database(settings.url.get_secret_value())
        self._cache_url = (
            _without_database(settings.cache_url.get_secret_value())
            if settings.cache_url is not None
            else None
        )
        self._async: dict[str, Any] = {}
        self._sync: dict[str, Any] = {}

    def _options(self, *, asyncio: bool) -> dict[str, Any]:
        # redis-py's default (10 retries, up to 1 s apart) turns a dead server into a
        # several-second stall per call; a short bounded retry still hides a restart.
        retry_class = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
        backoff = ExponentialWithJitterBackoff(cap=self.settings.retry_backoff_cap, base=0.01)
        return {
            "socket_timeout": self.settings.socket_timeout,
            "socket_connect_timeout": self.settings.connect_timeout,
            "health_check_interval": self.settings.health_check_interval,
            "retry": retry_class(backoff, self.settings.retries),
        }

    def _server(self, area: Area) -> tuple[str, str]:
        """(pool name, URL) of the server holding ``area``."""
        self._check_area(area)
        on_cache_server = self._cache_url is not None and area in CACHE_AREAS
        url = self._cache_url if on_cache_server and self._cache_url else self._url
        where = "cache-server:" if on_cache_server else ""
        return where + ("*" if self.settings.cluster else area), url

    def location(self, area: Area) -> str:
        """Where an area lives, for the routing table and health output."""
        server = "cache server " if self._server(area)[0].startswith("cache-server:") else ""
        if self.settings.cluster:
            return f"{server}cluster prefix {self.keyspace(area).prefix}"
        return f"{server}db {getattr(self.settings.databases, area)}"

    def keyspace(self, area: Area) -> Keyspace:
        self._check_area(area)
        namespace = self.settings.namespace
        prefix = f"{namespace}:{area}:" if self.settings.cluster else f"{namespace}:"
        return Keyspace(area=area, prefix=prefix)

    def client(self, area: Area) -> redis.asyncio.Redis:
        """The asyncio client of ``area`` (created on first use)."""
        key, url = self._server(area)
        found: Any = self._async.get(key)
        if found is None:
            if self.settings.cluster:
                found = redis.asyncio.cluster.RedisCluster.from_url(
                    url,
                    max_connections=self.settings.max_connections,
                    **self._options(asyncio=True),
                )
            else:
                pool = _WaitingPool.from_url(
                    url,
                    db=getattr(self.settings.databases, area),
                    max_connections=self.settings.max_connections,
                    timeout=self.settings.pool_timeout,
                    **self._options(asyncio=True),
                )
                found = redis.asyncio.Redis(connection_pool=pool)
            self._async[key] = found
        return found  # type: ignore[no-any-return]

    def sync_client(self, area: Area) -> redis.Redis:
        """The blocking client of ``area``, for sync decorators and threads."""
        key, url = self._server(area)
        found: Any = self._sync.get(key)
        if found is None:
            if self.settings.cluster:
                found = redis.cluster.RedisCluster.from_url(url, **self._options(asyncio=False))
            else:
                pool = redis.BlockingConnectionPool.from_url(
                    url,
                    db=getattr(self.settings.databases, area),
                    max_connections=self.settings.max_connections,
                    timeout=self.settings.pool_timeout,
                    **self._options(asyncio=False),
                )
                found = redis.Redis(connection_pool=pool)
            self._sync[key] = found
        return found  # type: ignore[no-any-return]

    def pubsub_client(self) -> redis.asyncio.Redis:
        """A plain client for pub/sub. A cluster broadcasts PUBLISH to every node, so one
        node (the configured URL) sees every channel; on a standalone server the DB number
        does not matter to pub/sub, and the realtime area's pool is used."""
        if not self.settings.cluster:
            return self.client("realtime")
        found: Any = self._async.get("pubsub")
        if found is None:
            found = redis.asyncio.Redis.from_url(self._url, **self._options(asyncio=True))
            self._async["pubsub"] = found
        return found  # type: ignore[no-any-return]

    @staticmethod
    def _check_area(area: str) -> None:
        if area not in AREAS:
            raise ValidationError("area", f"unknown Redis area {area!r}; expected one of {AREAS}")

    def translate(self, exc: BaseException) -> NexusStoreError:
        """The nexus-store error for a failure from redis-py (one of :attr:`errors`).

        Unreachable, timed out or full → ``BackendUnavailableError``; an ACL refusal
        (``NOPERM``) → ``ConfigurationError`` naming ``redis.url``; any other server error →
        ``NexusStoreError``. Messages are secret-free.
        """
        text = describe(exc)
        if isinstance(exc, _UNAVAILABLE_ALL):
            return BackendUnavailableError(self.name, text)
        if (
            isinstance(exc, redis.exceptions.NoPermissionError)
            or "NOPERM" in text
            or ("can't run this command" in text)
        ):
            return ConfigurationError(
                f"redis: the Redis user may not run a command nexus-store needs ({text}); "
                "see the ACL in docs/redis.md",
                setting="redis.url",
            )
        return NexusStoreError(f"redis: {text}")

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Raise :meth:`translate` of any Redis failure inside the block. Code expecting a
        particular reply error (``BUSYGROUP``...) catches it inside the block."""
        try:
            yield
        except self.errors as exc:
            raise self.translate(exc) from exc

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
