"""nexus-store's loggers: structured events that go wherever the application sends its logs.

A library must not configure logging, so nothing here touches structlog's configuration, the
root logger or any handler. Each event is routed when it is emitted, so an application may
set up its logging before or after creating a store:

- the application configured structlog (``structlog.is_configured()``): the event goes
  through the application's processors, renderer and level filter;
- otherwise: to the stdlib ``logging`` logger of the same name (``nexus_store.*``), the event
  as the record's message and each field as a record attribute (``extra``), so the
  handlers, levels and filters the application set up apply, as they do to SQLAlchemy,
  redis-py and PyMongo.

Either way every field is scrubbed of secrets (:func:`nexus_store._secrets.scrub_value`)
before it leaves the SDK.

Every backend operation is reported by :func:`report_operation` when the
:func:`nexus_store.telemetry.operation` block around it ends, which costs one comparison and
one level check when debug logging is off: a ``backend_operation`` debug event carries
backend, operation and duration, and a ``slow_operation`` warning fires above
``log.slow_threshold_ms``. Both go to the logger ``nexus_store.<backend>``.
"""

from __future__ import annotations

import functools
import logging
import operator
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from nexus_store._secrets import scrub_value
from nexus_store.settings import LogSettings

__all__ = ["NexusLogger", "get_logger", "report_operation", "set_slow_threshold"]

# Fields with these names would make logging.Logger.makeRecord raise: they get a suffix.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# stdlib records name the SDK line that logged, not this module: the frames from that line
# down to Logger.log are the caller, NexusLogger.<level> and NexusLogger._emit; for an
# operation, the line ending its ``with`` block, Operation.__exit__, report_operation and _emit.
_CALLER_STACKLEVEL = 3
_OPERATION_STACKLEVEL = 4


class NexusLogger:
    """A named logger called in structlog's style: ``log.warning("cache_down", error=...)``."""

    __slots__ = ("_app_config", "_app_keeps", "_app_logger", "_stdlib", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._stdlib = logging.getLogger(name)
        # This name's logger in the application's structlog configuration, the level test
        # of that logger, and the configuration both were built from.
        self._app_logger: Any = None
        self._app_keeps: Callable[[int], bool] = _keeps_everything
        self._app_config: tuple[object, ...] = (None,) * 4

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields, _CALLER_STACKLEVEL)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields, _CALLER_STACKLEVEL)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields, _CALLER_STACKLEVEL)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, _CALLER_STACKLEVEL)

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be kept by the application's set-up."""
        structlog = _configured_structlog()
        if structlog is None:
            return self._stdlib.isEnabledFor(level)
        self._follow_structlog_config(structlog)
        return self._app_keeps(level)

    def _emit(self, level: int, event: str, fields: dict[str, Any], stacklevel: int) -> None:
        structlog = _configured_structlog()
        if structlog is not None:
            self._follow_structlog_config(structlog)
            if self._app_keeps(level):
                method = getattr(self._app_logger, logging.getLevelName(level).lower())
                method(event, **scrub_value(fields))
        elif self._stdlib.isEnabledFor(level):
            extra = {
                f"{key}_" if key in _RECORD_ATTRIBUTES else key: value
                for key, value in scrub_value(fields).items()
            }
            self._stdlib.log(level, event, extra=extra, stacklevel=stacklevel)

    def _follow_structlog_config(self, structlog: ModuleType) -> None:
        """Build this name's structlog logger again when the application has configured
        structlog since the last event (a cached logger would keep the old pipeline)."""
        config = structlog.get_config()
        current = (
            config["processors"],
            config["wrapper_class"],
            config["logger_factory"],
            config["context_class"],
        )
        if any(map(operator.is_not, current, self._app_config)):
            app_logger = structlog.get_logger(self.name).bind()
            # Filtering loggers (is_enabled_for) and stdlib-backed ones (isEnabledFor) know
            # their level; with any other wrapper the application's processors decide.
            self._app_keeps = (
                getattr(app_logger, "is_enabled_for", None)
                or getattr(app_logger, "isEnabledFor", None)
                or _keeps_everything
            )
            self._app_logger = app_logger
            self._app_config = current


def _configured_structlog() -> ModuleType | None:
    """structlog, when the application has configured it. An application that configured
    structlog has imported it: the SDK never imports it itself, since structlog loads rich
    (for its console renderer), which a short-lived process such as the CLI's health probe
    must not pay for."""
    structlog = sys.modules.get("structlog")
    return structlog if structlog is not None and structlog.is_configured() else None


def _keeps_everything(_level: int) -> bool:
    return True


@functools.cache
def get_logger(name: str = "nexus_store") -> NexusLogger:
    """The logger ``name`` (under ``nexus_store``); one instance per name."""
    return NexusLogger(name)


@functools.cache
def _operations_logger(backend: str) -> NexusLogger:
    return get_logger(f"nexus_store.{backend}")


_slow = {"seconds": LogSettings.model_fields["slow_threshold_ms"].default / 1000.0}


def set_slow_threshold(threshold_ms: float) -> None:
    """Operations slower than ``threshold_ms`` log ``slow_operation``; the store sets it
    from ``log.slow_threshold_ms`` (one threshold per process: the last store's)."""
    _slow["seconds"] = threshold_ms / 1000.0


def report_operation(backend: str, operation: str, elapsed: float, fields: dict[str, Any]) -> None:
    """Log one finished backend operation that took ``elapsed`` seconds: a ``slow_operation``
    warning above the threshold, else a ``backend_operation`` debug event if debug is on.
    Called by :func:`nexus_store.telemetry.operation` when its block ends."""
    log = _operations_logger(backend)
    if elapsed >= _slow["seconds"]:
        level, event = logging.WARNING, "slow_operation"
    elif log.is_enabled_for(logging.DEBUG):
        level, event = logging.DEBUG, "backend_operation"
    else:
        return
    report = {
        "backend": backend,
        "operation": operation,
        "duration_ms": round(elapsed * 1000, 3),
        **fields,
    }
    log._emit(level, event, report, _OPERATION_STACKLEVEL)
