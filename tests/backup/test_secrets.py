"""No password in any backup output, archive file or error, with servers up or down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.servers import closed_port
from devstack.stack import Stack
from tests.support import PASSWORD, run_cli_jobs, with_password


def test_no_password_in_outputs_or_in_the_archive(
    populated: Any, source_stack: Stack, tmp_path: Path
) -> None:
    env = source_stack.environment()
    env = {
        **env,
        "NEXUS_POSTGRES_URL": with_password(env["NEXUS_POSTGRES_URL"]),
        "NEXUS_MONGO_URL": with_password(env["NEXUS_MONGO_URL"]),
        "NEXUS_REDIS_URL": with_password(env["NEXUS_REDIS_URL"]),
        "NEXUS_LOG__LEVEL": "debug",
    }
    down = {
        "NEXUS_POSTGRES_URL": f"postgresql://nexus:{PASSWORD}@127.0.0.1:{closed_port()}/app",
        "NEXUS_MONGO_URL": f"mongodb://nexus:{PASSWORD}@127.0.0.1:{closed_port()}/",
        "NEXUS_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}",
        "NEXUS_MONGO__SERVER_SELECTION_TIMEOUT": "1",
        "NEXUS_LOG__LEVEL": "debug",
    }
    archive = tmp_path / "archive"
    jobs = [
        (env, ("backup", "create", str(archive), "--only", "postgres", "--format", "json")),
        (env, ("backup", "restore", str(tmp_path / "missing"))),
        (down, ("backup", "create", str(tmp_path / "a"), "--only", "postgres")),
        (down, ("backup", "create", str(tmp_path / "b"), "--only", "mongo")),
        (down, ("backup", "create", str(tmp_path / "c"), "--only", "redis")),
    ]
    created, refused, *failed = run_cli_jobs(jobs)
    assert created.returncode == 0, created.output
    assert refused.returncode == 1
    for result in (created, refused, *failed):
        assert PASSWORD not in result.output, result.output
        assert "Traceback" not in result.output, result.output
    assert [result.returncode for result in failed] == [1, 1, 1], [r.output for r in failed]
    for path in archive.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
