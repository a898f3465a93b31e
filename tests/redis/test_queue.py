"""Reliable queues on a real Redis: at-least-once delivery, redelivery, dead letters."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import ValidationError
from nexus_store.redis.queue import QueueMessage
from tests.support import REPO_ROOT


async def test_enqueue_consume_ack(store: NexusStore, unique: str) -> None:
    queue = store.queue
    ids = [await queue.enqueue(unique, {"n": n}) for n in range(5)]
    ids.append(await queue.put(QueueMessage(unique, "six")))
    first = await queue.consume(unique, "workers", "a", count=4)
    second = await queue.consume(unique, "workers", "b", count=4)
    assert [d.payload for d in first] == [{"n": n} for n in range(4)]
    assert [d.payload for d in second] == [{"n": 4}, "six"]
    assert [d.id for d in first + second] == ids
    assert {d.attempts for d in first + second} == {1}

    stats = await queue.stats(unique)
    assert stats.groups["workers"].pending == 6 and stats.groups["workers"].consumers == 2
    assert await queue.ack(unique, "workers", *ids) == 6
    assert await queue.ack(unique, "workers", *ids) == 0  # twice is harmless
    stats = await queue.stats(unique)
    assert (stats.length, stats.groups["workers"].pending, stats.dead_letters) == (0, 0, 0)
    assert await queue.consume(unique, "workers", "a") == []


async def test_groups_each_get_every_message_when_not_deleting(
    redis_stack: Stack, unique: str
) -> None:
    async with NexusStore(redis_stack.settings(queue={"delete_acked": False})) as store:
        await store.queue.enqueue(unique, "m")
        for group in ("billing", "audit"):
            (delivery,) = await store.queue.consume(unique, group, "x")
            assert delivery.payload == "m"
            assert await store.queue.ack(unique, group, delivery.id) == 1
        assert (await store.queue.stats(unique)).length == 1


async def test_blocking_consume_wakes_on_enqueue(store: NexusStore, unique: str) -> None:
    queue = store.queue
    waiter = asyncio.create_task(queue.consume(unique, "g", "c", block=5))
    await asyncio.sleep(0.1)
    await queue.enqueue(unique, "late")
    (delivery,) = await asyncio.wait_for(waiter, 5)
    assert delivery.payload == "late"
    assert await queue.consume(unique, "g", "c", block=0.1) == []


async def test_unacked_messages_are_redelivered_then_dead_lettered(
    redis_stack: Stack, unique: str
) -> None:
    async with NexusStore(redis_stack.settings(queue={"max_attempts": 2})) as store:
        queue = store.queue
        message_id = await queue.enqueue(unique, {"job": 1})
        (first,) = await queue.consume(unique, "g", "a", visibility_timeout=0.4)
        # Still invisible before the timeout...
        assert await queue.consume(unique, "g", "b", visibility_timeout=0.4) == []
        await asyncio.sleep(0.45)
        (second,) = await queue.consume(unique, "g", "b", visibility_timeout=0.4)
        assert (second.id, second.attempts) == (message_id, 2)
        await asyncio.sleep(0.45)
        # Third delivery would exceed max_attempts=2: it goes to the dead-letter stream.
        assert await queue.consume(unique, "g", "c", visibility_timeout=0.4) == []
        (letter,) = await queue.dead_letters(unique)
        assert (letter.original_id, letter.attempts, letter.group) == (message_id, 3, "g")
        assert letter.payload == {"job": 1}
        stats = await queue.stats(unique)
        assert (stats.length, stats.dead_letters, stats.groups["g"].pending) == (0, 1, 0)
        assert first.id == message_id


@pytest.mark.slow
async def test_a_consumer_killed_mid_message_loses_nothing(
    store: NexusStore, redis_url: str, redis_namespace: str, unique: str
) -> None:
    queue = store.queue
    message_id = await queue.enqueue(unique, {"order": 42})
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.redis._crashing_consumer",
            redis_url,
            redis_namespace,
            unique,
            "g",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 30)
        assert line.strip() == message_id  # the worker holds the message...
    finally:
        worker.send_signal(signal.SIGKILL)  # ...and dies before acking it
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    assert (await queue.stats(unique)).groups["g"].pending == 1

    await asyncio.sleep(0.3)
    (delivery,) = await queue.consume(unique, "g", "survivor", visibility_timeout=0.25)
    assert (delivery.id, delivery.payload, delivery.attempts) == (message_id, {"order": 42}, 2)
    assert await queue.ack(unique, "g", delivery.id) == 1
    assert (await queue.stats(unique)).groups["g"].pending == 0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda q: q.enqueue("", 1), "queue"),
        (lambda q: q.enqueue("a\nb", 1), "queue"),
        (lambda q: q.enqueue("q", {1, 2}), "payload"),
        (lambda q: q.enqueue("q", "x" * (2 * 1024 * 1024)), "payload"),
        (lambda q: q.consume("q", "", "c"), "group"),
        (lambda q: q.consume("q", "g", "c", count=0), "count"),
        (lambda q: q.consume("q", "g", "c", visibility_timeout=0), "visibility_timeout"),
        (lambda q: q.consume("q", "g", "c", visibility_timeout=float("nan")), "visibility_timeout"),
        (lambda q: q.consume("q", "g", "c", block="5"), "block"),
        (lambda q: q.enqueue("\ud800", 1), "queue"),
        (lambda q: q.enqueue("q", {"score": float("nan")}), "payload.score"),
        (lambda q: q.enqueue("q", [float("inf")]), "payload[0]"),
        # XACK would read "*"/"+" as other ids, and None raised a bare NexusStoreError
        (lambda q: q.ack("q", "g", None), "ids[0]"),
        (lambda q: q.ack("q", "g", "1-0", "*"), "ids[1]"),
        (lambda q: q.ack("q", "g", "+"), "ids[0]"),
        (lambda q: q.ack("q", "g", "\ud800"), "ids[0]"),
        (lambda q: q.dead_letters("q", count=-1), "count"),
    ],
)
async def test_bad_input_is_refused(
    store: NexusStore, call: Callable[..., object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await call(store.queue)  # type: ignore[misc]
    assert caught.value.field == field


async def test_blocking_longer_than_the_socket_timeout(redis_stack: Stack, unique: str) -> None:
    async with NexusStore(redis_stack.settings(redis={"socket_timeout": 0.3})) as store:
        started = asyncio.get_running_loop().time()
        assert await store.queue.consume(unique, "g", "c", block=0.8) == []
        assert asyncio.get_running_loop().time() - started >= 0.75
        waiter = asyncio.create_task(store.queue.consume(unique, "g", "c", block=2))
        await asyncio.sleep(0.5)  # past one socket timeout
        await store.queue.enqueue(unique, "finally")
        (delivery,) = await asyncio.wait_for(waiter, 5)
        assert delivery.payload == "finally"
