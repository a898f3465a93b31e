"""A separate process hammering one cold cache key: async tasks and threads at once.

Usage: python -m tests.redis._stampede_worker REDIS_URL NAMESPACE KEY COUNTER START_AT
Prints the values it got, one per line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import redis
from nexus_store import NexusSettings
from nexus_store.connections import Backends
from nexus_store.redis.cache import Cache


def main() -> None:
    url, namespace, key, counter, start_at = sys.argv[1:6]
    settings = NexusSettings.load(
        redis={"url": url, "namespace": namespace}, log={"level": "error"}
    )
    cache = Cache(Backends(settings))
    counting = redis.Redis.from_url(url, db=15)

    def load() -> str:
        runs = counting.incr(counter)
        time.sleep(0.5)  # slow enough that every caller arrives while it runs
        return f"value-{runs}"

    async def load_async() -> str:
        return await asyncio.to_thread(load)

    results: list[str] = []

    def in_thread() -> None:
        results.append(cache.get_or_set_sync(key, load, ttl=30))

    async def run() -> None:
        time.sleep(max(0.0, float(start_at) - time.time()))
        threads = [threading.Thread(target=in_thread) for _ in range(4)]
        for thread in threads:
            thread.start()
        results.extend(
            await asyncio.gather(*(cache.get_or_set(key, load_async, ttl=30) for _ in range(10)))
        )
        for thread in threads:
            thread.join(timeout=30)

    asyncio.run(run())
    print("\n".join(results), flush=True)


if __name__ == "__main__":
    main()
