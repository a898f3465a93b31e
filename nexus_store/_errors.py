"""Turning driver exceptions into nexus-store errors, with secrets masked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nexus_store._secrets import scrub
from nexus_store.errors import BackendUnavailableError, NexusStoreError

_MAX_DESCRIPTION = 240


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description of a driver exception, at most 240 characters.

    Drivers put whole topology dumps in one line (pymongo's server selection errors); the
    head of the message says what went wrong, the rest stays on the chained cause.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    return line if len(line) <= _MAX_DESCRIPTION else line[: _MAX_DESCRIPTION - 1] + "…"


@contextmanager
def unavailable_on(backend: str, *errors: type[BaseException]) -> Iterator[None]:
    """Re-raise ``errors`` (and timeouts) as :class:`BackendUnavailableError` for ``backend``."""
    caught: tuple[type[BaseException], ...] = (*errors, TimeoutError, OSError)
    try:
        yield
    except NexusStoreError:
        raise  # already typed (BackendUnavailableError is an OSError: never wrap it twice)
    except caught as exc:
        raise BackendUnavailableError(backend, describe(exc)) from exc
