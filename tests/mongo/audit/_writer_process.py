"""Run by the audit tests in separate OS processes: append audit entries, then exit.

python tests/mongo/audit/_writer_process.py URL DATABASE COLLECTION ACTOR COUNT [TASKS [SHARED]]

TASKS tasks (default 1) each append COUNT entries at once. With SHARED > 0, every entry
also carries idempotency key ``shared:<index % SHARED>``, which the other processes use too:
each key must be stored once. ``NEXUS_AUDIT__HMAC_KEY`` in the environment keys the chain.
"""

from __future__ import annotations

import asyncio
import sys

from nexus_store import NexusSettings, NexusStore


async def main(
    url: str, database: str, collection: str, actor: str, count: int, tasks: int, shared: int
) -> None:
    settings = NexusSettings.load(
        mongo={"url": url, "database": database},
        audit={"collection": collection, "checkpoint_every": 7},
        log={"level": "error"},
    )
    async with NexusStore(settings) as store:

        async def task(number: int) -> None:
            for index in range(count):
                key = f"shared:{(number * count + index) % shared}" if shared else None
                await store.audit.record(
                    actor, "write", "doc", f"{number}-{index}", idempotency_key=key
                )

        await asyncio.gather(*(task(number) for number in range(tasks)))


if __name__ == "__main__":
    url, database, collection, actor, count = sys.argv[1:6]
    extra = sys.argv[6:8]
    tasks = int(extra[0]) if extra else 1
    shared = int(extra[1]) if len(extra) > 1 else 0
    asyncio.run(main(url, database, collection, actor, int(count), tasks, shared))
