"""Fixtures for the MongoDB events and audit tests.

Every test gets its own collection names, so tests share the session database without
seeing each other's documents. ``recorder`` captures the exact commands PyMongo sends
(command monitoring), which is how behaviour the nx-27017 substitute ignores (validators,
TTL changes, roles) is still checked against what real MongoDB needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from nexus_store import NexusSettings
from nexus_store.connections import Backends
from nexus_store.mongo.client import MongoBackend
from tests import _servers


class CommandRecorder(monitoring.CommandListener):
    """Keeps every command PyMongo starts, with its name and body."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # Drop what the driver adds to every command ($db, lsid, $clusterTime...).
        body = {
            key: value
            for key, value in event.command.items()
            if not key.startswith("$") and key != "lsid"
        }
        self.commands.append((event.command_name, body))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def named(self, name: str) -> list[dict[str, Any]]:
        return [body for command, body in self.commands if command == name]

    def clear(self) -> None:
        self.commands.clear()


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
def tag() -> str:
    return uuid.uuid4().hex[:10]


MakeSettings = Callable[..., NexusSettings]


@pytest.fixture
def make_settings(settings_kwargs: dict[str, Any], tag: str) -> MakeSettings:
    """Settings on the session's MongoDB with this test's own collections, plus overrides."""

    def build(
        *,
        mongo: dict[str, Any] | None = None,
        events: dict[str, Any] | None = None,
        audit: dict[str, Any] | None = None,
        redis: dict[str, Any] | None = None,
    ) -> NexusSettings:
        return NexusSettings.load(
            **{
                **settings_kwargs,
                "mongo": {**settings_kwargs["mongo"], **(mongo or {})},
                "redis": {**settings_kwargs["redis"], **(redis or {})},
            },
            events={"collection": f"ev_{tag}", **(events or {})},
            audit={"collection": f"au_{tag}", **(audit or {})},
        )

    return build


OpenBackends = Callable[..., Awaitable[Backends]]


@pytest.fixture
async def open_backends() -> AsyncIterator[OpenBackends]:
    """``await open_backends(settings, recorder=None)``: Backends closed after the test."""
    opened: list[Backends] = []

    async def build(settings: NexusSettings, recorder: CommandRecorder | None = None) -> Backends:
        backends = Backends(settings)
        listeners = [recorder] if recorder is not None else []
        backends._created["mongo"] = MongoBackend(settings.mongo, event_listeners=listeners)
        opened.append(backends)
        return backends

    yield build
    for backends in opened:
        await backends.close()


@pytest.fixture
def nx_process() -> Iterator[_servers.NxProcess]:
    """A MongoDB-protocol server this test may stop and restart (nx-27017 on a file)."""
    server = _servers.NxProcess().start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def stalled_server() -> AsyncIterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
