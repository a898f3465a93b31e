"""Entities tests: the session database migrated to head, one repository on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from nexus_store import NexusSettings
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Organization, User
from nexus_store.postgres.repository import EntityRepository
from tests.entities import _replica


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
    bin_path = _replica.bindir()
    if bin_path is None:
        pytest.skip(
            "needs the PostgreSQL server binaries (initdb, pg_basebackup, pg_ctl) and, as "
            "root, a 'postgres' OS user, to start a private primary with a streaming replica"
        )
    with _replica.primary_with_replica(bin_path) as urls:
        yield urls


@pytest.fixture(scope="session")
def repo(backend: PostgresBackend) -> EntityRepository:
    return EntityRepository(backend)


def tag() -> str:
    return uuid.uuid4().hex[:12]


def user_values(**overrides: Any) -> dict[str, Any]:
    name = tag()
    return {
        "email": f"{name}@example.com",
        "username": f"u_{name}",
        "password_hash": "$argon2id$" + "x" * 40,
        **overrides,
    }


@pytest.fixture
async def user(repo: EntityRepository) -> User:
    return await repo.create(User, **user_values())


@pytest.fixture
async def organization(repo: EntityRepository) -> Organization:
    name = tag()
    return await repo.create(Organization, name=f"Org {name}", slug=f"org-{name}")
