"""Cross-store fixtures: each test module gets its own PostgreSQL database (migrated to head),
MongoDB database (schema applied, so the audit chain starts empty) and Redis namespace.

The outbox relay and the audit chain are global to a database, so sharing the session's
databases with other test areas would make "every change exactly once" unassertable.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient

import redis as redis_lib
from nexus_store import NexusSettings, NexusStore


def _admin_url(postgres_url: str) -> str:
    return postgres_url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture(scope="module")
def crossstore_urls(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    database = f"nexus_xs_{tag}"
    admin = _admin_url(postgres_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    urls = {
        "postgres": postgres_url.rsplit("/", 1)[0] + f"/{database}",
        "mongo": mongo_url,
        "mongo_database": database,
        "redis": redis_url,
        "namespace": f"xs{tag}",
    }
    try:
        yield urls
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
        try:
            client.drop_database(database)
        finally:
            client.close()
        for db in range(16):
            redis_client = redis_lib.Redis.from_url(redis_url, db=db)
            try:
                keys = list(redis_client.scan_iter(match=f"{urls['namespace']}:*", count=1000))
                if keys:
                    redis_client.delete(*keys)
            finally:
                redis_client.close()


def settings_for(urls: dict[str, str], **overrides: Any) -> NexusSettings:
    values: dict[str, Any] = {
        "postgres": {"url": urls["postgres"]},
        "mongo": {"url": urls["mongo"], "database": urls["mongo_database"]},
        "redis": {"url": urls["redis"], "namespace": urls["namespace"]},
        "log": {"level": "warning", "format": "console"},
        # Users are audited by the per-table setting; other models only with audit=True.
        "outbox": {"audited_tables": ["users"]},
    }
    for section, given in overrides.items():
        values[section] = {**values.get(section, {}), **given}
    return NexusSettings.load(**values)


def environment_for(urls: dict[str, str]) -> dict[str, str]:
    """NEXUS_* variables pointing a subprocess at this module's stores."""
    return {
        "NEXUS_POSTGRES_URL": urls["postgres"],
        "NEXUS_MONGO_URL": urls["mongo"],
        "NEXUS_MONGO__DATABASE": urls["mongo_database"],
        "NEXUS_REDIS_URL": urls["redis"],
        "NEXUS_REDIS__NAMESPACE": urls["namespace"],
        "NEXUS_LOG__LEVEL": "warning",
        "NEXUS_LOG__FORMAT": "json",
        "NEXUS_OUTBOX__AUDITED_TABLES": '["users"]',
    }


@pytest.fixture(scope="module")
async def crossstore_settings(crossstore_urls: dict[str, str]) -> NexusSettings:
    from nexus_store.mongo.schema import ensure_schema
    from nexus_store.postgres import migrate

    settings = settings_for(crossstore_urls)
    await migrate.upgrade(settings)
    async with NexusStore(settings) as store:
        await ensure_schema(store.backends.mongo, settings)
    return settings


@pytest.fixture
async def xstore(crossstore_settings: NexusSettings) -> AsyncIterator[NexusStore]:
    async with NexusStore(crossstore_settings) as opened:
        yield opened
