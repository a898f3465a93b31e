"""Connection faults: dead pooled connections are retried on reads; unreachable is typed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import text

from devstack import servers
from nexus_store import NexusSettings
from nexus_store.errors import BackendUnavailableError
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository
from tests.support import user_values


@pytest.fixture
async def private(
    migrated: NexusSettings,
) -> AsyncIterator[tuple[PostgresBackend, EntityRepository]]:
    backend = PostgresBackend(migrated.postgres)
    yield backend, EntityRepository(backend)
    await backend.close()


async def _terminate(url: str, pids: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def _kill_pooled_reader(backend: PostgresBackend, url: str) -> None:
    """Kill the idle connection that the next read outside a transaction (psycopg pool)
    will use."""
    pool = await backend.read_pool(0)
    async with pool.connection() as connection:
        pid = connection.info.backend_pid
    await _terminate(url, [pid])


async def _kill_pooled_core_reader(backend: PostgresBackend, url: str) -> None:
    """Kill the idle connection that the next read only SQLAlchemy can run will use."""
    async with backend.autocommit_engine.connect() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await _terminate(url, [pid])


async def _checked_out(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> int:
    """Connections out of ``pool``, once discarded ones have been replaced (bounded wait)."""
    for _ in range(100):
        stats = pool.get_stats()
        if stats["pool_size"] == stats["pool_available"]:
            return 0
        await asyncio.sleep(0.02)
    stats = pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_reads_survive_a_killed_pooled_connection(
    private: tuple[PostgresBackend, EntityRepository], postgres_url: str
) -> None:
    backend, repo = private
    user = await repo.create(User, **user_values())
    assert (await repo.get(User, user.id)).id == user.id

    await _kill_pooled_reader(backend, postgres_url)
    assert (await repo.get(User, user.id)).id == user.id  # driver path retried once
    await _kill_pooled_reader(backend, postgres_url)
    assert [u.id for u in await repo.list(User, {"id": user.id})] == [user.id]
    await _kill_pooled_reader(backend, postgres_url)
    assert await repo.count(User, {"id": user.id}) == 1

    await _kill_pooled_core_reader(backend, postgres_url)  # an IN list: SQLAlchemy's path
    assert [u.id for u in await repo.list(User, {"id__in": [user.id]})] == [user.id]


async def test_unreachable_server_is_backend_unavailable_without_secrets() -> None:
    password = "Ent1ties-Secret"
    port = servers.closed_port()
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
    pool = await backend.read_pool(0)
    assert await _checked_out(pool) == 0
    for _ in range(20):  # the pool still hands out working connections
        assert (await repo.get(User, user.id)).id == user.id


async def test_reads_survive_every_pooled_connection_dying(
    private: tuple[PostgresBackend, EntityRepository], postgres_url: str
) -> None:
    """What a server restart looks like to the pool: all idle connections are dead."""
    backend, repo = private
    user = await repo.create(User, **user_values())
    pool = await backend.read_pool(0)
    connections = [await pool.getconn() for _ in range(4)]
    pids = [c.info.backend_pid for c in connections]
    for connection in connections:
        await pool.putconn(connection)
    assert pool.get_stats()["pool_available"] == 4  # every idle connection is about to die
    await _terminate(postgres_url, pids)
    for _ in range(3):
        assert (await repo.get(User, user.id)).id == user.id
    async with pool.connection() as fresh_connection:
        assert fresh_connection.info.backend_pid not in pids


async def test_read_pool_opens_on_first_lookup_and_closes_with_the_backend(
    migrated: NexusSettings,
) -> None:
    backend = PostgresBackend(migrated.postgres)  # no event loop work at construction
    repo = EntityRepository(backend)
    try:
        assert backend._read_pools == {}
        user = await repo.create(User, **user_values())
        assert backend._read_pools == {}  # writes and health never open it
        assert (await repo.get(User, user.id)).id == user.id
        pool = await backend.read_pool(0)
        async with pool.connection() as connection:
            assert connection.autocommit
            assert (await (await connection.execute("SHOW application_name")).fetchone()) == (
                "nexus-store",
            )
    finally:
        await backend.close()
    assert pool.closed
    assert backend._read_pools == {}


async def test_a_backend_holds_at_most_three_pools_of_connections_to_the_primary(
    migrated: NexusSettings,
) -> None:
    """What docs/postgres.md states: 3 x (pool_size + max_overflow), and no more."""
    settings = NexusSettings.load(
        postgres={
            "url": migrated.postgres.url,
            "pool_size": 1,
            "max_overflow": 1,
            "pool_timeout": 0.2,
        }
    )
    backend = PostgresBackend(settings.postgres)
    pids: set[int] = set()
    try:
        async with contextlib.AsyncExitStack() as held:
            for engine in (backend.engine, backend.autocommit_engine):
                for _ in range(backend.pool_capacity):
                    connection = await held.enter_async_context(engine.connect())
                    query = text("SELECT pg_backend_pid()")
                    pids.add((await connection.execute(query)).scalar_one())
                with pytest.raises(sqlalchemy.exc.TimeoutError):
                    await held.enter_async_context(engine.connect())
            pool = await backend.read_pool(0)
            for _ in range(backend.pool_capacity):
                driver = await held.enter_async_context(pool.connection())
                pids.add(driver.info.backend_pid)
            with pytest.raises(PoolTimeout):
                await pool.getconn()
            assert len(pids) == 3 * backend.pool_capacity == 6
    finally:
        await backend.close()
