"""Fixtures for the CLI tests: fresh databases and the environments that point at them.

``init`` tests get their own PostgreSQL database (and MongoDB database) so that they never
race the migrations of other areas' tests on the session database.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from devstack import servers
from devstack.stack import Stack
from tests.support import run_cli

# The health probe's checks get health.timeout minus the process's start-up, which on a
# loaded 2-core machine can take the whole default 2 s: the tests that are not about that
# bound (tests/cli/test_health.py has those) give it room.
HEALTH = {"timeout": 10.0}


@pytest.fixture
def fresh_stack(stack: Stack) -> Iterator[Callable[[], Stack]]:
    """A factory of stacks, each with its own new, empty PostgreSQL and MongoDB database
    (the session's Redis namespace); all dropped after the test."""
    with contextlib.ExitStack() as scratch:

        def make() -> Stack:
            name = f"nexus_cli_{uuid.uuid4().hex[:10]}"
            postgres_url = scratch.enter_context(
                servers.scratch_postgres_database(stack.postgres_url, name)
            )
            database = scratch.enter_context(servers.scratch_mongo_database(stack.mongo_url, name))
            return stack.merged(
                postgres={"url": postgres_url}, mongo={"database": database}, health=HEALTH
            )

        yield make


@pytest.fixture(scope="session")
def session_env(stack: Stack) -> dict[str, str]:
    """Environment for the CLI pointing at the session's backends (schema not created)."""
    return stack.environment(health=HEALTH)


@pytest.fixture
def fresh_env(fresh_stack: Callable[[], Stack]) -> Callable[[], dict[str, str]]:
    """A factory of CLI environments, each with its own empty PostgreSQL and MongoDB database."""
    return lambda: fresh_stack().environment()


@pytest.fixture
def initialised_stack(fresh_stack: Callable[[], Stack]) -> Stack:
    """A fresh stack after a successful ``nexus-store init``."""
    stack = fresh_stack()
    result = run_cli("init", env=stack.environment())
    assert result.returncode == 0, result.output
    return stack


@pytest.fixture
def initialised_env(initialised_stack: Stack) -> dict[str, str]:
    return initialised_stack.environment()
