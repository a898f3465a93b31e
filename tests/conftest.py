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

import hypothesis
import pytest
import structlog

from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from tests.support import require_redis_server

SESSION_TAG = uuid.uuid4().hex[:10]

# Hypothesis: CI runs a fixed, bounded set of examples (derandomize: the same examples on
# every run, so a failure reproduces); ``--hypothesis-profile=long`` explores 20 times more,
# with fresh randomness, for local runs. Tests scale their budgets from
# ``hypothesis.settings.default.max_examples``.
hypothesis.settings.register_profile("nexus", derandomize=True, deadline=None, max_examples=100)
hypothesis.settings.register_profile(
    "long", derandomize=False, deadline=None, max_examples=2000, print_blob=True
)
hypothesis.settings.load_profile("nexus")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("redis_server"):
        require_redis_server()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on a real PostgreSQL server."""
    with (
        servers.postgres_server() as server_url,
        servers.scratch_postgres_database(server_url, f"nexus_test_{SESSION_TAG}") as url,
    ):
        yield url


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[tuple[str, bool]]:
    with servers.mongo_server() as found:
        yield found


@pytest.fixture(scope="session")
def mongo_url(mongo_server: tuple[str, bool]) -> str:
    return mongo_server[0]


@pytest.fixture(scope="session")
def real_mongodb(mongo_server: tuple[str, bool]) -> bool:
    return mongo_server[1]


@pytest.fixture(scope="session")
def mongo_database(mongo_url: str) -> Iterator[str]:
    with servers.scratch_mongo_database(mongo_url, f"nexus_test_{SESSION_TAG}") as name:
        yield name


@pytest.fixture(autouse=True)
def _structlog_unconfigured() -> Iterator[None]:
    """Each test starts in an application that has not configured structlog, so nexus-store
    logs through stdlib ``logging``; what a test configures (``capture_logs`` leaves
    structlog configured) ends with the test."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


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
    with servers.redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix no other test session uses; its keys are removed from DBs 0-15 afterwards."""
    with servers.scratch_redis_namespace(redis_url, f"t{SESSION_TAG}") as namespace:
        yield namespace


@pytest.fixture(scope="session")
def stack(
    postgres_url: str, mongo_url: str, mongo_database: str, redis_url: str, redis_namespace: str
) -> Stack:
    """The session's backends: the source of every settings object and NEXUS_* environment."""
    return Stack.located(
        postgres_url=postgres_url,
        mongo_url=mongo_url,
        mongo_database=mongo_database,
        redis_url=redis_url,
        redis_namespace=redis_namespace,
    )


@pytest.fixture(scope="session")
def settings(stack: Stack) -> NexusSettings:
    """The settings ``store`` opens; test folders with their own data override this."""
    return stack.settings()


@pytest.fixture
async def store(settings: NexusSettings) -> AsyncIterator[NexusStore]:
    async with NexusStore(settings) as opened:
        yield opened


@pytest.fixture
def unique() -> str:
    """A fresh name for the keys, users, collections, queues and channels of one test."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with servers.silent_port() as port:
        yield port


@pytest.fixture
def redis_process() -> Iterator[servers.RedisProcess]:
    """A private, real redis-server on a free port that the test may stop and restart."""
    require_redis_server()
    server = servers.RedisProcess().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A real 3-master Redis Cluster on loopback ports; yields a URL of one node."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("needs redis-server and redis-cli to start a Redis Cluster")
    nodes: list[servers.RedisProcess] = []
    try:
        for _ in range(3):
            # The cluster bus listens on port + 10000, so node ports must stay below 55536.
            node = servers.RedisProcess(
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
        servers.create_cluster([node.port for node in nodes])
        yield nodes[0].url
    finally:
        for node in nodes:
            node.cleanup()
