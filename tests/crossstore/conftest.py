"""Cross-store fixtures: each test module gets its own PostgreSQL database (migrated to head),
MongoDB database (schema applied, so the audit chain starts empty) and Redis namespace.

The outbox relay and the audit chain are global to a database, so sharing the session's
databases with other test areas would make "every change exactly once" unassertable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusSettings, NexusStore


@pytest.fixture(scope="module")
def crossstore_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    with scratch_stack(
        postgres_url, mongo_url, redis_url, database=f"nexus_xs_{tag}", namespace=f"xs{tag}"
    ) as scratch:
        # Users are audited by the per-table setting; other models only with audit=True.
        yield scratch.merged(outbox={"audited_tables": ["users"]})


@pytest.fixture(scope="module")
def crossstore_env(crossstore_stack: Stack) -> dict[str, str]:
    """NEXUS_* variables pointing a subprocess at this module's stores, logging JSON."""
    return crossstore_stack.environment(log={"level": "warning", "format": "json"})


@pytest.fixture(scope="module")
async def settings(crossstore_stack: Stack) -> NexusSettings:
    """This module's stores, migrated and with the MongoDB schema applied."""
    from nexus_store.mongo.schema import ensure_schema
    from nexus_store.postgres import migrate

    settings = crossstore_stack.settings()
    await migrate.upgrade(settings)
    async with NexusStore(settings) as store:
        await ensure_schema(store.backends.mongo, settings)
    return settings
