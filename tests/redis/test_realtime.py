"""Realtime pub/sub on a real Redis: namespaced channels, patterns, JSON messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import ValidationError
from nexus_store.redis.realtime import RealtimeMessage


async def test_publish_reaches_pattern_subscribers(store: NexusStore, unique: str) -> None:
    realtime = store.realtime
    async with realtime.subscribe(f"chat{unique}:*") as messages:
        assert await realtime.publish(f"chat{unique}:lobby", {"text": "hi"}) == 1
        assert await realtime.put(RealtimeMessage(f"chat{unique}:dev", [1, 2])) == 1
        assert await realtime.publish(f"other{unique}", "not for us") == 0
        received = [await asyncio.wait_for(anext(messages), 5) for _ in range(2)]
    assert received == [
        RealtimeMessage(f"chat{unique}:lobby", {"text": "hi"}),
        RealtimeMessage(f"chat{unique}:dev", [1, 2]),
    ]


async def test_channels_are_namespaced(
    redis_stack: Stack, redis_url: str, redis_namespace: str, unique: str
) -> None:
    raw = redis_lib.asyncio.Redis.from_url(redis_url)
    pubsub = raw.pubsub()
    try:
        await pubsub.psubscribe("*")
        await pubsub.get_message(timeout=1)  # the psubscribe confirmation
        async with (
            NexusStore(redis_stack.settings()) as ours,
            NexusStore(redis_stack.settings(redis={"namespace": f"{redis_namespace}x"})) as theirs,
            theirs.realtime.subscribe(f"{unique}") as foreign,
        ):
            assert await ours.realtime.publish(unique, "hello") == 1  # only the raw one
            message = await asyncio.wait_for(
                pubsub.get_message(ignore_subscribe_messages=True, timeout=5), 6
            )
            assert message["channel"] == f"{redis_namespace}:realtime:{unique}".encode()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(foreign), 0.2)
    finally:
        await pubsub.aclose()
        await raw.aclose()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: r.publish("has space", 1), "channel"),
        (lambda r: r.publish("glob*", 1), "channel"),
        (lambda r: r.publish("{tag}", 1), "channel"),
        (lambda r: r.publish("", 1), "channel"),
        (lambda r: r.publish("ok", object()), "message"),
    ],
)
async def test_bad_channels_and_messages_are_refused(
    store: NexusStore, call: Callable[..., object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await call(store.realtime)  # type: ignore[misc]
    assert caught.value.field == field


def test_bad_patterns_are_refused(store: NexusStore) -> None:
    for pattern in ("a b", "x\n*", "a\\*", ""):
        with pytest.raises(ValidationError) as caught:
            store.realtime.subscribe(pattern)
        assert caught.value.field == "pattern"
