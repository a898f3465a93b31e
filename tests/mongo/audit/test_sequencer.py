"""The sequencer lease: waiters queue up, the first takes the lease, the rest stay asleep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nexus_store.mongo.audit._sequencer import SequencerLease

SECONDS = 1.0  # long enough that the order below does not depend on the machine's load


async def _lease_document(lease: SequencerLease) -> dict[str, Any]:
    document = await lease._collection.find_one({"_id": "sequencer"})
    assert document is not None
    return document


async def _queued(lease: SequencerLease, owner: str) -> None:
    """Wait until ``owner`` has stamped its place in the queue (its first look)."""
    for _ in range(200):
        if owner in (await _lease_document(lease)).get("waiting", {}):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{owner} never queued")


async def test_waiters_take_the_lease_in_the_order_they_queued(make_audit) -> None:
    holder, first, second = [(await make_audit(lease_seconds=SECONDS))._lease for _ in range(3)]
    await holder.acquire()
    first_turn = asyncio.create_task(first.acquire())
    await _queued(holder, first.owner)
    second_turn = asyncio.create_task(second.acquire())
    await _queued(holder, second.owner)

    await holder.release()
    await asyncio.wait_for(first_turn, timeout=SECONDS)
    assert not second_turn.done(), "the second waiter took a lease the first was due"
    document = await _lease_document(holder)
    assert document["owner"] == first.owner
    assert first.owner not in document["waiting"] and second.owner in document["waiting"]

    await first.release()
    await asyncio.wait_for(second_turn, timeout=SECONDS)
    assert (await _lease_document(holder))["owner"] == second.owner


async def test_a_wanted_holder_hands_over_instead_of_renewing(make_audit) -> None:
    """At the end of its usable term a holder that someone waits for does not extend its
    term: it releases, leaves its head, and queues behind the waiter."""
    holder, waiter = [(await make_audit(lease_seconds=SECONDS))._lease for _ in range(2)]
    await holder.acquire()
    waiter_turn = asyncio.create_task(waiter.acquire())
    await _queued(holder, waiter.owner)
    holder._until = time.time() + holder._margin / 2  # its term is no longer usable
    head = {"seq": 7, "hash": "ab" * 32}
    holder_turn = asyncio.create_task(holder.acquire(head))

    await asyncio.wait_for(waiter_turn, timeout=SECONDS)
    assert waiter_turn.result() is True  # another writer held it: the chain may have moved
    assert waiter.handed_over == head
    assert not holder_turn.done()
    document = await _lease_document(holder)
    assert document["owner"] == waiter.owner and holder.owner in document["waiting"]
    await waiter.release()
    assert await asyncio.wait_for(holder_turn, timeout=SECONDS) is True


async def test_a_holder_nobody_wants_renews_its_term(make_audit) -> None:
    lease = (await make_audit(lease_seconds=SECONDS))._lease
    assert await lease.acquire() is True  # first take: nobody's head to trust
    term = (await _lease_document(lease))["term"]
    lease._until = time.time() + lease._margin / 2
    assert await lease.acquire() is False  # renewed: its own head is still the chain's
    document = await _lease_document(lease)
    assert document["term"] == term + 1 and document["until"] > time.time() + SECONDS / 2


async def test_a_writer_that_died_waiting_holds_nobody_up(make_audit) -> None:
    """A queue stamp older than any live waiter's is ignored, and the next release drops
    it."""
    holder, waiter = [(await make_audit(lease_seconds=SECONDS))._lease for _ in range(2)]
    await holder.acquire()
    dead = time.time() - holder._stale_after - 1
    await holder._collection.update_one({"_id": "sequencer"}, {"$set": {"waiting.gone": dead}})
    waiter_turn = asyncio.create_task(waiter.acquire())
    await _queued(holder, waiter.owner)
    document = await _lease_document(holder)
    assert waiter._ahead(document["waiting"], time.time()) == 0

    await holder.release()
    await asyncio.wait_for(waiter_turn, timeout=SECONDS)
    await waiter.release()
    assert (await _lease_document(holder)).get("waiting") in ({}, None)


async def test_a_holder_gets_its_lease_back_when_its_waiter_died(make_audit) -> None:
    """The holder hands over to a waiter that dies before taking the lease: it takes the
    lease back once that waiter's stamp is stale, and its own looks meanwhile do not count
    as someone wanting it (that would hand the lease to nobody forever)."""
    holder = (await make_audit(lease_seconds=0.05))._lease
    await holder.acquire()
    now = time.time()
    await holder._collection.update_one(  # a waiter's look, then it died
        {"_id": "sequencer"}, {"$max": {"wanted": now}, "$set": {"waiting.gone": now}}
    )
    holder._until = time.time() + holder._margin / 2  # its term is no longer usable
    await asyncio.wait_for(holder.acquire(), timeout=holder._stale_after + 2)
    assert time.time() - now >= holder._stale_after  # it did wait for the waiter's turn
    holder._until = time.time() + holder._margin / 2
    assert await asyncio.wait_for(holder.acquire(), timeout=1) is False  # renewed at once
    await holder.release()
    assert "gone" not in (await _lease_document(holder)).get("waiting", {})
