"""Helpers the tests share; fixtures live in the conftests.

Test modules import helpers from here only, never from one another or from a conftest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from pymongo import monitoring

REPO_ROOT = Path(__file__).resolve().parents[1]

# Redis client options that fail fast against a stopped or unreachable server.
FAST_FAILURE = {
    "socket_timeout": 0.5,
    "connect_timeout": 0.5,
    "pool_timeout": 0.5,
    "retries": 1,
    "retry_backoff_cap": 0.05,
}


# --- PostgreSQL entities -------------------------------------------------------------------


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


def postgres_state(url: str) -> dict[str, Any]:
    """Tables, indexes and the Alembic revision rows of a database."""
    with psycopg.connect(url) as conn:
        tables = sorted(
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        )
        indexes = sorted(
            row[0]
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        )
        revisions: list[str] = []
        if "alembic_version" in tables:
            revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    return {"tables": tables, "indexes": indexes, "revisions": revisions}


# --- MongoDB -------------------------------------------------------------------------------


class CommandRecorder(monitoring.CommandListener):
    """Keeps every command PyMongo starts, with its name and body."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.databases: list[str] = []  # the database of each command, in the same order

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # Drop what the driver adds to every command ($db, lsid, $clusterTime...).
        body = {
            key: value
            for key, value in event.command.items()
            if not key.startswith("$") and key != "lsid"
        }
        self.commands.append((event.command_name, body))
        self.databases.append(event.database_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def named(self, name: str) -> list[dict[str, Any]]:
        return [body for command, body in self.commands if command == name]

    def clear(self) -> None:
        self.commands.clear()
        self.databases.clear()


# --- The CLI in a subprocess ---------------------------------------------------------------


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


CHECK_FIELDS = {"componentType", "observedValue", "status", "time", "output"}


def assert_health_json(body: dict[str, Any]) -> None:
    """The draft-inadarei-api-health-check shape."""
    assert body["status"] in ("pass", "warn", "fail")
    assert isinstance(body["checks"], dict) and body["checks"]
    for key, results in body["checks"].items():
        assert ":" in key, key
        assert isinstance(results, list) and results, key
        for result in results:
            assert set(result) >= CHECK_FIELDS, (key, result)
            assert result["status"] in ("pass", "warn", "fail")
            datetime.fromisoformat(result["time"])
    worst = max(
        (r["status"] for results in body["checks"].values() for r in results),
        key=["pass", "warn", "fail"].index,
    )
    assert body["status"] == worst
