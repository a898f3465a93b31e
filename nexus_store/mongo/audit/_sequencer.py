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
Waiters wake when the holder's term stops being usable (the margin of :meth:`held`), which
is when a busy holder hands over, rather than at its very end; each look is the one round
trip that marks the lease wanted, and a take is tried only once the lease is free. A
writer that closes releases its lease at once (``AuditLog.aclose``).

Hand-over of the head: a holder that hands over leaves its head (seq, hash, expiry, Merkle
frontier) in the lease document, stamped with its term (each take increments ``term``). The
next holder finds it in the document it takes the lease with, and when the stamp is the term
just ended (nobody held the lease in between) it chains on without reading the head. A stale
or wrong head costs nothing but a retry: the unique index on ``seq`` still fences.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["SequencerLease"]

_ID = "sequencer"


class SequencerLease:
    """This writer's view of the lease. ``acquire()`` returns whether the chain may have
    changed since this writer last held it (then its cached head is stale); ``handed_over``
    is then the head the previous holder left, when it is known to be current."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]], seconds: float) -> None:
        self._collection = collection
        self._seconds = seconds
        self._margin = seconds * 0.2  # a batch started inside the term still ends inside it
        self.owner = uuid.uuid4().hex
        self._until = 0.0
        self._since = 0.0
        self._term = 0
        self.handed_over: dict[str, Any] | None = None

    def held(self) -> bool:
        return time.time() < self._until - self._margin

    async def acquire(self, head: Mapping[str, Any] | None = None) -> bool:
        """Wait for the lease and take it. True when another writer held it since.
        ``head``: this writer's head, left for the next holder if it hands over."""
        while True:
            now = time.time()
            before = await self._collection.find_one_and_update(
                {"_id": _ID, "$or": [{"until": {"$lte": now}}, {"owner": self.owner}]},
                {"$set": {"owner": self.owner, "until": now + self._seconds}, "$inc": {"term": 1}},
                return_document=ReturnDocument.BEFORE,
            )
            if before is not None:
                mine_before = before.get("owner") == self.owner
                wanted = float(before.get("wanted") or 0)
                self._term = int(before.get("term") or 0) + 1
                if mine_before and wanted > self._since:
                    # someone waited while this writer held the lease: let them have it
                    await self.release(head)
                    await asyncio.sleep(self._seconds * random.uniform(0.1, 0.3))  # noqa: S311
                    continue
                left = before.get("head")
                current = before.get("head_term") == self._term - 1 and isinstance(left, dict)
                self.handed_over = left if current and not mine_before else None
                self._since, self._until = now, now + self._seconds
                return not mine_before
            await self._wait_until_free()

    async def _wait_until_free(self) -> None:
        """Mark the lease wanted and sleep until it may be free; return once it is
        (released, or its term over). Each look is one round trip, which also marks it
        wanted again: while a holder writes, every waiter costs it one command per look,
        not a failed take as well."""
        while True:
            current = await self._collection.find_one_and_update(
                {"_id": _ID},
                {"$max": {"wanted": time.time()}},
                return_document=ReturnDocument.AFTER,
            )
            if current is None:
                with contextlib.suppress(DuplicateKeyError):  # another writer created it
                    await self._collection.insert_one({"_id": _ID, "owner": None, "until": 0})
                return
            until = float(current.get("until") or 0)
            if until <= time.time():
                return
            # a busy holder hands over when its term stops being usable, not at its end
            wait = until - self._margin - time.time()
            await asyncio.sleep(
                min(max(wait, 0.0), self._seconds) + random.uniform(0, self._seconds * 0.1)  # noqa: S311
            )

    async def release(self, head: Mapping[str, Any] | None = None) -> None:
        """End this writer's lease now, leaving ``head`` (its own, current) to the next."""
        self._until = 0.0
        handover: dict[str, Any] = (
            {"$set": {"until": 0, "head": dict(head), "head_term": self._term}}
            if head is not None
            else {"$set": {"until": 0}, "$unset": {"head": "", "head_term": ""}}
        )
        await self._collection.update_one({"_id": _ID, "owner": self.owner}, handover)

    def unexpired(self) -> bool:
        """Whether this writer's term has not ended (the margin of :meth:`held` aside)."""
        return time.time() < self._until

    def lost(self) -> None:
        """Another writer appended (a duplicate key): hold no lease until acquired again."""
        self._until = 0.0
