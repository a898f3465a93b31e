"""What the CLI shares that needs neither typer nor rich: exit codes, JSON output and the
log level.

``nexus-store health --probe ... --format json`` (a Kubernetes exec probe) runs without
typer, rich or structlog (see ``nexus_store.cli._probe``), and writes its document through
the same :func:`emit_json` as every other command.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nexus_store._secrets import scrub_value

if TYPE_CHECKING:
    from nexus_store.settings import LogSettings

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "camel_case",
    "cli_log_level",
    "emit_json",
    "json_logs",
    "json_ready",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def cli_log_level(log: LogSettings) -> int:
    """The level from which the CLI prints the SDK's events: commands report their own
    progress, and SDK info events would interleave with it, so ``info`` prints from warning
    up; an explicit ``debug`` is kept. A number: structlog 24.1 (the floor) accepts only
    numbers."""
    level = "warning" if log.level == "info" else log.level
    return logging.getLevelNamesMapping()[level.upper()]


def json_logs(log: LogSettings) -> bool:
    """Whether the CLI prints its log events as JSON lines (else console lines)."""
    return log.format == "json" or (log.format == "auto" and not sys.stderr.isatty())


_SNAKE = re.compile(r"_([a-z0-9])")


def camel_case(name: str) -> str:
    """``first_broken_seq`` -> ``firstBrokenSeq``."""
    return _SNAKE.sub(lambda match: match[1].upper(), name)


def json_ready(value: Any) -> Any:
    """``value`` as JSON data: dataclasses and named tuples become objects whose keys are
    their field names in camelCase, datetimes ISO strings.

    Dict keys are kept as they are: a command writes its own keys in camelCase, and keys
    that are data (event names, check keys) must not change.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            camel_case(f.name): json_ready(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {camel_case(key): json_ready(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit_json(data: Any, *, compact: bool = False) -> None:
    """Write ``data`` (through :func:`json_ready`) as JSON on stdout, every string scrubbed
    of secrets. Every command's ``--format json`` output goes through here."""
    import orjson

    option = orjson.OPT_NON_STR_KEYS | (0 if compact else orjson.OPT_INDENT_2)
    text = orjson.dumps(scrub_value(json_ready(data)), option=option, default=str).decode()
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
