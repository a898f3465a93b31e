"""The limiter against a real Redis: each algorithm's semantics, multi-limit checks, cost,
test/peek/reset, the decorator on functions and methods, routing and key injection."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Iterator

import pytest

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import RateLimitExceeded, ValidationError
from nexus_store.redis import close_default_store
from nexus_store.redis.names import STRATEGY_NAMES
from nexus_store.redis.ratelimit import (
    RateLimiter,
    RateLimitHit,
    RateLimitResult,
    default_limiter,
    rate_limit,
)

STRATEGIES = list(STRATEGY_NAMES)


@pytest.fixture
def key() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def _drain(
    limiter: RateLimiter, key: str, limits: str, strategy: str
) -> tuple[int, RateLimitResult]:
    """Hit until the first refusal (at most 50 times): how many passed, and the refusal."""
    for passed in range(50):
        result = await limiter.hit(key, limits, strategy=strategy)
        if not result:
            return passed, result
    raise AssertionError(f"{limits} never refused")


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_burst_then_refusal(store: NexusStore, key: str, strategy: str) -> None:
    limiter = store.limiter
    results = [await limiter.hit(key, "5/hour", strategy=strategy) for _ in range(7)]
    assert [result.allowed for result in results] == [True] * 5 + [False] * 2
    assert [bool(result) for result in results] == [True] * 5 + [False] * 2
    assert [result.remaining for result in results[:5]] == [4, 3, 2, 1, 0]
    refused = results[5]
    assert refused.source == "redis"
    assert refused.limit.text == "5/hour"
    assert refused.remaining == 0
    # A sliding window may make a caller wait into the next window, until the previous
    # one's weight has dropped enough: up to two windows.
    assert 0 < refused.retry_after <= (7200 if strategy == "sliding_window" else 3600)
    assert 0 < refused.reset_after <= 7200
    # A refusal consumes nothing: the state after it is the state before it.
    assert (await limiter.peek(key, "5/hour", strategy=strategy)).remaining == 0


async def test_gcra_spaces_units_evenly(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    for _ in range(10):
        assert (await limiter.hit(key, "10/10 seconds")).allowed
    refused = await limiter.hit(key, "10/10 seconds")
    assert not refused.allowed
    # One unit comes back every second, not the whole burst at the end of the window.
    assert 0 < refused.retry_after <= 1.0
    assert 8.5 < refused.reset_after <= 10.0


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_waiting_retry_after_lets_the_call_through(
    store: NexusStore, key: str, strategy: str
) -> None:
    limiter = store.limiter
    limits = "4/2 seconds"
    passed, refused = await _drain(limiter, key, limits, strategy)
    assert passed >= 4
    assert 0 < refused.retry_after <= 4.0
    await asyncio.sleep(refused.retry_after + 0.01)
    assert (await limiter.hit(key, limits, strategy=strategy)).allowed


async def test_fixed_window_refills_whole_at_its_end(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    for _ in range(3):
        assert (await limiter.hit(key, "3/2 seconds", strategy="fixed_window")).allowed
    refused = await limiter.hit(key, "3/2 seconds", strategy="fixed_window")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(refused.reset_after)
    await asyncio.sleep(refused.reset_after + 0.01)
    for _ in range(3):
        assert (await limiter.hit(key, "3/2 seconds", strategy="fixed_window")).allowed


async def test_sliding_window_remembers_the_previous_window(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    limits = "4/2 seconds"
    passed, refused = await _drain(limiter, key, limits, "sliding_window")
    assert passed >= 4
    await asyncio.sleep(refused.retry_after + 0.01)
    # Unlike a fixed window, the new window starts with the previous one's weight: only
    # part of the limit is back, so the burst is cut short.
    passed, _ = await _drain(limiter, key, limits, "sliding_window")
    assert 1 <= passed < 4


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_multi_limit_is_all_or_nothing(store: NexusStore, key: str, strategy: str) -> None:
    limiter = store.limiter
    limits = "3/hour;5/day"
    for _ in range(3):
        assert (await limiter.hit(key, limits, strategy=strategy)).allowed
    refused = await limiter.hit(key, limits, strategy=strategy)
    assert not refused.allowed
    assert refused.limit.text == "3/hour"
    # The daily limit did not pay for the refused call.
    assert (await limiter.peek(key, "5/day", strategy=strategy)).remaining == 2
    # While both pass, the result reports the tighter one.
    other = key + "-b"
    passed = await limiter.hit(other, "3/hour;5/day", strategy=strategy)
    assert (passed.limit.text, passed.remaining) == ("3/hour", 2)


async def test_multi_limit_reports_the_limit_that_frees_up_last(
    store: NexusStore, key: str
) -> None:
    limiter = store.limiter
    for _ in range(2):
        assert (await limiter.hit(key, "2/second;2/day")).allowed
    refused = await limiter.hit(key, "2/second;2/day")
    assert not refused.allowed
    assert refused.limit.text == "2/day"
    assert refused.retry_after > 3600


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_cost_consumes_several_units(store: NexusStore, key: str, strategy: str) -> None:
    limiter = store.limiter
    assert (await limiter.hit(key, "10/hour", cost=4, strategy=strategy)).remaining == 6
    assert (await limiter.hit(key, "10/hour", cost=4, strategy=strategy)).remaining == 2
    refused = await limiter.hit(key, "10/hour", cost=4, strategy=strategy)
    assert not refused.allowed
    assert refused.remaining == 2
    assert (await limiter.hit(key, "10/hour", cost=2, strategy=strategy)).remaining == 0


async def test_bad_cost_and_limits_are_validation_errors(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    for cost in (0, -1, 11, 1.5, True):
        with pytest.raises(ValidationError) as caught:
            await limiter.hit(key, "10/hour", cost=cost)  # type: ignore[arg-type]
        assert caught.value.field == "cost"
    with pytest.raises(ValidationError) as caught:
        await limiter.hit(key, "10/fortnight")
    assert caught.value.field == "limits"
    with pytest.raises(ValidationError) as caught:
        await limiter.hit(key, "10/hour", strategy="token_bucket")
    assert caught.value.field == "strategy"
    # An unhashable strategy raised TypeError from the plan cache's lookup (issue 18 fuzz).
    for strategy in (["gcra"], {"gcra": 1}, bytearray(b"gcra")):
        with pytest.raises(ValidationError) as caught:
            await limiter.hit(key, "10/hour", strategy=strategy)  # type: ignore[arg-type]
        assert caught.value.field == "strategy"
    with pytest.raises(ValidationError) as caught:
        await limiter.put("not a RateLimitHit")  # type: ignore[arg-type]
    assert caught.value.field == "hit"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_test_and_peek_consume_nothing(store: NexusStore, key: str, strategy: str) -> None:
    limiter = store.limiter
    fresh = await limiter.peek(key, "3/hour", strategy=strategy)
    assert (fresh.allowed, fresh.remaining, fresh.retry_after) == (True, 3, 0)
    for _ in range(5):
        probe = await limiter.test(key, "3/hour", cost=3, strategy=strategy)
        assert probe.allowed
    await limiter.hit(key, "3/hour", cost=2, strategy=strategy)
    assert not (await limiter.test(key, "3/hour", cost=2, strategy=strategy)).allowed
    assert (await limiter.test(key, "3/hour", strategy=strategy)).allowed
    assert (await limiter.peek(key, "3/hour", strategy=strategy)).remaining == 1


async def test_reset_forgets_every_limit_and_strategy(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    for strategy in STRATEGIES:
        await limiter.hit(key, "1/hour;5/day", strategy=strategy)
        assert not (await limiter.hit(key, "1/hour", strategy=strategy)).allowed
    await limiter.reset(key)
    for strategy in STRATEGIES:
        assert (await limiter.peek(key, "1/hour;5/day", strategy=strategy)).remaining == 1
        assert (await limiter.hit(key, "1/hour", strategy=strategy)).allowed


def test_sync_twins_share_the_state(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    assert limiter.hit_sync(key, "2/hour").allowed
    assert limiter.test_sync(key, "2/hour").allowed
    assert limiter.check_sync(key, "2/hour").remaining == 0
    with pytest.raises(RateLimitExceeded):
        limiter.check_sync(key, "2/hour")
    assert limiter.peek_sync(key, "2/hour").remaining == 0
    limiter.reset_sync(key)
    assert limiter.peek_sync(key, "2/hour").remaining == 2


async def test_check_raises_with_every_field(store: NexusStore, key: str) -> None:
    limiter = store.limiter
    await limiter.check(key, "1/minute")
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.check(key, "1/minute")
    exc = caught.value
    assert (exc.key, exc.limit, exc.amount, exc.window_seconds) == (key, "1/minute", 1, 60.0)
    assert exc.remaining == 0
    assert 0 < exc.retry_after <= 60 and 0 < exc.reset_after <= 60
    assert exc.headers()["Retry-After"] == str(int(-(-exc.retry_after // 1)))


async def test_result_headers(store: NexusStore, key: str) -> None:
    result = await store.limiter.hit(key, "100/minute")
    headers = result.headers(names=["api"])
    assert headers["RateLimit-Policy"] == '"api";q=100;w=60'
    assert headers["RateLimit"].startswith('"api";r=99;t=')
    assert "Retry-After" not in headers


async def test_store_put_routes_a_hit_to_the_limiter(store: NexusStore, key: str) -> None:
    assert isinstance(store.limiter, RateLimiter)
    first = await store.put(RateLimitHit(key, "2/hour", cost=2))
    assert (first.allowed, first.remaining) == (True, 0)
    assert not (await store.put(RateLimitHit(key, "2/hour"))).allowed
    stats = store.limiter.stats()
    assert (stats["allowed"], stats["refused"]) == (1, 1)
    assert stats["backend_errors"] == {"fail_open": 0, "fail_closed": 0, "local": 0}


async def test_keys_with_odd_characters_stay_in_their_namespace(
    store: NexusStore, redis_url: str, redis_namespace: str
) -> None:
    limiter = store.limiter
    base = uuid.uuid4().hex[:8]
    odd = [f"{base}:*", f"{base} x", f"{base}\n", f"{base}{{tag}}", f"{base}%3A*", f"{base}é"]
    for name in odd:
        assert (await limiter.hit(name, "1/hour")).allowed
    # Each odd key got its own limit, and none touched the plain one.
    assert (await limiter.peek(base, "1/hour")).remaining == 1
    for name in odd:
        assert not (await limiter.hit(name, "1/hour")).allowed
    raw = redis_lib.Redis.from_url(redis_url, db=store.settings.redis.databases.ratelimit)
    try:
        stored = [key.decode() for key in raw.scan_iter(match=f"{redis_namespace}:gcra:*{base}*")]
    finally:
        raw.close()
    assert len(stored) == len(odd)
    for name in stored:
        tag = name.removeprefix(f"{redis_namespace}:gcra:")
        assert tag.startswith("{") and tag.endswith("}")
        assert not set(tag[1:-1]) & set("{}*: \n")  # escaped, so one slot and no glob
    for bad in ("", "x" * 600):
        with pytest.raises(ValidationError):
            await limiter.hit(bad, "1/hour")


async def test_async_decorator_on_functions_and_methods(store: NexusStore, key: str) -> None:
    calls: list[str] = []

    @store.limiter.limit("2/hour", key=lambda user: f"{key}:{user}")
    async def fetch(user: str) -> str:
        calls.append(user)
        return user.upper()

    class Reports:
        def __init__(self, owner: str) -> None:
            self.owner = owner

        @rate_limit("1/hour", key=lambda self: f"{key}:report:{self.owner}", limiter=store.limiter)
        async def build(self) -> str:
            return f"report of {self.owner}"

    assert fetch.__name__ == "fetch"
    assert [await fetch("ada"), await fetch("ada")] == ["ADA", "ADA"]
    with pytest.raises(RateLimitExceeded) as caught:
        await fetch("ada")
    assert caught.value.key == f"{key}:ada"
    assert await fetch("bob") == "BOB"  # another key, another limit
    assert calls == ["ada", "ada", "bob"]  # the refused call never ran

    ada, bob = Reports("ada"), Reports("bob")
    assert await ada.build() == "report of ada"
    assert await bob.build() == "report of bob"
    with pytest.raises(RateLimitExceeded):
        await ada.build()


def test_sync_decorator_with_cost_and_shared_default_key(store: NexusStore) -> None:
    @store.limiter.limit("5/hour", cost=2)
    def export() -> str:
        return "done"

    assert export() == "done"
    assert export() == "done"
    with pytest.raises(RateLimitExceeded) as caught:
        export()
    # Without a key callable every caller shares one limit named after the function.
    assert caught.value.key.endswith(
        "test_sync_decorator_with_cost_and_shared_default_key.<locals>.export"
    )
    assert caught.value.remaining == 1


async def test_decorator_strategy_override(store: NexusStore, key: str) -> None:
    @store.limiter.limit("2/hour", key=lambda: key, strategy="fixed_window")
    async def ping() -> None:
        return None

    await ping()
    assert (await store.limiter.peek(key, "2/hour", strategy="fixed_window")).remaining == 1
    assert (await store.limiter.peek(key, "2/hour")).remaining == 2  # GCRA state untouched


async def test_standalone_decorator_configures_itself_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_stack: Stack, key: str
) -> None:
    for name, value in redis_stack.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NEXUS_RATELIMIT__STRATEGY", "sliding_window")
    await close_default_store()  # the next standalone call reads the environment afresh

    @rate_limit("1/hour", key=lambda: key)
    async def once() -> str:
        return "ok"

    @rate_limit("1/hour", key=lambda: key + "-sync")
    def once_sync() -> str:
        return "ok"

    assert await once() == "ok"
    with pytest.raises(RateLimitExceeded):
        await once()
    assert once_sync() == "ok"
    with pytest.raises(RateLimitExceeded):
        once_sync()
    limiter = default_limiter()
    assert limiter.strategy.name == "sliding_window"
    assert limiter.stats()["refused"] == 2
    async with NexusStore(redis_stack.settings()) as other:
        peeked = await other.limiter.peek(key, "1/hour", strategy="sliding_window")
    assert peeked.remaining == 0  # the standalone decorator used the same Redis keys
    await close_default_store()


@contextlib.contextmanager
def _wire(
    connection_class: type, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[object, ...]]]:
    """Every command the limiter's connections put on the wire, whichever redis-py layer
    sent it (the limiter's connection-level path and the client's ``execute_command`` both
    end in ``Connection.send_command``)."""
    sent: list[tuple[object, ...]] = []
    real = connection_class.send_command
    if inspect.iscoroutinefunction(real):

        async def recording(self: object, *args: object, **options: object) -> object:
            sent.append(args)
            return await real(self, *args, **options)

    else:

        def recording(self: object, *args: object, **options: object) -> object:  # type: ignore[misc]
            sent.append(args)
            return real(self, *args, **options)

    monkeypatch.setattr(connection_class, "send_command", recording)
    yield sent
    monkeypatch.undo()


async def test_a_check_of_three_limits_is_one_evalsha(
    store: NexusStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = store.limiter
    limits = "10/second;100/minute;1000/hour"
    await limiter.hit(key, limits)
    limiter.hit_sync(key, limits)
    redis_key = store.backends.redis.keyspace("ratelimit").tagged("gcra", key)
    client = store.backends.redis.client("ratelimit")
    with _wire(client.connection_pool.connection_class, monkeypatch) as sent:
        result = await limiter.hit(key, limits)
    assert result.allowed and result.remaining == 7
    assert [command[0] for command in sent] == ["EVALSHA"]
    assert sent[0][2:4] == (1, redis_key)
    sync_client = store.backends.redis.sync_client("ratelimit")
    with _wire(sync_client.connection_pool.connection_class, monkeypatch) as sent:
        result = limiter.hit_sync(key, limits)
    assert result.allowed and result.remaining == 6
    assert [command[0] for command in sent] == ["EVALSHA"]
    assert sent[0][2:4] == (1, redis_key)


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "sync"])
async def test_a_connection_broken_before_the_check_is_retried_by_the_client(
    store: NexusStore, key: str, monkeypatch: pytest.MonkeyPatch, blocking: bool
) -> None:
    """Fault injection: the first send on a pooled connection fails as a dropped socket
    would; the client's retry policy sends the check again, which Redis decides once."""
    limiter = store.limiter
    client = (
        store.backends.redis.sync_client("ratelimit")
        if blocking
        else store.backends.redis.client("ratelimit")
    )
    await limiter.hit("warm-up", "5/hour")
    limiter.hit_sync("warm-up", "5/hour")
    connection_class = client.connection_pool.connection_class
    real = connection_class.send_command
    failures: list[object] = []

    def failing_once(connection: object, *args: object, **options: object) -> object:
        if not failures:
            failures.append(args[0])
            raise redis_lib.exceptions.ConnectionError("injected: connection reset")
        return real(connection, *args, **options)

    if inspect.iscoroutinefunction(real):

        async def injected(connection: object, *args: object, **options: object) -> object:
            return await failing_once(connection, *args, **options)  # type: ignore[misc]

    else:
        injected = failing_once  # type: ignore[assignment]
    monkeypatch.setattr(connection_class, "send_command", injected)
    result = limiter.hit_sync(key, "5/hour") if blocking else await limiter.hit(key, "5/hour")
    monkeypatch.undo()
    assert failures == ["EVALSHA"]
    assert result.allowed and result.source == "redis"
    assert (await limiter.peek(key, "5/hour")).remaining == 4  # consumed exactly once
    assert limiter.stats()["backend_errors"] == {"fail_open": 0, "fail_closed": 0, "local": 0}


async def test_prepared_checks_still_validate_cost(store: NexusStore, key: str) -> None:
    """A check is prepared once per (limits, cost, strategy); a cost that merely compares
    equal to a prepared one (1.0, True) is still refused, sync and async."""
    limiter = store.limiter
    await limiter.hit(key, "10/hour")
    limiter.hit_sync(key, "10/hour")
    for cost in (1.0, True):
        with pytest.raises(ValidationError) as caught:
            await limiter.hit(key, "10/hour", cost=cost)  # type: ignore[arg-type]
        assert caught.value.field == "cost"
        with pytest.raises(ValidationError) as caught:
            limiter.hit_sync(key, "10/hour", cost=cost)  # type: ignore[arg-type]
        assert caught.value.field == "cost"
    assert (await limiter.peek(key, "10/hour")).remaining == 8
