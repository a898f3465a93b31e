"""Helpers the tests share; fixtures live in the conftests.

Test modules import helpers from here only, never from one another or from a conftest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from pymongo import monitoring

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


def cli_command(*args: str, interpreter: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *interpreter, "-m", "nexus_store.cli", *args]


def require_redis_server() -> None:
    """Skip, naming what is missing, where the redis-server binary is not installed (the tests
    that start private Redis servers: faults, outages, clusters)."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary (apt-get install redis-server)")


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60, interpreter: tuple[str, ...] = ()
) -> CliResult:
    """Run ``nexus-store ARGS`` in a subprocess with only ``env``'s NEXUS_* variables
    (``interpreter``: options for Python itself, such as ``-X importtime``)."""
    started = time.perf_counter()
    done = subprocess.run(
        cli_command(*args, interpreter=interpreter),
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


def run_cli_jobs(
    jobs: list[tuple[dict[str, str], tuple[str, ...]]], *, timeout: float = 120
) -> list[CliResult]:
    """Like :func:`run_cli_many`, each command with its own environment: ``(env, args)``."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: run_cli(*job[1], env=job[0], timeout=timeout), jobs))


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=_child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# draft-inadarei-api-health-check: the fields a check object and the top level may carry.
CHECK_FIELDS = {
    "componentId",
    "componentType",
    "observedValue",
    "observedUnit",
    "status",
    "affectedEndpoints",
    "time",
    "output",
    "links",
}
TOP_LEVEL_FIELDS = {
    "status",
    "version",
    "releaseId",
    "notes",
    "output",
    "checks",
    "links",
    "serviceId",
    "description",
}


def assert_health_json(body: dict[str, Any]) -> None:
    """The draft-inadarei-api-health-check shape and rules: only the draft's fields; a check
    says componentType, status and time; ``output`` only when not passing (section 4.8); an
    ``observedUnit`` with every ``observedValue``; the top-level status is the worst one."""
    assert set(body) <= TOP_LEVEL_FIELDS, set(body) - TOP_LEVEL_FIELDS
    assert body["status"] in ("pass", "warn", "fail")
    assert ("output" in body) == (body["status"] != "pass"), body.get("output")
    for field in ("version", "releaseId", "serviceId", "description"):
        assert field not in body or (isinstance(body[field], str) and body[field]), field
    assert isinstance(body["checks"], dict) and body["checks"]
    for key, results in body["checks"].items():
        assert ":" in key, key
        assert isinstance(results, list) and results, key
        for result in results:
            assert set(result) <= CHECK_FIELDS, (key, set(result) - CHECK_FIELDS)
            assert {"componentType", "status", "time"} <= set(result), (key, result)
            assert result["status"] in ("pass", "warn", "fail")
            datetime.fromisoformat(result["time"])
            if result["status"] == "pass":
                assert "output" not in result, (key, result)
            else:
                assert isinstance(result.get("output"), str) and result["output"], (key, result)
            if "observedValue" in result:
                unit = result.get("observedUnit")
                assert isinstance(unit, str) and unit, (key, result)
    worst = max(
        (r["status"] for results in body["checks"].values() for r in results),
        key=["pass", "warn", "fail"].index,
    )
    assert body["status"] == worst


# --- OpenTelemetry (tests/telemetry) ---------------------------------------------------------


@dataclass
class Telemetry:
    """What the OpenTelemetry SDK recorded in memory of one test."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def metric_points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` collected now (none when nothing recorded)."""
        data = self.metrics.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


# --- secrets in exceptions -----------------------------------------------------------------


def exception_chain_texts(error: BaseException) -> list[str]:
    """Every text an error tracker or a logging framework can reach from ``error``: each
    exception of the chain (``__cause__`` and ``__context__``, followed to the end) as
    ``str`` and ``repr``, its ``args`` and notes, and the formatted traceback."""
    import traceback

    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(repr, current.args)]
        texts += [str(note) for note in getattr(current, "__notes__", ())]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    return texts


def assert_no_secret_in_chain(error: BaseException, *secrets: str) -> None:
    for text in exception_chain_texts(error):
        for secret in secrets:
            assert secret not in text, f"{secret!r} reachable from {type(error).__name__}"


# --- An independent aggregation engine (an oracle for the pipeline builders) ---------------


