"""A private redis-server stopped mid-test: the limiter follows ``ratelimit.fail_mode``, logs
the outage once (not per call), counts what it decided alone, and recovers when the server
comes back, in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import redis as redis_lib
from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import BackendUnavailableError, RateLimitExceeded
from tests.support import FAST_FAILURE

pytestmark = pytest.mark.redis_server
RECHECK = 0.3


def _store(server: servers.RedisProcess, fail_mode: str) -> NexusStore:
    stack = Stack.located(redis_url=server.url, redis_namespace="faults")
    ratelimit = {"fail_mode": fail_mode, "recheck_interval": RECHECK}
    return NexusStore(stack.settings(redis=FAST_FAILURE, ratelimit=ratelimit))


@contextlib.contextmanager
def _captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every event from info up, whatever level the session configured."""
    previous = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=previous)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def _wait_until_recovered(store: NexusStore, key: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await store.limiter.peek(key, "5/hour")).source == "redis":
            return
        await asyncio.sleep(RECHECK / 3)
    raise AssertionError("the limiter did not go back to Redis")


@pytest.mark.parametrize("fail_mode", ["fail_open", "fail_closed", "local"])
async def test_fail_modes_during_an_outage_and_recovery(
    redis_process: servers.RedisProcess, fail_mode: str
) -> None:
    key = uuid.uuid4().hex
    async with _store(redis_process, fail_mode) as store:
        limiter = store.limiter
        assert (await limiter.hit(key, "5/hour")).source == "redis"

        redis_process.stop()
        with _captured_logs() as logs:
            started = time.monotonic()
            results = [await limiter.hit(key, "5/hour") for _ in range(8)]
            assert time.monotonic() - started < 3  # decided fast, not a stall per call
        assert {result.source for result in results} == {fail_mode}
        allowed = [result.allowed for result in results]
        if fail_mode == "fail_open":
            assert all(allowed)
        elif fail_mode == "fail_closed":
            assert not any(allowed)
            assert results[0].retry_after == pytest.approx(RECHECK)
            # One rule everywhere: an outage is never a rate-limit refusal, never a 429.
            assert results[0].outage
            with pytest.raises(BackendUnavailableError) as caught:
                raise results[0].exceeded()
            assert isinstance(caught.value.__cause__, BackendUnavailableError)
            headers = results[0].headers()
            assert "RateLimit" not in headers and headers["Retry-After"] == "1"
            assert headers["RateLimit-Policy"] == '"5/3600s";q=5;w=3600'
            with pytest.raises(BackendUnavailableError) as caught:
                await limiter.check(key, "5/hour")
            assert caught.value.backend == "redis"
            assert "fail_closed" in str(caught.value)
        else:  # a real limit, counted in this process alone
            assert allowed == [True] * 5 + [False] * 3
            assert results[5].retry_after > 0
            with pytest.raises(RateLimitExceeded):
                await limiter.check(key, "5/hour")
        # Logged once for the whole outage, however many calls it refused or allowed.
        assert len(_events(logs, "ratelimit_backend_unavailable")) == 1
        assert _events(logs, "ratelimit_backend_unavailable")[0]["fail_mode"] == fail_mode
        stats = limiter.stats()
        assert stats["down"] is True
        assert stats["outages"] == 1
        assert stats["backend_errors"][fail_mode] >= 8
        assert sum(stats["backend_errors"].values()) == stats["backend_errors"][fail_mode]

        redis_process.start()  # same port, empty server: the script must be loaded again
        with _captured_logs() as logs:
            await _wait_until_recovered(store, key)
            after = await limiter.hit(key, "5/hour")
        assert (after.source, after.allowed, after.remaining) == ("redis", True, 4)
        assert len(_events(logs, "ratelimit_backend_recovered")) == 1
        assert limiter.stats()["down"] is False


def test_sync_decorator_fails_closed_then_recovers(
    redis_process: servers.RedisProcess,
) -> None:
    key = uuid.uuid4().hex
    store = _store(redis_process, "fail_closed")
    try:

        @store.limiter.limit("2/hour", key=lambda: key)
        def work() -> str:
            return "ran"

        assert work() == "ran"
        redis_process.stop()
        for _ in range(3):
            with pytest.raises(BackendUnavailableError):
                work()
        redis_process.start()
        time.sleep(RECHECK + 0.05)
        assert work() == "ran"  # the fresh server counts from zero
        assert work() == "ran"
        with pytest.raises(RateLimitExceeded):
            work()
        stats = store.limiter.stats()
        assert stats["backend_errors"]["fail_closed"] == 3
        assert (stats["allowed"], stats["refused"], stats["down"]) == (3, 4, False)
    finally:
        asyncio.run(store.close())


async def test_unreachable_from_the_start_follows_the_fail_mode() -> None:
    closed = Stack.located(
        redis_url=f"redis://127.0.0.1:{servers.closed_port()}", redis_namespace="faults"
    )
    settings = closed.settings(redis=FAST_FAILURE, ratelimit={"fail_mode": "local"})
    async with NexusStore(settings) as store:
        first = await store.limiter.hit("k", "1/hour")
        second = await store.limiter.hit("k", "1/hour")
    assert (first.source, first.allowed, second.allowed) == ("local", True, False)


async def test_flushed_scripts_are_loaded_again_without_an_outage(
    redis_process: servers.RedisProcess,
) -> None:
    """SCRIPT FLUSH (what a restarted or new server looks like to EVALSHA): the next check
    gets NOSCRIPT, loads the script and is decided by Redis, counted once, sync and async."""
    key = uuid.uuid4().hex
    async with _store(redis_process, "fail_closed") as store:
        limiter = store.limiter
        assert (await limiter.hit(key, "5/hour")).remaining == 4
        assert limiter.hit_sync(key, "5/hour").remaining == 3
        flusher = redis_lib.Redis.from_url(redis_process.url)
        try:
            for blocking, remaining in ((False, 2), (True, 1)):
                flusher.script_flush()
                result = (
                    limiter.hit_sync(key, "5/hour")
                    if blocking
                    else await limiter.hit(key, "5/hour")
                )
                assert (result.source, result.allowed, result.remaining) == (
                    "redis",
                    True,
                    remaining,
                )
        finally:
            flusher.close()
        assert limiter.stats()["outages"] == 0
