"""The default store of the standalone decorators: ``@cached`` and ``@rate_limit`` used
without a store (no ``cache=`` / ``limiter=``).

They share one set of connections, configured by ``NexusSettings.load()`` (environment,
``NEXUS_CONFIG``) on the first standalone call of the process, and one :class:`Cache` and one
:class:`RateLimiter` on them. Its asyncio connections belong to the event loop of the first
async call, like any redis-py asyncio client. :func:`close_default_store` closes them (at
shutdown, or before using standalone decorators on another event loop); the next standalone
call builds them again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["DefaultStore", "close_default_store", "default_store"]

T = TypeVar("T")


class DefaultStore:
    """Connections and sub-APIs built once per process, on first need, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backends: Backends | None = None
        self._parts: dict[Callable[[Backends], object], object] = {}

    def get(self, build: Callable[[Backends], T]) -> T:
        """The shared ``build(backends)`` (``Cache``, ``RateLimiter``), built on first use."""
        found = self._parts.get(build)
        if found is None:
            with self._lock:
                found = self._parts.get(build)
                if found is None:
                    found = self._parts[build] = build(self._shared_backends())
        return cast(T, found)  # built by ``build``, whose result type is T

    def _shared_backends(self) -> Backends:
        if self._backends is None:
            from nexus_store.connections import Backends
            from nexus_store.settings import NexusSettings

            self._backends = Backends(NexusSettings.load())
        return self._backends

    async def close(self) -> None:
        """Close the connections and forget the parts; the next use builds them again."""
        with self._lock:
            backends, self._backends = self._backends, None
            self._parts.clear()
        if backends is not None:
            await backends.close()


default_store = DefaultStore()


async def close_default_store() -> None:
    """Close the connections of the standalone ``@cached`` and ``@rate_limit`` decorators."""
    await default_store.close()
