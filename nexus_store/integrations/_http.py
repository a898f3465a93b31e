"""What the web integrations answer, framework-neutral: one home for the status codes, headers
and bodies that the ASGI and Django integrations both send.

The rules:

- an allowed call passes, with the draft's rate-limit headers added to its response;
- a refusal is **429** with the headers and ``Retry-After``;
- a decision made while Redis is unreachable under ``fail_closed`` is **503** with
  ``Retry-After`` (never a 429: the client did nothing wrong), logged at most once per
  ``ratelimit.recheck_interval``;
- a key callable that raises (or returns no usable key) raises :class:`ValidationError`
  naming ``key``, chained from what it raised, as the decorator's does: the application's
  bug, which the framework answers **500** and logs with its cause (never a 429 or a 4xx:
  the client did nothing wrong);
- a health report is ``application/health+json`` with ``Cache-Control: no-store``, 200 for
  pass and warn, 503 for fail.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from nexus_store.errors import ValidationError
from nexus_store.log import get_logger
from nexus_store.redis.ratelimit._call_key import guarded_key
from nexus_store.redis.ratelimit.headers import policy_header
from nexus_store.redis.ratelimit.parse import parse_limits
from nexus_store.redis.ratelimit.strategies import get_strategy

if TYPE_CHECKING:
    from nexus_store.errors import NexusStoreError
    from nexus_store.health import HealthReport
    from nexus_store.redis.ratelimit.limiter import RateLimitResult

__all__ = [
    "Answer",
    "OutageLog",
    "RateLimitRule",
    "error_answer",
    "health_answer",
    "rate_limit_answer",
]

RequestT = TypeVar("RequestT")
_log = get_logger("nexus_store.integrations")
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to send instead of the application's (``status`` set), or the headers to
    add to the application's (``status`` None)."""

    status: int | None
    headers: dict[str, str]
    body: bytes = b""
    media_type: str = _JSON
    detail: str = ""  # what the body says, for frameworks that render errors themselves


@dataclass(frozen=True, slots=True)
class RateLimitRule(Generic[RequestT]):
    """One rate limit applied to requests: ``limits`` (``"100/minute;1000/hour"``) per
    ``key(request)``; ``names`` names the policies in the headers (one per limit), ``legacy``
    adds ``RateLimit-Limit``/``-Remaining``/``-Reset``, requests to ``exempt`` paths pass
    unchecked (health probes, for instance). Checked when built: bad limits, cost, strategy or
    names raise :class:`ValidationError` at start-up, not on the first request."""

    limits: str
    key: Callable[[RequestT], str]
    cost: int = 1
    strategy: str | None = None
    names: Sequence[str] | None = None
    legacy: bool = False
    exempt: Collection[str] = field(default_factory=frozenset)
    _key: Callable[[RequestT], object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = parse_limits(self.limits)
        parsed.check_cost(self.cost)
        if self.strategy is not None:
            get_strategy(self.strategy)
        if not callable(self.key):
            raise ValidationError("key", "must be a callable taking the request")
        object.__setattr__(self, "_key", guarded_key(self.key))
        if self.names is not None:
            policy_header(parsed, self.names)  # refuses a wrong count, duplicates, bad text
        object.__setattr__(self, "exempt", frozenset(self.exempt))

    def key_of(self, request: RequestT) -> str:
        """``key(request)``; what it raises becomes a ``ValidationError`` naming ``key``."""
        # A key that is not a str is refused by the check (ValidationError on "key").
        return cast(str, self._key(request))


class OutageLog:
    """Logs a 503 answered for an outage, once per outage error: the limiter keeps one error
    per ``recheck_interval``, so the log gets at most one line per interval, not one per
    request."""

    def __init__(self) -> None:
        self._last: NexusStoreError | None = None
        self._lock = threading.Lock()

    def refused(self, result: RateLimitResult, path: str) -> None:
        with self._lock:
            if result.error is self._last and result.error is not None:
                return
            self._last = result.error
        _log.warning(
            "ratelimit_unavailable_refused",
            status=503,
            path=path,
            limits=result.limits.text,
            error=None if result.error is None else str(result.error),
        )


def _json(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def rate_limit_answer(
    result: RateLimitResult, rule: RateLimitRule[RequestT], outages: OutageLog, path: str
) -> Answer:
    """The answer for one decision (see the module docs)."""
    headers = result.headers(names=rule.names, legacy=rule.legacy)
    if result.allowed:
        return Answer(None, headers)
    if result.source == "fail_closed":
        outages.refused(result, path)
        return error_answer(503, "rate limiter unavailable; retry later", headers)
    return error_answer(429, f"rate limit {result.limit.text} exceeded", headers)


def error_answer(status: int, detail: str, headers: dict[str, str]) -> Answer:
    """A JSON error response: ``{"status": 429, "detail": "..."}``."""
    body = _json({"status": status, "detail": detail})
    return Answer(status, headers, body, detail=detail)


def health_answer(report: HealthReport) -> Answer:
    """The ``application/health+json`` response of ``report``, as the report renders it."""
    return Answer(
        report.http_status,
        {"Cache-Control": "no-store"},
        _json(report.to_dict()),
        report.media_type,
    )
