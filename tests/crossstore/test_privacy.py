"""Per-user export and erasure across PostgreSQL, MongoDB and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

import redis as redis_lib
from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import BackendUnavailableError, NotFoundError, ValidationError
from nexus_store.outbox import audit_context
from nexus_store.postgres.models import (
    ApiKey,
    Document,
    DocumentShare,
    Entity,
    File,
    Organization,
    OrganizationMember,
    Project,
    Role,
    Task,
    User,
    UserRole,
)
from nexus_store.privacy import ErasurePolicy


class Invoice(Entity):
    """An application's financial record: kept by law, personal fields scrubbed."""

    __tablename__ = "xs_invoices"
    __privacy__ = ErasurePolicy("keep", scrub={"billing_name": None, "billing_email": None})

    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    billing_name: Mapped[str | None] = mapped_column(String(200))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    total: Mapped[Decimal] = mapped_column(Numeric(15, 2))


@pytest.fixture(scope="module")
async def settings(settings: NexusSettings) -> NexusSettings:
    """The module's stores with an application table that keeps scrubbed rows."""
    store = NexusStore(settings)
    async with store, store.backends.postgres.engine.begin() as conn:
        await conn.run_sync(Invoice.__table__.create)
    return settings


@dataclass
class Person:
    user: User
    other: User
    token: str
    secret_key: str
    ids: dict[str, Any]


async def make_person(store: NexusStore) -> Person:
    """A user with rows in every kind of table, events, sessions, cache entries."""
    tag = uuid.uuid4().hex[:10]
    entities = store.entities
    user = await entities.create(
        User,
        email=f"ada-{tag}@example.com",
        username=f"ada{tag}",
        password_hash=f"$argon2id$hash-{tag}",
        full_name=f"Ada Lovelace {tag}",
        preferences={"theme": "dark"},
    )
    other = await entities.create(
        User, email=f"bob-{tag}@example.com", username=f"bob{tag}", password_hash="$x$bob"
    )
    org = await entities.create(Organization, name=f"Org {tag}", slug=f"org-{tag}")
    role = await entities.create(Role, name=f"role-{tag}")
    secret_key = f"nxs_{tag}_very_secret"
    ids = {
        "api_key": (
            await entities.create(
                ApiKey,
                user_id=user.id,
                name="ci",
                prefix=tag[:8],
                key_hash=hashlib.sha256(secret_key.encode()).hexdigest(),
            )
        ).id,
        "own_role": (await entities.create(UserRole, user_id=user.id, role_id=role.id)).id,
        "granted": (
            await entities.create(
                UserRole, user_id=other.id, role_id=role.id, granted_by_id=user.id
            )
        ).id,
        "member": (
            await entities.create(
                OrganizationMember, organization_id=org.id, user_id=user.id, role="owner"
            )
        ).id,
    }
    project = await entities.create(Project, organization_id=org.id, owner_id=user.id, name="P")
    ids["project"] = project.id
    ids["task"] = (
        await entities.create(Task, project_id=project.id, assignee_id=user.id, title="Write notes")
    ).id
    document = await entities.create(
        Document, organization_id=org.id, owner_id=user.id, title="Notes", content={"a": 1}
    )
    ids["document"] = document.id
    ids["share"] = (
        await entities.create(
            DocumentShare, document_id=document.id, user_id=user.id, permission="edit"
        )
    ).id
    ids["file"] = (
        await entities.create(
            File,
            owner_id=user.id,
            name="cv.pdf",
            mime_type="application/pdf",
            size_bytes=10,
            sha256="a" * 64,
            storage_key=f"files/{tag}",
        )
    ).id
    ids["invoice"] = (
        await entities.create(
            Invoice,
            customer_id=user.id,
            billing_name="Ada Lovelace",
            billing_email=f"ada-{tag}@example.com",
            total=Decimal("99.90"),
        )
    ).id
    uid = str(user.id)
    for name in ("signup", "login", "purchase"):
        await store.events.track(name, user_id=uid, properties={"plan": "pro"})
    await store.events.track("visit", user_id=str(other.id), wait=True)
    token = await store.sessions.create(uid, {"device": "laptop"})
    await store.cache.set(f"profile:{uid}", {"name": "Ada"}, tags=[f"user:{uid}"])
    await store.cache.set(f"profile:{other.id}", {"name": "Bob"}, tags=[f"user:{other.id}"])
    await store.outbox.relay_once()  # the users' audited creates reach the audit log
    return Person(user, other, token, secret_key, ids)


