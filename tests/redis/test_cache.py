"""The cache on a real Redis: basics, tags, codecs, stampede protection, refresh, stale."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from collections.abc import Callable

import msgpack
import orjson
import pytest

import redis as redis_lib
from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import ValidationError
from nexus_store.redis import close_default_store
from nexus_store.redis._default_store import default_store
from nexus_store.redis.cache import Cache, CacheEntry, cached
from tests.support import REPO_ROOT


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_set_get_delete_many(
    redis_stack: Stack,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
    serializer: str,
) -> None:
    async with NexusStore(redis_stack.settings(cache={"serializer": serializer})) as store:
        cache = store.cache
        value = {"name": "Ada", "tags": ["a", "b"], "n": 1.5, "none": None}
        assert await cache.set(f"{unique}:a", value, ttl=30) is True
        assert await cache.get(f"{unique}:a") == value
        assert await cache.get(f"{unique}:missing", default="d") == "d"

        await cache.put(CacheEntry(f"{unique}:b", [1, 2, 3], ttl=30))
        assert await cache.set_many({f"{unique}:c": "c", f"{unique}:d": 4}, ttl=30)
        found = await cache.get_many(
            [f"{unique}:a", f"{unique}:b", f"{unique}:c", f"{unique}:d", f"{unique}:nope"]
        )
        assert found == {
            f"{unique}:a": value,
            f"{unique}:b": [1, 2, 3],
            f"{unique}:c": "c",
            f"{unique}:d": 4,
        }
        assert await cache.delete(f"{unique}:a", f"{unique}:b", f"{unique}:nope") == 2
        assert await cache.get(f"{unique}:a") is None

        # What Redis holds is plain JSON / msgpack, in DB 1, with a real TTL.
        raw_client = raw_redis(1)
        raw = raw_client.get(f"{redis_namespace}:c:{unique}%3Ac")
        decoded = orjson.loads(raw) if serializer == "json" else msgpack.unpackb(raw)
        assert decoded[1] == "c"
        assert 0 < raw_client.pttl(f"{redis_namespace}:c:{unique}%3Ac") <= 30_000
        stats = cache.stats()
        assert stats.hits >= 5 and stats.misses >= 2 and stats.errors == 0


async def test_entries_expire(store: NexusStore, unique: str) -> None:
    await store.cache.set(unique, "v", ttl=0.2)
    assert await store.cache.get(unique) == "v"
    await asyncio.sleep(0.3)
    assert await store.cache.get(unique) is None


async def test_pickle_and_foreign_bytes_are_never_loaded(
    store: NexusStore,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (exec, ("raise SystemExit('pickle was loaded')",))

    raw_redis(1).set(f"{redis_namespace}:c:{unique}", pickle.dumps(Boom()), ex=30)
    before = store.cache.stats().errors
    assert await store.cache.get(unique) is None
    assert store.cache.stats().errors == before + 1
    with pytest.raises(ValidationError) as caught:
        await store.cache.set(unique, Boom())
    assert caught.value.field == "value"


async def test_tags_invalidate_exactly_their_entries(store: NexusStore, unique: str) -> None:
    cache = store.cache
    await cache.set(f"{unique}:1", 1, ttl=30, tags=[f"user:{unique}", "all"])
    await cache.set(f"{unique}:2", 2, ttl=30, tags=[f"user:{unique}"])
    await cache.set_many({f"{unique}:3": 3, f"{unique}:4": 4}, ttl=30, tags=[f"user:{unique}"])
    await cache.set(f"{unique}:5", 5, ttl=30, tags=[f"other:{unique}"])
    await cache.delete(f"{unique}:2")
    assert await cache.invalidate_tag(f"user:{unique}") == 3  # :2 was already gone
    assert await cache.get_many([f"{unique}:{i}" for i in range(1, 6)]) == {f"{unique}:5": 5}
    assert await cache.invalidate_tag(f"user:{unique}") == 0
    # Re-tagging after an invalidation works.
    await cache.set(f"{unique}:1", 1, ttl=30, tags=[f"user:{unique}"])
    assert await cache.invalidate_tag(f"user:{unique}") == 1


async def test_stampede_in_one_process_runs_the_loader_once(store: NexusStore, unique: str) -> None:
    calls = 0

    async def loader() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return {"calls": calls}

    results = await asyncio.gather(
        *(store.cache.get_or_set(unique, loader, ttl=30) for _ in range(50))
    )
    assert calls == 1
    assert all(result == {"calls": 1} for result in results)
    assert await store.cache.get_or_set(unique, loader, ttl=30) == {"calls": 1}
    assert calls == 1


@pytest.mark.slow
def test_stampede_across_processes_runs_the_loader_once(
    redis_url: str, redis_namespace: str, unique: str
) -> None:
    counter = f"{redis_namespace}:stampede:{unique}"
    start_at = time.time() + 2.5  # every process is up and waiting by then
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.redis._stampede_worker",
                redis_url,
                redis_namespace,
                f"cold-{unique}",
                counter,
                str(start_at),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        outputs.extend(out.split())
    counting = redis_lib.Redis.from_url(redis_url, db=15)
    try:
        assert int(counting.get(counter)) == 1
        counting.delete(counter)
    finally:
        counting.close()
    assert len(outputs) == 3 * 14
    assert set(outputs) == {"value-1"}


async def test_early_refresh_reloads_once_while_others_read_the_old_value(
    store: NexusStore, unique: str
) -> None:
    cache = store.cache
    generation = 0

    async def loader() -> int:
        nonlocal generation
        generation += 1
        await asyncio.sleep(0.1)
        return generation

    assert await cache.get_or_set(unique, loader, ttl=2.0, early_refresh=1.5) == 1
    await asyncio.sleep(0.6)  # about 1.4 s left < 1.5 s: inside the refresh window
    first = await cache.get_or_set(unique, loader, ttl=2.0, early_refresh=1.5)
    assert first == 2  # the caller that won the lock reloaded...
    assert generation == 2
    assert cache.stats().early_refreshes == 1
    # ...and the fresh value is served without reloading.
    assert await cache.get_or_set(unique, loader, ttl=2.0, early_refresh=1.5) == 2


async def test_stale_value_is_served_when_the_loader_fails(store: NexusStore, unique: str) -> None:
    cache = store.cache
    await cache.set(unique, "old", ttl=0.1, stale_ttl=5)
    await asyncio.sleep(0.2)
    assert await cache.get(unique) is None  # plain reads never see stale values

    async def failing() -> str:
        raise RuntimeError("database down")

    assert await cache.get_or_set(unique, failing, ttl=5, stale_ttl=5) == "old"
    assert cache.stats().stale_served == 1
    with pytest.raises(RuntimeError, match="database down"):
        await cache.get_or_set(f"{unique}-never-cached", failing, ttl=5)

    async def working() -> str:
        return "new"

    assert await cache.get_or_set(unique, working, ttl=5) == "new"


async def test_waiters_across_processes_see_a_value_set_by_the_lock_holder(
    redis_stack: Stack, unique: str
) -> None:
    # Two stores = two independent clients, as two processes would have.
    async with (
        NexusStore(redis_stack.settings()) as first,
        NexusStore(redis_stack.settings()) as second,
    ):
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await asyncio.sleep(0.3)
            return "from-first"

        async def must_not_run() -> str:
            raise AssertionError("the second process loaded too")

        holder = asyncio.create_task(first.cache.get_or_set(unique, slow, ttl=30))
        await started.wait()
        assert await second.cache.get_or_set(unique, must_not_run, ttl=30) == "from-first"
        assert await holder == "from-first"
        assert second.cache.stats().lock_waits >= 1


async def test_cached_decorator_sync_async_and_methods(store: NexusStore, unique: str) -> None:
    calls: list[str] = []

    @store.cache.cached(ttl=30)
    def double(x: int) -> int:
        calls.append(f"double {x}")
        return x * 2

    @store.cache.cached(
        ttl=30,
        key=lambda user_id: f"{unique}:orders:{user_id}",
        tags=lambda user_id: [f"{unique}:user:{user_id}"],
    )
    async def orders(user_id: int) -> list[int]:
        calls.append(f"orders {user_id}")
        return [user_id, user_id + 1]

    class Repo:
        def __init__(self, label: str) -> None:
            self.label = label

        @store.cache.cached(ttl=30)
        async def find(self, item: str) -> str:
            calls.append(f"find {item}")
            return f"{item}-{unique}"

    assert double(21) == 42 and await asyncio.to_thread(double, 21) == 42
    assert double(22) == 44
    assert await orders(7) == [7, 8] and await orders(7) == [7, 8]
    assert await Repo("a").find("x") == await Repo("b").find("x")  # self is not in the key
    assert calls.count("double 21") == 1 and calls.count("orders 7") == 1
    assert calls.count("find x") == 1
    assert await store.cache.invalidate_tag(f"{unique}:user:7") == 1
    await orders(7)
    assert calls.count("orders 7") == 2

    @store.cache.cached(ttl=30)
    def takes_object(thing: object) -> str:
        return "x"

    with pytest.raises(ValidationError) as caught:
        takes_object(object())
    assert caught.value.field == "key"


async def test_standalone_decorator_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_namespace: str, unique: str
) -> None:
    monkeypatch.setenv("NEXUS_REDIS_URL", redis_url)
    monkeypatch.setenv("NEXUS_REDIS__NAMESPACE", redis_namespace)
    await close_default_store()  # the next standalone call reads the environment afresh
    runs = []

    @cached(ttl=30, key=lambda n: f"{unique}:standalone:{n}")
    def compute(n: int) -> int:
        runs.append(n)
        return n + 1

    assert compute(1) == 2 and compute(1) == 2 and runs == [1]
    standalone = default_store.get(Cache)
    assert await standalone.get(f"{unique}:standalone:1") == 2
    await close_default_store()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.get(42), "key"),
        (lambda c: c.set("k", 1, tags="one-string"), "tags"),
        (lambda c: c.set("k", 1, ttl=-1), "ttl"),
        (lambda c: c.set("k", {1: "int keys are not JSON"}), "value"),
        (lambda c: c.set("k", "x" * (9 * 1024 * 1024)), "value"),
        (lambda c: c.set("k" * 600, 1), "key"),
        (lambda c: c.get_many("abc"), "keys"),
        # Found by the long fuzz profile: TypeError 'str' object is not callable.
        (lambda c: c.get_or_set("k", "not a function"), "loader"),
        # 5e-324 s was accepted as a 1 ms entry that never read back.
        (lambda c: c.set("k", 1, ttl=5e-324), "ttl"),
        (lambda c: c.set_many({"k": 1}, ttl=0.0009), "ttl"),
        (lambda c: c.get_or_set("k", lambda: 1, ttl=5e-324), "ttl"),
    ],
)
async def test_bad_input_is_refused(
    store: NexusStore, call: Callable[..., object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await call(store.cache)  # type: ignore[misc]
    assert caught.value.field == field


def test_get_or_set_sync_refuses_a_loader_that_is_not_a_function(store: NexusStore) -> None:
    """Found by the long fuzz profile: TypeError 'str' object is not callable."""
    with pytest.raises(ValidationError) as caught:
        store.cache.get_or_set_sync("k", "not a function")  # type: ignore[arg-type]
    assert caught.value.field == "loader"


async def test_a_one_millisecond_ttl_is_kept_as_written(store: NexusStore, unique: str) -> None:
    """TTLs count whole milliseconds; 1 ms is the shortest and is not rounded."""
    assert await store.cache.set(unique, "v", ttl=0.001)
    ttl_ms = await store.backends.redis.client("cache").pttl(store.cache._entry_key(unique))
    assert 0 <= ttl_ms <= 1 or ttl_ms == -2  # -2: already expired under load


@pytest.mark.parametrize(
    ("decorator_arguments", "field"),
    [
        # Found by the long fuzz profile: a key or tags function that does not take the
        # decorated function's arguments raised TypeError from inside the wrapper.
        ({"key": lambda: "k"}, "key"),
        ({"tags": lambda: ["t"]}, "tags"),
        ({"key": lambda value: 1 / 0}, "key"),
        ({"key": lambda value: None}, "key"),
        ({"tags": lambda value: [b"bytes"]}, "tags"),
    ],
)
async def test_cached_refuses_key_and_tags_functions_that_fail(
    store: NexusStore, unique: str, decorator_arguments: dict[str, object], field: str
) -> None:
    calls: list[int] = []

    @store.cache.cached(ttl=30, **decorator_arguments)  # type: ignore[arg-type]
    async def probe(value: int) -> int:
        calls.append(value)
        return value

    with pytest.raises(ValidationError) as caught:
        await probe(1)
    assert caught.value.field == field
    assert calls == []  # refused before the function ran


async def test_a_cancelled_loader_call_does_not_cancel_the_callers_sharing_it(
    store: NexusStore, unique: str
) -> None:
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "loaded"

    first = asyncio.create_task(store.cache.get_or_set(unique, slow, ttl=30))
    await started.wait()
    second = asyncio.create_task(store.cache.get_or_set(unique, slow, ttl=30))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.wait_for(second, 10) == "loaded"
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, k: c.set(k, {"score": float("nan")}), "value.score"),
        (lambda c, k: c.set(k, [1, {"x": float("inf")}]), "value[1].x"),
        (lambda c, k: c.set(k, float("-inf")), "value"),
        (lambda c, k: c.set(k, {1: "int key"}), "value"),
        (lambda c, k: c.set_many({k: {"n": float("nan")}}), "value.n"),
        (lambda c, k: c.set(k, 1, ttl=float("nan")), "ttl"),
        (lambda c, k: c.set(k, 1, ttl=float("inf")), "ttl"),
        (lambda c, k: c.set(k, 1, stale_ttl=float("nan")), "stale_ttl"),
        (lambda c, k: c.set(k + "\ud800", 1), "key"),
        (lambda c, k: c.set(k + "\x00", 1), "key"),
        (lambda c, k: c.set(k, 1, tags=["\udfff"]), "tags"),
        (lambda c, k: c.get("\ud800"), "key"),
        (lambda c, k: c.delete("\ud800"), "key"),
        (lambda c, k: c.get_many(["\ud800"]), "key"),
        (lambda c, k: c.invalidate_tag("\ud800"), "tags"),
        (lambda c, k: c.get_or_set("\ud800", lambda: 1), "key"),
        (lambda c, k: c.set_many([("a", 1)]), "values"),
    ],
)
async def test_values_that_would_not_read_back_equal_are_refused_and_nothing_is_written(
    redis_stack: Stack,
    raw_redis: Callable[[int], redis_lib.Redis],
    redis_namespace: str,
    unique: str,
    serializer: str,
    call: Callable[[Cache, str], object],
    field: str,
) -> None:
    """NaN and ±Infinity were stored as null by the JSON codec; a NaN ttl raised ValueError
    and a lone surrogate in a key UnicodeEncodeError. Both codecs refuse alike."""
    async with NexusStore(redis_stack.settings(cache={"serializer": serializer})) as store:
        with pytest.raises(ValidationError) as caught:
            await call(store.cache, unique)  # type: ignore[misc]
        assert caught.value.field == field
    assert not [key for key in raw_redis(1).scan_iter(match=f"{redis_namespace}:*{unique}*")]


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_plain_data_reads_back_equal_and_tuples_as_lists(
    redis_stack: Stack, unique: str, serializer: str
) -> None:
    value = {
        "big": 2**63 - 1,
        "neg": -(2**63),
        "tiny": 5e-324,
        "max": 1.7976931348623157e308,
        "zero": -0.0,
        "text": "é😀\u2028",
        "nested": [[[]]],
        "pair": (1, "a"),
    }
    async with NexusStore(redis_stack.settings(cache={"serializer": serializer})) as store:
        assert await store.cache.set(unique, value, ttl=30)
        assert await store.cache.get(unique) == {**value, "pair": [1, "a"]}
