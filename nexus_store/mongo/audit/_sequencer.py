"""The sequencer lease: one process at a time appends to the audit chain.

A single document ``{_id: "sequencer", owner, until, wanted}`` in ``<audit>_lease``. A writer
takes it for ``audit.lease_seconds`` with one ``findAndModify`` that matches only an expired
lease, then appends without racing anyone for ``seq``: its head is its own last entry, so it
reads nothing per batch. Others sleep until the lease ends. The lease only removes
contention; safety never depends on clocks: the unique index on ``seq`` still turns an
overlap (a skewed clock, a writer paused past its term) into a duplicate-key error, after
which the writer re-reads the head.

Fairness: a waiter marks the lease ``wanted``; a holder that finds, on renewing, that someone
wanted it during its term hands it over (ends its lease at once and steps back briefly).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["SequencerLease"]

_ID = "sequencer"


class SequencerLease:
    """This writer's view of the lease. ``acquire()`` returns whether the chain may have
    changed since this writer last held it (then its cached head is stale)."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]], seconds: float) -> None:
        self._collection = collection
        self._seconds = seconds
        self.owner = uuid.uuid4().hex
        self._until = 0.0
        self._since = 0.0

    def held(self) -> bool:
        # a margin so a batch started now still ends inside the term
        return time.time() < self._until - self._seconds * 0.2

    async def acquire(self) -> bool:
        """Wait for the lease and take it. True when another writer held it since."""
        while True:
            now = time.time()
            before = await self._collection.find_one_and_update(
                {"_id": _ID, "$or": [{"until": {"$lte": now}}, {"owner": self.owner}]},
                {"$set": {"owner": self.owner, "until": now + self._seconds}},
                return_document=ReturnDocument.BEFORE,
            )
            if before is not None:
                mine_before = before.get("owner") == self.owner
                wanted = float(before.get("wanted") or 0)
                if mine_before and wanted > self._since:
                    # someone waited while this writer held the lease: let them have it
                    await self.release()
                    await asyncio.sleep(self._seconds * random.uniform(0.1, 0.3))  # noqa: S311
                    continue
                self._since, self._until = now, now + self._seconds
                return not mine_before
            current = await self._collection.find_one_and_update(
                {"_id": _ID}, {"$max": {"wanted": now}}, return_document=ReturnDocument.AFTER
            )
            if current is None:
                with contextlib.suppress(DuplicateKeyError):  # another writer created it
                    await self._collection.insert_one({"_id": _ID, "owner": None, "until": 0})
                continue
            wait = float(current.get("until") or 0) - time.time()
            await asyncio.sleep(
                min(max(wait, 0.0), self._seconds) + random.uniform(0, self._seconds * 0.1)  # noqa: S311
            )

    async def release(self) -> None:
        """End this writer's lease now."""
        self._until = 0.0
        await self._collection.update_one({"_id": _ID, "owner": self.owner}, {"$set": {"until": 0}})

    def lost(self) -> None:
        """Another writer appended (a duplicate key): hold no lease until acquired again."""
        self._until = 0.0
