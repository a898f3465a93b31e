"""The one instrumentation point of every backend operation: :func:`operation`.

While telemetry is off (the default) an operation costs what logging it costs: two clock
reads, one comparison and one level check. Tracing and metrics add themselves here as
hooks when they are turned on, so that this module never imports OpenTelemetry.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from nexus_store.log import report_operation
from nexus_store.telemetry._endpoint import endpoint_attributes

__all__ = ["Operation", "SpanScope", "Tracing", "operation"]

Attributes = Mapping[str, str | int]


class SpanScope(Protocol):
    def end(self, error_type: str | None) -> None:
        """End the span (failed with ``error_type`` unless None); it is no longer current."""
        ...


class Tracing(Protocol):
    """What :func:`nexus_store.telemetry.instrument` plugs in to trace operations."""

    def start(self, name: str, attributes: Attributes) -> SpanScope:
        """Start the span of operation ``name`` and make it current."""
        ...


class _Hooks:
    """Set by instrument()/uninstrument() and the Prometheus export; read by every operation."""

    __slots__ = ("recorders", "tracing")

    def __init__(self) -> None:
        self.tracing: Tracing | None = None
        self.recorders: tuple[Callable[[float, Attributes], None], ...] = ()


_hooks = _Hooks()
# (target, operation name) -> the conventions' attributes, per backend.
_attributes: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def set_tracing(tracing: Tracing | None) -> None:
    _hooks.tracing = tracing


def add_recorder(recorder: Callable[[float, Attributes], None]) -> None:
    """Call ``recorder(seconds, attributes)`` after every operation."""
    if recorder not in _hooks.recorders:
        _hooks.recorders = (*_hooks.recorders, recorder)


def remove_recorder(recorder: Callable[[float, Attributes], None]) -> None:
    _hooks.recorders = tuple(known for known in _hooks.recorders if known != recorder)


def _attributes_of(backend: Any, target: str | None, name: str) -> dict[str, Any]:
    per_backend = _attributes.get(backend)
    if per_backend is None:
        per_backend = _attributes[backend] = {}
    found = per_backend.get((target, name))
    if found is None:
        found = endpoint_attributes(backend, target)
        found["db.operation.name"] = name
        per_backend[(target, name)] = found
    return found


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


class Operation:
    """Report the backend operation ``name`` run inside the ``with`` block.

        with operation(self._backend, "entities.get", "users", model="User") as op:
            row = await connection.execute(...)
            op.note(rows=1)

    ``backend`` is the backend it runs on, ``target`` the PostgreSQL table, MongoDB
    collection or Redis area. The block is logged (``backend_operation`` at debug level,
    ``slow_operation`` above ``log.slow_threshold_ms``) with ``fields``; with telemetry on
    it is also a CLIENT span, current while the block runs (so that the drivers' own spans
    are its children), and a ``db.client.operation.duration`` measurement. A plain ``with``
    serves sync and async code alike: ``async with`` is not needed. A class rather than a
    function returning one: a call less on every operation.
    """

    __slots__ = ("_backend", "_fields", "_name", "_scope", "_started", "_target")

    def __init__(self, backend: Any, name: str, target: str | None = None, **fields: Any):
        self._backend = backend
        self._name = name
        self._target = target
        self._fields = fields
        self._scope: SpanScope | None = None

    def note(self, **fields: Any) -> None:
        """Add log fields known only at the end of the operation (``rows=len(rows)``)."""
        self._fields.update(fields)

    def __enter__(self) -> Operation:
        tracing = _hooks.tracing
        if tracing is not None:
            attributes = _attributes_of(self._backend, self._target, self._name)
            self._scope = tracing.start(self._name, attributes)
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        if self._scope is not None or _hooks.recorders:  # telemetry on
            self._finish(elapsed, exc)
        if exc is None:
            report_operation(self._backend.name, self._name, elapsed, self._fields)

    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        error_type = None if exc is None else _error_type(exc)
        if self._scope is not None:
            self._scope.end(error_type)
        recorders = _hooks.recorders
        if recorders:
            attributes: Attributes = _attributes_of(self._backend, self._target, self._name)
            if error_type is not None:
                attributes = {**attributes, "error.type": error_type}
            for record in recorders:
                record(elapsed, attributes)


#: The instrumentation point's name at call sites: ``with operation(...)``.
operation = Operation
