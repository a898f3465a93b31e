"""Rate-limit checks per second: nexus-store's limiter against a raw EVALSHA of an equivalent
GCRA script, and against the ``limits`` library on the same server. One more pair puts the
raw script on redis-py's connection API, the path the limiter itself uses on a standalone
server: the floor for any limiter on redis-py.

    python -m bench.run --only ratelimit --repeats 3

Every check passes (the limit is far above the load), so each one writes, as a real check
does. Sync runs use one client and one connection; async runs use 32 tasks on one pool.
The two sides of a pair run in alternating short bursts and each reports its best burst,
because the machine is shared with other work (see ``bench.harness``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage as AsyncLimitsStorage
from limits.aio.strategies import (
    MovingWindowRateLimiter as AsyncMovingWindow,
)
from limits.aio.strategies import (
    SlidingWindowCounterRateLimiter as AsyncSlidingWindowCounter,
)
from limits.storage import RedisStorage as LimitsStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

import redis
from bench.harness import Burst, Pair, async_rate, sync_rate
from devstack.stack import Stack
from nexus_store import NexusStore

BURSTS = 40
SYNC_CALLS = 150  # per burst
ASYNC_CALLS = 640  # per burst, over all tasks
TASKS = 32
AMOUNT = 1_000_000  # far above the load: every check passes and writes
LIMIT = f"{AMOUNT}/second"

# The textbook single-limit GCRA (redis-cell's algorithm) on one string key: what a
# hand-written limiter would send. Same clock (TIME), same arithmetic, same write.
RAW_GCRA = """
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[3]) * interval
local allow_at = new_tat - tonumber(ARGV[2])
if allow_at > now then
  return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor((now - allow_at) / interval), math.ceil(new_tat - now), 0}
"""


def _sync(check: Callable[[], object]) -> Burst:
    return sync_rate(check, SYNC_CALLS)


def _async(check: Callable[[int], Awaitable[object]]) -> Burst:
    return async_rate(check, ASYNC_CALLS, TASKS)


async def scenarios(env: Stack) -> list[Pair]:
    store = NexusStore(env.settings())
    limiter = store.limiter
    database = env.settings().redis.databases.ratelimit
    raw_sync = redis.Redis.from_url(env.redis_url, db=database)
    raw_async = redis.asyncio.Redis.from_url(env.redis_url, db=database, max_connections=TASKS)
    sha = raw_sync.script_load(RAW_GCRA)
    raw_args = (AMOUNT, 1_000_000, 1)  # amount, window (us), cost
    raw_key = f"{env.redis_namespace}:raw"
    limits_url = f"{env.redis_url}/{database}"
    limits_sync = LimitsStorage(limits_url, key_prefix=f"{env.redis_namespace}-limits")
    limits_async = AsyncLimitsStorage(
        "async+" + limits_url,
        implementation="redispy",
        key_prefix=f"{env.redis_namespace}-al",
        max_connections=TASKS,
    )
    moving = MovingWindowRateLimiter(limits_sync)
    sliding = SlidingWindowCounterRateLimiter(limits_sync)
    moving_async = AsyncMovingWindow(limits_async)
    sliding_async = AsyncSlidingWindowCounter(limits_async)
    item = RateLimitItemPerSecond(AMOUNT)

    @limiter.limit(LIMIT, key=lambda: "decorated")
    def decorated() -> None:
        return None

    def sdk_sync(strategy: str | None = None) -> Burst:
        return _sync(lambda: limiter.hit_sync("sync", LIMIT, strategy=strategy))

    def sdk_async(strategy: str | None = None) -> Burst:
        return _async(lambda task: limiter.hit(f"a{task}", LIMIT, strategy=strategy))

    store_client = store.backends.redis.sync_client("ratelimit")
    raw_evalsha_sync = _sync(lambda: raw_sync.evalsha(sha, 1, raw_key, *raw_args))
    raw_pool = raw_sync.connection_pool

    def raw_on_connection() -> object:
        # The floor below any client: redis-py's connection API, as the limiter itself uses
        # it on a standalone server (borrow, send, read, give back), same script and key.
        connection = raw_pool.get_connection()
        try:
            connection.send_command("EVALSHA", sha, 1, raw_key, *raw_args)
            return connection.read_response()
        finally:
            raw_pool.release(connection)

    raw_evalsha_async = _async(
        lambda task: raw_async.evalsha(sha, 1, f"{raw_key}{task}", *raw_args)
    )

    async def warm_up() -> None:
        limiter.hit_sync("warm", LIMIT)
        await limiter.hit("warm", LIMIT)
        for limiter_side in (moving, sliding):
            limiter_side.hit(item, "warm")
        for async_side in (moving_async, sliding_async):
            await async_side.hit(item, "warm")

    async def teardown() -> None:
        await store.close()
        raw_sync.close()
        await raw_async.aclose()

    def pair(name: str, sdk: Burst, raw: Burst, raw_label: str, target: str) -> Pair:
        return Pair(name, "checks/s", sdk, raw, target=target, raw_label=raw_label, bursts=BURSTS)

    moving_sync = _sync(lambda: moving.hit(item, "sync"))
    sliding_sync = _sync(lambda: sliding.hit(item, "sync"))
    moving_tasks = _async(lambda task: moving_async.hit(item, f"t{task}"))
    sliding_tasks = _async(lambda task: sliding_async.hit(item, f"t{task}"))
    pairs = [
        pair("ratelimit check, sync, 1 client", sdk_sync(), raw_evalsha_sync,
             "raw EVALSHA GCRA", ">= 0.85x raw EVALSHA"),
        pair("ratelimit check, async, 32 tasks", sdk_async(), raw_evalsha_async,
             "raw EVALSHA GCRA", ">= 0.85x raw EVALSHA"),
        pair("ratelimit @decorator, sync, 1 client", _sync(decorated), raw_evalsha_sync,
             "raw EVALSHA GCRA", "report"),
        pair("ratelimit sync vs limits moving window", sdk_sync(), moving_sync,
             "limits MovingWindow", "> 1x (beat it)"),
        pair("ratelimit sync vs limits sliding window", sdk_sync(), sliding_sync,
             "limits SlidingWindowCounter", "> 1x (beat it)"),
        pair("ratelimit async vs limits moving window", sdk_async(), moving_tasks,
             "limits.aio MovingWindow", "> 1x (beat it)"),
        pair("ratelimit async vs limits sliding window", sdk_async(), sliding_tasks,
             "limits.aio SlidingWindowCounter", "> 1x (beat it)"),
        # What the store's connection pool (BlockingConnectionPool, bounded) costs by itself:
        # the raw script through the limiter's client against a default redis-py client.
        pair("ratelimit raw EVALSHA via the store's pool", _sync(
            lambda: store_client.evalsha(sha, 1, raw_key, *raw_args)), raw_evalsha_sync,
             "raw EVALSHA GCRA", "report"),
        pair("ratelimit check, sync, vs raw EVALSHA on a pooled connection", sdk_sync(),
             _sync(raw_on_connection), "raw GCRA, connection API", "report"),
        # The same algorithm on both sides: nexus-store's sliding_window strategy.
        pair("ratelimit sync sliding_window vs limits sliding window",
             sdk_sync(strategy="sliding_window"), sliding_sync,
             "limits SlidingWindowCounter", "report"),
        pair("ratelimit async sliding_window vs limits sliding window",
             sdk_async(strategy="sliding_window"), sliding_tasks,
             "limits.aio SlidingWindowCounter", "report"),
    ]  # fmt: skip
    pairs[0].setup = warm_up
    pairs[-1].teardown = teardown
    return pairs
