"""The sequencer lease: one process at a time appends to the audit chain.

A single document ``{_id: "sequencer", owner, until, term, wanted, waiting}`` in
``<audit>_lease``. A writer takes it for ``audit.lease_seconds`` with one ``findAndModify``
that matches only a free lease (or its own, to renew), then appends without racing anyone
for ``seq``: its head is its own last entry, so it reads nothing per batch. The lease only
removes contention; safety never depends on clocks: the unique index on ``seq`` still turns
an overlap (a skewed clock, a writer paused past its term) into a duplicate-key error, after
which the writer re-reads the head.

Turns, first come first served: a waiter's look (one ``findAndModify``) marks the lease
``wanted`` and stamps ``waiting.<owner>`` with the time of its first look. The first in that
queue looks every margin (the last fifth of a term, kept free so a batch ends inside it), so
it finds a lease released early too; the k-th sleeps until about k terms from now, looking
again at least once a term. So a hand-over wakes one waiter, not all of them at once. A
holder renews only when nobody has wanted the lease since its term began; otherwise it
releases at once, without extending its term first (a waiter looking in between would sleep
through that extension), and queues behind the others. A free lease is taken by the first
in the queue; the others leave it two margins before they take it anyway (the first may
have died). A stamp older than any live wait (``_stale_after``) is a writer that died waiting:
ignored, and dropped by the next release. A writer that closes releases its lease at once
(``AuditLog.aclose``).

Hand-over of the head: a holder that hands over leaves its head (seq, hash, expiry, Merkle
frontier) in the lease document, stamped with its term (each take increments ``term``). The
next holder finds it in the document it takes the lease with, and when the stamp is the term
just ended (nobody held the lease in between) it chains on without reading the head. A stale
or wrong head costs nothing but a retry: the unique index on ``seq`` still fences.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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
        # a queue stamp older than this is a writer that died waiting: ignored, then dropped
        self._stale_after = max(seconds * 40, 1.0)
        self._stale: list[str] = []

    def held(self) -> bool:
        return time.time() < self._until - self._margin

    async def acquire(self, head: Mapping[str, Any] | None = None) -> bool:
        """Wait for the lease and take it. True when another writer held it since.
        ``head``: this writer's head, left for the next holder if it hands over."""
        while True:
            now = time.time()
            # free, or this writer's own and nobody asked for it since its term began: a
            # holder that is wanted does not extend its term (a waiter looking in between
            # would sleep through it) but hands over below
            before = await self._collection.find_one_and_update(
                {
                    "_id": _ID,
                    "$or": [
                        {"until": {"$lte": now}},
                        {"owner": self.owner, "wanted": {"$lte": self._since}},
                        {"owner": self.owner, "wanted": {"$exists": False}},
                    ],
                },
                {
                    "$set": {"owner": self.owner, "until": now + self._seconds},
                    "$inc": {"term": 1},
                    "$unset": {f"waiting.{self.owner}": ""},
                },
                return_document=ReturnDocument.BEFORE,
            )
            if before is None:
                if self._until:  # this writer's term, wanted by another: hand it over
                    await self.release(head)
                await self._wait_until_free()
                continue
            mine_before = before.get("owner") == self.owner
            self._term = int(before.get("term") or 0) + 1
            self._stale = self._dead_waiters(before.get("waiting"), now)
            if mine_before and self._queued_before(before.get("waiting"), now, math.inf):
                # this writer's term had run out while others waited: theirs now (its own
                # looks while it waited count for nothing, a dead waiter's only until stale)
                await self.release(head)
                await self._wait_until_free()
                continue
            left = before.get("head")
            current = before.get("head_term") == self._term - 1 and isinstance(left, dict)
            self.handed_over = left if current and not mine_before else None
            self._since, self._until = now, now + self._seconds
            return not mine_before

    async def _wait_until_free(self) -> None:
        """Queue up and sleep until this writer's turn; return once the lease is free for it.

        Each look is one round trip, which also marks the lease wanted and stamps this
        writer's place in the queue (``waiting``, first look first). Only the first in the
        queue looks often (every margin, so it also finds a lease released early); the k-th
        sleeps until about k terms after the current one ends, looking again at least once a
        term (a turn may end early). So a hand-over costs the server a look or two, not one
        per waiter."""
        free_before = False
        while True:
            now = time.time()
            current = await self._collection.find_one_and_update(
                {"_id": _ID},
                {"$max": {"wanted": now}, "$min": {f"waiting.{self.owner}": now}},
                return_document=ReturnDocument.AFTER,
            )
            if current is None:
                with contextlib.suppress(DuplicateKeyError):  # another writer created it
                    await self._collection.insert_one(
                        {"_id": _ID, "owner": None, "until": 0, "wanted": 0}
                    )
                return
            until = float(current.get("until") or 0)
            ahead = self._ahead(current.get("waiting"), now)
            if until <= now:
                # free: the first in the queue takes it; the others give it one more look
                # of that first waiter's (a margin apart, plus jitter) before they do
                if ahead == 0 or free_before:
                    return
                free_before = True
                wake = now + 2 * self._margin
            elif ahead == 0:
                wake = min(until - self._margin, now + self._margin)
            else:  # about when its turn comes, looking again each term: a turn may end early
                usable = self._seconds - self._margin
                wake = min(until - self._margin + ahead * usable, now + usable)
            jitter = random.uniform(0, self._seconds * 0.05)  # noqa: S311
            await asyncio.sleep(max(wake - now, 0.0) + jitter)

    def _ahead(self, waiting: Any, now: float) -> int:
        """How many live writers queued up before this one."""
        mine = waiting.get(self.owner, now) if isinstance(waiting, Mapping) else now
        return self._queued_before(waiting, now, mine)

    def _queued_before(self, waiting: Any, now: float, stamp: float) -> int:
        """How many other live writers queued up before ``stamp``."""
        if not isinstance(waiting, Mapping):
            return 0
        return sum(
            1
            for owner, since in waiting.items()
            if owner != self.owner and self._live(since, now) and since < stamp
        )

    def _dead_waiters(self, waiting: Any, now: float) -> list[str]:
        """Queue stamps too old for a live waiter (it died waiting): dropped at release."""
        if not isinstance(waiting, Mapping):
            return []
        return [owner for owner, since in waiting.items() if not self._live(since, now)]

    def _live(self, since: Any, now: float) -> bool:
        """Whether a queue stamp can still be a waiting writer's."""
        return isinstance(since, (int, float)) and since >= now - self._stale_after

    async def release(self, head: Mapping[str, Any] | None = None) -> None:
        """End this writer's lease now, leaving ``head`` (its own, current) to the next."""
        self._until = 0.0
        unset = {f"waiting.{owner}": "" for owner in self._stale}
        self._stale = []
        left: dict[str, Any] = {"until": 0}
        if head is None:
            unset.update(head="", head_term="")
        else:
            left.update(head=dict(head), head_term=self._term)
        handover: dict[str, Any] = {"$set": left}
        if unset:
            handover["$unset"] = unset
        await self._collection.update_one({"_id": _ID, "owner": self.owner}, handover)

    def unexpired(self) -> bool:
        """Whether this writer's term has not ended (the margin of :meth:`held` aside)."""
        return time.time() < self._until

    def lost(self) -> None:
        """Another writer appended (a duplicate key): hold no lease until acquired again."""
        self._until = 0.0
