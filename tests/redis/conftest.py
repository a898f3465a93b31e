"""Fixtures for the Redis areas: stores that only talk to Redis, and private servers."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import redis as redis_lib
from nexus_store import NexusSettings, NexusStore
from tests import _servers

FAST_FAILURE = {
    "socket_timeout": 0.5,
    "connect_timeout": 0.5,
    "retries": 1,
    "retry_backoff_cap": 0.05,
    "pool_timeout": 0.5,
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in extra.items():
        merged[name] = {**merged.get(name, {}), **value} if isinstance(value, dict) else value
    return merged


@pytest.fixture(scope="session")
def kv_settings(redis_url: str, redis_namespace: str) -> Callable[..., NexusSettings]:
    """Settings with only Redis configured (the session's namespace), plus overrides."""

    def build(**overrides: Any) -> NexusSettings:
        base = {
            "redis": {"url": redis_url, "namespace": redis_namespace},
            "log": {"level": "warning", "format": "console"},
        }
        return NexusSettings.load(**_merge(base, overrides))

    return build


@pytest.fixture
async def kv_store(kv_settings: Callable[..., NexusSettings]) -> AsyncIterator[NexusStore]:
    async with NexusStore(kv_settings()) as store:
        yield store


@pytest.fixture
def unique() -> str:
    """A fresh name for keys, users, queues and channels of one test."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def raw_redis(redis_url: str) -> Callable[[int], redis_lib.Redis]:
    """Plain redis-py clients per DB, to look at what the SDK really stored."""
    clients: list[redis_lib.Redis] = []

    def connect(db: int) -> redis_lib.Redis:
        client = redis_lib.Redis.from_url(redis_url, db=db)
        clients.append(client)
        return client

    yield connect  # type: ignore[misc]
    for client in clients:
        client.close()


@pytest.fixture
def secured_redis() -> Iterator[_servers.RedisProcess]:
    """A private redis-server with a password, which tests stop and start again."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary (apt-get install redis-server)")
    server = _servers.RedisProcess("--requirepass", "s3cret-Pa55").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fault_settings(secured_redis: _servers.RedisProcess) -> Callable[..., NexusSettings]:
    def build(**overrides: Any) -> NexusSettings:
        url = f"redis://:s3cret-Pa55@127.0.0.1:{secured_redis.port}"
        base = {
            "redis": {"url": url, "namespace": "faults", **FAST_FAILURE},
            "log": {"level": "warning", "format": "console"},
        }
        return NexusSettings.load(**_merge(base, overrides))

    return build
