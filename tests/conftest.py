"""The shared test stack: real, isolated backends for every test session.

- PostgreSQL: a fresh database ``nexus_test_<hex>`` per session, dropped afterwards.
- MongoDB: a fresh database per session on a real server (NEXUS_MONGO_URL, testcontainers) or
  on the nx-27017 substitute; tests marked ``real_mongodb`` skip on the substitute.
- Redis: a unique key namespace per session; its keys are deleted from every area afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient

import redis as redis_lib
from nexus_store import NexusSettings, NexusStore
from tests import _servers

SESSION_TAG = uuid.uuid4().hex[:10]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("redis_server") and shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary (apt-get install redis-server)")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on a real PostgreSQL server."""
    with _servers.postgres_server() as server_url:
        database = f"nexus_test_{SESSION_TAG}"
        admin = psycopg.conninfo.conninfo_to_dict(server_url.replace("+psycopg", ""))
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        try:
            yield server_url.replace("+psycopg", "").rsplit("/", 1)[0] + f"/{database}"
        finally:
            with psycopg.connect(**admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[tuple[str, bool]]:
    with _servers.mongo_server() as found:
        yield found


@pytest.fixture(scope="session")
def mongo_url(mongo_server: tuple[str, bool]) -> str:
    return mongo_server[0]


@pytest.fixture(scope="session")
def real_mongodb(mongo_server: tuple[str, bool]) -> bool:
    return mongo_server[1]


@pytest.fixture(scope="session")
def mongo_database(mongo_url: str) -> Iterator[str]:
    name = f"nexus_test_{SESSION_TAG}"
    yield name
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _skip_without_real_mongodb(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("real_mongodb") and not request.getfixturevalue(
        "real_mongodb"
    ):
        pytest.skip(
            "needs a real MongoDB server (set NEXUS_MONGO_URL); "
            "running on the nx-27017 substitute, which does not enforce this"
        )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _servers.redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix no other test session uses; its keys are removed from DBs 0-15 afterwards."""
    namespace = f"t{SESSION_TAG}"
    yield namespace
    for db in range(16):
        client = redis_lib.Redis.from_url(redis_url, db=db)
        try:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()


@pytest.fixture(scope="session")
def settings_kwargs(
    postgres_url: str, mongo_url: str, mongo_database: str, redis_url: str, redis_namespace: str
) -> dict[str, Any]:
    """Keyword arguments for ``NexusSettings.load`` pointing at the session's backends."""
    return {
        "postgres": {"url": postgres_url},
        "mongo": {"url": mongo_url, "database": mongo_database},
        "redis": {"url": redis_url, "namespace": redis_namespace},
        "log": {"level": "warning", "format": "console"},
    }


@pytest.fixture(scope="session")
def settings(settings_kwargs: dict[str, Any]) -> NexusSettings:
    return NexusSettings.load(**settings_kwargs)


@pytest.fixture
async def store(settings: NexusSettings) -> AsyncIterator[NexusStore]:
    async with NexusStore(settings) as opened:
        yield opened


@pytest.fixture
def redis_process() -> Iterator[_servers.RedisProcess]:
    """A private, real redis-server on a free port that the test may stop and restart."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary (apt-get install redis-server)")
    server = _servers.RedisProcess().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A real 3-master Redis Cluster on loopback ports; yields a URL of one node."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("needs redis-server and redis-cli to start a Redis Cluster")
    nodes: list[_servers.RedisProcess] = []
    try:
        for _ in range(3):
            # The cluster bus listens on port + 10000, so node ports must stay below 55536.
            node = _servers.RedisProcess(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                highest_port=55535,
            )
            nodes.append(node)
            node.start()
        _servers.create_cluster([node.port for node in nodes])
        yield nodes[0].url
    finally:
        for node in nodes:
            node.cleanup()
