"""``nexus-store init``: idempotent, safe concurrently, honest dry runs, clear failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo import MongoClient

from devstack.servers import closed_port
from tests.support import postgres_state, run_cli, start_cli


def mongo_state(url: str, database: str) -> dict[str, Any]:
    """Collections and their indexes (key and TTL) of a database."""
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        db = client[database]
        state = {}
        for name in sorted(db.list_collection_names()):
            indexes = [
                (tuple(sorted(spec["key"].items())), spec.get("expireAfterSeconds"))
                for spec in db[name].list_indexes()
            ]
            state[name] = sorted(indexes, key=repr)
        return state
    finally:
        client.close()


def state(env: dict[str, str]) -> dict[str, Any]:
    return {
        "postgres": postgres_state(env["NEXUS_POSTGRES_URL"]),
        "mongo": mongo_state(env["NEXUS_MONGO_URL"], env["NEXUS_MONGO__DATABASE"]),
    }


def assert_nothing_changed(steps: list[dict[str, Any]], real_mongodb: bool) -> None:
    """Every step unchanged. The nx-27017 substitute does not keep $jsonSchema validators,
    so there the schema step re-applies them (a no-op) every time; nothing else may change."""
    for step in steps:
        if step["backend"] == "mongo" and not real_mongodb:
            assert all(": update_validator " in change for change in step["changes"]), step
        else:
            assert step["status"] == "unchanged", step


def test_init_twice_in_a_row_then_twice_concurrently(
    fresh_env: Callable[[], dict[str, str]], real_mongodb: bool
) -> None:
    env = fresh_env()

    first = run_cli("init", "--format", "json", env=env)
    assert first.returncode == 0, first.output
    report = first.json()
    assert report["status"] == "done"
    steps = {step["backend"]: step for step in report["steps"]}
    assert steps["postgres"]["status"] == "done" and steps["postgres"]["changes"]
    assert steps["mongo"]["status"] == "done" and steps["mongo"]["changes"]
    assert steps["redis"]["status"] == "unchanged"
    after_first = state(env)
    assert len(after_first["postgres"]["revisions"]) == 1
    assert after_first["postgres"]["tables"] and after_first["mongo"]

    second = run_cli("init", "--format", "json", env=env)
    assert second.returncode == 0, second.output
    assert_nothing_changed(second.json()["steps"], real_mongodb)
    assert state(env) == after_first

    processes = [start_cli("init", "--format", "json", env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=90) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out + err
    assert state(env) == after_first


def test_concurrent_init_on_an_empty_database_creates_one_schema(
    fresh_env: Callable[[], dict[str, str]],
) -> None:
    env = fresh_env()

    processes = [start_cli("init", "--format", "json", env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=90) for process in processes]

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out + err
    found = state(env)
    assert len(found["postgres"]["revisions"]) == 1
    for indexes in found["mongo"].values():
        keys = [key for key, _ in indexes]
        assert len(keys) == len(set(keys)), indexes
    reference = fresh_env()
    assert run_cli("init", env=reference).returncode == 0
    assert state(reference) == found


def test_dry_run_prints_the_plan_and_changes_nothing(
    fresh_env: Callable[[], dict[str, str]], real_mongodb: bool
) -> None:
    env = fresh_env()
    before = state(env)

    result = run_cli("init", "--dry-run", "--format", "json", env=env)

    assert result.returncode == 0, result.output
    report = result.json()
    assert report["dryRun"] is True and report["status"] == "planned"
    steps = {step["backend"]: step for step in report["steps"]}
    assert steps["postgres"]["status"] == "planned"
    assert any(change.startswith("migration ") for change in steps["postgres"]["changes"])
    assert steps["mongo"]["status"] == "planned" and steps["mongo"]["changes"]
    assert state(env) == before
    assert before["postgres"]["tables"] == [] and before["mongo"] == {}

    table = run_cli("init", "--dry-run", env=env)
    assert table.returncode == 0 and "dry run" in table.stdout
    assert state(env) == before

    assert run_cli("init", env=env).returncode == 0
    after = run_cli("init", "--dry-run", "-f", "json", env=env)
    assert_nothing_changed(after.json()["steps"], real_mongodb)


def test_only_limits_the_run(fresh_env: Callable[[], dict[str, str]]) -> None:
    env = fresh_env()

    result = run_cli("init", "--only", "redis", "--only", "mongo", "-f", "json", env=env)

    assert result.returncode == 0, result.output
    assert [step["backend"] for step in result.json()["steps"]] == ["mongo", "redis"]
    assert state(env)["postgres"]["tables"] == []


def test_a_failing_step_exits_1_naming_step_and_backend(
    fresh_env: Callable[[], dict[str, str]],
) -> None:
    env = {
        **fresh_env(),
        "NEXUS_POSTGRES_URL": f"postgresql://postgres:pw-S3cret@127.0.0.1:{closed_port()}/x",
    }

    result = run_cli("init", env=env)

    assert result.returncode == 1, result.output
    assert "init failed at step 'postgres migrate' (postgres)" in result.stderr
    assert "Traceback" not in result.output and "pw-S3cret" not in result.output
    # The other backends still ran.
    assert state({**env, "NEXUS_POSTGRES_URL": fresh_env()["NEXUS_POSTGRES_URL"]})["mongo"]


def test_usage_and_configuration_errors_exit_2(fresh_env: Callable[[], dict[str, str]]) -> None:
    bad_scheme = run_cli("init", env={"NEXUS_REDIS_URL": "http://127.0.0.1:6379"})
    assert bad_scheme.returncode == 2
    assert "redis.url" in bad_scheme.stderr and "Traceback" not in bad_scheme.output

    missing_file = run_cli("init", "--config", "/nonexistent/nexus.toml", env={})
    assert missing_file.returncode == 2 and "nexus.toml" in missing_file.output

    unknown_option = run_cli("init", "--only", "mysql", env=fresh_env())
    assert unknown_option.returncode == 2

    not_configured = run_cli("init", "--only", "postgres", env={})
    assert not_configured.returncode == 2 and "NEXUS_POSTGRES_URL" in not_configured.stderr


def test_init_reads_the_config_file(tmp_path: Any, fresh_env: Callable[[], dict[str, str]]) -> None:
    env = fresh_env()
    config = tmp_path / "nexus.toml"
    redis = f'url = "{env["NEXUS_REDIS_URL"]}"\nnamespace = "{env["NEXUS_REDIS__NAMESPACE"]}"\n'
    config.write_text(f"[redis]\n{redis}")

    result = run_cli("init", "--config", str(config), "-f", "json", env={})

    assert result.returncode == 0, result.output
    statuses = {step["backend"]: step["status"] for step in result.json()["steps"]}
    assert statuses == {"postgres": "skipped", "mongo": "skipped", "redis": "unchanged"}
