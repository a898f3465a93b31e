"""Run by test_audit.py in separate OS processes: append COUNT audit entries, then exit.

python tests/mongo/audit/_writer_process.py URL DATABASE COLLECTION ACTOR COUNT
"""

from __future__ import annotations

import asyncio
import sys

from nexus_store import NexusSettings, NexusStore


async def main(url: str, database: str, collection: str, actor: str, count: int) -> None:
    settings = NexusSettings.load(
        mongo={"url": url, "database": database},
        audit={"collection": collection, "checkpoint_every": 7},
        log={"level": "error"},
    )
    async with NexusStore(settings) as store:
        for index in range(count):
            await store.audit.record(actor, "write", "doc", str(index), after={"i": index})


if __name__ == "__main__":
    url, database, collection, actor, count = sys.argv[1:6]
    asyncio.run(main(url, database, collection, actor, int(count)))
