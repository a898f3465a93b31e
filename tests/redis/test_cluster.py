"""The same API on a real 3-master Redis Cluster: areas become prefixes, scripts stay in
one slot thanks to hash tags."""

from __future__ import annotations

import asyncio

import pytest

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import NotFoundError

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]


@pytest.fixture(scope="module")
def settings(redis_cluster: str) -> NexusSettings:
    cluster = Stack.located(redis_url=redis_cluster, redis_namespace="nx")
    return cluster.settings(redis={"cluster": True})


def _cluster_keys(url: str) -> list[str]:
    client = redis_lib.RedisCluster.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter(match="nx:*", target_nodes="all"))
    finally:
        client.close()


async def test_sessions_on_a_cluster(store: NexusStore, redis_cluster: str) -> None:
    sessions = store.sessions
    users = [f"user-{n}" for n in range(8)]  # spread over many slots
    tokens = {user: [await sessions.create(user, {"u": user}) for _ in range(3)] for user in users}
    for user, owned in tokens.items():
        assert (await sessions.get(owned[0])).data == {"u": user}
        assert len(await sessions.list_for_user(user)) == 3
        assert await sessions.revoke(owned[0]) is True
        assert await sessions.revoke_all(user) == 2
        with pytest.raises(NotFoundError):
            await sessions.get(owned[1])
    keys = _cluster_keys(redis_cluster)
    assert not [key for key in keys if key.startswith("nx:sessions:")]


async def test_cache_on_a_cluster(store: NexusStore, redis_cluster: str) -> None:
    cache = store.cache
    values = {f"k{n}": n for n in range(30)}  # keys in many slots, one tag
    assert await cache.set_many(values, ttl=30, tags=["all"])
    await cache.set("single", "s", ttl=30, tags=["all", "single"])
    assert await cache.get_many([*values, "single", "nope"]) == {**values, "single": "s"}
    assert all(
        key.startswith("nx:cache:") for key in _cluster_keys(redis_cluster) if ":cache:" in key
    )
    assert await cache.invalidate_tag("all") == 31
    assert await cache.get_many(list(values)) == {}

    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "loaded"

    results = await asyncio.gather(*(cache.get_or_set("cold", loader, ttl=30) for _ in range(20)))
    assert set(results) == {"loaded"} and calls == 1
    assert await cache.delete("cold", *values) == 1
    assert cache.stats().errors == 0


async def test_queue_and_realtime_on_a_cluster(store: NexusStore) -> None:
    queue = store.queue
    for name in ("orders", "emails", "a b"):
        message_id = await queue.enqueue(name, {"q": name})
        (delivery,) = await queue.consume(name, "g", "c", visibility_timeout=0.1)
        assert delivery.id == message_id
        await asyncio.sleep(0.15)
        (again,) = await queue.consume(name, "g", "other", visibility_timeout=0.1)
        assert again.attempts == 2
        assert await queue.ack(name, "g", again.id) == 1

    async with store.realtime.subscribe("news:*") as messages:
        assert await store.realtime.publish("news:today", {"n": 1}) >= 1
        message = await asyncio.wait_for(anext(messages), 5)
    assert (message.channel, message.message) == ("news:today", {"n": 1})
