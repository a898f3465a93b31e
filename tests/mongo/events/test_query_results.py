"""The results of all five queries, checked against two independent oracles.

- A Python oracle computes each answer from the fixture events directly, the way the query's
  docstring defines it (no pipelines).
- :class:`tests.support.AggregationEngine` runs the pipelines the builders actually send,
  over the documents read back from the server, so that what the nx-27017 substitute cannot
  compute (compound ``$group`` keys, ``$dateTrunc``, ``$reduce``, a ``$match`` on a date range
  alone) is still checked in CI. Where the substitute can compute a result (unique users,
  timeline), its own answer must match too; on real MongoDB (``real_mongodb``) all five must.

The fixture is built to catch edge cases: events on interval and range boundaries, the same
millisecond twice, a user who views, leaves and views again, a step exactly at the window's
end, a step before step 1, anonymous events, a name that looks like an operator, and the
instant whose float milliseconds come out 1 ms low.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions, DatetimeConversion
from hypothesis import given
from hypothesis import strategies as st

from nexus_store.mongo.events.queries import (
    EventCount,
    EventQueries,
    FunnelStep,
    IntervalCount,
    _decode_cursor,
    bson_millis,
)
from nexus_store.mongo.events.service import Events
from tests.support import AggregationEngine, CommandRecorder

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
END = T0 + dt.timedelta(hours=3)
MINUTE = dt.timedelta(minutes=1)
MS = dt.timedelta(milliseconds=1)
WINDOW = dt.timedelta(hours=1)
STEPS = ["view", "cart", "paid"]
# float milliseconds of this instant come out 1 ms low (issue 14, finding 4)
SKEWED = dt.datetime(2004, 9, 23, 15, 54, 43, 735000, tzinfo=dt.UTC)

# (name, user_id or None for anonymous, ts, event_id)
Row = tuple[str, str | None, dt.datetime, str]
FIXTURE: list[Row] = [
    ("view", "u1", T0, "u1-a"),  # converts fully
    ("cart", "u1", T0 + 5 * MINUTE, "u1-b"),
    ("paid", "u1", T0 + 20 * MINUTE, "u1-c"),
    ("view", "u2", T0 + MINUTE, "u2-a"),
    ("cart", "u2", T0 + 90 * MINUTE, "u2-b"),  # after the window
    ("view", "u3", T0 + 2 * MINUTE, "u3-a"),
    ("paid", "u3", T0 + 3 * MINUTE, "u3-b"),  # skipped the cart
    ("view", "u4", T0 + 61 * MINUTE, "u4-a"),
    ("cart", "u4", T0 + 62 * MINUTE, "u4-b"),
    ("view", "u4", T0 + 63 * MINUTE, "u4-c"),
    ("view", "u5", T0, "u5-a"),  # views, leaves, views again and converts
    ("view", "u5", T0 + 120 * MINUTE, "u5-b"),
    ("cart", "u5", T0 + 125 * MINUTE, "u5-c"),
    ("paid", "u5", T0 + 130 * MINUTE, "u5-d"),
    ("cart", "u6", T0, "u6-a"),  # a step before step 1
    ("view", "u6", T0 + MINUTE, "u6-b"),
    ("cart", "u6", T0 + MINUTE + WINDOW, "u6-c"),  # exactly at the window's end: counts
    ("view", "u7", T0 + 7 * MINUTE, "u7-a"),  # the same millisecond, ordered by event_id
    ("cart", "u7", T0 + 7 * MINUTE, "u7-b"),
    ("view", None, T0, "anon-a"),  # anonymous: no user to count
    ("$where", "u8", T0 + 30 * MINUTE, "u8-a"),  # an operator-like name is just a name
    ("view", "u9", T0 - MS, "u9-a"),  # just before the range
    ("view", "u9", END, "u9-b"),  # at the range's end: excluded
    ("paid", "u9", END - MS, "u9-c"),  # the range's last millisecond
    ("view", "t", SKEWED - MS, "t-a"),  # the timeline's skewed millisecond
    ("view", "t", SKEWED, "t-b"),
    ("cart", "t", SKEWED, "t-c"),
    ("paid", "t", SKEWED, "t-d"),
    ("view", "t", SKEWED + MS, "t-e"),
]


# -- the Python oracle ---------------------------------------------------------------------


def in_range(start: dt.datetime, end: dt.datetime) -> list[Row]:
    return [event for event in FIXTURE if start <= event[2] < end]


def truncate(ts: dt.datetime, interval: str) -> dt.datetime:
    keep = {"minute": 5, "hour": 4, "day": 3}[interval]
    parts = [ts.year, ts.month, ts.day, ts.hour, ts.minute][:keep]
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[misc]


def oracle_counts(names: list[str], interval: str) -> list[IntervalCount]:
    counted = Counter(
        (truncate(ts, interval), name) for name, _, ts, _ in in_range(T0, END) if name in names
    )
    return [IntervalCount(name, bucket, n) for (bucket, name), n in sorted(counted.items())]


def oracle_unique_users(names: list[str] | None = None) -> int:
    return len(
        {user for name, user, _, _ in in_range(T0, END) if user and (not names or name in names)}
    )


def depth_from(events: list[tuple[str, dt.datetime]], anchor: int) -> int:
    """Steps reached starting at ``events[anchor]``: each next step is the earliest later
    event with its name, no later than WINDOW after the anchor."""
    reached, position = 1, anchor
    for step in STEPS[1:]:
        later = [
            i
            for i in range(position + 1, len(events))
            if events[i][0] == step and events[i][1] - events[anchor][1] <= WINDOW
        ]
        if not later:
            break
        reached, position = reached + 1, later[0]
    return reached


def oracle_funnel(anchor: str) -> list[FunnelStep]:
    by_user: dict[str, list[tuple[str, dt.datetime, str]]] = {}
    for name, user, ts, event_id in in_range(T0, END):
        if user and name in STEPS:
            by_user.setdefault(user, []).append((name, ts, event_id))
    depths = []
    for events in by_user.values():
        ordered = [(name, ts) for name, ts, _ in sorted(events, key=lambda e: (e[1], e[2]))]
        anchors = [i for i, (name, _) in enumerate(ordered) if name == STEPS[0]]
        if anchor == "first":
            anchors = anchors[:1]
        depths.append(max((depth_from(ordered, i) for i in anchors), default=0))
    users = [sum(1 for depth in depths if depth >= step) for step in range(1, len(STEPS) + 1)]
    return [
        FunnelStep(i + 1, name, n, n / users[0] if users[0] else 0.0)
        for i, (name, n) in enumerate(zip(STEPS, users, strict=True))
    ]


def oracle_top_events(limit: int) -> list[EventCount]:
    counted = Counter(name for name, _, _, _ in in_range(T0, END))
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    return [EventCount(name, n) for name, n in ranked[:limit]]


def oracle_timeline(user: str) -> list[str]:
    mine = [(ts, event_id) for _, who, ts, event_id in FIXTURE if who == user]
    return [event_id for _, event_id in sorted(mine, reverse=True)]


# -- the runs ---------------------------------------------------------------------------------


async def _loaded(mongo_stack: Any, open_backends: Any, recorder: Any = None) -> Events:
    events = Events(await open_backends(mongo_stack.settings(), recorder))
    for name, user, ts, event_id in FIXTURE:
        ids = {"user_id": user} if user else {"anonymous_id": "anon"}
        await events.track(name, ts=ts, event_id=event_id, **ids)
    await events.flush()
    return events


async def _on_engine(events: Events) -> tuple[EventQueries, AggregationEngine]:
    collection = events._collection
    stored = await collection.find({}, projection={"_id": 0}).to_list()
    assert len(stored) == len(FIXTURE)
    engine = AggregationEngine(stored)
    return EventQueries(collection, events._mongo, cache=engine), engine


def test_oracle_sees_the_edge_cases() -> None:
    """The fixture really holds the cases it claims (else the checks below prove less)."""
    assert [step.users for step in oracle_funnel("first")] == [7, 4, 1]
    assert [step.users for step in oracle_funnel("any")] == [7, 5, 2]  # u5 converts
    assert int(SKEWED.timestamp() * 1000) == bson_millis(SKEWED) - 1


async def _all_five(queries: Any) -> dict[str, Any]:
    names = ["view", "cart", "$where"]
    return {
        **{
            f"counts/{interval}": await queries.counts(names, start=T0, end=END, interval=interval)
            for interval in ("minute", "hour", "day")
        },
        "unique_users": await queries.unique_users(start=T0, end=END),
        "unique_users/paid": await queries.unique_users(start=T0, end=END, names=["paid"]),
        **{
            f"funnel/{anchor}": await queries.funnel(
                STEPS, start=T0, end=END, window=WINDOW, anchor=anchor
            )
            for anchor in ("first", "any")
        },
        "top_events": await queries.top_events(start=T0, end=END, limit=3),
    }


def _expected() -> dict[str, Any]:
    names = ["view", "cart", "$where"]
    return {
        **{f"counts/{i}": oracle_counts(names, i) for i in ("minute", "hour", "day")},
        "unique_users": oracle_unique_users(),
        "unique_users/paid": oracle_unique_users(["paid"]),
        "funnel/first": oracle_funnel("first"),
        "funnel/any": oracle_funnel("any"),
        "top_events": oracle_top_events(3),
    }


async def test_pipelines_on_the_independent_engine_match_the_oracle(
    mongo_stack, open_backends
) -> None:
    events = await _loaded(mongo_stack, open_backends)
    queries, engine = await _on_engine(events)
    assert await _all_five(queries) == _expected()
    assert len(engine.pipelines) == 8  # every cached query ran on the engine


async def test_substitute_results_match_the_oracle_where_it_computes_them(
    mongo_stack, open_backends
) -> None:
    recorder = CommandRecorder()
    events = await _loaded(mongo_stack, open_backends, recorder)
    assert await events.unique_users(start=T0, end=END) == oracle_unique_users()
    assert await events.unique_users(start=T0, end=END, names="paid") == oracle_unique_users(
        ["paid"]
    )
    engine = AggregationEngine(await events._collection.find({}, {"_id": 0}).to_list())
    for user in ("t", "u5"):
        seen: list[str] = []
        cursor = None
        while True:  # one event per page: every cursor is used
            recorder.clear()
            page = await events.timeline(user, limit=1, cursor=cursor)
            (command,) = recorder.named("aggregate")
            on_engine = engine.aggregate(command["pipeline"])
            assert [row["event_id"] for row in on_engine][:1] == [e.event_id for e in page.events]
            seen += [event.event_id for event in page.events]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == oracle_timeline(user)


@pytest.mark.real_mongodb
async def test_real_server_results_match_the_oracle(mongo_stack, open_backends) -> None:
    events = await _loaded(mongo_stack, open_backends)
    assert await _all_five(events) == _expected()


# -- the timeline cursor -----------------------------------------------------------------------

BSON_DATES = st.datetimes(
    min_value=dt.datetime.min, max_value=dt.datetime.max, timezones=st.just(dt.UTC)
).map(lambda ts: ts.replace(microsecond=ts.microsecond // 1000 * 1000))
RAW_MILLIS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


@given(BSON_DATES)
def test_cursor_millis_are_the_stored_bson_millis(ts: dt.datetime) -> None:
    stored = bson.decode(bson.encode({"ts": ts}), codec_options=RAW_MILLIS)["ts"]
    assert bson_millis(ts) == int(stored)  # the int64 in the document, not a float's guess
    assert _decode_cursor(f"{bson_millis(ts)}.e1") == (ts, "e1")
