"""Every CLI command ends, with a clear answer, when a backend it uses is down.

One test per backend: that backend's URL points at a closed loopback port, the others at the
real servers (fresh databases, so nothing races other tests' migrations). Every command that
uses the backend must exit non-zero, without a traceback, within BOUND_SECONDS. Driver
timeouts are set to one second here so that the suite stays fast; docs/mongo.md ("CLI
commands with a backend down") gives the bound at the default settings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from devstack import servers
from devstack.stack import Stack
from tests.support import run_cli_many

# CLI start-up on a loaded 2-core machine included; each driver gives up after ~1 s.
BOUND_SECONDS = 40.0

# Every command, and the backends it uses. `outbox relay` runs until stopped by design;
# its bounded form is --once. `config example` uses none.
COMMANDS: dict[tuple[str, ...], set[str]] = {
    ("init",): {"postgres", "mongo", "redis"},
    ("health",): {"postgres", "mongo", "redis"},
    ("demo", "--users", "1", "--skip-init"): {"postgres", "mongo", "redis"},
    ("migrate", "upgrade"): {"postgres"},
    ("migrate", "downgrade", "base"): {"postgres"},
    ("migrate", "current"): {"postgres"},
    ("audit", "verify"): {"mongo"},
    ("events", "stats"): {"mongo"},
    ("outbox", "relay", "--once"): {"postgres", "mongo"},
    ("privacy", "export", str(uuid.UUID(int=1))): {"postgres", "mongo", "redis"},
}
# With nothing in the outbox there is nothing to deliver to MongoDB: exit 0 is right.
SUCCEEDS_WITHOUT = {(("outbox", "relay", "--once"), "mongo")}

FAST_FAILURE_SETTINGS = {
    "postgres": {"connect_timeout": 1, "pool_timeout": 1},
    "mongo": {"server_selection_timeout": 1, "connect_timeout": 1, "socket_timeout": 1},
    "redis": {"connect_timeout": 0.5, "socket_timeout": 0.5, "pool_timeout": 0.5},
    "events": {"close_timeout": 1},
    "health": {"timeout": 1},
}


def _down_url(backend: str, port: int) -> str:
    return {
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/nexus",
        "mongo": f"mongodb://127.0.0.1:{port}",
        "redis": f"redis://127.0.0.1:{port}/0",
    }[backend]


@pytest.mark.parametrize("backend", ["postgres", "mongo", "redis"])
def test_every_command_is_bounded_with_a_backend_down(
    backend: str, fresh_stack: Callable[[], Stack]
) -> None:
    down = fresh_stack().merged(
        **{
            section: {**fields, **({"url": _down_url(backend, servers.closed_port())})}
            if section == backend
            else fields
            for section, fields in FAST_FAILURE_SETTINGS.items()
        }
    )
    commands = [command for command, uses in COMMANDS.items() if backend in uses]
    results = run_cli_many(commands, env=down.environment(), timeout=BOUND_SECONDS)
    for command, result in zip(commands, results, strict=True):
        shown = " ".join(command)
        assert result.seconds < BOUND_SECONDS, shown
        if (command, backend) not in SUCCEEDS_WITHOUT:
            assert result.returncode != 0, f"{shown} with {backend} down exited 0: {result.output}"
        assert "Traceback" not in result.output, f"{shown}: {result.output}"
