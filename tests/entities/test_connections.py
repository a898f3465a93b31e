"""Connection faults: dead pooled connections are retried on reads; unreachable is typed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import text

from nexus_store import NexusSettings
from nexus_store.errors import BackendUnavailableError
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository
from tests import _servers
from tests.entities.conftest import user_values


@pytest.fixture
async def private(
    migrated: NexusSettings,
) -> AsyncIterator[tuple[PostgresBackend, EntityRepository]]:
    backend = PostgresBackend(migrated.postgres)
    yield backend, EntityRepository(backend)
    await backend.close()


async def _kill_pooled_reader(backend: PostgresBackend, url: str) -> None:
    async with backend.autocommit_engine.connect() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_reads_survive_a_killed_pooled_connection(
    private: tuple[PostgresBackend, EntityRepository], postgres_url: str
) -> None:
    backend, repo = private
    user = await repo.create(User, **user_values())
    assert (await repo.get(User, user.id)).id == user.id

    await _kill_pooled_reader(backend, postgres_url)
    assert (await repo.get(User, user.id)).id == user.id  # fast path retried once

    await _kill_pooled_reader(backend, postgres_url)
    assert [u.id for u in await repo.list(User, {"id": user.id})] == [user.id]  # Core path


async def test_unreachable_server_is_backend_unavailable_without_secrets() -> None:
    password = "Ent1ties-Secret"
    port = _servers.free_port()
    settings = NexusSettings.load(
        postgres={
            "url": f"postgresql://app:{password}@127.0.0.1:{port}/nexus",
            "connect_timeout": 1.0,
        }
    )
    backend = PostgresBackend(settings.postgres)
    repo = EntityRepository(backend)
    try:
        for call in (
            repo.get_or_none(User, "00000000-0000-0000-0000-000000000001"),
            repo.list(User),
            repo.create(User, **user_values()),
            repo.bulk_create(User, [user_values()]),
        ):
            with pytest.raises(BackendUnavailableError) as caught:
                await call
            assert caught.value.backend == "postgres"
            assert password not in str(caught.value)
    finally:
        await backend.close()


async def test_cancelled_reads_leak_no_connection(
    private: tuple[PostgresBackend, EntityRepository],
) -> None:
    backend, repo = private
    user = await repo.create(User, **user_values())
    for delay in range(40):  # cancel at different points: checkout, send, fetch
        task = asyncio.create_task(repo.get(User, user.id))
        for _ in range(delay % 8):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert backend.autocommit_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    for _ in range(20):  # the pool still hands out working connections
        assert (await repo.get(User, user.id)).id == user.id


async def test_reads_survive_every_pooled_connection_dying(
    private: tuple[PostgresBackend, EntityRepository], postgres_url: str
) -> None:
    """What a server restart looks like to the pool: all idle connections are dead."""
    backend, repo = private
    user = await repo.create(User, **user_values())
    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(backend.autocommit_engine.connect()) for _ in range(4)
        ]
        pids = [
            (await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in connections
        ]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for _ in range(3):
        assert (await repo.get(User, user.id)).id == user.id
