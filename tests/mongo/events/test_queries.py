"""Server-side event queries: results, exact pipelines, and injection resistance.

The nx-27017 substitute cannot group on compound keys, cannot run the funnel's ``$reduce``
and drops ``$match`` stages that hold only a date range, so those results are checked on
real MongoDB; their pipelines are checked here through command monitoring.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from structlog.testing import capture_logs

from nexus_store.errors import ValidationError
from nexus_store.mongo.events.queries import EventCount, FunnelStep, IntervalCount
from nexus_store.mongo.events.service import Events
from tests.support import CommandRecorder

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


async def _loaded(mongo_stack, open_backends, recorder=None) -> Events:
    events = Events(await open_backends(mongo_stack.settings(), recorder))
    rows = [
        ("view", "u1", 0),
        ("cart", "u1", 5),
        ("paid", "u1", 20),
        ("view", "u2", 1),
        ("cart", "u2", 90),  # cart after the 60-minute window
        ("view", "u3", 2),
        ("paid", "u3", 3),  # skipped the cart step
        ("view", "u4", 61),
        ("cart", "u4", 62),
        ("view", "u4", 63),
    ]
    for name, user, minutes in rows:
        await events.track(
            name, user_id=user, ts=T0 + minutes * MINUTE, event_id=f"{user}-{minutes:03d}"
        )
    await events.track("view", anonymous_id="anon", ts=T0)
    await events.flush()
    return events


def _pipeline(recorder: CommandRecorder) -> list[dict[str, Any]]:
    return recorder.named("aggregate")[-1]["pipeline"]


async def test_unique_users_and_names_are_literals(mongo_stack, open_backends) -> None:
    events = await _loaded(mongo_stack, open_backends)
    end = T0 + dt.timedelta(hours=3)
    assert await events.unique_users(start=T0, end=end) == 4
    assert await events.unique_users(start=T0, end=end, names="paid") == 2
    assert await events.unique_users(start=T0 + 4 * MINUTE, end=end) == 3
    assert await events.unique_users(start=T0, end=end, names=["$where"]) == 0
    with pytest.raises(ValidationError) as caught:
        await events.unique_users(start=T0, end=end, names=[{"$ne": ""}])  # type: ignore[list-item]
    assert caught.value.field == "names.0"
    with pytest.raises(ValidationError) as caught:
        await events.unique_users(start=end, end=T0)
    assert caught.value.field == "end"
    with pytest.raises(ValidationError) as caught:
        await events.unique_users(start=dt.datetime(2026, 1, 1), end=end)
    assert caught.value.field == "start"
    # A non-datetime bound or non-list names raised AttributeError / TypeError (issue 18).
    with pytest.raises(ValidationError) as caught:
        await events.unique_users(start=T0, end="tomorrow")  # type: ignore[arg-type]
    assert caught.value.field == "end"
    with pytest.raises(ValidationError) as caught:
        await events.unique_users(start=T0, end=end, names=5)  # type: ignore[arg-type]
    assert caught.value.field == "names"


async def test_timeline_pages_newest_first(mongo_stack, open_backends) -> None:
    events = await _loaded(mongo_stack, open_backends)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await events.timeline("u4", limit=2, cursor=cursor)
        seen += [event.event_id for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["u4-063", "u4-062", "u4-061"]
    with pytest.raises(ValidationError) as caught:
        await events.timeline({"$gt": ""})  # type: ignore[arg-type]
    assert caught.value.field == "user_id"
    with pytest.raises(ValidationError):
        await events.timeline("u\x004")
    with pytest.raises(ValidationError) as caught:
        await events.timeline("u4", cursor="garbage")
    assert caught.value.field == "cursor"


@pytest.mark.parametrize("user_id", ["\ud800", "u\udfff", "a\x00b"])
async def test_user_ids_that_bson_cannot_encode_are_refused(
    mongo_stack, open_backends, user_id: str
) -> None:
    """Found by the long fuzz profile: ``export_user("\ud800")`` raised UnicodeEncodeError
    from PyMongo's encoder."""
    events = Events(await open_backends(mongo_stack.settings()))
    with pytest.raises(ValidationError) as caught:
        [doc async for doc in events.export_user(user_id)]
    assert caught.value.field == "user_id"
    for call in (events.delete_user(user_id), events.timeline(user_id)):
        with pytest.raises(ValidationError) as caught:
            await call
        assert caught.value.field == "user_id"


async def test_export_and_delete_user(mongo_stack, open_backends) -> None:
    events = await _loaded(mongo_stack, open_backends)
    exported = [doc async for doc in events.export_user("u1")]
    assert [doc["name"] for doc in exported] == ["view", "cart", "paid"]
    assert "_id" not in exported[0]
    assert await events.delete_user("u1") == 3
    assert [doc async for doc in events.export_user("u1")] == []
    assert (await events.timeline("u2")).events


