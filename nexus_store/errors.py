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

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "ApprovalRequiredError",
    "BackendUnavailableError",
    "BackupError",
    "ConfigurationError",
    "ConflictError",
    "IntegrityError",
    "NexusStoreError",
    "NotFoundError",
    "QueueError",
    "RateLimitDecision",
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


class ApprovalRequiredError(NexusStoreError):
    """An update touched fields its model puts under approval; nothing was written.

    ``fields`` names them. Ask for the change with ``store.approvals.request(...)``: it is
    applied once approved.
    """

    def __init__(self, kind: str, fields: list[str]) -> None:
        super().__init__(
            f"changing {', '.join(fields)} of {kind} needs approval: "
            "use store.approvals.request(...)"
        )
        self.kind = kind
        self.fields = fields


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


class RateLimitDecision(Protocol):
    """What :class:`RateLimitExceeded` reports (``nexus_store.redis.ratelimit``'s
    ``RateLimitResult`` is one): a decision that renders its own HTTP headers."""

    def headers(
        self, *, names: Sequence[str] | None = None, legacy: bool = False
    ) -> Mapping[str, str]: ...


class RateLimitExceeded(NexusStoreError):
    """A rate limit refused the call. (An outage is never one of these: a call refused
    because Redis is unreachable under ``fail_closed`` raises :class:`BackendUnavailableError`.)

    ``limit`` is the limit that refused (``"10/second"``), ``remaining`` what is left of
    it, ``reset_after`` the seconds until it is full again and ``retry_after`` the seconds
    until this call would pass. ``decision`` is the whole decision; :meth:`headers` renders
    it for a 429 response.
    """

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
        decision: RateLimitDecision,
    ) -> None:
        super().__init__(f"rate limit {limit} exceeded for {key!r}; retry in {retry_after:.3f}s")
        self.key = key
        self.limit = limit
        self.amount = amount
        self.window_seconds = window_seconds
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.decision = decision

    def headers(
        self, *, names: Sequence[str] | None = None, legacy: bool = False
    ) -> Mapping[str, str]:
        """HTTP headers for a 429 response: ``RateLimit-Policy``, ``RateLimit`` and
        ``Retry-After`` (and the legacy set with ``legacy=True``); see
        ``nexus_store.redis.ratelimit.headers``."""
        return self.decision.headers(names=names, legacy=legacy)
