"""``@rate_limit``: limit calls of a sync or async function or method.

    @rate_limit("10/second;1000/hour", key=lambda user_id: f"search:{user_id}")
    async def search(user_id: str, query: str) -> list[str]: ...

    @store.limiter.limit("5/minute", key=lambda self, user_id: f"export:{user_id}", cost=2)
    def export(self, user_id): ...

The limits are parsed and checked once, here; a call costs one dictionary lookup (the
limiter's prepared check for these limits) and one Redis round trip. The
``key`` callable receives the call's arguments by name (``lambda user_id: ...`` gets the
``user_id`` argument however it was passed, and may take fewer parameters than the function;
one taking ``*args``/``**kwargs`` is called like the function); without it every caller shares
one limit named after the function. A key callable that raises, or returns something other
than a string, raises :class:`ValidationError` on ``key``. A refusal raises
:class:`RateLimitExceeded` (``exc.headers()`` renders a 429 response); with
``ratelimit.fail_mode = "fail_closed"`` an outage raises :class:`BackendUnavailableError`
(a 503, never a 429).

Standalone (no ``limiter=``), the decorator uses the limiter of the default store that it
shares with standalone ``@cached`` (:mod:`nexus_store.redis._default_store`): settings from
``NexusSettings.load()`` on first call, closed by ``nexus_store.redis.close_default_store()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from nexus_store.redis._default_store import default_store
from nexus_store.redis.ratelimit.limiter import RateLimiter, limit_calls

__all__ = ["default_limiter", "rate_limit"]

P = ParamSpec("P")
R = TypeVar("R")


def default_limiter() -> RateLimiter:
    """The limiter that standalone ``@rate_limit`` decorators share (of the default store)."""
    return default_store.get(RateLimiter)


def rate_limit(
    limits: str,
    *,
    key: Callable[..., str] | None = None,
    cost: int = 1,
    limiter: RateLimiter | None = None,
    strategy: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Refuse calls beyond ``limits`` (``"10/second;1000/hour"``) for each key that ``key``
    derives from the call's arguments (by name); each call consumes ``cost``. ``strategy``
    overrides ``ratelimit.strategy``. Bad limits, cost, strategy or key raise
    :class:`ValidationError` here, at decoration time."""
    chosen = default_limiter if limiter is None else lambda: limiter
    return limit_calls(chosen, limits, key=key, cost=cost, strategy=strategy)
