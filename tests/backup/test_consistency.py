"""The cross-store guarantee, with writes running during the backup.

PostgreSQL is dumped at snapshot S, MongoDB after it. So every outbox row delivered at S has
its audit entry in the archive; after a restore, the relay delivers the rows that were not
yet delivered at S, and the idempotency key makes that a no-op for those whose entry the
MongoDB copy already holds. Every change in the restored PostgreSQL reaches the restored audit
log exactly once, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusStore
from nexus_store.postgres.models import Outbox, User

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    with scratch_stack(
        postgres_url, mongo_url, redis_url, database=f"nexus_bkc_{tag}", namespace=f"bkc{tag}"
    ) as scratch:
        yield scratch.merged(outbox={"audited_tables": ["users"]})


def _user() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:12]
    return {"email": f"{tag}@example.com", "username": f"u{tag}", "password_hash": "$argon2id$x"}


async def _outbox_keys(store: NexusStore) -> list[str]:
    table = Outbox.__table__
    async with store.backends.postgres.engine.connect() as conn:
        rows = (await conn.execute(select(table.c.event_id))).all()
    return [f"outbox:{row.event_id}" for row in rows]


async def _audit_keys(store: NexusStore) -> Counter[str]:
    collection = store.backends.mongo.db[store.settings.audit.collection]
    cursor = collection.find({"idempotency_key": {"$exists": True}}, {"idempotency_key": 1})
    return Counter([doc["idempotency_key"] async for doc in cursor])


async def test_every_change_reaches_the_restored_audit_log_exactly_once(
    busy_stack: Stack, target_stack: Stack, drop_database: Any, tmp_path: Path
) -> None:
    from nexus_store.cli.init import run_init

    settings = busy_stack.settings()
    stop = asyncio.Event()
    async with NexusStore(settings) as store:
        await run_init(store, progress=False)
        for _ in range(20):
            await store.entities.create(User, **_user())
        written_before = 20
        assert await store.outbox.relay_once() == written_before

        async def write() -> int:
            written = 0
            while not stop.is_set():
                await store.entities.create(User, **_user())
                written += 1
            return written

        async def relay() -> None:
            while not stop.is_set():
                await store.outbox.relay_once()
                await asyncio.sleep(0.01)

        writer, relayer = asyncio.create_task(write()), asyncio.create_task(relay())
        await asyncio.sleep(0.3)
        report = await store.backup.create(tmp_path / "archive")
        stop.set()
        written_during = await writer
        await relayer
    rows_in_archive = next(c.count for c in report.counts if c.part == "users")
    assert written_during > 0
    # Writes ran before and after S: the archive holds some of them, not all.
    assert written_before < rows_in_archive < written_before + written_during

    drop_database(target_stack.postgres_url)
    target = target_stack.settings()
    async with NexusStore(target) as store:
        await store.backup.restore(tmp_path / "archive")
    async with NexusStore(target) as store:
        delivered = await store.outbox.relay_once()
        keys = await _outbox_keys(store)
        audit = await _audit_keys(store)
        verified = await store.audit.verify()
    assert len(keys) == rows_in_archive
    assert all(audit[key] == 1 for key in keys), [k for k in keys if audit[k] != 1][:5]
    assert verified.ok, verified
    assert delivered < rows_in_archive  # the rows delivered at S were not delivered again
    # The MongoDB copy may be ahead of S (changes written after it); never behind.
    ahead = set(audit) - set(keys)
    print(
        f"{rows_in_archive} users at S, {delivered} delivered after the restore, "
        f"{len(ahead)} audit entries for changes after S"
    )