async def test_pipelines_sent_to_the_server(mongo_stack, open_backends) -> None:
    recorder = CommandRecorder()
    events = Events(await open_backends(mongo_stack.settings(), recorder))
    end = T0 + dt.timedelta(days=1)
    # the substitute cannot group on a compound key; the pipeline is what matters here
    with contextlib.suppress(Exception):
        await events.counts(["view", "$where"], start=T0, end=end, interval="day")
    assert _pipeline(recorder) == [
        {"$match": {"ts": {"$gte": T0, "$lt": end}, "name": {"$in": ["view", "$where"]}}},
        {
            "$group": {
                "_id": {
                    "name": "$name",
                    "bucket": {"$dateTrunc": {"date": "$ts", "unit": "day", "timezone": "UTC"}},
                },
                "count": {"$sum": 1},
            }
        },
        {"$sort": {"_id.bucket": 1, "_id.name": 1}},
    ]
    await events.funnel(["view", "$cart"], start=T0, end=end, window=dt.timedelta(hours=1))
    funnel = _pipeline(recorder)
    walk = funnel[3]["$project"]["depth"]["$let"]["vars"]["progress"]
    step_name = walk["$reduce"]["in"]["$cond"][0]["$and"][1]
    assert step_name == {
        "$eq": [
            "$$this.name",
            {"$arrayElemAt": [{"$literal": ["view", "$cart"]}, "$$value.reached"]},
        ]
    }
    await events.top_events(start=T0, end=end, limit=3)
    assert _pipeline(recorder)[-2:] == [{"$sort": {"count": -1, "_id": 1}}, {"$limit": 3}]
    with pytest.raises(ValidationError):
        await events.counts("view", start=T0, end=end, interval="week")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await events.top_events(start=T0, end=end, limit=0)
    with pytest.raises(ValidationError):
        await events.funnel(["view"], start=T0, end=end, window=dt.timedelta(hours=1))


@pytest.mark.real_mongodb
async def test_counts_funnel_and_top_events_results(mongo_stack, open_backends) -> None:
    events = await _loaded(mongo_stack, open_backends)
    end = T0 + dt.timedelta(hours=3)
    assert await events.counts(["view", "cart"], start=T0, end=end, interval="hour") == [
        IntervalCount("cart", T0, 1),
        IntervalCount("view", T0, 4),
        IntervalCount("cart", T0 + dt.timedelta(hours=1), 2),
        IntervalCount("view", T0 + dt.timedelta(hours=1), 2),
    ]
    assert await events.funnel(
        ["view", "cart", "paid"], start=T0, end=end, window=dt.timedelta(hours=1)
    ) == [
        FunnelStep(1, "view", 4, 1.0),
        FunnelStep(2, "cart", 2, 0.5),
        FunnelStep(3, "paid", 1, 0.25),
    ]
    assert await events.top_events(start=T0, end=end, limit=2) == [
        EventCount("view", 6),
        EventCount("cart", 3),
    ]


async def test_aggregation_cache_in_redis(mongo_stack, open_backends, redis_url) -> None:
    settings = mongo_stack.settings(events={"query_cache_ttl": 60})
    backends = await open_backends(settings)
    events = Events(backends)
    await events.track("view", user_id="first", ts=T0, wait=True)
    end = T0 + dt.timedelta(hours=1)
    assert await events.unique_users(start=T0, end=end) == 1
    await events.track("view", user_id="second", ts=T0, wait=True)
    assert await events.unique_users(start=T0, end=end) == 1  # served from Redis
    client = backends.redis.client("analytics_cache")
    keys = [key async for key in client.scan_iter(match=f"{settings.redis.namespace}:*events*")]
    assert len(keys) == 1 and 0 < await client.ttl(keys[0]) <= 60
    assert await client.get(keys[0]) != b""  # BSON, never pickle
    uncached = Events(await open_backends(mongo_stack.settings()))
    assert await uncached.unique_users(start=T0, end=end) == 2
    await client.delete(*keys)


async def test_cache_outage_falls_back_to_mongodb(mongo_stack, open_backends) -> None:
    from devstack import servers

    settings = mongo_stack.settings(
        events={"query_cache_ttl": 60},
        redis={"url": f"redis://127.0.0.1:{servers.closed_port()}"},
    )
    events = Events(await open_backends(settings))
    await events.track("view", user_id="u", ts=T0, wait=True)
    with capture_logs() as logs:
        assert await events.unique_users(start=T0, end=T0 + MINUTE) == 1
    assert any(log["event"] == "analytics_cache_unavailable" for log in logs)
