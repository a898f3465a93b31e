"""The relay hands a claimed batch to the audit log's group commit: one ordered write for
the batch, in outbox id order, each row once; after a failed row nothing is recorded."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from nexus_store import NexusStore
from nexus_store.errors import ValidationError
from nexus_store.outbox.changes import AuditContext, Change, emit, outbox_table


async def _emit(store: NexusStore, changes: list[Change]) -> None:
    async with store.backends.postgres.engine.begin() as conn:
        await emit(conn, changes)


def _change(resource: str, index: int, actor: str = "system") -> Change:
    return Change(
        "update", "docs", resource, {"n": index}, {"n": index + 1}, AuditContext(actor=actor)
    )


async def _rows(store: NexusStore, resource: str) -> list[Any]:
    table = outbox_table()
    query = select(table).where(table.c.aggregate_id == resource).order_by(table.c.id)
    async with store.backends.postgres.engine.connect() as conn:
        return list((await conn.execute(query)).all())


def _count_inserts(store: NexusStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy (the real method runs): the size of each insert the audit log sends."""
    audit = store.outbox._audit
    sizes: list[int] = []
    insert = audit._insert

    async def counted(documents: list[dict[str, Any]]) -> None:
        sizes.append(len(documents))
        await insert(documents)

    monkeypatch.setattr(audit, "_insert", counted)
    return sizes


async def test_a_claimed_batch_is_one_ordered_write(
    store: NexusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.outbox.relay_once()  # what earlier tests left
    resource = uuid.uuid4().hex
    await _emit(store, [_change(resource, index) for index in range(40)])
    sizes = _count_inserts(store, monkeypatch)
    assert await store.outbox.deliver_batch() == 40
    assert sizes == [40]  # one insert_many, not 40 round trips
    rows = await _rows(store, resource)
    page = await store.audit.by_resource("docs", resource, limit=100)
    by_seq = sorted(page.entries, key=lambda entry: entry.seq)
    assert [entry.idempotency_key for entry in by_seq] == [f"outbox:{r.event_id}" for r in rows]
    assert [entry.before for entry in by_seq] == [{"n": index} for index in range(40)]
    assert all(row.delivered_at is not None for row in rows)
    # delivering the same rows again (a relay that died before marking) stores nothing new
    table = outbox_table()
    async with store.backends.postgres.engine.begin() as conn:
        await conn.execute(
            table.update().where(table.c.aggregate_id == resource).values(delivered_at=None)
        )
    assert await store.outbox.deliver_batch() == 40
    again = await store.audit.by_resource("docs", resource, limit=100)
    assert sorted(entry.seq for entry in again.entries) == [entry.seq for entry in by_seq]
    assert (await store.audit.verify()).ok


async def test_nothing_after_a_failed_row_is_recorded(store: NexusStore) -> None:
    await store.outbox.relay_once()
    resource = uuid.uuid4().hex
    changes = [_change(resource, index) for index in range(10)]
    changes[4] = _change(resource, 4, actor="x" * 300)  # longer than the audit log takes
    await _emit(store, changes)
    with pytest.raises(ValidationError) as refused:
        await store.outbox.deliver_batch()
    assert refused.value.field == "actor"
    rows = await _rows(store, resource)
    assert [row.delivered_at is not None for row in rows] == [True] * 4 + [False] * 6
    assert rows[4].attempts == 1 and "actor" in rows[4].last_error
    assert all(row.attempts == 0 for row in rows[5:])
    page = await store.audit.by_resource("docs", resource, limit=100)
    recorded = {entry.idempotency_key for entry in page.entries}
    assert recorded == {f"outbox:{row.event_id}" for row in rows[:4]}
    assert (await store.audit.verify()).ok