async def export(store: NexusStore, user_id: Any) -> tuple[dict[str, Any], bytes]:
    progress: list[tuple[str, int]] = []
    chunks = [
        chunk
        async for chunk in store.privacy.export_user(
            user_id, progress=lambda section, count: progress.append((section, count))
        )
    ]
    raw = b"".join(chunks)
    assert len(chunks) > 5  # streamed, not built in one piece
    assert ("users", 1) in progress
    return orjson.loads(raw), raw


async def test_export_has_every_store_and_no_secrets(store: NexusStore) -> None:
    person = await make_person(store)
    uid = str(person.user.id)
    document, raw = await export(store, person.user.id)
    assert document["user_id"] == uid
    tables = document["postgres"]
    assert tables["users"][0]["email"] == person.user.email
    assert tables["users"][0]["password_hash"] == "[redacted]"
    assert [row["id"] for row in tables["api_keys"]] == [str(person.ids["api_key"])]
    assert tables["api_keys"][0]["key_hash"] == "[redacted]"
    assert {row["id"] for row in tables["user_roles"]} == {
        str(person.ids["own_role"]),
        str(person.ids["granted"]),
    }
    for name, key in (
        ("projects", "project"),
        ("tasks", "task"),
        ("documents", "document"),
        ("document_shares", "share"),
        ("files", "file"),
        ("xs_invoices", "invoice"),
        ("organization_members", "member"),
    ):
        assert [row["id"] for row in tables[name]] == [str(person.ids[key])], name
    assert tables["xs_invoices"][0]["total"] == "99.90"
    assert sorted(event["name"] for event in document["events"]) == ["login", "purchase", "signup"]
    assert [session["user_id"] for session in document["sessions"]] == [uid]
    assert [entry["action"] for entry in document["audit"]] == ["create"]
    assert document["audit"][0]["resource_id"] == uid
    for secret in (
        person.token,
        person.secret_key,
        person.user.password_hash,
        hashlib.sha256(person.token.encode()).hexdigest(),
    ):
        assert secret.encode() not in raw
    assert str(person.other.email).encode() not in raw


async def test_export_of_unknown_user(store: NexusStore) -> None:
    chunks: list[bytes] = []
    with pytest.raises(NotFoundError):
        async for chunk in store.privacy.export_user(uuid.uuid4()):
            chunks.append(chunk)
    assert chunks == []  # nothing written before the error
    with pytest.raises(ValidationError) as caught:
        await export(store, "1 OR 1=1")
    assert caught.value.field == "user_id"


async def assert_erased(store: NexusStore, person: Person) -> None:
    uid = str(person.user.id)
    entities = store.entities
    with pytest.raises(NotFoundError):
        await entities.get(User, person.user.id)
    tombstone = await entities.get(User, person.user.id, include_deleted=True)
    assert tombstone.email == f"erased-{uid}@invalid"
    assert tombstone.username == f"erased-{uid}"
    assert (tombstone.full_name, tombstone.preferences, tombstone.is_active) == (None, {}, False)
    assert tombstone.password_hash == "!erased"
    for model, key in (
        (ApiKey, "api_key"),
        (UserRole, "own_role"),
        (File, "file"),
        (OrganizationMember, "member"),
        (DocumentShare, "share"),
    ):
        assert await entities.get_or_none(model, person.ids[key], include_deleted=True) is None
    assert (await entities.get(UserRole, person.ids["granted"])).granted_by_id is None
    assert (await entities.get(Project, person.ids["project"])).owner_id is None
    assert (await entities.get(Task, person.ids["task"])).assignee_id is None
    assert (await entities.get(Document, person.ids["document"])).owner_id is None
    invoice = await entities.get(Invoice, person.ids["invoice"])
    assert (invoice.customer_id, invoice.total) == (person.user.id, Decimal("99.90"))
    assert (invoice.billing_name, invoice.billing_email) == (None, None)
    assert [event async for event in store.events.export_user(uid)] == []
    assert await store.sessions.list_for_user(uid) == []
    with pytest.raises(NotFoundError):
        await store.sessions.get(person.token)
    assert await store.cache.get(f"profile:{uid}") is None
    _, raw = await export(store, uid)
    for personal in (
        person.user.email,
        person.user.username,
        person.user.full_name,
        "Ada Lovelace",
        "laptop",
    ):
        assert str(personal).encode() not in raw


