"""A consumer that takes one message, reports it, and hangs until killed (never acks).

Usage: python -m tests.redis._crashing_consumer REDIS_URL NAMESPACE QUEUE GROUP
"""

from __future__ import annotations

import asyncio
import sys

from nexus_store import NexusSettings
from nexus_store.connections import Backends
from nexus_store.redis.queue import Queue


async def main() -> None:
    url, namespace, queue_name, group = sys.argv[1:5]
    settings = NexusSettings.load(
        redis={"url": url, "namespace": namespace}, log={"level": "error"}
    )
    queue = Queue(Backends(settings))
    deliveries = await queue.consume(queue_name, group, "doomed", count=1, block=10)
    print(deliveries[0].id, flush=True)
    await asyncio.sleep(60)  # "processing" until SIGKILL


if __name__ == "__main__":
    asyncio.run(main())
