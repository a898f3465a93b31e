"""Entities tests: the session database migrated to head, one repository on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devstack import servers
from nexus_store import NexusSettings
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Organization, User
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


@pytest.fixture(scope="session")
async def migrated(settings: NexusSettings) -> NexusSettings:
    await migrate.upgrade(settings)
    return settings


@pytest.fixture(scope="session")
async def backend(migrated: NexusSettings) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(migrated.postgres)
    yield backend
    await backend.close()


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[tuple[str, str]]:
    """(primary URL, streaming replica URL) of a private PostgreSQL cluster on loopback."""
    bin_path = servers.postgres_bindir()
    if bin_path is None:
        pytest.skip(
            "needs the PostgreSQL server binaries (initdb, pg_basebackup, pg_ctl) and, as "
            "root, a 'postgres' OS user, to start a private primary with a streaming replica"
        )
    with servers.postgres_primary_with_replica(bin_path) as urls:
        yield urls


@pytest.fixture(scope="session")
def repo(backend: PostgresBackend) -> EntityRepository:
    return EntityRepository(backend)


@pytest.fixture
async def user(repo: EntityRepository) -> User:
    return await repo.create(User, **user_values())


@pytest.fixture
async def organization(repo: EntityRepository) -> Organization:
    name = tag()
    return await repo.create(Organization, name=f"Org {name}", slug=f"org-{name}")
