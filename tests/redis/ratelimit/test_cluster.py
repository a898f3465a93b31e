"""The limiter on a real 3-master Redis Cluster: the area becomes a key prefix, each check's
state is one hash-tagged key (one slot), and reset deletes across strategies in one slot."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

import pytest
import redis.cluster

from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import RateLimitExceeded
from nexus_store.redis.names import STRATEGY_NAMES

pytestmark = pytest.mark.redis_server


@pytest.fixture(scope="module")
def settings(redis_cluster: str) -> NexusSettings:
    # redis-py's asyncio RedisCluster raises MaxConnectionsError instead of waiting when more
    # tasks than max_connections talk to one node at once: give the 50 clients room.
    cluster = Stack.located(redis_url=redis_cluster, redis_namespace="rlc")
    return cluster.settings(redis={"cluster": True, "max_connections": 64})


async def test_checks_and_reset_on_a_cluster(store: NexusStore, redis_cluster: str) -> None:
    limiter = store.limiter
    names = [f"user-{index}-{uuid.uuid4().hex[:6]}" for index in range(12)]
    for strategy in STRATEGY_NAMES:
        for name in names:
            assert (await limiter.hit(name, "2/hour;10/day", strategy=strategy)).allowed
            assert (await limiter.hit(name, "2/hour;10/day", strategy=strategy)).remaining == 0
            refused = await limiter.hit(name, "2/hour;10/day", strategy=strategy)
            assert (refused.allowed, refused.limit.text) == (False, "2/hour")

    raw = redis.cluster.RedisCluster.from_url(redis_cluster)
    try:
        keys = {key.decode() for key in raw.scan_iter(match="rlc:ratelimit:*", target_nodes="all")}
        slots = {raw.keyslot(key) for key in keys}
        assert all(key.startswith("rlc:ratelimit:") for key in keys)
        assert len(keys) == 3 * len(names)
        assert len(slots) > 3  # spread over the cluster, not forced into one slot
        # A reset is one DEL of three keys that share the tag, hence the slot.
        await limiter.reset(names[0])
        assert not {key for key in keys if names[0] in key} & {
            key.decode() for key in raw.scan_iter(match="rlc:ratelimit:*", target_nodes="all")
        }
    finally:
        raw.close()
    assert (await limiter.hit(names[0], "2/hour;10/day")).remaining == 1


async def test_exact_under_concurrency_on_a_cluster(store: NexusStore) -> None:
    key = uuid.uuid4().hex
    passed: list[int] = []

    @store.limiter.limit("100/hour", key=lambda: key)
    async def work() -> None:
        passed.append(1)

    async def client() -> None:
        for _ in range(10):
            with contextlib.suppress(RateLimitExceeded):
                await work()

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(50))), timeout=60)
    assert len(passed) == 100


def test_sync_path_on_a_cluster(store: NexusStore) -> None:
    key = uuid.uuid4().hex
    passed: list[int] = []

    @store.limiter.limit("20/hour", key=lambda: key)
    def work() -> None:
        passed.append(1)

    def client() -> None:
        for _ in range(10):
            with contextlib.suppress(RateLimitExceeded):
                work()

    threads = [threading.Thread(target=client) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passed) == 20
    store.limiter.reset_sync(key)
    assert store.limiter.peek_sync(key, "20/hour").remaining == 20
