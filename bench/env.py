"""Servers and settings for a benchmark run (same discovery as the test stack)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg

from nexus_store import NexusSettings
from tests import _servers


@dataclass
class BenchEnv:
    settings: NexusSettings
    postgres_url: str  # plain libpq URL of the bench database, for raw psycopg
    mongo_url: str
    mongo_database: str
    redis_url: str
    redis_namespace: str


@contextlib.asynccontextmanager
async def bench_env() -> AsyncIterator[BenchEnv]:
    tag = uuid.uuid4().hex[:8]
    with (
        _servers.postgres_server() as pg_server,
        _servers.mongo_server() as (mongo_url, _real),
        _servers.redis_server() as redis_url,
    ):
        database = f"nexus_bench_{tag}"
        admin = pg_server.replace("+psycopg", "")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        postgres_url = admin.rsplit("/", 1)[0] + f"/{database}"
        try:
            settings = NexusSettings.load(
                postgres={"url": postgres_url},
                mongo={"url": mongo_url, "database": database},
                redis={"url": redis_url, "namespace": f"bench{tag}"},
                log={"level": "warning"},
            )
            yield BenchEnv(settings, postgres_url, mongo_url, database, redis_url, f"bench{tag}")
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
