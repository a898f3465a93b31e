"""Read routing against a real streaming replica on loopback.

Replay on the replica is paused so that primary and replica visibly differ: a plain read
then proves it went to the replica, ``fresh=True`` and transactions prove they did not.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from nexus_store import NexusSettings
from nexus_store.errors import NotFoundError
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository
from tests.support import user_values

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def replicated_backend(private_cluster: tuple[str, str]) -> AsyncIterator[PostgresBackend]:
    primary, replica = private_cluster
    settings = NexusSettings.load(postgres={"url": primary, "read_urls": [replica]})
    await migrate.upgrade(settings)
    await _caught_up(primary, replica)
    backend = PostgresBackend(settings.postgres)
    yield backend
    await backend.close()


@pytest.fixture(scope="module")
def replicated(replicated_backend: PostgresBackend) -> EntityRepository:
    return EntityRepository(replicated_backend)


async def _replica_sql(replica: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(replica, autocommit=True) as conn:
        await conn.execute(sql)


async def _caught_up(primary: str, replica: str) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    async with await psycopg.AsyncConnection.connect(primary, autocommit=True) as conn:
        target = (await (await conn.execute("SELECT pg_current_wal_lsn()")).fetchone())[0]  # type: ignore[index]
    async with await psycopg.AsyncConnection.connect(replica, autocommit=True) as conn:
        for _ in range(400):  # up to ~20 s
            cursor = await conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))
            if (await cursor.fetchone())[0]:  # type: ignore[index]
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the replica never caught up")


async def _until_replicated(repo: EntityRepository, user_id: uuid.UUID) -> None:
    for _ in range(200):  # up to ~10 s
        if await repo.get_or_none(User, user_id) is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica never caught up")


async def test_reads_go_to_the_replica_unless_fresh_or_in_a_transaction(
    replicated: EntityRepository,
    replicated_backend: PostgresBackend,
    private_cluster: tuple[str, str],
) -> None:
    repo = replicated
    _, replica = private_cluster
    first = await repo.create(User, **user_values())
    await _until_replicated(repo, first.id)

    await _replica_sql(replica, "SELECT pg_wal_replay_pause()")
    try:
        second = await repo.create(User, **user_values())
        # The replica has not replayed the insert: plain reads there do not see it.
        assert await repo.get_or_none(User, second.id) is None
        with pytest.raises(NotFoundError):
            await repo.get(User, second.id)
        assert not await repo.exists(User, {"id": second.id})
        assert (await repo.list(User, {"id": second.id})).items == []
        # Lookups by key run on psycopg pools: the plain one is the replica's.
        replica_pool = await replicated_backend.read_pool(1)
        async with replica_pool.connection() as connection:
            in_recovery = await (await connection.execute("SELECT pg_is_in_recovery()")).fetchone()
        assert in_recovery == (True,)
        # fresh=True reads the primary.
        assert (await repo.get(User, second.id, fresh=True)).id == second.id
        assert await repo.count(User, {"id": second.id}, fresh=True) == 1
        # So does everything inside a transaction.
        async with repo.transaction():
            assert (await repo.get(User, second.id)).id == second.id
            assert [u.id for u in await repo.list(User, {"id": second.id})] == [second.id]
        # Writes always go to the primary (the replica is read-only).
        updated = await repo.update(User, first.id, full_name="on primary")
        assert updated.version == 2
    finally:
        await _replica_sql(replica, "SELECT pg_wal_replay_resume()")
    await _until_replicated(repo, second.id)
