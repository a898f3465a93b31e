"""The transactional outbox: what ``audit=True`` costs a write, and how fast the relay delivers.

- ``entities.update audit=True vs audit=False``: the same single-row updates through
  ``store.entities``, with and without the change record (before-image lock, diff, outbox
  insert in the same transaction).
- ``outbox relay delivery``: rows/s the relay moves from the outbox to the audit log (claim,
  ``audit.record`` with its idempotency key, mark delivered), against ``audit.record`` called
  directly, one after the other, with the same entries.
- ``outbox relay delivery vs concurrent audit.record``: the same relay against the group
  commit's ceiling: the same entries recorded concurrently, ``outbox.batch_size`` at a time
  (the relay hands each claimed batch to the group commit as one ordered run).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from bench.harness import Pair
from devstack.stack import Stack
from nexus_store import NexusStore

UPDATES = 500
RELAY_ROWS = 500


async def scenarios(env: Stack) -> list[Pair]:
    from nexus_store.mongo.schema import ensure_schema
    from nexus_store.outbox.changes import Change, emit
    from nexus_store.postgres import migrate
    from nexus_store.postgres.models import Organization, Project

    store = NexusStore(env.settings())
    await migrate.upgrade(env.settings())
    await ensure_schema(store.backends.mongo, env.settings())
    org = await store.entities.create(Organization, name="bench", slug=f"b-{uuid.uuid4().hex}")
    project = await store.entities.create(Project, organization_id=org.id, name="bench")
    counter = iter(range(10**9))

    async def updates(audit: bool) -> float:
        started = time.perf_counter()
        for _ in range(UPDATES):
            await store.entities.update(
                Project, project.id, budget=Decimal(next(counter)), audit=audit
            )
        elapsed = time.perf_counter() - started
        await store.outbox.relay_once()  # keep the backlog out of the next measurement
        return UPDATES / elapsed

    async def with_audit() -> float:
        return await updates(True)

    async def without_audit() -> float:
        return await updates(False)

    def change(index: int) -> Change:
        return Change(
            "update",
            "projects",
            str(project.id),
            {"budget": str(index)},
            {"budget": str(index + 1)},
        )

    async def relay() -> float:
        async with store.backends.postgres.engine.begin() as conn:
            await emit(conn, [change(index) for index in range(RELAY_ROWS)])
        started = time.perf_counter()
        delivered = await store.outbox.relay_once()
        return delivered / (time.perf_counter() - started)

    async def record(index: int) -> None:
        """What the relay records for ``change(index)``, recorded by the caller itself."""
        item = change(index)
        await store.audit.record(
            "system",
            item.action,
            item.resource_type,
            item.resource_id,
            before=item.before,
            after=item.after,
            idempotency_key=f"bench:{uuid.uuid4()}",
        )

    async def record_directly() -> float:
        started = time.perf_counter()
        for index in range(RELAY_ROWS):
            await record(index)
        return RELAY_ROWS / (time.perf_counter() - started)

    async def record_concurrently() -> float:
        chunk = store.settings.outbox.batch_size
        started = time.perf_counter()
        for first in range(0, RELAY_ROWS, chunk):
            await asyncio.gather(
                *(record(index) for index in range(first, min(first + chunk, RELAY_ROWS)))
            )
        return RELAY_ROWS / (time.perf_counter() - started)

    async def close() -> None:
        await store.close()

    return [
        Pair(
            "entities.update audit=True vs audit=False",
            "updates/s",
            with_audit,
            without_audit,
            raw_label="audit=False",
            target="report the overhead",
        ),
        Pair(
            "outbox relay delivery",
            "rows/s",
            relay,
            record_directly,
            raw_label="audit.record direct",
            target="report",
        ),
        Pair(
            "outbox relay delivery vs concurrent audit.record",
            "rows/s",
            relay,
            record_concurrently,
            raw_label="audit.record, batch_size concurrent",
            target="report",
            teardown=close,
        ),
    ]
