"""``store.limiter``: rate limits counted in Redis (area ``ratelimit``), one round trip each.

    result = await store.limiter.hit("user:42", "10/second;1000/hour")
    if not result.allowed:
        return Response(status_code=429, headers=result.headers())

    await store.limiter.check("user:42", "10/second")   # raises RateLimitExceeded instead
    await store.limiter.test("user:42", "10/second")    # would it pass? (consumes nothing)
    await store.limiter.peek("user:42", "10/second")    # the current state
    await store.limiter.reset("user:42")                # forget every limit of this key

Every method has a blocking twin with a ``_sync`` suffix; both drive one core
(:meth:`RateLimiter._evaluation`). A check evaluates all of its limits in one Lua script on
the server's clock (run by :mod:`nexus_store.redis._lua`: EVALSHA on a pooled connection)
and consumes only when every limit passes. Everything about a check but its key is worked
out once per (limits, cost, strategy) and reused (:class:`_Plan`). When Redis is
unreachable, ``ratelimit.fail_mode`` decides: ``fail_open`` lets calls through,
``fail_closed`` refuses them (``check`` raises :class:`BackendUnavailableError`), ``local``
limits in this process. Outages are logged once when they start and once when they end, and
counted in :meth:`RateLimiter.stats`.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, ParamSpec, TypeVar, cast

from nexus_store._text import record_of, text
from nexus_store.errors import (
    BackendUnavailableError,
    NexusStoreError,
    RateLimitExceeded,
    ValidationError,
)
from nexus_store.log import get_logger
from nexus_store.redis._lua import LuaRunner, SyncLuaRunner
from nexus_store.redis.ratelimit._call_key import call_key
from nexus_store.redis.ratelimit._local import LocalLimiter
from nexus_store.redis.ratelimit.headers import outage_headers, rate_limit_headers
from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits
from nexus_store.redis.ratelimit.parse import parse_limits
from nexus_store.redis.ratelimit.strategies import STRATEGIES, Strategy, get_strategy
from nexus_store.telemetry import operation, watch

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["RateLimitHit", "RateLimitResult", "RateLimiter", "Source"]

P = ParamSpec("P")
R = TypeVar("R")
Source = Literal["redis", "local", "fail_open", "fail_closed"]
_OUTAGE_SOURCES = frozenset({"fail_open", "fail_closed"})
Limits = str | RateLimits
StrategyChoice = str | Strategy | None

_log = get_logger("nexus_store.ratelimit")
# An evaluation yields the Redis key to run its script on, is sent the script's reply or
# thrown what Redis answered instead of one (refused connections, timeouts, a cluster without
# quorum, a read-only replica after failover, OOM... as the SDK's errors), and then yields
# its decision. During an outage it yields the decision at once. (Yielding the decision
# rather than returning it spares each check a StopIteration.)
_Evaluation = Generator["str | RateLimitResult", Any, None]
_CONSUME, _LOOK = "1", "0"
_KEY_CACHE_SIZE = 10_000  # escaped keys kept per strategy
_PLAN_CACHE_SIZE = 1_024  # (limits, cost, strategy, mode) combinations kept
_MIN_COST = {_CONSUME: 1, _LOOK: 0}  # a hit consumes something; peek looks with cost 0


@dataclass(frozen=True, slots=True)
class RateLimitHit:
    """A record for ``await store.put(RateLimitHit("user:42", "10/second"))``."""

    key: str
    limits: str
    cost: int = 1


class RateLimitResult(NamedTuple):
    """One decision. ``limit`` is the deciding limit: the one that refused (the one that frees
    up last if several did), or else the one with the least ``remaining``; ``limits`` are all
    the limits of the check.

    ``reset_after`` is the seconds until that limit is full again, ``retry_after`` the seconds
    until this call would pass (0 when it passed), ``next_unit_after`` the seconds until at
    least one more unit of it is available (``retry_after`` on a refusal, 0 when full).
    ``source`` says who decided: ``"redis"``, or the fail mode while Redis was unreachable
    (``error`` then says why). (A named tuple: immutable and cheap.)

    The outage rule: a ``"fail_closed"`` refusal is not a rate-limit refusal. Its
    :meth:`exceeded` raises :class:`BackendUnavailableError`, and its :meth:`headers` carry
    no ``RateLimit`` field, so that it can only be answered as a 503, never as a 429.
    """

    allowed: bool
    key: str
    limit: RateLimitItem
    remaining: int
    reset_after: float
    retry_after: float
    next_unit_after: float
    limits: RateLimits
    source: Source = "redis"
    error: NexusStoreError | None = None

    def __bool__(self) -> bool:
        """``if await limiter.hit(key, "10/second"):`` reads as "if the call is allowed"."""
        return self.allowed

    @property
    def outage(self) -> bool:
        """True when Redis was unreachable and the fail mode decided without counting."""
        return self.source in _OUTAGE_SOURCES

    def headers(
        self, *, names: Sequence[str] | None = None, legacy: bool = False
    ) -> dict[str, str]:
        """The draft's ``RateLimit-Policy`` (every limit; ``names`` gives one name per limit)
        and ``RateLimit`` (the deciding limit), ``Retry-After`` on a refusal, and with
        ``legacy`` the ``RateLimit-Limit``/``-Remaining``/``-Reset`` set. During an outage
        (``fail_open``/``fail_closed``) only the policies, and ``Retry-After`` when refused:
        nothing is known of what is left."""
        if self.source in _OUTAGE_SOURCES:
            return outage_headers(
                self.limits,
                retry_after=None if self.allowed else self.retry_after,
                names=names,
            )
        return rate_limit_headers(
            self.limits,
            deciding=self.limits.items.index(self.limit),
            remaining=self.remaining,
            next_unit_after=self.next_unit_after,
            reset_after=self.reset_after,
            retry_after=self.retry_after,
            names=names,
            legacy=legacy,
        )

    def exceeded(self) -> RateLimitExceeded:
        """The exception that reports this refusal. For a ``fail_closed`` decision it raises
        :class:`BackendUnavailableError` instead: an outage is never a rate-limit refusal."""
        if self.source == "fail_closed":
            raise self.unavailable()
        return RateLimitExceeded(
            self.key,
            limit=self.limit.text,
            amount=self.limit.amount,
            window_seconds=self.limit.window_seconds,
            remaining=self.remaining,
            reset_after=self.reset_after,
            retry_after=self.retry_after,
            decision=self,
        )

    def unavailable(self) -> BackendUnavailableError:
        """The error of a ``fail_closed`` refusal, chained to what Redis answered."""
        error = BackendUnavailableError(
            "redis",
            "rate limiter cannot reach Redis and ratelimit.fail_mode is fail_closed"
            + (f" ({self.error})" if self.error is not None else ""),
        )
        error.__cause__ = self.error
        return error


class _Plan(NamedTuple):
    """Everything about a check but its key, worked out once per (limits, cost, strategy,
    mode) and reused by every call: the hot path is a dictionary lookup, not validation."""

    limits: RateLimits
    strategy: Strategy
    cost: int
    consume: bool
    args: tuple[str | int, ...]  # the script's ARGV: cost, mode, then 3 per limit
    redis_keys: dict[str, str]  # caller's key -> escaped Redis key, shared per strategy


class RateLimiter:
    """Rate limits for one :class:`NexusStore` (``store.limiter``); see the module docs."""

    def __init__(self, backends: Backends) -> None:
        self.settings = backends.settings.ratelimit
        self.strategy = get_strategy(self.settings.strategy)
        self._redis = backends.redis
        self._keys = backends.redis.keyspace("ratelimit")
        self._lua = LuaRunner(backends.redis, "ratelimit")
        self._lua_sync = SyncLuaRunner(backends.redis, "ratelimit")
        self._plans: dict[tuple[object, ...], _Plan] = {}
        self._redis_keys: dict[str, dict[str, str]] = {name: {} for name in STRATEGIES}
        self._local = LocalLimiter(self.settings.local_max_keys)
        self._lock = threading.Lock()
        self._counts = {"allowed": 0, "refused": 0}
        self._backend_errors = {"fail_open": 0, "fail_closed": 0, "local": 0}
        self._outages = 0
        self._down_since: float | None = None
        self._last_error: NexusStoreError | None = None
        self._recheck_at = 0.0
        watch("limiter", self)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(strategy={self.strategy.name!r}, fail_mode={self.settings.fail_mode!r})"
        )

    # -- asyncio API ----------------------------------------------------------------------

    async def hit(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Consume ``cost`` from every limit if all of them allow it. Never raises for a
        refusal or an outage (see ``source``); bad input raises :class:`ValidationError`."""
        return await self._evaluate(key, self._plan(limits, cost, strategy, _CONSUME))

    async def check(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """:meth:`hit` that raises :class:`RateLimitExceeded` on refusal, or
        :class:`BackendUnavailableError` when failing closed during an outage."""
        result = await self._evaluate(key, self._plan(limits, cost, strategy, _CONSUME))
        if not result.allowed:
            raise result.exceeded()
        return result

    async def test(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Would a hit of ``cost`` pass now? Consumes nothing."""
        return await self._evaluate(key, self._plan(limits, cost, strategy, _LOOK))

    async def peek(
        self, key: str, limits: Limits = "10/second", *, strategy: StrategyChoice = None
    ) -> RateLimitResult:
        """The current state of ``key`` under ``limits``. Consumes nothing."""
        return await self._evaluate(key, self._plan(limits, 0, strategy, _LOOK))

    async def reset(self, key: str) -> None:
        """Forget every limit of ``key``, under every strategy (one DEL). Raises
        :class:`BackendUnavailableError` when Redis is unreachable: no fail mode applies."""
        keys = self._state_keys(key)
        self._local.reset(key)
        with operation(self._redis, "limiter.reset", "ratelimit"), self._redis.unavailable():
            await self._lua.client.delete(*keys)

    async def put(self, hit: RateLimitHit) -> RateLimitResult:
        """Route target of ``store.put(RateLimitHit(...))``: the same as :meth:`hit`."""
        record_of(RateLimitHit, hit, "hit")
        return await self.hit(hit.key, hit.limits, cost=hit.cost)

    # -- blocking API ---------------------------------------------------------------------

    def hit_sync(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Blocking :meth:`hit`, for threads and sync code."""
        return self._evaluate_sync(key, self._plan(limits, cost, strategy, _CONSUME))

    def check_sync(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Blocking :meth:`check`."""
        result = self._evaluate_sync(key, self._plan(limits, cost, strategy, _CONSUME))
        if not result.allowed:
            raise result.exceeded()
        return result

    def test_sync(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Blocking :meth:`test`."""
        return self._evaluate_sync(key, self._plan(limits, cost, strategy, _LOOK))

    def peek_sync(
        self, key: str, limits: Limits = "10/second", *, strategy: StrategyChoice = None
    ) -> RateLimitResult:
        """Blocking :meth:`peek`."""
        return self._evaluate_sync(key, self._plan(limits, 0, strategy, _LOOK))

    def reset_sync(self, key: str) -> None:
        """Blocking :meth:`reset`."""
        keys = self._state_keys(key)
        self._local.reset(key)
        with operation(self._redis, "limiter.reset", "ratelimit"), self._redis.unavailable():
            self._lua_sync.client.delete(*keys)

    # -- decorator and statistics ---------------------------------------------------------

    def limit(
        self,
        limits: str,
        *,
        key: Callable[..., str] | None = None,
        cost: int = 1,
        strategy: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """``@store.limiter.limit("10/second", key=lambda user: user.id)``: see
        :func:`nexus_store.redis.ratelimit.decorator.rate_limit`."""
        return limit_calls(lambda: self, limits, key=key, cost=cost, strategy=strategy)

    def stats(self) -> dict[str, Any]:
        """Counters since creation: hits ``allowed`` and ``refused`` (whoever decided),
        ``backend_errors`` (calls decided by each fail mode because Redis was unreachable),
        ``outages`` (times Redis went away) and whether it is ``down`` now."""
        with self._lock:
            return {
                **self._counts,
                "backend_errors": dict(self._backend_errors),
                "outages": self._outages,
                "down": self._down_since is not None,
                "fail_mode": self.settings.fail_mode,
                "strategy": self.strategy.name,
            }

    # -- internals ------------------------------------------------------------------------

    def _state_keys(self, key: str) -> list[str]:
        _check_key(key)
        return [self._keys.tagged(name, key) for name in STRATEGIES]

    def _plan(self, limits: Limits, cost: int, strategy: StrategyChoice, mode: str) -> _Plan:
        # Only exact ints and strings are looked up: 1.0 and True must not pass as cost 1, nor
        # an unhashable strategy raise TypeError from the lookup.
        if (
            type(cost) is int
            and type(limits) is str
            and (strategy is None or type(strategy) is str)
        ):
            found = self._plans.get((limits, cost, strategy, mode))
            if found is not None:
                return found
        return self._new_plan(limits, cost, strategy, mode)

    def _new_plan(self, limits: Limits, cost: int, strategy: StrategyChoice, mode: str) -> _Plan:
        parsed = limits if isinstance(limits, RateLimits) else parse_limits(limits)
        chosen = (
            self.strategy
            if strategy is None
            else strategy
            if isinstance(strategy, Strategy)
            else get_strategy(strategy)
        )
        parsed.check_cost(cost, least=_MIN_COST[mode])
        plan = _Plan(
            parsed,
            chosen,
            cost,
            mode == _CONSUME,
            (cost, mode, *parsed.script_args),
            self._redis_keys[chosen.name],
        )
        if type(limits) is str and (strategy is None or type(strategy) is str):
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[(limits, cost, strategy, mode)] = plan
        return plan

    def _redis_key(self, plan: _Plan, key: str) -> str:
        """Check and escape ``key`` (the costliest step of a check, so memoised per
        strategy)."""
        _check_key(key)
        found = self._keys.tagged(plan.strategy.name, key)
        if len(plan.redis_keys) >= _KEY_CACHE_SIZE:
            plan.redis_keys.clear()
        plan.redis_keys[key] = found
        return found

    def _evaluation(self, key: str, plan: _Plan) -> _Evaluation:
        """One decision, whoever drives it: Redis's answer, or the fail mode's while Redis is
        (or was just found) unreachable. :meth:`_evaluate` and :meth:`_evaluate_sync` run the
        yielded script on Redis and send back the reply or throw back the error."""
        # Only a str can be a memoised key: 5 must not find "5"'s entry, nor a list raise.
        known = plan.redis_keys.get(key) if type(key) is str else None
        redis_key = known or self._redis_key(plan, key)
        if self._down_since is not None and time.monotonic() < self._recheck_at:
            yield self._fallback(key, plan, None)
            return
        try:
            # The script runs (inline EVALSHA, past redis-py's hooks) while this is suspended.
            name = "limiter.hit" if plan.consume else "limiter.test"
            with operation(self._redis, name, "ratelimit"):
                reply = yield redis_key
        except NexusStoreError as exc:
            yield self._fallback(key, plan, exc)
            return
        yield self._decide(key, plan, reply, "redis")

    async def _evaluate(self, key: str, plan: _Plan) -> RateLimitResult:
        evaluation = self._evaluation(key, plan)
        redis_key = next(evaluation)
        if isinstance(redis_key, RateLimitResult):
            return redis_key
        try:
            reply = await self._lua.run(plan.strategy.script, (redis_key,), plan.args)
        except NexusStoreError as exc:
            return cast(RateLimitResult, evaluation.throw(exc))
        return cast(RateLimitResult, evaluation.send(reply))

    def _evaluate_sync(self, key: str, plan: _Plan) -> RateLimitResult:
        evaluation = self._evaluation(key, plan)
        redis_key = next(evaluation)
        if isinstance(redis_key, RateLimitResult):
            return redis_key
        try:
            reply = self._lua_sync.run(plan.strategy.script, (redis_key,), plan.args)
        except NexusStoreError as exc:
            return cast(RateLimitResult, evaluation.throw(exc))
        return cast(RateLimitResult, evaluation.send(reply))

    def _decide(
        self,
        key: str,
        plan: _Plan,
        raw: Any,
        source: Source,
        error: NexusStoreError | None = None,
    ) -> RateLimitResult:
        allowed, index, remaining, reset_us, retry_us, next_us = raw
        result = RateLimitResult(
            allowed == 1,
            key,
            plan.limits.items[index - 1],
            remaining,
            reset_us / 1_000_000,
            retry_us / 1_000_000,
            next_us / 1_000_000,
            plan.limits,
            source,
            error,
        )
        if plan.consume or self._down_since is not None:
            with self._lock:
                if plan.consume:
                    self._counts["allowed" if allowed == 1 else "refused"] += 1
                if source == "redis" and self._down_since is not None:
                    self._recovered()
        return result

    def _fallback(self, key: str, plan: _Plan, error: NexusStoreError | None) -> RateLimitResult:
        """Decide by ``fail_mode``; ``error`` is set when Redis just failed this call."""
        mode = self.settings.fail_mode
        with self._lock:
            if error is None:
                error = self._last_error
            else:
                self._recheck_at = time.monotonic() + self.settings.recheck_interval
                self._last_error = error
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self._outages += 1
                    _log.warning(
                        "ratelimit_backend_unavailable",
                        fail_mode=mode,
                        error=str(error),
                        recheck_interval=self.settings.recheck_interval,
                    )
            self._backend_errors[mode] += 1
        if mode == "local":
            raw = self._local.evaluate(key, plan.limits, plan.cost, consume=plan.consume)
            return self._decide(key, plan, raw, "local", error)
        items = plan.limits.items
        item = min(items, key=lambda limit: limit.amount)
        if mode == "fail_open":
            raw = (1, items.index(item) + 1, item.amount, 0, 0, 0)
        else:
            wait = int(self.settings.recheck_interval * 1_000_000)
            raw = (0, items.index(item) + 1, 0, wait, wait, wait)
        return self._decide(key, plan, raw, mode, error)

    def _recovered(self) -> None:
        """Called under the lock by the first call Redis answers after an outage."""
        assert self._down_since is not None
        _log.info(
            "ratelimit_backend_recovered",
            fail_mode=self.settings.fail_mode,
            down_seconds=round(time.monotonic() - self._down_since, 3),
        )
        self._down_since = None
        self._last_error = None


def _check_key(key: object) -> None:
    """Refuse keys that are not text, so that ``5`` and ``"5"`` (or ``None`` and ``"None"``)
    never share a budget, and text that Redis keys cannot hold faithfully."""
    text("key", key)


def limit_calls(
    limiter: Callable[[], RateLimiter],
    limits: str,
    *,
    key: Callable[..., str] | None = None,
    cost: int = 1,
    strategy: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator behind :func:`~nexus_store.redis.ratelimit.decorator.rate_limit` and
    :meth:`RateLimiter.limit`: each call checks with ``limiter()``. Bad limits, cost,
    strategy or key raise :class:`ValidationError` here, at decoration time; how ``key``
    receives the call's arguments is :mod:`~nexus_store.redis.ratelimit._call_key`'s rule."""
    parse_limits(limits).check_cost(cost, least=1)
    if strategy is not None:
        get_strategy(strategy)
    if key is not None and not callable(key):
        raise ValidationError("key", "must be a callable taking the function's arguments")

    # Validated above; a call passes the same limit string, cost and strategy name, which the
    # limiter maps to its prepared check with one dictionary lookup.
    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        shared_key = f"{func.__module__}.{func.__qualname__}"
        extract = None if key is None else call_key(func, key)

        def key_of(args: Any, kwargs: Any) -> str:
            # A key that is not a str is refused by the check (ValidationError on "key").
            return shared_key if extract is None else cast(str, extract(args, kwargs))

        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def limited_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                await limiter().check(key_of(args, kwargs), limits, cost=cost, strategy=strategy)
                return await async_func(*args, **kwargs)

            return cast("Callable[P, R]", limited_async)

        @functools.wraps(func)
        def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            limiter().check_sync(key_of(args, kwargs), limits, cost=cost, strategy=strategy)
            return func(*args, **kwargs)

        return limited

    return decorate
