"""No password in any output of any command, whether the backends answer or not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devstack.servers import closed_port
from tests.support import PASSWORD, run_cli_many, with_password

COMMANDS: list[tuple[str, ...]] = [
    ("--help",),
    ("init", "--dry-run"),
    ("init", "-f", "json"),
    ("health",),
    ("health", "-f", "json"),
    ("health", "--probe", "liveness", "-f", "json"),
    ("health", "--watch", "0.1", "--count", "2"),
    ("migrate", "upgrade", "--dry-run"),
    ("migrate", "upgrade"),
    ("migrate", "current", "-f", "json"),
    ("migrate", "history"),
    ("migrate", "downgrade", "base", "-f", "json"),
    ("audit", "verify"),
    ("events", "stats", "--since", "1h", "-f", "json"),
    ("demo",),
    ("demo", "-f", "json"),
]

# Debug logging prints the most; short timeouts keep failing commands quick.
QUICK_FAILURES = {
    "NEXUS_LOG__LEVEL": "debug",
    "NEXUS_MONGO__SERVER_SELECTION_TIMEOUT": "1",
    "NEXUS_HEALTH__TIMEOUT": "1",
}


def assert_clean(args: tuple[str, ...], output: str) -> None:
    assert PASSWORD not in output, f"{args} printed the password:\n{output}"
    assert "Traceback" not in output, f"{args} printed a traceback:\n{output}"


@pytest.mark.slow
def test_no_password_in_any_output_against_the_real_servers(
    fresh_env: Callable[[], dict[str, str]],
) -> None:
    env = fresh_env()
    env = {
        **env,
        "NEXUS_POSTGRES_URL": with_password(env["NEXUS_POSTGRES_URL"]),
        "NEXUS_MONGO_URL": with_password(env["NEXUS_MONGO_URL"]),
        "NEXUS_REDIS_URL": with_password(env["NEXUS_REDIS_URL"]),
        **QUICK_FAILURES,
    }
    for args, result in zip(COMMANDS, run_cli_many(COMMANDS, env=env), strict=True):
        assert_clean(args, result.output)
        assert result.returncode in (0, 1, 2), (args, result.output)


# The commands that talk to a backend (the others print no connection errors).
BACKEND_COMMANDS = [
    args
    for args in COMMANDS
    if args[0] != "--help"
    and "liveness" not in args
    and "history" not in args
    and "--watch" not in args
]


@pytest.mark.slow
def test_no_password_in_any_output_when_every_backend_is_down() -> None:
    env = {
        "NEXUS_POSTGRES_URL": f"postgresql://nexus:{PASSWORD}@127.0.0.1:{closed_port()}/app",
        "NEXUS_MONGO_URL": f"mongodb://nexus:{PASSWORD}@127.0.0.1:{closed_port()}/",
        "NEXUS_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}",
        **QUICK_FAILURES,
    }
    results = run_cli_many(BACKEND_COMMANDS, env=env)
    for args, result in zip(BACKEND_COMMANDS, results, strict=True):
        assert_clean(args, result.output)
        assert result.returncode != 0, (args, result.output)


def test_a_bad_url_in_settings_is_reported_without_its_password() -> None:
    env = {"NEXUS_REDIS_URL": f"http://user:{PASSWORD}@127.0.0.1:6379"}
    commands = [("health",), ("init",), ("demo",)]
    for args, result in zip(commands, run_cli_many(commands, env=env), strict=True):
        assert result.returncode == 2
        assert_clean(args, result.output)
