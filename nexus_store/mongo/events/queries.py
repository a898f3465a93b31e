"""Server-side analytics queries over the events collection, with typed results.

Every query is one aggregation pipeline run by MongoDB; only its small result crosses the
wire. Caller values enter pipelines as literals (``$literal`` inside expressions), so an
event name such as ``"$where"`` is matched as text, never read as a field path or operator.

    hourly = await store.events.counts(["signup", "paid"], start=day, end=day + DAY)
    users = await store.events.unique_users(start=week_ago, end=now)
    steps = await store.events.funnel(["view", "cart", "paid"], start=s, end=e,
                                      window=timedelta(hours=1))
    page = await store.events.timeline("u1", limit=20)
    more = await store.events.timeline("u1", limit=20, cursor=page.next_cursor)
    top = await store.events.top_events(start=s, end=e, limit=5)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from nexus_store import telemetry
from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import page_limit, query_text, time_range
from nexus_store.mongo.events.model import Event

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from nexus_store.mongo.client import MongoBackend

__all__ = [
    "EventCount",
    "EventQueries",
    "FunnelStep",
    "IntervalCount",
    "ResultCache",
    "TimelinePage",
]

Interval = Literal["minute", "hour", "day"]
Anchor = Literal["first", "any"]
Rows = list[dict[str, Any]]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)
_CURSOR = re.compile(r"(-?[0-9]{1,15})\.(.+)", re.DOTALL)


class ResultCache(Protocol):
    """Where query results may be kept for a while (:mod:`nexus_store.redis.analytics_cache`)."""

    async def rows(
        self,
        scope: Sequence[str],
        pipeline: list[dict[str, Any]],
        run: Callable[[], Awaitable[Rows]],
    ) -> Rows:
        """The rows of ``pipeline`` (in ``scope``): kept ones, else those of ``run()``."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalCount:
    """``count`` events called ``name`` in the UTC interval starting at ``bucket``."""

    name: str
    bucket: dt.datetime
    count: int


@dataclass(frozen=True, slots=True)
class EventCount:
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """``users`` reached step ``step`` (1-based) in order, within the window of step 1."""

    step: int
    name: str
    users: int
    conversion: float  # users / users of step 1 (1.0 for step 1, 0.0 when nobody started)


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next page (None: done)."""

    events: list[Event]
    next_cursor: str | None


def _names(names: str | Sequence[str], field: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list | tuple):
        raise ValidationError(
            field, f"must be a name or a list of names, got {type(names).__name__}"
        )
    checked = [query_text(name, f"{field}.{index}") for index, name in enumerate(names)]
    if not checked:
        raise ValidationError(field, "give at least one event name")
    return checked


def bson_millis(value: dt.datetime) -> int:
    """The integer milliseconds since the epoch that BSON stores for ``value``.

    Exact integer arithmetic: ``int(value.timestamp() * 1000)`` goes through a float and
    comes out 1 ms low for some instants (2004-09-23T15:54:43.735Z), which made a timeline
    cursor skip the events of that millisecond.
    """
    return (value - _EPOCH) // _MILLISECOND


def _encode_cursor(event: Event) -> str:
    return f"{bson_millis(event.ts)}.{event.event_id}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    found = _CURSOR.fullmatch(query_text(cursor, "cursor"))
    if found is None:
        raise ValidationError("cursor", "not a cursor returned by timeline()")
    try:
        return _EPOCH + int(found[1]) * _MILLISECOND, found[2]
    except OverflowError:
        raise ValidationError("cursor", "not a cursor returned by timeline()") from None


def _funnel_depth(
    anchor: Anchor, first_step: str, step_matches: dict[str, Any], advance: dict[str, Any]
) -> dict[str, Any]:
    """The expression of how many steps a user's ``$events`` (oldest first) reached."""

    def walk(events: Any) -> dict[str, Any]:
        progress = {
            "$reduce": {
                "input": events,
                "initialValue": {"reached": 0, "started": None},
                "in": {"$cond": [step_matches, advance, "$$value"]},
            }
        }
        return {"$let": {"vars": {"progress": progress}, "in": "$$progress.reached"}}

    if anchor == "first":
        return walk("$events")
    # Every step-1 event starts a walk over the events from it on; the deepest counts.
    return {
        "$max": {
            "$map": {
                "input": {"$range": [0, {"$size": "$events"}]},
                "as": "at",
                "in": {
                    "$cond": [
                        {
                            "$eq": [
                                {"$arrayElemAt": ["$events.name", "$$at"]},
                                {"$literal": first_step},
                            ]
                        },
                        walk({"$slice": ["$events", "$$at", {"$size": "$events"}]}),
                        0,
                    ]
                },
            }
        }
    }


