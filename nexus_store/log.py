"""Structured logging through structlog, configured once per process.

Every backend operation reports through :func:`observe`, which costs one clock read and one
comparison when debug logging is off: a debug event carries backend, operation and duration,
and a ``slow_operation`` warning fires above ``log.slow_threshold_ms``.

    started = time.perf_counter()
    row = await conn.execute(...)
    observe("postgres", "get", started, model="User")
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from nexus_store._secrets import scrub_value
from nexus_store.settings import LogSettings

__all__ = ["configure_logging", "get_logger", "observe"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_state: dict[str, Any] = {"configured": False, "debug": False, "slow_seconds": 0.25}


def _scrub_secrets(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    return {key: scrub_value(value) for key, value in event_dict.items()}


def configure_logging(settings: LogSettings | None = None, *, force: bool = False) -> None:
    """Configure structlog for nexus-store. Later calls are no-ops unless ``force``.

    An application that configures structlog itself can skip this: nexus-store only calls it
    when nothing has configured structlog yet.
    """
    if _state["configured"] and not force:
        return
    settings = settings or LogSettings()
    level = _LEVELS[settings.level]
    use_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _state.update(
        configured=True,
        debug=level <= logging.DEBUG,
        slow_seconds=settings.slow_threshold_ms / 1000.0,
    )


def get_logger(name: str = "nexus_store") -> Any:
    return structlog.get_logger(name)


_log = get_logger()


def observe(backend: str, operation: str, started: float, **fields: Any) -> float:
    """Report one finished backend operation that began at ``started`` (perf_counter)."""
    elapsed = time.perf_counter() - started
    if elapsed >= _state["slow_seconds"]:
        _log.warning(
            "slow_operation",
            backend=backend,
            operation=operation,
            duration_ms=round(elapsed * 1000, 3),
            **fields,
        )
    elif _state["debug"]:
        _log.debug(
            "backend_operation",
            backend=backend,
            operation=operation,
            duration_ms=round(elapsed * 1000, 3),
            **fields,
        )
    return elapsed
