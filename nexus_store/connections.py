"""The connections a sub-API uses: one lazily created backend per store.

Sub-APIs depend on this module, never on the facade in ``nexus_store.store``, so that the
facade can import them without an import circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from nexus_store._errors import describe
from nexus_store.log import get_logger
from nexus_store.settings import NexusSettings
from nexus_store.telemetry.metrics import watch

if TYPE_CHECKING:
    from nexus_store.mongo.client import MongoBackend
    from nexus_store.postgres.engine import PostgresBackend
    from nexus_store.redis.client import RedisBackend

__all__ = ["BACKEND_NAMES", "Backend", "BackendName", "Backends", "configured"]

_log = get_logger("nexus_store.connections")

#: A backend's name is also the name of its settings section and of its package.
BackendName = Literal["postgres", "mongo", "redis"]
BACKEND_NAMES: tuple[BackendName, ...] = ("postgres", "mongo", "redis")


def configured(settings: NexusSettings) -> list[BackendName]:
    """Names of the backends whose URL is set in ``settings``."""
    return [name for name in BACKEND_NAMES if getattr(settings, name).url is not None]


class Backend(Protocol):
    """What the store and the health checks use of any backend.

    Each also has a ``location(...)`` for the routing table; its argument differs per
    backend (none, a collection, a Redis area), so it is called on the concrete type.
    """

    @property
    def name(self) -> str: ...

    async def ping(self) -> float:
        """Seconds one round trip took; raises :class:`BackendUnavailableError`."""
        ...

    async def server_version(self) -> str: ...

    async def close(self) -> None: ...


class Backends:
    """The connections a sub-API may use, created on first access.

    An unconfigured backend raises :class:`ConfigurationError` naming its setting when a
    sub-API asks for it, never earlier. Each backend's driver is imported on that first
    access, so importing nexus_store loads none.
    """

    def __init__(self, settings: NexusSettings) -> None:
        self.settings = settings
        self._postgres: PostgresBackend | None = None
        self._mongo: MongoBackend | None = None
        self._redis: RedisBackend | None = None
        watch("backends", self)  # the pool metrics read the backends created so far

    @property
    def postgres(self) -> PostgresBackend:
        if self._postgres is None:
            from nexus_store.postgres.engine import PostgresBackend

            self._postgres = PostgresBackend(self.settings.postgres)
        return self._postgres

    @property
    def mongo(self) -> MongoBackend:
        if self._mongo is None:
            from nexus_store.mongo.client import MongoBackend

            self._mongo = MongoBackend(self.settings.mongo)
        return self._mongo

    @property
    def redis(self) -> RedisBackend:
        if self._redis is None:
            from nexus_store.redis.client import RedisBackend

            self._redis = RedisBackend(self.settings.redis)
        return self._redis

    def get(self, name: BackendName) -> Backend:
        """The backend called ``name`` (created on first use)."""
        match name:
            case "postgres":
                return self.postgres
            case "mongo":
                return self.mongo
            case "redis":
                return self.redis

    def configured(self) -> list[BackendName]:
        """Names of the backends whose URL is set."""
        return configured(self.settings)

    def created(self) -> list[Backend]:
        """The backends created so far (each holds connections until closed)."""
        return [b for b in (self._postgres, self._mongo, self._redis) if b is not None]

    async def close(self) -> None:
        for backend in self.created():
            try:
                await backend.close()
            except Exception as exc:  # one failing close must not keep the others open
                _log.warning("backend_close_failed", backend=backend.name, error=describe(exc))
        self._postgres = self._mongo = self._redis = None