class EventQueries:
    """Aggregations over the events collection (part of ``store.events``).

    With a ``cache``, the results of ``counts``, ``unique_users``, ``funnel`` and
    ``top_events`` are kept there (``timeline`` pages always come from MongoDB).
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        mongo: MongoBackend,
        cache: ResultCache | None = None,
    ) -> None:
        self._collection = collection
        self._mongo = mongo
        self._cache = cache
        self._cache_scope = ("events", collection.name)

    async def _aggregate(
        self, operation: str, pipeline: list[dict[str, Any]], *, cache: bool = True
    ) -> Rows:
        async def run() -> Rows:
            name = f"events.{operation}"
            with (
                telemetry.operation(self._mongo, name, self._collection.name) as op,
                self._mongo.unavailable(),
            ):
                cursor = await self._collection.aggregate(pipeline)
                rows = await cursor.to_list()
                op.note(rows=len(rows))
            return rows

        if self._cache is None or not cache:
            return await run()
        return await self._cache.rows(self._cache_scope, pipeline, run)

    async def counts(
        self,
        names: str | Sequence[str],
        *,
        start: dt.datetime,
        end: dt.datetime,
        interval: Interval = "hour",
    ) -> list[IntervalCount]:
        """Events per name per UTC ``interval`` (minute, hour or day) in ``[start, end)``.

        Empty intervals are absent. Sorted by bucket, then name.
        """
        if interval not in ("minute", "hour", "day"):
            raise ValidationError("interval", "must be minute, hour or day")
        pipeline: list[dict[str, Any]] = [
            {"$match": {"ts": time_range(start, end), "name": {"$in": _names(names, "names")}}},
            {
                "$group": {
                    "_id": {
                        "name": "$name",
                        "bucket": {
                            "$dateTrunc": {"date": "$ts", "unit": interval, "timezone": "UTC"}
                        },
                    },
                    "count": {"$sum": 1},
                }
            },
            {"$sort": {"_id.bucket": 1, "_id.name": 1}},
        ]
        rows = await self._aggregate("counts", pipeline)
        return [
            IntervalCount(
                row["_id"]["name"], row["_id"]["bucket"].astimezone(dt.UTC), int(row["count"])
            )
            for row in rows
        ]

    async def unique_users(
        self, *, start: dt.datetime, end: dt.datetime, names: str | Sequence[str] | None = None
    ) -> int:
        """Distinct ``user_id`` values with an event in ``[start, end)`` (optionally of ``names``).

        Anonymous events (no ``user_id``) are not counted.
        """
        match: dict[str, Any] = {"ts": time_range(start, end), "user_id": {"$type": "string"}}
        if names is not None:
            match["name"] = {"$in": _names(names, "names")}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$group": {"_id": "$user_id"}},
            {"$count": "users"},
        ]
        rows = await self._aggregate("unique_users", pipeline)
        return int(rows[0]["users"]) if rows else 0

    async def funnel(
        self,
        steps: Sequence[str],
        *,
        start: dt.datetime,
        end: dt.datetime,
        window: dt.timedelta,
        anchor: Anchor = "first",
    ) -> list[FunnelStep]:
        """How many users did ``steps`` in order, each within ``window`` of their step 1.

        Each user's events of those names in ``[start, end)`` are walked oldest first on the
        server; a step counts when it follows the previous one and lies within ``window`` of
        the anchoring step-1 event. ``anchor="first"`` anchors on the user's first step-1
        event only (a user who views, leaves, and views again to convert later than the
        window counts at depth 1); ``anchor="any"`` tries every step-1 event and counts the
        deepest run (that user converts).
        """
        checked = _names(steps, "steps")
        if len(checked) < 2:
            raise ValidationError("steps", "a funnel needs at least two steps")
        window_ms = window // _MILLISECOND if isinstance(window, dt.timedelta) else 0
        if window_ms <= 0:
            raise ValidationError("window", "must be a positive timedelta")
        if anchor not in ("first", "any"):
            raise ValidationError("anchor", "must be first or any")
        reached = "$$value.reached"
        step_matches = {
            "$and": [
                {"$lt": [reached, len(checked)]},
                {"$eq": ["$$this.name", {"$arrayElemAt": [{"$literal": checked}, reached]}]},
                {
                    "$or": [
                        {"$eq": [reached, 0]},
                        {"$lte": [{"$subtract": ["$$this.ts", "$$value.started"]}, window_ms]},
                    ]
                },
            ]
        }
        advance = {
            "reached": {"$add": [reached, 1]},
            "started": {"$cond": [{"$eq": [reached, 0]}, "$$this.ts", "$$value.started"]},
        }
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "ts": time_range(start, end),
                    "name": {"$in": checked},
                    "user_id": {"$type": "string"},
                }
            },
            {"$sort": {"ts": 1, "event_id": 1}},
            {"$group": {"_id": "$user_id", "events": {"$push": {"name": "$name", "ts": "$ts"}}}},
            {"$project": {"depth": _funnel_depth(anchor, checked[0], step_matches, advance)}},
            {"$group": {"_id": "$depth", "users": {"$sum": 1}}},
        ]
        rows = await self._aggregate("funnel", pipeline)
        users_by_depth = {int(row["_id"]): int(row["users"]) for row in rows}
        result: list[FunnelStep] = []
        for index, name in enumerate(checked, start=1):
            users = sum(count for depth, count in users_by_depth.items() if depth >= index)
            first = result[0].users if result else users
            result.append(FunnelStep(index, name, users, users / first if first else 0.0))
        return result

    async def timeline(
        self, user_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> TimelinePage:
        """``user_id``'s events, newest first, ``limit`` per page (keyset pagination)."""
        match: dict[str, Any] = {"user_id": query_text(user_id, "user_id")}
        if cursor is not None:
            ts, event_id = _decode_cursor(cursor)
            match["$or"] = [{"ts": {"$lt": ts}}, {"ts": ts, "event_id": {"$lt": event_id}}]
        limit = page_limit(limit)
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$sort": {"ts": -1, "event_id": -1}},
            {"$limit": limit + 1},
            {"$project": {"_id": 0}},
        ]
        rows = await self._aggregate("timeline", pipeline, cache=False)
        events = [Event.from_document(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(events[-1]) if len(rows) > limit else None
        return TimelinePage(events, next_cursor)

    async def top_events(
        self, *, start: dt.datetime, end: dt.datetime, limit: int = 10
    ) -> list[EventCount]:
        """The ``limit`` most frequent event names in ``[start, end)``, most frequent first."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"ts": time_range(start, end)}},
            {"$group": {"_id": "$name", "count": {"$sum": 1}}},
            {"$sort": {"count": -1, "_id": 1}},
            {"$limit": page_limit(limit)},
        ]
        rows = await self._aggregate("top_events", pipeline)
        return [EventCount(str(row["_id"]), int(row["count"])) for row in rows]
