"""The Event model and everything track() refuses before anything is buffered."""

from __future__ import annotations

import datetime as dt
import enum
from types import MappingProxyType
from typing import Any

import bson
import pytest

from nexus_store.errors import ValidationError
from nexus_store.mongo.events.model import Event
from nexus_store.mongo.events.service import Events
from nexus_store.mongo.schema import ensure_schema

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


REFUSED = [
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
    ({"ts": "2026-01-01T12:00:00"}, "ts"),  # naive, as text
    ({"user_id": 7}, "user_id"),
    ({"user_id": None, "anonymous_id": ""}, "anonymous_id"),
    ({"session_id": "x" * 129}, "session_id"),
    ({"event_id": ""}, "event_id"),
    ({"event_id": "id\x00"}, "event_id"),
    ({"name": b"bytes"}, "name"),
]


@pytest.mark.parametrize(("fields", "field"), [*REFUSED, ({"bogus": 1}, "bogus")])
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


async def test_refused_input_is_never_stored(mongo_stack, open_backends) -> None:
    backends = await open_backends(mongo_stack.settings())
    events = Events(backends)
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


async def test_size_limit(mongo_stack, open_backends) -> None:
    backends = await open_backends(mongo_stack.settings(events={"max_event_bytes": 1024}))
    events = Events(backends)
    with pytest.raises(ValidationError) as caught:
        await events.track("big", user_id="u1", properties={"blob": "x" * 1100})
    assert caught.value.field == "event"
    assert "max_event_bytes=1024" in caught.value.problem
    await events.track("small", user_id="u1", properties={"blob": "x" * 800}, wait=True)
    await events.aclose()
    names = await backends.mongo.db[backends.settings.events.collection].distinct("name")
    assert names == ["small"]


async def test_track_refuses_what_event_refuses(mongo_stack, open_backends) -> None:
    """track() applies the Event rules without building one: same refusals, same fields."""
    backends = await open_backends(mongo_stack.settings())
    events = Events(backends)
    for fields, field in REFUSED:
        with pytest.raises(ValidationError) as caught:
            await events.track(**{"name": "e", "user_id": "u1", **fields}, wait=True)
        assert caught.value.field == field, fields
    assert events.stats().queued == 0
    await events.aclose()
    assert await backends.mongo.db[backends.settings.events.collection].count_documents({}) == 0


async def test_track_stores_what_event_would(mongo_stack, open_backends) -> None:
    backends = await open_backends(mongo_stack.settings())
    events = Events(backends)
    paris = dt.timezone(dt.timedelta(hours=1))
    given = dt.datetime(2026, 1, 1, 13, 0, 0, 123999, paris)
    fields: dict[str, Any] = {
        "anonymous_id": "anon",
        "session_id": "s1",
        "properties": {"when": given, "n": 1, "tags": ("a", "b")},
        "context": MappingProxyType({"ip": "203.0.113.9"}),
        "ts": given,
    }
    before = Event(name="later", user_id="u").event_id
    first = await events.track("given", **fields, wait=True)
    second = await events.track("defaults", user_id="u", wait=True)
    assert before < first < second and len(first) == len(second) == 28  # time-ordered ids
    collection = backends.mongo.db[backends.settings.events.collection]
    stored = {doc["name"]: doc for doc in await collection.find({}, {"_id": 0}).to_list()}
    model = Event(name="given", event_id=first, **fields)  # what put() would store
    assert stored["given"] == bson.decode(model.to_bson(), bson.CodecOptions(tz_aware=True))
    assert stored["given"]["properties"]["when"] == model.ts
    assert stored["given"]["ts"] == dt.datetime(2026, 1, 1, 12, 0, 0, 123000, UTC)
    defaults = stored["defaults"]
    assert defaults["event_id"] == second
    assert (defaults["properties"], defaults["context"]) == ({}, {})
    assert "anonymous_id" not in defaults and "session_id" not in defaults
    age = dt.datetime.now(UTC) - defaults["ts"]
    assert dt.timedelta(0) <= age < dt.timedelta(seconds=30)
    assert defaults["ts"].microsecond % 1000 == 0
    await events.aclose()


async def test_track_with_the_same_event_id_stores_once(mongo_stack, open_backends) -> None:
    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    await ensure_schema(backends.mongo, settings)
    events = Events(backends)
    for _ in range(2):
        assert await events.track("paid", user_id="u", event_id="order-1", wait=True) == "order-1"
    assert events.stats().written == 2
    collection = backends.mongo.db[settings.events.collection]
    assert await collection.count_documents({"event_id": "order-1"}) == 1
    await events.aclose()


async def test_put_checks_the_event_again(mongo_stack, open_backends) -> None:
    """An Event is frozen but its dicts are not: what put() buffers is screened again."""
    backends = await open_backends(mongo_stack.settings())
    events = Events(backends)
    event = Event(name="e", user_id="u", properties={"fine": 1})
    event.properties["$where"] = "1"
    with pytest.raises(ValidationError) as caught:
        await events.put(event)
    assert caught.value.field == "properties.$where"
    assert events.stats().queued == 0
    await events.aclose()


def test_text_subclasses_are_stored_as_text() -> None:
    class Plan(enum.StrEnum):
        PRO = "pro"

    event = Event(name=Plan.PRO, user_id="u")
    assert type(event.name) is str and event.name == "pro"
    assert bson.decode(event.to_bson())["name"] == "pro"
