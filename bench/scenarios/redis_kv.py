"""Key-value latency: nexus-store's cache, sessions, queue and pub/sub against raw redis-py
commands on the same server, the same DB and the same kind of connection pool.

    python -m bench.run --only redis_kv --repeats 3

Each figure is microseconds per sequential call (one asyncio client, one task), the median
call of the best of several bursts, because the machine is shared and a burst that another
process interrupted says nothing about either side.

- cache get hit: ``store.cache.get`` (escape key, GET, decode the ``[fresh_until, value]``
  envelope, check freshness) vs a raw ``GET`` + ``orjson.loads`` of the same bytes.
- session get: ``store.sessions.get`` (one EVALSHA that reads, slides the expiry and records
  last-seen) vs a raw EVALSHA of the same script on the same key (the SDK's own cost), and
  vs a raw ``HGETALL`` of the same hash (what a read-only lookup without sliding costs).
- queue enqueue: ``store.queue.enqueue`` vs a raw ``XADD``.
- realtime publish: ``store.realtime.publish`` vs a raw ``PUBLISH``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio

from bench.harness import Measure, Pair, median_seconds
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.redis._lua import load_lua

BURSTS = 7
CALLS = 300  # per burst
VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "score": 97.5}

Call = Callable[[], Awaitable[object]]


def _measure(call: Call) -> Measure:
    """One burst: the median microseconds per call."""

    async def latency_us() -> float:
        return await median_seconds(call, CALLS) * 1_000_000

    return latency_us


async def scenarios(env: Stack) -> list[Pair]:
    store = NexusStore(env.settings())
    databases = env.settings().redis.databases
    raw_cache = redis.asyncio.Redis.from_url(env.redis_url, db=databases.cache)
    raw_sessions = redis.asyncio.Redis.from_url(env.redis_url, db=databases.sessions)
    raw_queue = redis.asyncio.Redis.from_url(env.redis_url, db=databases.queue)
    tag = uuid.uuid4().hex[:8]
    cache_key = f"bench-{tag}"
    raw_cache_key = f"{env.redis_namespace}:raw:{tag}"
    state: dict[str, str] = {}

    async def setup() -> None:
        if state:
            return  # shared by every pair, so that --filter may pick any of them
        await store.cache.set(cache_key, VALUE, ttl=600)
        await raw_cache.set(raw_cache_key, orjson.dumps(VALUE), ex=600)
        token = await store.sessions.create(f"bench-{tag}", {"role": "admin"}, ttl=600)
        state["token"] = token
        # The raw side reads the very hash the SDK wrote.
        names = [
            name async for name in raw_sessions.scan_iter(match=f"{env.redis_namespace}:session:*")
        ]
        state["session_key"] = names[0].decode()
        state["sha"] = await raw_sessions.script_load(load_lua("session_get").source)

    async def teardown() -> None:
        await store.sessions.revoke_all(f"bench-{tag}")
        await store.cache.delete(cache_key)
        await raw_cache.delete(raw_cache_key)
        await raw_queue.delete(
            f"{env.redis_namespace}:raw-stream:{tag}", f"{env.redis_namespace}:q:{{bench-{tag}}}"
        )
        await store.close()
        for client in (raw_cache, raw_sessions, raw_queue):
            await client.aclose()

    async def raw_get() -> object:
        return orjson.loads(await raw_cache.get(raw_cache_key))

    async def raw_session() -> object:
        return await raw_sessions.hgetall(state["session_key"])

    async def raw_session_script() -> object:
        return await raw_sessions.evalsha(state["sha"], 1, state["session_key"], "1")

    async def enqueue() -> object:
        return await store.queue.enqueue(f"bench-{tag}", VALUE)

    async def raw_xadd() -> object:
        stream = f"{env.redis_namespace}:raw-stream:{tag}"
        return await raw_queue.xadd(stream, {"p": orjson.dumps(VALUE)})

    def pair(name: str, sdk: Call, raw: Call, raw_label: str, target: str = "report") -> Pair:
        return Pair(
            name,
            "us/call",
            sdk=_measure(sdk),
            raw=_measure(raw),
            higher_is_better=False,
            bursts=BURSTS,
            target=target,
            setup=setup,
            raw_label=raw_label,
        )

    def raw_publish() -> Awaitable[object]:
        return raw_cache.publish(f"{env.redis_namespace}:raw:{tag}", orjson.dumps(VALUE))

    def session_get() -> Awaitable[object]:
        return store.sessions.get(state["token"])

    pairs = [
        pair(
            "cache get hit (async, 1 task)",
            lambda: store.cache.get(cache_key),
            raw_get,
            "GET + orjson.loads",
            target="<= 1.2x raw GET",
        ),
        pair("session get (async, 1 task)", session_get, raw_session_script, "EVALSHA same script"),
        pair("session get vs read-only HGETALL", session_get, raw_session, "HGETALL (no slide)"),
        pair("queue enqueue (async, 1 task)", enqueue, raw_xadd, "XADD"),
        pair(
            "realtime publish (async, 1 task)",
            lambda: store.realtime.publish(f"bench{tag}", VALUE),
            raw_publish,
            "PUBLISH",
        ),
    ]
    pairs[-1].teardown = teardown
    return pairs
