"""An application process for tests/test_log.py: it sets up its logging one way, then uses a
store (NEXUS_* environment) on every backend at debug level.

Usage: python -m tests._log_app bare|stdlib|structlog

- bare: configures nothing (stdlib's last-resort handler prints warnings on stderr);
- stdlib: a handler on the root logger prints every nexus_store record, attributes and all;
- structlog: structlog prints JSON lines.

Logs go to stderr. The last line on stdout is a JSON list of what the store changed in the
logging configuration: structlog's, the root logger's, the ``nexus_store`` logger's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

import structlog

from nexus_store import NexusStore


class _EverythingFormatter(logging.Formatter):
    """The record's logger, level, message and every attribute, extras included."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.name} {record.levelname} {record.getMessage()} {vars(record)}"


def _set_up(name: str) -> None:
    if name == "stdlib":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_EverythingFormatter())
        logging.getLogger().addHandler(handler)
        logging.getLogger("nexus_store").setLevel(logging.DEBUG)
    elif name == "structlog":
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )


def _logging_state() -> dict[str, Any]:
    """The configuration an application owns, by identity where objects are involved."""
    root = logging.getLogger()
    config = structlog.get_config()
    return {
        "structlog.is_configured": structlog.is_configured(),
        "structlog.config": {key: id(value) for key, value in config.items()},
        "structlog.processors": [id(processor) for processor in config["processors"]],
        "root.handlers": [id(handler) for handler in root.handlers],
        "root.level": root.level,
        "nexus_store.handlers": [
            id(handler) for handler in logging.getLogger("nexus_store").handlers
        ],
        "logging.disable": logging.root.manager.disable,
    }


async def _use_every_backend() -> None:
    """Calls that reach each backend; a backend that is down fails them, which is expected."""
    async with NexusStore.from_env() as store:
        calls = (
            lambda: store.sessions.create("log-app", {"a": 1}),
            lambda: store.cache.set("log-app", {"v": 1}, ttl=30),
            lambda: store.audit.record("tests", "log", "logging", "1"),
            lambda: store.events.track("log_app", user_id="u"),  # flushed on close
            store.health,
        )
        for call in calls:
            with contextlib.suppress(Exception):
                await call()


def main() -> None:
    _set_up(sys.argv[1])
    before = _logging_state()
    asyncio.run(_use_every_backend())
    after = _logging_state()
    print(json.dumps([key for key in before if before[key] != after[key]]))


if __name__ == "__main__":
    main()
