"""The transactional outbox: same-transaction change records, redaction, and the relay."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.errors import BackendUnavailableError, ConflictError, ValidationError
from nexus_store.outbox import REDACTED, AuditPolicy, audit_context, policy_for
from nexus_store.postgres.models import Organization, Outbox, Project, User


def new_user(**extra: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:12]
    return {
        "email": f"{tag}@example.com",
        "username": f"u{tag}",
        "password_hash": f"$argon2id$secret-{tag}",
        **extra,
    }


async def outbox_rows(store: NexusStore, **where: Any) -> list[Any]:
    table = Outbox.__table__
    query = select(table).order_by(table.c.id)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    async with store.backends.postgres.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def audit_documents(store: NexusStore) -> list[dict[str, Any]]:
    collection = store.backends.mongo.db[store.settings.audit.collection]
    return [doc async for doc in collection.find({}, {"_id": 0}).sort("seq", 1)]


async def drain(store: NexusStore) -> int:
    return await store.outbox.relay_once()


async def test_change_is_written_in_the_same_transaction(store: NexusStore) -> None:
    with audit_context("admin:1", ip="203.0.113.9", reason="signup"):
        user = await store.entities.create(User, **new_user())
    rows = await outbox_rows(store, aggregate_id=str(user.id))
    assert len(rows) == 1
    row = rows[0]
    assert (row.topic, row.aggregate_type, row.delivered_at) == ("audit", "users", None)
    assert row.payload["actor"] == "admin:1"
    assert row.payload["action"] == "create"
    assert row.payload["ip"] == "203.0.113.9"
    assert row.payload["before"] is None
    assert row.payload["after"]["is_active"] is True


async def test_rollback_leaves_no_outbox_row(store: NexusStore) -> None:
    values = new_user()
    with pytest.raises(RuntimeError):
        async with store.entities.transaction():
            user = await store.entities.create(User, **values)
            await store.entities.update(User, user.id, full_name="Gone")
            raise RuntimeError("abort")
    assert await outbox_rows(store, aggregate_id=str(user.id)) == []
    assert await store.entities.get_or_none(User, user.id) is None


async def test_failed_write_leaves_no_outbox_row(store: NexusStore) -> None:
    first = await store.entities.create(User, **new_user())
    before = len(await outbox_rows(store))
    with pytest.raises(ConflictError):
        await store.entities.create(User, **new_user(email=first.email))
    stale = first.version
    await store.entities.update(User, first.id, full_name="A")
    with pytest.raises(ConflictError):
        await store.entities.update(User, first.id, expected_version=stale, full_name="B")
    assert len(await outbox_rows(store)) == before + 1  # only the successful update


async def test_audit_per_call_and_per_model(store: NexusStore) -> None:
    org = await store.entities.create(Organization, name="Acme", slug=f"acme-{uuid.uuid4().hex}")
    assert await outbox_rows(store, aggregate_id=str(org.id)) == []  # not audited by default
    project = await store.entities.create(
        Project, organization_id=org.id, name="Apollo", audit=True
    )
    await store.entities.update(Project, project.id, budget=Decimal("1200.50"), audit=True)
    user = await store.entities.create(User, **new_user())  # outbox.audited_tables
    await store.entities.update(User, user.id, is_active=False, audit=False)
    project_rows = await outbox_rows(store, aggregate_id=str(project.id))
    assert [row.payload["action"] for row in project_rows] == ["create", "update"]
    assert project_rows[1].payload["before"] == {"budget": None, "version": 1}
    assert project_rows[1].payload["after"] == {"budget": "1200.50", "version": 2}
    assert len(await outbox_rows(store, aggregate_id=str(user.id))) == 1
    with pytest.raises(ValidationError) as caught:
        await store.entities.update(Project, project.id, name="x", audit="yes")
    assert caught.value.field == "audit"
    assert not policy_for(User).enabled  # nothing is audited unless asked
    assert policy_for(User, ["users"]).enabled


async def test_redaction_keeps_secrets_and_personal_data_out(store: NexusStore) -> None:
    values = new_user(full_name="Ada Lovelace", preferences={"theme": "dark", "api_token": "t"})
    user = await store.entities.create(User, **values)
    await store.entities.update(User, user.id, password_hash="$argon2id$rotated-secret")
    await store.entities.delete(User, user.id, soft=False)
    await drain(store)
    page = await store.audit.by_resource("users", str(user.id))
    entries = sorted(page.entries, key=lambda entry: entry.seq)
    assert [entry.action for entry in entries] == ["create", "update", "delete"]
    assert entries[0].after is not None
    assert entries[0].after["email"] == REDACTED
    assert entries[0].after["password_hash"] == REDACTED
    assert entries[0].after["preferences"] == REDACTED
    assert entries[1].before == {"password_hash": REDACTED, "version": 1}
    assert entries[2].after is None
    stored = repr(await audit_documents(store)) + repr(await outbox_rows(store))
    for secret in (values["password_hash"], "rotated-secret", values["email"], "Ada Lovelace"):
        assert secret not in stored


async def test_model_policy_redacts_declared_fields() -> None:
    from nexus_store.outbox import Change

    class Invoice:
        __tablename__ = "invoices"
        __audit__ = AuditPolicy(enabled=True, redact=frozenset({"customer_email"}))

    change = Change.of(
        Invoice,
        "update",
        7,
        {"customer_email": "a@x.io", "total": Decimal("1.00"), "session_token": "s"},
        {"customer_email": "b@x.io", "total": Decimal("2.00"), "session_token": "t"},
    )
    assert change is not None
    assert change.before == {"customer_email": REDACTED, "session_token": REDACTED, "total": "1.00"}
    assert change.after == {"customer_email": REDACTED, "session_token": REDACTED, "total": "2.00"}
    assert Change.of(Invoice, "update", 7, {"total": 1}, {"total": 1}) is None


async def test_relay_delivers_in_commit_order_exactly_once(store: NexusStore) -> None:
    org = await store.entities.create(Organization, name="Ord", slug=f"ord-{uuid.uuid4().hex}")
    projects = [
        await store.entities.create(Project, organization_id=org.id, name=f"p{i}", audit=True)
        for i in range(3)
    ]

    async def bump(project: Project, step: int) -> None:
        # Concurrent writers of one row: their commit order is the version order.
        async with store.entities.transaction():
            await store.entities.update(Project, project.id, budget=Decimal(step), audit=True)
            await asyncio.sleep(0.001 * (step % 3))

    await asyncio.gather(*(bump(p, step) for step in range(12) for p in projects))
    assert await drain(store) >= 39
    assert await drain(store) == 0  # nothing is delivered twice
    for project in projects:
        page = await store.audit.by_resource("projects", str(project.id), limit=100)
        entries = sorted(page.entries, key=lambda entry: entry.seq)
        assert len(entries) == 13
        versions = [entry.after["version"] for entry in entries if entry.after]
        assert versions == list(range(1, 14))
        for previous, entry in itertools.pairwise(entries[1:]):
            assert entry.before is not None and previous.after is not None
            assert entry.before["budget"] == previous.after["budget"]
    keys = [doc["idempotency_key"] for doc in await audit_documents(store)]
    assert len(keys) == len(set(keys))
    assert (await store.audit.verify()).ok


async def test_two_relays_keep_one_valid_chain(store: NexusStore, crossstore_stack: Stack) -> None:
    org = await store.entities.create(Organization, name="Two", slug=f"two-{uuid.uuid4().hex}")
    settings = crossstore_stack.settings(outbox={"batch_size": 7})
    async with NexusStore(settings) as first, NexusStore(settings) as second:
        done = asyncio.Event()

        async def relay(store: NexusStore) -> None:
            while not done.is_set():
                await store.outbox.relay_once()
                await asyncio.sleep(0.005)

        relays = [asyncio.create_task(relay(store)) for store in (first, second)]
        for index in range(60):
            await store.entities.create(
                Project, organization_id=org.id, name=f"two-{index}", audit=True
            )
        done.set()
        await asyncio.gather(*relays)
        await first.outbox.relay_once()
        counts = [(await store.outbox.lag()).delivered for store in (first, second)]
    assert sum(counts) >= 60
    delivered = await outbox_rows(store, aggregate_type="projects")
    assert all(row.delivered_at is not None for row in delivered)
    documents = await audit_documents(store)
    keys = [doc["idempotency_key"] for doc in documents]
    assert len(keys) == len(set(keys))
    assert {f"outbox:{row.event_id}" for row in delivered} <= set(keys)
    assert (await store.audit.verify()).ok


async def test_lag_and_pruning(store: NexusStore, crossstore_stack: Stack) -> None:
    await drain(store)
    settings = crossstore_stack.settings(outbox={"prune_after_hours": 0.5 / 3600})
    async with NexusStore(settings) as configured:
        await asyncio.sleep(0.6)
        await configured.outbox.prune()  # what earlier tests of this module delivered
        assert await outbox_rows(store) == []
        empty = await store.outbox.lag()
        assert (empty.pending, empty.oldest_age_seconds) == (0, None)
        user = await store.entities.create(User, **new_user())
        await asyncio.sleep(0.2)
        lagging = await store.outbox.lag()
        assert lagging.pending == 1
        assert lagging.oldest_age_seconds is not None and lagging.oldest_age_seconds >= 0.2
        assert await configured.outbox.relay_once() == 1
        assert await configured.outbox.prune() == 0  # delivered just now: younger than 0.5 s
        await asyncio.sleep(0.6)
        undelivered = await store.entities.create(User, **new_user())
        assert await configured.outbox.prune() == 1
    assert await outbox_rows(store, aggregate_id=str(user.id)) == []
    assert len(await outbox_rows(store, aggregate_id=str(undelivered.id))) == 1  # kept
    assert (await store.outbox.lag()).pending == 1


async def test_health_reports_outbox_lag(crossstore_stack: Stack) -> None:
    settings = crossstore_stack.settings(outbox={"lag_warning_seconds": 0.2})
    async with NexusStore(settings) as store:
        while await drain(store):
            pass
        await store.entities.create(User, **new_user())
        await asyncio.sleep(0.3)
        lagging = (await store.health()).to_dict()["checks"]["outbox:lag"][0]
        assert (lagging["status"], lagging["observedValue"]) == ("warn", 1)
        assert "1 undelivered, oldest" in lagging["output"]
        await drain(store)
        caught_up = (await store.health()).to_dict()["checks"]["outbox:lag"][0]
        assert (caught_up["status"], caught_up["observedValue"]) == ("pass", 0)


async def test_background_relay(store: NexusStore) -> None:
    store.outbox.start_relay()
    store.outbox.start_relay()  # idempotent
    assert store.outbox.running
    user = await store.entities.create(User, **new_user())
    for _ in range(100):  # bounded wait: 10 s at most
        if (await store.outbox.lag()).pending == 0:
            break
        await asyncio.sleep(0.1)
    page = await store.audit.by_resource("users", str(user.id))
    assert [entry.action for entry in page.entries] == ["create"]
    await store.outbox.stop()
    assert not store.outbox.running


async def test_outbox_ids_follow_row_locks(store: NexusStore) -> None:
    """The property commit order rests on: a later writer of a row gets a larger outbox id,
    even when it started (and took an id-less transaction) first."""
    org = await store.entities.create(Organization, name="Lk", slug=f"lk-{uuid.uuid4().hex}")
    project = await store.entities.create(Project, organization_id=org.id, name="lk")
    first_holds = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with store.entities.transaction():
            await store.entities.update(Project, project.id, status="active", audit=True)
            first_holds.set()
            await release.wait()

    async def second() -> None:
        await first_holds.wait()
        async with store.entities.transaction():
            await store.entities.update(Project, project.id, status="on_hold", audit=True)

    task_first = asyncio.create_task(first())
    task_second = asyncio.create_task(second())
    await first_holds.wait()
    await asyncio.sleep(0.2)  # second is now blocked on the row lock
    release.set()
    await asyncio.gather(task_first, task_second)
    rows = await outbox_rows(store, aggregate_id=str(project.id))
    assert [row.payload["after"]["status"] for row in rows] == ["active", "on_hold"]
    async with store.backends.postgres.engine.connect() as conn:
        pending = (
            await conn.execute(
                select(func.count())
                .select_from(Outbox.__table__)
                .where(text("delivered_at IS NULL"))
            )
        ).scalar_one()
    assert pending >= 2


async def test_relay_survives_an_unreachable_audit_log(
    store: NexusStore, crossstore_stack: Stack
) -> None:
    from devstack import servers

    await drain(store)
    user = await store.entities.create(User, **new_user())
    closed = f"mongodb://127.0.0.1:{servers.closed_port()}"
    broken = crossstore_stack.settings(
        mongo={"url": closed, "server_selection_timeout": 0.3},
        outbox={"poll_interval": 0.05, "retry_max_backoff": 0.2},
    )
    async with NexusStore(broken) as configured:
        with pytest.raises(BackendUnavailableError) as caught:
            await configured.outbox.deliver_batch()
        assert caught.value.backend == "mongo"
        configured.outbox.start_relay()  # keeps retrying in the background, without crashing
        await asyncio.sleep(0.5)
        assert configured.outbox.running
        lag = await configured.outbox.lag()
        assert lag.pending == 1 and lag.delivered == 0
        assert lag.last_error is not None and "mongo" in lag.last_error.lower()
    (row,) = await outbox_rows(store, aggregate_id=str(user.id))
    assert row.delivered_at is None and row.attempts >= 2 and row.last_error
    assert await drain(store) == 1  # delivered once the audit log is reachable
    (row,) = await outbox_rows(store, aggregate_id=str(user.id))
    assert row.delivered_at is not None and row.last_error is None


async def test_every_write_path_records_its_change(store: NexusStore) -> None:
    org = await store.entities.create(Organization, name="All", slug=f"all-{uuid.uuid4().hex}")
    project = await store.entities.create(Project, organization_id=org.id, name="all")
    await store.entities.delete(Project, project.id, audit=True)  # soft
    await store.entities.restore(Project, project.id, audit=True)
    slug = f"up-{uuid.uuid4().hex}"
    first = await store.entities.upsert(
        Organization, conflict="slug", slug=slug, name="A", audit=True
    )
    await store.entities.upsert(Organization, conflict="slug", slug=slug, name="B", audit=True)
    ids = [uuid.uuid4() for _ in range(3)]
    rows = [{"id": key, "organization_id": org.id, "name": f"bulk{i}"} for i, key in enumerate(ids)]
    assert await store.entities.bulk_create(Project, rows, audit=True) == 3
    # Without keys: audited rows get theirs from the key's default, so records can name them.
    assert (
        await store.entities.bulk_create(
            Project, [{"organization_id": org.id, "name": "keyless"}], audit=True
        )
        == 1
    )
    (keyless,) = (await store.entities.list(Project, where={"name": "keyless"})).items
    assert len(await outbox_rows(store, aggregate_id=str(keyless.id))) == 1

    soft = await outbox_rows(store, aggregate_id=str(project.id))
    assert [
        (row.payload["action"], row.payload["after"]["deleted_at"] is None) for row in soft
    ] == [("delete", False), ("restore", True)]
    assert soft[0].payload["before"]["deleted_at"] is None
    upserts = await outbox_rows(store, aggregate_id=str(first.id))
    assert [row.payload["action"] for row in upserts] == ["create", "update"]
    assert upserts[1].payload["before"]["name"] == "A"
    assert upserts[1].payload["after"]["name"] == "B"
    for key in ids:
        (row,) = await outbox_rows(store, aggregate_id=str(key))
        assert row.payload["action"] == "create" and row.payload["after"]["name"].startswith("bulk")


async def test_changes_also_become_events_where_configured(
    store: NexusStore, crossstore_stack: Stack
) -> None:
    await drain(store)
    actor = f"admin:{uuid.uuid4().hex[:8]}"
    with audit_context(actor):
        user = await store.entities.create(User, **new_user())
        await store.entities.update(User, user.id, is_active=False)
    settings = crossstore_stack.settings(outbox={"deliver_events": True})
    async with NexusStore(settings) as configured:
        assert await configured.outbox.relay_once() == 2
        events = [event async for event in configured.events.export_user(actor)]
    assert [event["name"] for event in events] == ["users.create", "users.update"]
    assert {event["properties"]["resource_id"] for event in events} == {str(user.id)}
    rows = await outbox_rows(store, aggregate_id=str(user.id))
    assert [event["event_id"] for event in events] == [f"outbox:{row.event_id}" for row in rows]
