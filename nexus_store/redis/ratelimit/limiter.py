"""``store.limiter``: rate limits counted in Redis (area ``ratelimit``), one round trip each.

    result = await store.limiter.hit("user:42", "10/second;1000/hour")
    if not result.allowed:
        return Response(status_code=429, headers=result.headers())

    await store.limiter.check("user:42", "10/second")   # raises RateLimitExceeded instead
    await store.limiter.test("user:42", "10/second")    # would it pass? (consumes nothing)
    await store.limiter.peek("user:42", "10/second")    # the current state
    await store.limiter.reset("user:42")                # forget every limit of this key

Every method has a blocking twin with a ``_sync`` suffix. A check evaluates all of its limits
in one Lua script on the server's clock, sent with EVALSHA (after NOSCRIPT, from a new or
restarted server, it is loaded and the call retried once), and consumes only when every limit
passes. Everything about a check but its key is worked out once per (limits, cost, strategy)
and reused (:class:`_Plan`). When Redis is unreachable, ``ratelimit.fail_mode``
decides: ``fail_open`` lets calls through, ``fail_closed`` refuses them (``check`` raises
:class:`BackendUnavailableError`), ``local`` limits in this process. Outages are logged once
when they start and once when they end, and counted in :meth:`RateLimiter.stats`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, ParamSpec, TypeVar

import redis.asyncio
import redis.exceptions

from nexus_store._errors import describe
from nexus_store.errors import BackendUnavailableError, RateLimitExceeded, ValidationError
from nexus_store.log import get_logger, observe
from nexus_store.redis.ratelimit._local import LocalLimiter
from nexus_store.redis.ratelimit.headers import rate_limit_headers
from nexus_store.redis.ratelimit.limits import RateLimitItem, RateLimits
from nexus_store.redis.ratelimit.parse import parse_limits
from nexus_store.redis.ratelimit.strategies import STRATEGIES, Strategy, get_strategy

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.redis.keys import Keyspace

__all__ = ["RateLimitHit", "RateLimitResult", "RateLimiter", "Source"]

P = ParamSpec("P")
R = TypeVar("R")
Source = Literal["redis", "local", "fail_open", "fail_closed"]
Limits = str | RateLimits
StrategyChoice = str | Strategy | None

_log = get_logger("nexus_store.ratelimit")
# Anything Redis answers with instead of a decision: refused connections, timeouts, a cluster
# without quorum, a read-only replica after failover, OOM...
_BACKEND_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)
# What the client's retry policy (``redis.retries``) covers: a connection that broke or timed
# out after it was handed over (redis-py has already dropped it).
_RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
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
    up last if several did), or else the one with the least ``remaining``.

    ``reset_after`` is the seconds until that limit is full again, ``retry_after`` the seconds
    until this call would pass (0 when it passed). ``source`` says who decided: ``"redis"``,
    or the fail mode while Redis was unreachable. (A named tuple: immutable and cheap.)
    """

    allowed: bool
    key: str
    limit: RateLimitItem
    remaining: int
    reset_after: float
    retry_after: float
    source: Source = "redis"

    def __bool__(self) -> bool:
        """``if await limiter.hit(key, "10/second"):`` reads as "if the call is allowed"."""
        return self.allowed

    def headers(self, *, policy_name: str = "default") -> dict[str, str]:
        """IETF ``RateLimit``/``RateLimit-Policy``, the legacy set, and ``Retry-After``."""
        return rate_limit_headers(
            limit=self.limit.amount,
            window_seconds=self.limit.window_seconds,
            remaining=self.remaining,
            reset_after=self.reset_after,
            retry_after=self.retry_after,
            policy_name=policy_name,
        )

    def exceeded(self) -> RateLimitExceeded:
        """The exception that reports this refusal."""
        return RateLimitExceeded(
            self.key,
            limit=self.limit.text,
            amount=self.limit.amount,
            window_seconds=self.limit.window_seconds,
            remaining=self.remaining,
            reset_after=self.reset_after,
            retry_after=self.retry_after,
        )


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
        self._backends = backends
        self.settings = backends.settings.ratelimit
        self.strategy = get_strategy(self.settings.strategy)
        self._keyspace: Keyspace | None = None
        self._plans: dict[tuple[object, ...], _Plan] = {}
        self._redis_keys: dict[str, dict[str, str]] = {name: {} for name in STRATEGIES}
        self._async_client: redis.asyncio.Redis | None = None
        self._sync_client: redis.Redis | None = None
        # The pools of a standalone server's clients (None on a cluster): see _send.
        self._async_pool: redis.asyncio.ConnectionPool | None = None
        self._sync_pool: redis.ConnectionPool | None = None
        self._local = LocalLimiter(self.settings.local_max_keys)
        self._lock = threading.Lock()
        self._counts = {"allowed": 0, "refused": 0}
        self._backend_errors = {"fail_open": 0, "fail_closed": 0, "local": 0}
        self._outages = 0
        self._down_since: float | None = None
        self._last_error: BaseException | None = None
        self._recheck_at = 0.0

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
        return await self._run(key, self._plan(limits, cost, strategy, _CONSUME))

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
        result = await self._run(key, self._plan(limits, cost, strategy, _CONSUME))
        if not result.allowed:
            raise self._refusal(result)
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
        return await self._run(key, self._plan(limits, cost, strategy, _LOOK))

    async def peek(
        self, key: str, limits: Limits = "10/second", *, strategy: StrategyChoice = None
    ) -> RateLimitResult:
        """The current state of ``key`` under ``limits``. Consumes nothing."""
        return await self._run(key, self._plan(limits, 0, strategy, _LOOK))

    async def reset(self, key: str) -> None:
        """Forget every limit of ``key``, under every strategy (one DEL). Raises
        :class:`BackendUnavailableError` when Redis is unreachable: no fail mode applies."""
        keys = self._state_keys(key)
        self._local.reset(key)
        with self._backends.redis.unavailable():
            await (self._async_client or self._connect_async()).delete(*keys)

    async def put(self, hit: RateLimitHit) -> RateLimitResult:
        """Route target of ``store.put(RateLimitHit(...))``: the same as :meth:`hit`."""
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
        return self._run_sync(key, self._plan(limits, cost, strategy, _CONSUME))

    def check_sync(
        self,
        key: str,
        limits: Limits = "10/second",
        *,
        cost: int = 1,
        strategy: StrategyChoice = None,
    ) -> RateLimitResult:
        """Blocking :meth:`check`."""
        result = self._run_sync(key, self._plan(limits, cost, strategy, _CONSUME))
        if not result.allowed:
            raise self._refusal(result)
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
        return self._run_sync(key, self._plan(limits, cost, strategy, _LOOK))

    def peek_sync(
        self, key: str, limits: Limits = "10/second", *, strategy: StrategyChoice = None
    ) -> RateLimitResult:
        """Blocking :meth:`peek`."""
        return self._run_sync(key, self._plan(limits, 0, strategy, _LOOK))

    def reset_sync(self, key: str) -> None:
        """Blocking :meth:`reset`."""
        keys = self._state_keys(key)
        self._local.reset(key)
        with self._backends.redis.unavailable():
            (self._sync_client or self._connect_sync()).delete(*keys)

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
        from nexus_store.redis.ratelimit.decorator import rate_limit

        return rate_limit(limits, key=key, cost=cost, limiter=self, strategy=strategy)

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

    @property
    def _keys(self) -> Keyspace:
        if self._keyspace is None:
            self._keyspace = self._backends.redis.keyspace("ratelimit")
        return self._keyspace

    def _state_keys(self, key: str) -> list[str]:
        return [self._keys.tagged(name, key) for name in STRATEGIES]

    def _plan(self, limits: Limits, cost: int, strategy: StrategyChoice, mode: str) -> _Plan:
        # Only exact ints and strings are looked up: 1.0 and True must not pass as cost 1.
        if type(cost) is int and type(limits) is str:
            found = self._plans.get((limits, cost, strategy, mode))
            if found is not None:
                return found
        return self._new_plan(limits, cost, strategy, mode)

    def _new_plan(self, limits: Limits, cost: int, strategy: StrategyChoice, mode: str) -> _Plan:
        parsed = limits if type(limits) is RateLimits else parse_limits(limits)  # type: ignore[arg-type]
        chosen = (
            self.strategy
            if strategy is None
            else strategy
            if type(strategy) is Strategy
            else get_strategy(strategy)  # type: ignore[arg-type]
        )
        if type(cost) is not int or not _MIN_COST[mode] <= cost <= parsed.smallest_amount:
            raise _bad_cost(cost, parsed)
        plan = _Plan(
            parsed,
            chosen,
            cost,
            mode == _CONSUME,
            (cost, mode, *parsed.script_args),
            self._redis_keys[chosen.name],
        )
        if type(limits) is str:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[(limits, cost, strategy, mode)] = plan
        return plan

    def _redis_key(self, plan: _Plan, key: str) -> str:
        """Escape ``key`` (the costliest step of a check, so memoised per strategy)."""
        found = self._keys.tagged(plan.strategy.name, key)
        if len(plan.redis_keys) >= _KEY_CACHE_SIZE:
            plan.redis_keys.clear()
        plan.redis_keys[key] = found
        return found

    def _connect_async(self) -> redis.asyncio.Redis:
        client = self._backends.redis.client("ratelimit")
        if isinstance(client, redis.asyncio.Redis):
            self._async_pool = client.connection_pool
        self._async_client = client
        return client

    def _connect_sync(self) -> redis.Redis:
        client = self._backends.redis.sync_client("ratelimit")
        if isinstance(client, redis.Redis):
            self._sync_pool = client.connection_pool
        self._sync_client = client
        return client

    # A check is one command on one connection. On a standalone server it is sent with
    # redis-py's connection API (borrow from the area's pool, send, read, give back), which
    # skips the client's per-command machinery: retry closures, OpenTelemetry hooks and
    # command dispatch, 7-8 us of a 60 us check. redis-py drops a connection whose reply
    # was not read, whatever the error; a connection that broke or timed out hands the
    # command to the client, whose retry policy (redis.retries) applies as for any command.
    # A cluster client routes the command itself.

    async def _send(self, client: redis.asyncio.Redis, *command: str | int) -> Any:
        pool = self._async_pool
        if pool is not None:
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.send_command(*command)
                return await connection.read_response()
            except _RETRYABLE:
                pass
            finally:
                await pool.release(connection)
        return await client.execute_command(*command)  # type: ignore[no-untyped-call]

    def _send_sync(self, client: redis.Redis, *command: str | int) -> Any:
        pool = self._sync_pool
        if pool is not None:
            connection = pool.get_connection()
            try:
                connection.send_command(*command)  # type: ignore[no-untyped-call]
                return connection.read_response()
            except _RETRYABLE:
                pass
            finally:
                pool.release(connection)
        return client.execute_command(*command)  # type: ignore[no-untyped-call]

    async def _run(self, key: str, plan: _Plan) -> RateLimitResult:
        if self._down_since is not None and time.monotonic() < self._recheck_at:
            return self._fallback(key, plan, None)
        redis_key = plan.redis_keys.get(key) or self._redis_key(plan, key)
        client = self._async_client or self._connect_async()
        strategy = plan.strategy
        started = time.perf_counter()
        try:
            try:
                raw = await self._send(client, "EVALSHA", strategy.sha, 1, redis_key, *plan.args)
            except redis.exceptions.NoScriptError:  # a new or restarted server
                await client.script_load(strategy.source)
                raw = await self._send(client, "EVALSHA", strategy.sha, 1, redis_key, *plan.args)
        except _BACKEND_ERRORS as exc:
            return self._fallback(key, plan, exc)
        observe("redis", "ratelimit", started)
        return self._decide(key, plan, raw, "redis")

    def _run_sync(self, key: str, plan: _Plan) -> RateLimitResult:
        if self._down_since is not None and time.monotonic() < self._recheck_at:
            return self._fallback(key, plan, None)
        redis_key = plan.redis_keys.get(key) or self._redis_key(plan, key)
        client = self._sync_client or self._connect_sync()
        strategy = plan.strategy
        started = time.perf_counter()
        try:
            try:
                raw = self._send_sync(client, "EVALSHA", strategy.sha, 1, redis_key, *plan.args)
            except redis.exceptions.NoScriptError:  # a new or restarted server
                client.script_load(strategy.source)
                raw = self._send_sync(client, "EVALSHA", strategy.sha, 1, redis_key, *plan.args)
        except _BACKEND_ERRORS as exc:
            return self._fallback(key, plan, exc)
        observe("redis", "ratelimit", started)
        return self._decide(key, plan, raw, "redis")

    def _decide(self, key: str, plan: _Plan, raw: Any, source: Source) -> RateLimitResult:
        allowed, index, remaining, reset_us, retry_us = raw
        result = RateLimitResult(
            allowed == 1,
            key,
            plan.limits.items[index - 1],
            remaining,
            reset_us / 1_000_000,
            retry_us / 1_000_000,
            source,
        )
        if plan.consume or self._down_since is not None:
            with self._lock:
                if plan.consume:
                    self._counts["allowed" if allowed == 1 else "refused"] += 1
                if source == "redis" and self._down_since is not None:
                    self._recovered()
        return result

    def _fallback(self, key: str, plan: _Plan, error: BaseException | None) -> RateLimitResult:
        """Decide by ``fail_mode``; ``error`` is set when Redis just failed this call."""
        mode = self.settings.fail_mode
        with self._lock:
            if error is not None:
                self._recheck_at = time.monotonic() + self.settings.recheck_interval
                self._last_error = error
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self._outages += 1
                    _log.warning(
                        "ratelimit_backend_unavailable",
                        fail_mode=mode,
                        error=describe(error),
                        recheck_interval=self.settings.recheck_interval,
                    )
            self._backend_errors[mode] += 1
        if mode == "local":
            raw = self._local.evaluate(key, plan.limits, plan.cost, consume=plan.consume)
            return self._decide(key, plan, raw, "local")
        items = plan.limits.items
        item = min(items, key=lambda limit: limit.amount)
        if mode == "fail_open":
            raw = (1, items.index(item) + 1, item.amount, 0, 0)
        else:
            wait = int(self.settings.recheck_interval * 1_000_000)
            raw = (0, items.index(item) + 1, 0, wait, wait)
        return self._decide(key, plan, raw, mode)

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

    def _refusal(self, result: RateLimitResult) -> Exception:
        if result.source == "fail_closed":
            error = BackendUnavailableError(
                "redis",
                "rate limiter cannot reach Redis and ratelimit.fail_mode is fail_closed"
                + (f" ({describe(self._last_error)})" if self._last_error is not None else ""),
            )
            error.__cause__ = self._last_error
            return error
        return result.exceeded()


def _bad_cost(cost: object, limits: RateLimits) -> ValidationError:
    if type(cost) is not int or cost < 0:
        return ValidationError("cost", f"must be a positive integer, not {cost!r}")
    return ValidationError(
        "cost", f"{cost} exceeds the smallest limit of {limits.text!r}; it could never pass"
    )
