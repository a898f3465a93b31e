"""Fixtures for the Redis areas: stores that only talk to Redis, and private servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import redis as redis_lib
from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings
from tests.support import FAST_FAILURE, require_redis_server


@pytest.fixture(scope="session")
def redis_stack(redis_url: str, redis_namespace: str) -> Stack:
    """Only Redis configured (the session's namespace)."""
    return Stack.located(redis_url=redis_url, redis_namespace=redis_namespace)


@pytest.fixture(scope="session")
def settings(redis_stack: Stack) -> NexusSettings:
    return redis_stack.settings()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[Callable[[int], redis_lib.Redis]]:
    """Plain redis-py clients per DB, to look at what the SDK really stored."""
    clients: list[redis_lib.Redis] = []

    def connect(db: int) -> redis_lib.Redis:
        client = redis_lib.Redis.from_url(redis_url, db=db)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def secured_redis() -> Iterator[servers.RedisProcess]:
    """A private redis-server with a password, which tests stop and start again."""
    require_redis_server()
    server = servers.RedisProcess("--requirepass", "s3cret-Pa55").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def secured_stack(secured_redis: servers.RedisProcess) -> Stack:
    """Only the password-protected private Redis, failing fast once it is stopped."""
    url = f"redis://:s3cret-Pa55@127.0.0.1:{secured_redis.port}"
    return Stack.located(redis_url=url, redis_namespace="faults").merged(redis=FAST_FAILURE)
