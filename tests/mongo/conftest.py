"""Fixtures for the MongoDB events and audit tests.

Every test gets its own collection names, so tests share the session database without
seeing each other's documents. ``recorder`` captures the exact commands PyMongo sends
(command monitoring), which is how behaviour the nx-27017 substitute ignores (validators,
TTL changes, roles) is still checked against what real MongoDB needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings
from nexus_store.connections import Backends
from nexus_store.mongo.client import MongoBackend
from tests.support import CommandRecorder


@pytest.fixture(scope="session", autouse=True)
def _drop_test_roles(real_mongodb: bool, mongo_url: str, mongo_database: str) -> Iterator[None]:
    """Roles outlive their database on a real server: remove the ones these tests made."""
    yield
    if real_mongodb:
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
        try:
            client[mongo_database].command({"dropAllRolesFromDatabase": 1})
        finally:
            client.close()


@pytest.fixture
def recorder() -> CommandRecorder:
    return CommandRecorder()


@pytest.fixture
def mongo_stack(stack: Stack, unique: str) -> Stack:
    """The session's stack with this test's own event and audit collections."""
    return stack.merged(events={"collection": f"ev_{unique}"}, audit={"collection": f"au_{unique}"})


OpenBackends = Callable[..., Awaitable[Backends]]


@pytest.fixture
async def open_backends() -> AsyncIterator[OpenBackends]:
    """``await open_backends(settings, recorder=None)``: Backends closed after the test."""
    opened: list[Backends] = []

    async def build(settings: NexusSettings, recorder: CommandRecorder | None = None) -> Backends:
        backends = Backends(settings)
        listeners = [recorder] if recorder is not None else []
        backends._mongo = MongoBackend(settings.mongo, event_listeners=listeners)
        opened.append(backends)
        return backends

    yield build
    for backends in opened:
        await backends.close()


@pytest.fixture
def nx_process() -> Iterator[servers.NxProcess]:
    """A MongoDB-protocol server this test may stop and restart (nx-27017 on a file)."""
    server = servers.NxProcess().start()
    try:
        yield server
    finally:
        server.cleanup()
