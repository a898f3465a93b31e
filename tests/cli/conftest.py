"""Fixtures for the CLI tests: fresh databases, a subprocess runner, fault-injection ports.

``init`` tests get their own PostgreSQL database (and MongoDB database, Redis namespace) so
that they never race the migrations of other areas' tests on the session database.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient

from tests import _servers

# A password put in every URL the CLI sees; it must never appear in any output.
PASSWORD = "Pw-n3xus-S3cret"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        """stdout as JSON, after checking that every field name in it is camelCase."""
        document = json.loads(self.stdout)
        assert_camel_case_keys(document)
        return document


def with_password(url: str) -> str:
    """``url`` with ``user:PASSWORD@`` (trust-auth PostgreSQL and a password-less Redis
    accept and ignore it, so the command still works against the real servers)."""
    scheme, rest = url.split("://", 1)
    if "@" in rest:
        userinfo, rest = rest.split("@", 1)
        user = userinfo.split(":", 1)[0]
    else:
        user = "postgres" if scheme.startswith("postgres") else ""
    return f"{scheme}://{user}:{PASSWORD}@{rest}"


closed_port = _servers.closed_port

_CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# Objects whose keys are data (event names, health check keys), not field names.
_DATA_KEYED = {"topEvents", "checks"}


def assert_camel_case_keys(document: Any, path: str = "$") -> None:
    """Every key of ``document`` that names a field is camelCase (as in health+json)."""
    if isinstance(document, list):
        for i, item in enumerate(document):
            assert_camel_case_keys(item, f"{path}[{i}]")
    elif isinstance(document, dict):
        for key, value in document.items():
            if path.rsplit(".", 1)[-1] not in _DATA_KEYED:
                assert _CAMEL_CASE.match(key), f"{path}.{key} is not camelCase"
            assert_camel_case_keys(value, f"{path}.{key}")


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_url: str) -> str:
    return postgres_url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
def fresh_postgres(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of new, empty PostgreSQL databases, all dropped after the test."""
    created: list[str] = []
    admin = psycopg.conninfo.conninfo_to_dict(postgres_admin_url)

    def make() -> str:
        name = f"nexus_cli_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with psycopg.connect(**admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_mongo(mongo_url: str) -> Iterator[Callable[[], str]]:
    """A factory of new MongoDB database names, all dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"nexus_cli_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return name

    yield make
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
    try:
        for name in created:
            client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def session_env(
    postgres_url: str, mongo_url: str, mongo_database: str, redis_url: str, redis_namespace: str
) -> dict[str, str]:
    """Environment for the CLI pointing at the session's backends (schema not created)."""
    return {
        "NEXUS_POSTGRES_URL": postgres_url,
        "NEXUS_MONGO_URL": mongo_url,
        "NEXUS_MONGO__DATABASE": mongo_database,
        "NEXUS_REDIS_URL": redis_url,
        "NEXUS_REDIS__NAMESPACE": redis_namespace,
    }


@pytest.fixture
def fresh_env(
    fresh_postgres: Callable[[], str],
    fresh_mongo: Callable[[], str],
    mongo_url: str,
    redis_url: str,
    redis_namespace: str,
) -> Callable[[], dict[str, str]]:
    """A factory of CLI environments, each with its own empty PostgreSQL and MongoDB database."""

    def make() -> dict[str, str]:
        return {
            "NEXUS_POSTGRES_URL": fresh_postgres(),
            "NEXUS_MONGO_URL": mongo_url,
            "NEXUS_MONGO__DATABASE": fresh_mongo(),
            "NEXUS_REDIS_URL": redis_url,
            "NEXUS_REDIS__NAMESPACE": redis_namespace,
        }

    return make


def _child_env(env: dict[str, str]) -> dict[str, str]:
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NEXUS_") and key not in ("DATABASE_URL", "MONGODB_URL", "REDIS_URL")
    }
    return {**inherited, "NEXUS_LOG__LEVEL": "warning", "COLUMNS": "200", **env}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nexus_store.cli", *args]


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> CliResult:
    """Run ``nexus-store ARGS`` in a subprocess with only ``env``'s NEXUS_* variables."""
    started = time.perf_counter()
    done = subprocess.run(
        cli_command(*args),
        env=_child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def run_cli_many(
    commands: list[tuple[str, ...]], *, env: dict[str, str], timeout: float = 120
) -> list[CliResult]:
    """Run several commands at once (most of their time is interpreter start-up and waits)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run_cli(*args, env=env, timeout=timeout), commands))


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=_child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that completes TCP handshakes (listen backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield int(listener.getsockname()[1])
