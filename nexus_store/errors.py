"""One exception hierarchy for everything nexus-store raises.

Catch :class:`NexusStoreError` to handle any failure of the SDK; catch a subclass to handle
one kind. Driver exceptions never reach callers raw: they are wrapped in one of these, with
the original chained as ``__cause__`` (and with secrets masked in the message).

    try:
        await store.entities.create(User, email="a@example.com", username="a")
    except ConflictError as exc:
        print(exc.field)  # "email"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

__all__ = [
    "BackendUnavailableError",
    "BackupError",
    "ConfigurationError",
    "ConflictError",
    "IntegrityError",
    "NexusStoreError",
    "NotFoundError",
    "QueueError",
    "RateLimitExceeded",
    "StoreClosedError",
    "TamperDetected",
    "ValidationError",
]


class NexusStoreError(Exception):
    """Base class of every error raised by nexus-store."""


class ConfigurationError(NexusStoreError):
    """A setting is missing or invalid. ``setting`` names it (``"postgres.url"``)."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class StoreClosedError(NexusStoreError):
    """The store was closed: a sub-API it had not built before cannot be built now.

    ``api`` names the sub-API asked for (``"cache"``). Open a new ``NexusStore``.
    """

    def __init__(self, api: str) -> None:
        super().__init__(f"this NexusStore is closed; {api} is not available")
        self.api = api


class ValidationError(NexusStoreError, ValueError):
    """Caller input was refused before it reached a backend.

    ``field`` names the offending field (``"properties.$where"``, ``"email"``); ``problem``
    says what is wrong with it. Nothing was written.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFoundError(NexusStoreError, LookupError):
    """The requested record does not exist (or is soft-deleted, expired or revoked)."""

    def __init__(self, kind: str, key: Any) -> None:
        super().__init__(f"{kind} {key!s} not found")
        self.kind = kind
        self.key = key


class _ConstraintViolation(NexusStoreError):
    """A write refused by a rule of the stored data; names the field and constraint if known."""

    def __init__(
        self, message: str, *, field: str | None = None, constraint: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.constraint = constraint


class ConflictError(_ConstraintViolation):
    """The write conflicts with stored state: a unique value taken, or a stale version.

    ``field`` names the column or key when one is known, ``constraint`` the database
    constraint.
    """


class IntegrityError(_ConstraintViolation):
    """Stored data broke an integrity rule (a foreign key, a check, a hash chain)."""


class TamperDetected(IntegrityError):
    """The audit hash chain does not verify. ``seq`` is the first broken entry."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message, field="seq")
        self.seq = seq


class BackendUnavailableError(NexusStoreError, ConnectionError):
    """A backend could not be reached or did not answer in time.

    ``backend`` is ``"postgres"``, ``"mongo"`` or ``"redis"``; the message never contains a
    password.
    """

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class BackupError(NexusStoreError):
    """A backup archive was refused: missing, truncated, corrupt or wrong-key file, newer
    format or schema, a full disk, a target that already holds data...

    ``file`` names the archive file concerned (relative to the archive) when there is one,
    ``problem`` says what is wrong. A refused restore has written nothing to the target.
    """

    def __init__(self, problem: str, *, file: str | None = None) -> None:
        super().__init__(f"{file}: {problem}" if file else problem)
        self.file = file
        self.problem = problem


class QueueError(NexusStoreError):
    """A queue operation was refused (unknown message id, closed consumer...)."""


class RateLimitExceeded(NexusStoreError):
    """A rate limit refused the call.

    ``limit`` is the limit that refused (``"10/second"``), ``remaining`` what is left of
    it, ``reset_after`` the seconds until it is full again and ``retry_after`` the seconds
    until this call would pass. :meth:`headers` renders them for an HTTP response.
    """

    #: Renders :meth:`headers` from the exception's data. The rendering rules live with the
    #: rate limiter (``nexus_store.redis.ratelimit.headers``), which installs them when it is
    #: imported, as everything that raises this exception does: this module stays a leaf.
    header_renderer: ClassVar[Callable[[RateLimitExceeded, str], Mapping[str, str]]]

    def __init__(
        self,
        key: str,
        *,
        limit: str,
        amount: int,
        window_seconds: float,
        remaining: int,
        reset_after: float,
        retry_after: float,
    ) -> None:
        super().__init__(f"rate limit {limit} exceeded for {key!r}; retry in {retry_after:.3f}s")
        self.key = key
        self.limit = limit
        self.amount = amount
        self.window_seconds = window_seconds
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after

    def headers(self, *, policy_name: str = "default") -> Mapping[str, str]:
        """HTTP headers for a 429 response: IETF draft, legacy set and ``Retry-After``."""
        return RateLimitExceeded.header_renderer(self, policy_name)
