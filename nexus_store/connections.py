"""The connections a sub-API uses: one lazily created backend per store.

Sub-APIs depend on this module, never on the facade in ``nexus_store.store``, so that the
facade can import them without an import circle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nexus_store._errors import describe
from nexus_store.log import get_logger
from nexus_store.settings import NexusSettings

if TYPE_CHECKING:
    from nexus_store.mongo.client import MongoBackend
    from nexus_store.postgres.engine import PostgresBackend
    from nexus_store.redis.client import RedisBackend

__all__ = ["Backends", "import_path"]

_log = get_logger("nexus_store.connections")

# backend name (also its settings section) -> class path
_BACKENDS: dict[str, str] = {
    "postgres": "nexus_store.postgres.engine:PostgresBackend",
    "mongo": "nexus_store.mongo.client:MongoBackend",
    "redis": "nexus_store.redis.client:RedisBackend",
}
def import_path(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Backends:
    """The connections a sub-API may use, created on first access.

    An unconfigured backend raises :class:`ConfigurationError` naming its setting when a
    sub-API asks for it, never earlier.
    """

    def __init__(self, settings: NexusSettings) -> None:
        self.settings = settings
        self._created: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        backend = self._created.get(name)
        if backend is None:
            backend = import_path(_BACKENDS[name])(getattr(self.settings, name))
            self._created[name] = backend
        return backend

    @property
    def postgres(self) -> PostgresBackend:
        return self._get("postgres")  # type: ignore[no-any-return]

    @property
    def mongo(self) -> MongoBackend:
        return self._get("mongo")  # type: ignore[no-any-return]

    @property
    def redis(self) -> RedisBackend:
        return self._get("redis")  # type: ignore[no-any-return]

    def configured(self) -> list[str]:
        """Names of the backends whose URL is set."""
        return [name for name in _BACKENDS if getattr(self.settings, name).url is not None]

    def created(self) -> dict[str, Any]:
        return dict(self._created)

    async def close(self) -> None:
        for name, backend in list(self._created.items()):
            try:
                await backend.close()
            except Exception as exc:  # one failing close must not keep the others open
                _log.warning("backend_close_failed", backend=name, error=describe(exc))
        self._created.clear()
