"""The command tree, lazy imports, and Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.support import run_cli, start_cli


def test_help_lists_every_command() -> None:
    result = run_cli("--help", env={})

    assert result.returncode == 0
    for command in ("init", "health", "migrate", "audit", "events", "demo"):
        assert command in result.stdout
    for group, commands in {
        "migrate": ("upgrade", "downgrade", "current", "history"),
        "audit": ("verify",),
        "events": ("stats",),
    }.items():
        listed = run_cli(group, "--help", env={}).stdout
        assert all(command in listed for command in commands), listed


def test_the_cli_loads_no_driver_until_a_command_needs_one() -> None:
    code = (
        "import sys; from nexus_store.cli.app import app;"
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('redis','pymongo','sqlalchemy','psycopg','alembic')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ctrl_c_stops_watch_without_a_traceback(session_env: dict[str, str]) -> None:
    process = start_cli(
        "health", "--probe", "liveness", "-f", "json", "--watch", "0.2", env=session_env
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # one report printed: the loop is running
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    assert '"status"' in first
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and "interrupted" in err