class AggregationEngine:
    """Runs the subset of MongoDB's aggregation language that nexus-store's pipelines use,
    in Python, over documents read back from the server.

    Written from MongoDB's manual, not from the pipeline builders, so that results the
    nx-27017 substitute cannot compute (compound ``$group`` keys, ``$dateTrunc``,
    ``$reduce``, a ``$match`` on a date range alone) are still checked. An operator it does
    not know fails loudly, so a builder's new operator cannot slip through unchecked.
    Also a :class:`~nexus_store.mongo.events.queries.ResultCache`: hand it to
    ``EventQueries`` and every cached query runs here instead of on the server.
    """

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.pipelines: list[list[dict[str, Any]]] = []

    async def rows(self, scope: Any, pipeline: list[dict[str, Any]], run: Any) -> list[Any]:
        self.pipelines.append(pipeline)
        return self.aggregate(pipeline)

    def aggregate(self, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [dict(doc) for doc in self.documents]
        for stage in pipeline:
            ((name, spec),) = stage.items()
            rows = getattr(self, f"_stage_{name[1:]}")(rows, spec)
        return rows

    # stages
    def _stage_match(self, rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[Any]:
        return [row for row in rows if _matches(row, spec)]

    def _stage_sort(self, rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[Any]:
        for field, direction in reversed(list(spec.items())):
            rows = sorted(rows, key=lambda r: _order(_path(r, field)), reverse=direction < 0)
        return rows

    def _stage_limit(self, rows: list[dict[str, Any]], spec: int) -> list[Any]:
        return rows[:spec]

    def _stage_count(self, rows: list[dict[str, Any]], spec: str) -> list[Any]:
        return [{spec: len(rows)}] if rows else []

    def _stage_project(self, rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[Any]:
        if all(value in (0, False) for value in spec.values()):
            return [{k: v for k, v in row.items() if k not in spec} for row in rows]
        return [
            {"_id": row.get("_id"), **{k: _eval(v, row, {}) for k, v in spec.items()}}
            for row in rows
        ]

    def _stage_group(self, rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[Any]:
        groups: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = _eval(spec["_id"], row, {})
            group = groups.setdefault(repr(key), {"_id": key})
            for field, accumulator in spec.items():
                if field == "_id":
                    continue
                ((operator, argument),) = accumulator.items()
                value = _eval(argument, row, {})
                if operator == "$sum":
                    group[field] = group.get(field, 0) + value
                elif operator == "$push":
                    group.setdefault(field, []).append(value)
                else:
                    raise NotImplementedError(operator)
        return list(groups.values())


_TYPE_RANK = {type(None): 0, int: 1, float: 1, str: 2, dict: 3, list: 4, bool: 5, datetime: 6}


def _order(value: Any) -> tuple[int, Any]:
    """BSON comparison order for the types these pipelines compare."""
    return (_TYPE_RANK[type(value)], 0 if value is None else value)


def _path(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, list):
            document = [_path(item, part) for item in document]
        elif isinstance(document, dict):
            document = document.get(part)
        else:
            return None
    return document


def _matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    for field, condition in query.items():
        if field == "$or":
            if not any(_matches(row, branch) for branch in condition):
                return False
            continue
        value = _path(row, field)
        operators = condition if isinstance(condition, dict) else {"$eq": condition}
        for operator, operand in operators.items():
            if operator == "$eq":
                ok = value == operand
            elif operator == "$in":
                ok = value in operand
            elif operator == "$type":
                ok = {"string": str}[operand] is type(value)
            elif operator in ("$gte", "$gt", "$lt", "$lte"):
                ok = (
                    value is not None
                    and type(value) is type(operand)
                    and _compare(operator, value, operand)
                )
            else:
                raise NotImplementedError(operator)
            if not ok:
                return False
    return True


def _compare(operator: str, left: Any, right: Any) -> bool:
    a, b = _order(left), _order(right)
    return {"$gte": a >= b, "$gt": a > b, "$lt": a < b, "$lte": a <= b}[operator]


_UNITS = {"minute": {"second": 0}, "hour": {"minute": 0, "second": 0}}


def _eval(expression: Any, row: dict[str, Any], variables: dict[str, Any]) -> Any:
    if isinstance(expression, str) and expression.startswith("$$"):
        name, _, rest = expression[2:].partition(".")
        return _path(variables[name], rest) if rest else variables[name]
    if isinstance(expression, str) and expression.startswith("$"):
        return _path(row, expression[1:])
    if isinstance(expression, list):
        return [_eval(item, row, variables) for item in expression]
    if not isinstance(expression, dict):
        return expression
    if not any(key.startswith("$") for key in expression):
        return {key: _eval(value, row, variables) for key, value in expression.items()}
    ((operator, argument),) = expression.items()

    def ev(item: Any, extra: dict[str, Any] | None = None) -> Any:
        return _eval(item, row, {**variables, **(extra or {})})

    if operator == "$literal":
        return argument
    if operator == "$dateTrunc":
        assert argument["timezone"] == "UTC"
        date = ev(argument["date"]).astimezone(UTC).replace(microsecond=0)
        unit = argument["unit"]
        fields = {"hour": 0, "minute": 0, "second": 0} if unit == "day" else _UNITS[unit]
        return date.replace(**fields)
    if operator == "$reduce":
        value = ev(argument["initialValue"])
        for item in ev(argument["input"]):
            value = ev(argument["in"], {"value": value, "this": item})
        return value
    if operator == "$map":
        name = argument.get("as", "this")
        return [ev(argument["in"], {name: item}) for item in ev(argument["input"])]
    if operator == "$let":
        bound = {name: ev(value) for name, value in argument["vars"].items()}
        return ev(argument["in"], bound)
    if operator == "$cond":
        condition, then, otherwise = argument
        return ev(then) if ev(condition) else ev(otherwise)
    if operator == "$and":
        return all(ev(item) for item in argument)
    if operator == "$or":
        return any(ev(item) for item in argument)
    values = [ev(item) for item in argument] if isinstance(argument, list) else [ev(argument)]
    if operator == "$eq":
        return values[0] == values[1]
    if operator in ("$lt", "$lte", "$gt", "$gte"):
        return _compare(operator, values[0], values[1])
    if operator == "$add":
        return sum(values)
    if operator == "$subtract":
        left, right = values
        if left is None or right is None:
            return None
        if isinstance(left, datetime):
            return (left - right) // timedelta(milliseconds=1)
        return left - right
    if operator == "$arrayElemAt":
        array, index = values
        return array[index] if -len(array) <= index < len(array) else None
    if operator == "$size":
        return len(values[0])
    if operator == "$range":
        return list(range(*values))
    if operator == "$slice":
        array, start, count = values
        return array[start : start + count]
    if operator == "$max":
        candidates = values[0] if len(values) == 1 and isinstance(values[0], list) else values
        present = [value for value in candidates if value is not None]
        return max(present, key=_order) if present else None
    raise NotImplementedError(operator)
