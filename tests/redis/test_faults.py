"""Redis stopped mid-test: sessions fail loudly, the cache degrades as configured, and both
recover when the server is back, in the same process."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import BackendUnavailableError

pytestmark = pytest.mark.redis_server
PASSWORD = "s3cret-Pa55"


async def test_sessions_and_queues_raise_unavailable_and_recover(
    secured_redis: servers.RedisProcess, secured_stack: Stack
) -> None:
    async with NexusStore(secured_stack.settings()) as store:
        token = await store.sessions.create("ada", {"role": "admin"})
        assert (await store.sessions.get(token)).data == {"role": "admin"}

        secured_redis.stop()
        for call in (
            lambda: store.sessions.get(token),
            lambda: store.sessions.create("ada", {}),
            lambda: store.sessions.revoke_all("ada"),
            lambda: store.queue.enqueue("jobs", {"n": 1}),  # never a silent drop
            lambda: store.realtime.publish("news", "x"),
        ):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as caught:
                await call()
            assert time.monotonic() - started < 3  # fails fast, no long stall
            assert caught.value.backend == "redis"
            assert str(caught.value).startswith("redis: ")
            assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)

        secured_redis.start()  # same port, empty data (no persistence in this server)
        fresh = await store.sessions.create("ada", {"back": True})
        assert (await store.sessions.get(fresh)).data == {"back": True}
        assert await store.sessions.get_or_none(token) is None
        assert await store.queue.enqueue("jobs", {"n": 2})


async def test_cache_misses_while_down_counts_logs_and_recovers(
    secured_redis: servers.RedisProcess,
    secured_stack: Stack,
) -> None:
    async with NexusStore(secured_stack.settings(cache={"strict": False})) as store:
        cache = store.cache
        await cache.set("k", "v", ttl=60)
        assert await cache.get("k") == "v"

        secured_redis.stop()
        loads = []

        async def loader() -> str:
            loads.append(1)
            return "computed"

        with structlog.testing.capture_logs() as logged:
            assert await cache.get("k") is None
            assert await cache.get_many(["k", "j"]) == {}
            assert await cache.set("k", "w") is False
            assert await cache.invalidate_tag("t") == 0
            assert await cache.get_or_set("k", loader, ttl=60) == "computed"  # loader runs
        assert loads == [1]
        assert cache.stats().errors == 5
        events = [entry["event"] for entry in logged]
        assert events.count("cache_unavailable") == 1  # one warning per outage, not per call
        assert PASSWORD not in repr(logged)

        secured_redis.start()
        assert await cache.set("k", "back", ttl=60) is True
        assert await cache.get("k") == "back"
        # Recovery re-arms the warning: the next outage is reported again.
        secured_redis.stop()
        with structlog.testing.capture_logs() as logged:
            assert await cache.get("k") is None
        assert [entry["event"] for entry in logged] == ["cache_unavailable"]


async def test_strict_cache_raises_while_down_and_recovers(
    secured_redis: servers.RedisProcess, secured_stack: Stack
) -> None:
    async with NexusStore(secured_stack.settings(cache={"strict": True})) as store:
        cache = store.cache
        await cache.set("k", "v", ttl=60)
        secured_redis.stop()
        for call in (
            lambda: cache.get("k"),
            lambda: cache.set("k", "w"),
            lambda: cache.get_or_set("k", lambda: "x", ttl=60),
        ):
            with pytest.raises(BackendUnavailableError) as caught:
                await call()
            assert caught.value.backend == "redis"
            assert PASSWORD not in str(caught.value)
        secured_redis.start()
        assert await cache.get_or_set("k", lambda: "loaded", ttl=60) == "loaded"
        assert await cache.get("k") == "loaded"


async def test_a_full_server_refuses_writes_loudly_but_the_cache_only_skips(
    redis_process: servers.RedisProcess,
) -> None:
    settings = NexusSettings.load(
        redis={"url": redis_process.url, "namespace": "full"}, log={"level": "error"}
    )
    async with NexusStore(settings) as store:
        await store.cache.set("k", "before", ttl=60)
        token = await store.sessions.create("ada", {})
        admin = store.backends.redis.client("sessions")
        # What noeviction (redis/redis.conf) does at maxmemory: every write is refused.
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", 1)
        try:
            assert await store.cache.set("k", "after") is False  # skipped, counted
            assert await store.cache.get("k") == "before"  # reads keep working
            assert store.cache.stats().errors == 1
            with pytest.raises(BackendUnavailableError, match="OutOfMemory"):
                await store.sessions.create("ada", {})
            with pytest.raises(BackendUnavailableError, match="OutOfMemory"):
                await store.queue.enqueue("jobs", {"n": 1})
        finally:
            await admin.config_set("maxmemory", 0)
        assert (await store.sessions.get(token)).user_id == "ada"


async def test_a_subscription_reports_the_outage_and_resumes_after_it(
    secured_redis: servers.RedisProcess, secured_stack: Stack
) -> None:
    async with (
        NexusStore(secured_stack.settings()) as store,
        store.realtime.subscribe("news:*") as messages,
    ):
        assert await store.realtime.publish("news:a", 1) == 1
        assert (await asyncio.wait_for(anext(messages), 5)).message == 1
        secured_redis.stop()
        with pytest.raises(BackendUnavailableError) as caught:
            await asyncio.wait_for(anext(messages), 5)
        assert PASSWORD not in str(caught.value)
        secured_redis.start()
        # Iterating again reconnects and re-subscribes the pattern.
        receive = asyncio.create_task(anext(messages))
        for _ in range(50):
            if await store.realtime.publish("news:b", 2) == 1:
                break
            await asyncio.sleep(0.05)
        assert (await asyncio.wait_for(receive, 5)).message == 2
