"""The Event model and everything track() refuses before anything is buffered."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest

from nexus_store.errors import ValidationError
from nexus_store.mongo.events.model import Event
from nexus_store.mongo.events.writer import EventStore

UTC = dt.UTC


def test_defaults_and_utc_milliseconds() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    event = Event(name="signup", user_id="u1", ts=dt.datetime(2026, 1, 1, 13, 0, 0, 123456, paris))
    assert event.ts == dt.datetime(2026, 1, 1, 12, 0, 0, 123000, UTC)
    assert event.ts.tzinfo is UTC
    assert len(event.event_id) == 28
    later = Event(name="signup", user_id="u1")
    assert later.event_id > event.event_id  # time-ordered ids
    assert event.to_document() == {
        "event_id": event.event_id,
        "name": "signup",
        "ts": event.ts,
        "user_id": "u1",
        "properties": {},
        "context": {},
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"properties": {"$where": "sleep(1000)"}}, "properties.$where"),
        ({"properties": {"a": {"$gt": 1}}}, "properties.a.$gt"),
        ({"properties": {"a.b": 1}}, "properties.a.b"),
        ({"properties": {"list": [{"ok": 1}, {"$set": 2}]}}, "properties.list.1.$set"),
        ({"properties": {"a\x00b": 1}}, "properties.a\x00b"),
        ({"properties": {1: "x"}}, "properties"),
        ({"properties": {"big": 2**64}}, "properties.big"),
        ({"properties": {"big": 2**63}}, "properties.big"),  # fits orjson, not BSON
        ({"context": {"page": {"a": [{"$x": 1}]}}}, "context.page.a.0.$x"),
        ({"properties": {"set": {1, 2}}}, "properties.set"),
        ({"properties": {"when": dt.datetime(2026, 1, 1)}}, "properties.when"),
        ({"properties": ["not", "a", "mapping"]}, "properties"),
        ({"context": {"$ip": "1.2.3.4"}}, "context.$ip"),
        ({"ts": dt.datetime(2026, 1, 1, 12, 0)}, "ts"),
        ({"user_id": "u\x001"}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_input_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Event(**{"name": "e", "user_id": "u1", **fields})
    assert caught.value.field == field


def test_values_bson_can_hold_are_accepted() -> None:
    """NUL inside text and NaN are plain BSON values, not syntax: only keys are restricted."""
    event = Event(
        name="e",
        user_id="u",
        properties={
            "text": "a\x00b",
            "nan": float("nan"),
            "when": dt.datetime(2026, 1, 1, tzinfo=UTC),
        },
    )
    assert event.properties["text"] == "a\x00b"
    assert bson.decode(event.to_bson())["properties"]["text"] == "a\x00b"


def test_anonymous_only_is_enough() -> None:
    assert Event(name="view", anonymous_id="anon-1").user_id is None


async def test_refused_input_is_never_stored(make_settings, open_backends) -> None:
    backends = await open_backends(make_settings())
    events = EventStore(backends)
    with pytest.raises(ValidationError) as caught:
        await events.track("hack", user_id="u1", properties={"$where": "1"}, wait=True)
    assert caught.value.field == "properties.$where"
    with pytest.raises(ValidationError):
        await events.track("hack", user_id="u1", ts=dt.datetime(2026, 1, 1), wait=True)
    await events.track("fine", user_id="u1", wait=True)
    await events.aclose()
    stored = await backends.mongo.db[backends.settings.events.collection].find().to_list()
    assert [doc["name"] for doc in stored] == ["fine"]
    assert events.stats().queued == 0


async def test_size_limit(make_settings, open_backends) -> None:
    backends = await open_backends(make_settings(events={"max_event_bytes": 1024}))
    events = EventStore(backends)
    with pytest.raises(ValidationError) as caught:
        await events.track("big", user_id="u1", properties={"blob": "x" * 1100})
    assert caught.value.field == "event"
    assert "max_event_bytes=1024" in caught.value.problem
    await events.track("small", user_id="u1", properties={"blob": "x" * 800}, wait=True)
    await events.aclose()
    names = await backends.mongo.db[backends.settings.events.collection].distinct("name")
    assert names == ["small"]
