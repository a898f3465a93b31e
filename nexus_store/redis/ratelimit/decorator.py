"""``@rate_limit``: limit calls of a sync or async function or method.

    @rate_limit("10/second;1000/hour", key=lambda request: request.client_ip)
    async def search(request): ...

    @store.limiter.limit("5/minute", key=lambda self, user_id: f"export:{user_id}", cost=2)
    def export(self, user_id): ...

The limits are parsed and checked once, here; a call costs one dictionary lookup (the
limiter's prepared check for these limits) and one Redis round trip. The
``key`` callable receives the call's arguments; without it every caller shares one limit named
after the function. A refusal raises :class:`RateLimitExceeded` (``exc.headers()`` renders a
429 response); with ``ratelimit.fail_mode = "fail_closed"`` an outage raises
:class:`BackendUnavailableError`.

Standalone (no ``limiter=``), the decorator builds settings with ``NexusSettings.load()``
(environment, ``NEXUS_CONFIG``) and its own Redis connections on first call, shared by every
standalone decorator of the process. Its asyncio connections belong to the event loop of that
first async call, like any redis-py asyncio client.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from nexus_store.errors import ValidationError
from nexus_store.redis.ratelimit.parse import parse_limits
from nexus_store.redis.ratelimit.strategies import get_strategy

if TYPE_CHECKING:
    from nexus_store.redis.ratelimit.limiter import RateLimiter

__all__ = ["default_limiter", "rate_limit"]

P = ParamSpec("P")
R = TypeVar("R")


class _Standalone:
    """The limiter of undecorated-store use, built once per process on first need."""

    def __init__(self) -> None:
        self._limiter: RateLimiter | None = None
        self._lock = threading.Lock()

    def get(self) -> RateLimiter:
        if self._limiter is None:
            with self._lock:
                if self._limiter is None:
                    from nexus_store.connections import Backends
                    from nexus_store.redis.ratelimit.limiter import RateLimiter
                    from nexus_store.settings import NexusSettings

                    self._limiter = RateLimiter(Backends(NexusSettings.load()))
        return self._limiter


_standalone = _Standalone()


def default_limiter() -> RateLimiter:
    """The process-wide limiter that standalone ``@rate_limit`` decorators share."""
    return _standalone.get()


def rate_limit(
    limits: str,
    *,
    key: Callable[..., str] | None = None,
    cost: int = 1,
    limiter: RateLimiter | None = None,
    strategy: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Refuse calls beyond ``limits`` (``"10/second;1000/hour"``) for each ``key(*args,
    **kwargs)``; each call consumes ``cost``. ``strategy`` overrides ``ratelimit.strategy``.
    Bad limits, cost or strategy raise :class:`ValidationError` here, at decoration time."""
    parsed = parse_limits(limits)
    if type(cost) is not int or not 1 <= cost <= parsed.smallest_amount:
        raise ValidationError(
            "cost", f"must be an integer from 1 to {parsed.smallest_amount} for {limits!r}"
        )
    if strategy is not None:
        get_strategy(strategy)
    if key is not None and not callable(key):
        raise ValidationError("key", "must be a callable taking the function's arguments")

    # Validated above; a call passes the same limit string, cost and strategy name, which the
    # limiter maps to its prepared check with one dictionary lookup.
    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        shared_key = f"{func.__module__}.{func.__qualname__}"

        def key_of(args: Any, kwargs: Any) -> str:
            return shared_key if key is None else key(*args, **kwargs)

        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def limited_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                await (limiter or _standalone.get()).check(
                    key_of(args, kwargs), limits, cost=cost, strategy=strategy
                )
                return await async_func(*args, **kwargs)

            return cast("Callable[P, R]", limited_async)

        @functools.wraps(func)
        def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            (limiter or _standalone.get()).check_sync(
                key_of(args, kwargs), limits, cost=cost, strategy=strategy
            )
            return func(*args, **kwargs)

        return limited

    return decorate
