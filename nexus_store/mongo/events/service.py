"""``store.events``: one object that tracks analytics events and answers queries about them.

    await store.events.track("signup", user_id="u1", properties={"plan": "pro"})
    await store.events.flush()
    hourly = await store.events.counts("signup", start=day, end=day + DAY)

Writing is an :class:`~nexus_store.mongo.events.writer.EventWriter`'s job, querying an
:class:`~nexus_store.mongo.events.queries.EventQueries`'; both work on one collection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from nexus_store.mongo._documents import query_text
from nexus_store.mongo.events.queries import EventQueries
from nexus_store.mongo.events.writer import EventWriter
from nexus_store.redis.analytics_cache import AnalyticsCache
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from nexus_store.connections import Backends

__all__ = ["Events"]


class Events:
    """Track analytics events into MongoDB and query them. Built by ``NexusStore.events``.

    With ``events.query_cache_ttl`` set and Redis configured, query results are cached in the
    ``analytics_cache`` area (see :mod:`nexus_store.redis.analytics_cache`).
    """

    def __init__(self, backends: Backends) -> None:
        settings = backends.settings
        self._mongo = backends.mongo
        self._collection: AsyncCollection[dict[str, Any]] = self._mongo.db[
            settings.events.collection
        ]
        ttl = settings.events.query_cache_ttl
        cache = AnalyticsCache(backends, ttl) if ttl is not None and settings.redis.url else None
        writer = EventWriter(self._collection, settings.events, self._mongo)
        queries = EventQueries(self._collection, self._mongo, cache)
        # The parts' own methods, so that each signature and docstring has one home and
        # track() costs no extra call per event.
        self.track = writer.track
        self.put = writer.put
        self.flush = writer.flush
        self.stats = writer.stats
        self.aclose = writer.aclose
        self.counts = queries.counts
        self.unique_users = queries.unique_users
        self.funnel = queries.funnel
        self.timeline = queries.timeline
        self.top_events = queries.top_events

    # -- privacy: what is stored of one user, after flushing what is buffered ----------------

    async def delete_user(self, user_id: str) -> int:
        """Delete every stored event of ``user_id`` (buffered ones are flushed first)."""
        user_id = query_text(user_id, "user_id")
        await self.flush()
        with (
            operation(self._mongo, "events.delete_user", self._collection.name),
            self._mongo.unavailable(),
        ):
            result = await self._collection.delete_many({"user_id": user_id})
        return result.deleted_count

    async def export_user(self, user_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yield ``user_id``'s stored events, oldest first, as plain dicts (no ``_id``)."""
        user_id = query_text(user_id, "user_id")
        await self.flush()
        with self._mongo.unavailable():
            cursor = self._collection.find(
                {"user_id": user_id}, projection={"_id": False}, sort=[("ts", 1), ("event_id", 1)]
            )
            async for document in cursor:
                yield document
