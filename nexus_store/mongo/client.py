"""MongoDB connectivity on PyMongo's native asyncio client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure

from nexus_store._errors import unavailable_on
from nexus_store.errors import ConfigurationError

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.monitoring import _EventListener

    from nexus_store.settings import MongoSettings

__all__ = ["MongoBackend"]


class MongoBackend:
    """Owns the client and the configured database.

    ``event_listeners`` are PyMongo monitoring listeners (command, pool, server events),
    for APM and for tests that assert the exact commands sent.
    """

    name = "mongo"

    def __init__(
        self, settings: MongoSettings, *, event_listeners: Sequence[_EventListener] = ()
    ) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "MongoDB is not configured: set NEXUS_MONGO_URL (or MONGODB_URL)",
                setting="mongo.url",
            )
        self.settings = settings
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.url.get_secret_value(),
            appname=settings.app_name,
            connectTimeoutMS=int(settings.connect_timeout * 1000),
            serverSelectionTimeoutMS=int(settings.server_selection_timeout * 1000),
            socketTimeoutMS=int(settings.socket_timeout * 1000),
            maxPoolSize=settings.max_pool_size,
            tz_aware=True,
            uuidRepresentation="standard",
            event_listeners=list(event_listeners),
        )
        self.db: AsyncDatabase[dict[str, Any]] = self.client[settings.database]

    def location(self, collection: str) -> str:
        """Where ``collection`` lives, for the routing table."""
        return f"{self.settings.database}.{collection}"

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Translate connection failures raised inside the block."""
        with unavailable_on(self.name, ConnectionFailure):
            yield

    async def ping(self) -> float:
        started = time.perf_counter()
        with self.unavailable():
            await self.client.admin.command("ping")
        return time.perf_counter() - started

    async def server_version(self) -> str:
        with self.unavailable():
            info = await self.client.admin.command("buildInfo")
        return str(info.get("version", "unknown"))

    async def close(self) -> None:
        await self.client.close()
