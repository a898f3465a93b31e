"""Results of analytics queries, kept in Redis for a while (the ``analytics_cache`` area).

    cache = AnalyticsCache(backends, ttl=60)
    rows = await cache.rows(("events", "events"), pipeline, run_pipeline)

Rows are stored as BSON (never pickle), keyed by a hash of the pipeline, for ``ttl`` seconds.
The cache only ever saves work: when Redis fails, the failure is logged
(``analytics_cache_unavailable``) and the rows come from ``run``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import bson
from bson.codec_options import CodecOptions

from nexus_store._errors import describe
from nexus_store.log import get_logger

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["AnalyticsCache"]

Rows = list[dict[str, Any]]

_log = get_logger("nexus_store.analytics_cache")
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=dt.UTC)


class AnalyticsCache:
    """Query results in the ``analytics_cache`` area, each for ``ttl`` seconds."""

    def __init__(self, backends: Backends, ttl: int) -> None:
        self._backends = backends  # Redis is reached on first use, not when the queries are built
        self._ttl = ttl

    async def rows(
        self,
        scope: Sequence[str],
        pipeline: list[dict[str, Any]],
        run: Callable[[], Awaitable[Rows]],
    ) -> Rows:
        """The cached rows of ``pipeline`` in ``scope``, else ``run()``'s, then cached.

        A failed read goes straight to ``run()`` without trying to write: Redis is down.
        """
        redis = self._backends.redis
        digest = hashlib.sha256(bson.encode({"pipeline": pipeline})).hexdigest()
        key = redis.keyspace("analytics_cache").key(*scope, digest)
        client = redis.client("analytics_cache")
        try:
            cached = await client.get(key)
        except redis.errors as exc:
            _log.warning("analytics_cache_unavailable", error=describe(exc))
            return await run()
        if isinstance(cached, bytes):
            found: Rows = bson.decode(cached, _CODEC)["rows"]
            return found
        rows = await run()
        try:
            await client.set(key, bson.encode({"rows": rows}), ex=self._ttl)
        except redis.errors as exc:
            _log.warning("analytics_cache_unavailable", error=describe(exc))
        return rows
