"""The buffered writer: batching, draining, idempotency, outages and a full buffer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from devstack.servers import NxProcess, silent_port
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import BackendUnavailableError, ValidationError
from nexus_store.mongo.events.model import Event
from nexus_store.mongo.events.service import Events
from nexus_store.mongo.schema import ensure_schema
from tests.support import CommandRecorder


async def _stored(backends: Any) -> list[dict[str, Any]]:
    collection = backends.mongo.db[backends.settings.events.collection]
    return await collection.find({}, projection={"_id": 0}).to_list()


async def _wait_until(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_track_flush_writes_unordered_batches(mongo_stack, open_backends) -> None:
    recorder = CommandRecorder()
    settings = mongo_stack.settings(events={"flush_at": 40, "flush_interval": 30})
    backends = await open_backends(settings, recorder)
    await ensure_schema(backends.mongo, settings)
    events = Events(backends)
    tracked = [
        await events.track("view", user_id=f"u{i % 3}", properties={"i": i}) for i in range(100)
    ]
    await events.flush()
    stored = await _stored(backends)
    assert sorted(doc["event_id"] for doc in stored) == sorted(tracked)
    inserts = recorder.named("insert")
    assert [len(body["documents"]) for body in inserts] == [40, 40, 20]
    assert all(body["ordered"] is False for body in inserts)
    assert events.stats().written == 100
    assert events.stats().queued == 0
    await events.aclose()


async def test_flush_at_and_interval_trigger_without_flush(mongo_stack, open_backends) -> None:
    settings = mongo_stack.settings(events={"flush_at": 10, "flush_interval": 0.2})
    backends = await open_backends(settings)
    events = Events(backends)
    for i in range(10):  # a full batch goes out at once
        await events.track("a", user_id="u", properties={"i": i})
    await _wait_until(lambda: _count(backends, 10))
    await events.track("b", user_id="u")  # a lone event goes out after flush_interval
    started = time.monotonic()
    await _wait_until(lambda: _count(backends, 11))
    assert time.monotonic() - started >= 0.1
    await events.aclose()


async def _count(backends: Any, expected: int) -> bool:
    collection = backends.mongo.db[backends.settings.events.collection]
    return await collection.count_documents({}) == expected


async def test_wait_returns_once_stored(mongo_stack, open_backends) -> None:
    backends = await open_backends(mongo_stack.settings(events={"flush_interval": 30}))
    events = Events(backends)
    event_id = await events.track("paid", user_id="u1", properties={"total": 9.5}, wait=True)
    assert [doc["event_id"] for doc in await _stored(backends)] == [event_id]
    await events.aclose()


async def test_resent_event_is_stored_once(mongo_stack, open_backends) -> None:
    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    await ensure_schema(backends.mongo, settings)
    events = Events(backends)
    event = Event(name="signup", user_id="u1", properties={"plan": "pro"})
    for _ in range(3):
        await events.put(event)
        await events.flush()
    await events.put(Event(name="other", user_id="u1"))
    await events.put(event)  # a duplicate inside a batch with a new event
    await events.flush()
    stored = await _stored(backends)
    assert sorted(doc["name"] for doc in stored) == ["other", "signup"]
    stats = events.stats()
    assert (stats.written, stats.rejected, stats.dropped) == (5, 0, 0)
    await events.aclose()


async def test_closing_the_store_drains_the_buffer(mongo_stack) -> None:
    settings = mongo_stack.settings(events={"flush_at": 1000, "flush_interval": 30})
    store = NexusStore(settings)
    ids = [await store.events.track("view", user_id="u", properties={"i": i}) for i in range(250)]
    assert store.events.stats().queued == 250
    await store.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo.url.get_secret_value()
    )
    try:
        collection = client[settings.mongo.database][settings.events.collection]
        assert sorted(await collection.distinct("event_id")) == sorted(ids)
    finally:
        await client.close()


async def test_outage_and_recovery_lose_nothing(mongo_stack, nx_process: NxProcess) -> None:
    settings = mongo_stack.settings(
        mongo={
            "url": nx_process.url,
            "server_selection_timeout": 0.3,
            "connect_timeout": 0.3,
            "socket_timeout": 1.0,
        },
        events={
            "flush_at": 50,
            "flush_interval": 0.05,
            "retry_initial_backoff": 0.05,
            "retry_max_backoff": 0.2,
        },
    )
    async with NexusStore(settings) as store:
        await ensure_schema(store.backends.mongo, settings)
        events = store.events
        before = [await events.track("a", user_id="u", properties={"i": i}) for i in range(120)]
        await events.flush()
        nx_process.stop()
        with capture_logs() as logs:
            during = [await events.track("b", user_id="u", properties={"i": i}) for i in range(300)]
            await _wait_until(lambda: _retried(events), seconds=10)
            assert events.stats().queued == 300
            assert events.stats().last_error is not None
            nx_process.start()
            await asyncio.wait_for(events.flush(), 30)
        assert any(log["event"] == "event_batch_retry" for log in logs)
        collection = store.backends.mongo.db[settings.events.collection]
        stored = await collection.find({}, projection={"event_id": 1}).to_list()
        stored_ids = [doc["event_id"] for doc in stored]
        assert len(stored_ids) == len(set(stored_ids)) == 420  # every event, exactly once
        assert set(stored_ids) == set(before) | set(during)
        stats = events.stats()
        assert (stats.queued, stats.dropped, stats.written) == (0, 0, 420)


async def _retried(events: Events) -> bool:
    return events.stats().retried >= 2


def _stalled_settings(mongo_stack: Any, port: int, **events: Any) -> NexusSettings:
    return mongo_stack.settings(
        mongo={
            "url": f"mongodb://127.0.0.1:{port}",
            "server_selection_timeout": 0.2,
            "connect_timeout": 0.2,
            "socket_timeout": 0.2,
        },
        events={
            "flush_at": 10,
            "flush_interval": 0.01,
            "retry_initial_backoff": 0.01,
            "retry_max_backoff": 0.05,
            "close_timeout": 0.3,
            **events,
        },
    )


async def test_full_buffer_drops_with_count_and_warning(mongo_stack) -> None:
    with silent_port() as port:
        settings = _stalled_settings(mongo_stack, port, max_queue_size=50, on_full="drop")
        store = NexusStore(settings)
        with capture_logs() as logs:
            for i in range(80):
                await store.events.track("x", user_id="u", properties={"i": i})
            stats = store.events.stats()
            assert (stats.queued, stats.dropped) == (50, 30)
            assert (
                next(log for log in logs if log["event"] == "event_dropped")["dropped_total"] == 1
            )
            await store.close()  # MongoDB never answers: the 50 are abandoned, counted, logged
        stats = store.events.stats()
        assert (stats.queued, stats.dropped, stats.written) == (0, 80, 0)
        assert any(
            log["event"] == "events_abandoned_at_close" and log["count"] == 50 for log in logs
        )


async def test_full_buffer_blocks_track_when_configured(mongo_stack) -> None:
    with silent_port() as port:
        settings = _stalled_settings(mongo_stack, port, max_queue_size=10, on_full="block")
        store = NexusStore(settings)
        for i in range(10):
            await store.events.track("x", user_id="u", properties={"i": i})
        blocked = asyncio.ensure_future(store.events.track("x", user_id="u"))
        await asyncio.sleep(0.3)
        assert not blocked.done()  # backpressure, not a drop
        assert store.events.stats().dropped == 0
        with capture_logs():
            await store.close()
        with pytest.raises(Exception) as caught:
            await blocked
        assert "closed" in str(caught.value)


async def test_wait_true_fails_clearly_when_abandoned(mongo_stack) -> None:
    with silent_port() as port:
        store = NexusStore(_stalled_settings(mongo_stack, port))
        waiting = asyncio.ensure_future(store.events.track("x", user_id="u", wait=True))
        await asyncio.sleep(0.2)
        with capture_logs():
            await store.close()
        with pytest.raises(BackendUnavailableError):
            await waiting


async def test_other_write_errors_are_rejected_not_counted_as_written(
    mongo_stack, open_backends
) -> None:
    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    await ensure_schema(backends.mongo, settings)
    collection = backends.mongo.db[settings.events.collection]
    await collection.create_index("session_id", unique=True)  # a constraint events can break
    events = Events(backends)
    await events.track("a", user_id="u", session_id="s1", wait=True)
    with capture_logs() as logs, pytest.raises(ValidationError) as caught:
        await events.track("b", user_id="u", session_id="s1", wait=True)
    assert caught.value.field == "event"
    stats = events.stats()
    assert (stats.written, stats.rejected, stats.queued) == (1, 1, 0)
    assert stats.last_error is not None
    assert any(log["event"] == "event_rejected" for log in logs)
    assert await collection.count_documents({}) == 1
    await events.aclose()


async def test_close_honours_close_timeout_whatever_the_driver_waits(mongo_stack) -> None:
    from devstack.servers import closed_port

    settings = mongo_stack.settings(
        mongo={
            "url": f"mongodb://127.0.0.1:{closed_port()}",
            "server_selection_timeout": 30,  # the driver alone would hold close() this long
            "connect_timeout": 30,
        },
        events={"close_timeout": 0.5, "flush_interval": 0.01},
    )
    store = NexusStore(settings)
    waiting = asyncio.ensure_future(store.events.track("x", user_id="u", wait=True))
    for i in range(5):
        await store.events.track("x", user_id="u", properties={"i": i})
    await asyncio.sleep(0.1)  # the batch is in flight, inside server selection
    started = time.monotonic()
    with capture_logs() as logs:
        await store.close()
    assert time.monotonic() - started < 0.5 + 1.0  # the bound, with room for a loaded machine
    with pytest.raises(BackendUnavailableError):
        await waiting
    stats = store.events.stats()
    assert (stats.queued, stats.dropped, stats.written) == (0, 6, 0)
    assert any(log["event"] == "events_abandoned_at_close" and log["count"] == 6 for log in logs)


async def test_drop_log_carries_the_running_total(mongo_stack) -> None:
    with silent_port() as port:
        settings = _stalled_settings(mongo_stack, port, max_queue_size=10, on_full="drop")
        store = NexusStore(settings)
        with capture_logs() as logs:
            for _ in range(5010):  # far more drops than one log line a second shows
                await store.events.track("x", user_id="u")
            lines = [log for log in logs if log["event"] == "event_dropped"]
            assert len(lines) == 1 and lines[0]["dropped_total"] == 1  # the first, at once
            await asyncio.sleep(1.2)  # the rate limit's second passes: the burst is logged
            lines = [log for log in logs if log["event"] == "event_dropped"]
            assert [line["dropped_total"] for line in lines] == [1, 5000]
            assert lines[-1]["dropped"] == 4999
            await store.events.track("x", user_id="u")  # a later drop: logged by close() at last
            await store.close()
        lines = [log for log in logs if log["event"] == "event_dropped"]
        assert sum(line["dropped"] for line in lines) == 5001  # every buffer-full drop
        # the total also counts the 10 abandoned at close
        assert lines[-1]["dropped_total"] == store.events.stats().dropped == 5001 + 10


async def test_validator_rejection_names_the_rule_with_values_redacted(
    mongo_stack, open_backends
) -> None:
    """Error 121 as MongoDB 5+ returns it (the manual's "Schema Validation" example shape);
    the substitute never validates, so the server's reply is injected at the driver call."""
    from pymongo.errors import BulkWriteError

    from nexus_store.mongo.events.writer import EventWriter

    secret = "4111-1111-1111-1111"
    rejection = {
        "index": 0,
        "code": 121,
        "errmsg": "Document failed validation",
        "errInfo": {
            "failingDocumentId": "65f0c0ffee0000000000beef",
            "details": {
                "operatorName": "$jsonSchema",
                "schemaRulesNotSatisfied": [
                    {
                        "operatorName": "properties",
                        "propertiesNotSatisfied": [
                            {
                                "propertyName": "name",
                                "details": [
                                    {
                                        "operatorName": "maxLength",
                                        "specifiedAs": {"maxLength": 200},
                                        "reason": "specified string length was not satisfied",
                                        "consideredValue": secret,
                                    }
                                ],
                            }
                        ],
                    },
                    {
                        "operatorName": "required",
                        "specifiedAs": {"required": ["event_id", "name"]},
                        "missingProperties": ["event_id"],
                    },
                ],
            },
        },
    }

    class RejectingCollection:  # fault injection: the server's reply to insert_many
        name = "events"

        async def insert_many(self, documents: Any, ordered: bool) -> None:
            raise BulkWriteError(
                {
                    "writeErrors": [rejection],
                    "nInserted": len(documents) - 1,
                    "writeConcernErrors": [],
                }
            )

    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    writer = EventWriter(RejectingCollection(), settings.events, backends.mongo)  # type: ignore[arg-type]
    with capture_logs() as logs, pytest.raises(ValidationError) as caught:
        await writer.track("x", user_id="u", properties={"card": secret}, wait=True)
    error = caught.value
    assert error.field == "event.name"
    assert "maxLength" in str(error) and "specified string length was not satisfied" in str(error)
    assert "missingProperties" in str(error) and "event_id" in str(error)
    rejected = next(log for log in logs if log["event"] == "event_rejected")
    assert rejected["code"] == 121
    rule = rejected["details"]["schemaRulesNotSatisfied"][0]["propertiesNotSatisfied"][0]
    assert rule["details"][0]["consideredValue"] == "<redacted>"
    assert rejected["details"]["schemaRulesNotSatisfied"][1]["missingProperties"] == ["event_id"]
    for text in (str(error), repr(error.__cause__), str(rejected)):
        assert secret not in text and "65f0c0ffee" not in text
    assert writer.stats().rejected == 1
    await writer.aclose()


@pytest.mark.real_mongodb
async def test_real_server_rejection_carries_the_failed_rule(mongo_stack, open_backends) -> None:
    """A document the validator refuses (bypassing the client's own checks) comes back as
    error 121 with errInfo.details (MongoDB 5+), redacted into the ValidationError."""
    import bson

    settings = mongo_stack.settings()
    backends = await open_backends(settings)
    await ensure_schema(backends.mongo, settings)
    events = Events(backends)
    secret = "n" * 300  # over the validator's maxLength of 200 for name
    document = {"event_id": "e1", "name": secret, "ts": 1, "user_id": "u", "properties": {}}
    document["context"] = {}
    with capture_logs() as logs, pytest.raises(ValidationError) as caught:
        await events.track.__self__._enqueue(bson.encode(document), "x", wait=True)  # type: ignore[attr-defined]
    assert caught.value.field.startswith("event.")
    assert secret not in str(caught.value)
    rejected = next(log for log in logs if log["event"] == "event_rejected")
    assert rejected["code"] == 121 and rejected["details"] is not None
    assert secret not in str(rejected)
    await events.aclose()
