"""Connection pools: one bounded pool per logical DB that waits rather than failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import redis as redis_lib
from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import ConfigurationError
from nexus_store.redis.cache import CacheEntry
from nexus_store.redis.client import RedisBackend
from nexus_store.redis.queue import QueueMessage
from nexus_store.redis.realtime import RealtimeMessage
from nexus_store.redis.sessions import NewSession
from tests.support import REPO_ROOT


async def test_pool_is_bounded_and_waits_for_a_free_connection(
    redis_stack: Stack, unique: str
) -> None:
    backend = RedisBackend(redis_stack.settings(redis={"max_connections": 2}).redis)
    client = backend.client("cache")
    try:
        started = time.monotonic()
        # Each BLPOP holds its connection for 0.2 s; 6 of them on 2 connections take 3 turns.
        results = await asyncio.gather(
            *(client.blpop([f"{unique}-empty"], timeout=0.2) for _ in range(6))
        )
        elapsed = time.monotonic() - started
        assert results == [None] * 6  # none failed with "Too many connections"
        assert elapsed >= 0.55
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await backend.close()


async def test_each_area_has_its_own_pool_and_database(redis_stack: Stack, unique: str) -> None:
    backend = RedisBackend(redis_stack.settings().redis)
    try:
        await backend.client("cache").set(f"{backend.keyspace('cache').prefix}{unique}", "1")
        # Same key name, other area: other DB, so not visible.
        assert (
            await backend.client("queue").get(f"{backend.keyspace('queue').prefix}{unique}") is None
        )
        assert (
            backend.client("cache").connection_pool is not backend.client("queue").connection_pool
        )
        assert (
            await backend.client("cache").delete(f"{backend.keyspace('cache').prefix}{unique}") == 1
        )
        assert backend.sync_client("sessions").ping()
    finally:
        await backend.close()


@pytest.mark.redis_server
async def test_cache_areas_can_live_on_their_own_server(
    redis_stack: Stack,
    redis_process: servers.RedisProcess,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
) -> None:
    settings = redis_stack.settings(redis={"cache_url": redis_process.url})
    async with NexusStore(settings) as store:
        await store.cache.set(unique, "on the cache server", ttl=30)
        token = await store.sessions.create(unique, {})
        backend = store.backends.redis
        assert backend.location("cache") == "cache server db 1"
        assert backend.location("analytics_cache") == "cache server db 5"
        assert backend.location("sessions") == "db 0"
    cache_server = redis_lib.Redis.from_url(redis_process.url, db=1)
    try:
        assert cache_server.exists(f"{redis_namespace}:c:{unique}") == 1
    finally:
        cache_server.close()
    assert raw_redis(1).exists(f"{redis_namespace}:c:{unique}") == 0  # not on the main one
    assert token and list(raw_redis(0).scan_iter(match=f"{redis_namespace}:user:*:{unique}"))


def _documented_acl() -> list[str]:
    """The ACL SETUSER rules recommended in docs/redis.md, for user ``nexus``."""
    docs = REPO_ROOT / "docs" / "redis.md"
    (line,) = [ln for ln in docs.read_text().splitlines() if ln.startswith("ACL SETUSER")]
    return line.split()[2:]


@pytest.mark.redis_server
async def test_the_documented_least_privilege_acl_is_enough(
    redis_process: servers.RedisProcess,
) -> None:
    admin = redis_lib.Redis.from_url(redis_process.url)
    rules = [rule.replace("PASSWORD", "pw-123456") for rule in _documented_acl()]
    admin.acl_setuser("nexus", reset=True)
    admin.execute_command("ACL", "SETUSER", *rules)
    url = f"redis://nexus:pw-123456@127.0.0.1:{redis_process.port}"
    settings = NexusSettings.load(redis={"url": url, "namespace": "nexus"}, log={"level": "error"})
    try:
        async with NexusStore(settings) as store:
            token = await store.sessions.create("u", {})
            assert (await store.sessions.get(token)).user_id == "u"
            assert len(await store.sessions.list_for_user("u")) == 1
            assert await store.sessions.revoke_all("u") == 1
            await store.cache.set("k", 1, tags=["t"])
            assert await store.cache.get_or_set("j", lambda: 2) == 2
            assert await store.cache.invalidate_tag("t") == 1
            await store.queue.enqueue("q", 1)
            (delivery,) = await store.queue.consume("q", "g", "c")
            assert await store.queue.ack("q", "g", delivery.id) == 1
            async with store.realtime.subscribe("x*") as messages:
                assert await store.realtime.publish("xy", 1) == 1
                assert (await asyncio.wait_for(anext(messages), 5)).message == 1

        # Without a command nexus-store needs (TIME), the error names the setting to fix.
        admin.execute_command("ACL", "SETUSER", "nexus", "-time")
        async with NexusStore(settings) as store:
            with pytest.raises(ConfigurationError) as caught:
                await store.sessions.create("u", {})
            assert caught.value.setting == "redis.url"
            assert "pw-123456" not in str(caught.value)
    finally:
        admin.close()


async def test_store_put_routes_each_redis_record_to_its_area(
    store: NexusStore, unique: str
) -> None:
    token = await store.put(NewSession(f"u{unique}", {"via": "put"}))
    assert (await store.sessions.get(token)).data == {"via": "put"}
    assert await store.put(CacheEntry(unique, {"via": "put"}, ttl=30, tags=["put"])) is None
    assert await store.cache.get(unique) == {"via": "put"}
    message_id = await store.put(QueueMessage(unique, {"via": "put"}))
    (delivery,) = await store.queue.consume(unique, "g", "c")
    assert delivery.id == message_id
    async with store.realtime.subscribe(unique) as messages:
        assert await store.put(RealtimeMessage(unique, "hi")) == 1
        assert (await asyncio.wait_for(anext(messages), 5)).message == "hi"