async def test_erase_user_everywhere_then_a_rerun_is_a_no_op(store: NexusStore) -> None:
    person = await make_person(store)
    uid = str(person.user.id)
    with audit_context("admin:7", reason="GDPR request 42"):
        report = await store.privacy.erase_user(person.user.id)
    assert report.changed_anything
    assert report.events == 3 and report.sessions == 1 and report.cache_entries == 1
    assert report.postgres["users"] == 1
    assert report.postgres["api_keys.user_id"] == 1
    assert report.postgres["user_roles.granted_by_id"] == 1
    assert report.postgres["xs_invoices.customer_id"] == 1
    await assert_erased(store, person)
    # Someone else's data is untouched.
    assert (await store.entities.get(User, person.other.id)).email == person.other.email
    assert [e["name"] async for e in store.events.export_user(str(person.other.id))] == ["visit"]
    assert await store.cache.get(f"profile:{person.other.id}") == {"name": "Bob"}

    erasures = (await store.audit.by_resource("users", uid)).entries
    assert [entry.action for entry in erasures] == ["erase", "create"]
    assert erasures[0].actor == "admin:7" and erasures[0].reason == "GDPR request 42"
    assert erasures[0].after is not None and erasures[0].after["events"] == 3
    head = (await store.audit.verify()).checked

    again = await store.privacy.erase_user(uid)
    assert not again.changed_anything
    assert again.audit_seq == report.audit_seq
    assert (await store.audit.verify()).checked == head  # no second erasure entry
    assert (await store.outbox.lag()).pending == 0  # erasure writes no outbox rows
    await assert_erased(store, person)


@pytest.mark.redis_server
async def test_erasure_interrupted_between_stores_completes_on_rerun(
    settings: NexusSettings, crossstore_stack: Stack
) -> None:
    redis = servers.RedisProcess().start()  # a private Redis this test may freeze
    try:
        settings = crossstore_stack.settings(
            redis={"url": redis.url, "socket_timeout": 0.3, "retries": 0}
        )
        async with NexusStore(settings) as store:
            person = await make_person(store)
            uid = str(person.user.id)
            # Redis stops answering (CLIENT PAUSE keeps its data): PostgreSQL and MongoDB
            # are erased, then the run fails at the sessions.
            with redis_lib.Redis.from_url(redis.url) as pauser:
                pauser.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            with pytest.raises(BackendUnavailableError):
                await store.privacy.erase_user(uid)
            tombstone = await store.entities.get(User, person.user.id, include_deleted=True)
            assert tombstone.email == f"erased-{uid}@invalid"
            assert [event async for event in store.events.export_user(uid)] == []
            assert [e.action for e in (await store.audit.by_resource("users", uid)).entries] == [
                "create"
            ]
            for _ in range(40):  # the pause ends after 1.5 s
                try:
                    assert len(await store.sessions.list_for_user(uid)) == 1
                    break
                except BackendUnavailableError:
                    await asyncio.sleep(0.1)
            report = await store.privacy.erase_user(uid)
            assert report.sessions == 1 and report.cache_entries == 1
            assert report.events == 0 and not any(report.postgres.values())
            await assert_erased(store, person)
            actions = [e.action for e in (await store.audit.by_resource("users", uid)).entries]
            assert actions == ["erase", "create"]
            assert (await store.audit.verify()).ok
    finally:
        redis.cleanup()


async def test_erase_unknown_user(store: NexusStore) -> None:
    with pytest.raises(NotFoundError):
        await store.privacy.erase_user(uuid.uuid4())
    with pytest.raises(ValidationError):
        await store.privacy.erase_user("not-a-uuid")
