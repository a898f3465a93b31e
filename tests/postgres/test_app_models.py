"""An application's own models on the same Base work with the same repository."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.errors import ConflictError, ValidationError
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Entity, Outbox, User, choice, non_negative
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag


class Invoice(Entity):
    """What an application would declare in its own code."""

    __tablename__ = "test_app_invoices"

    number: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = choice("draft", "sent", "paid", default="draft")
    total: Mapped[Decimal] = non_negative(Numeric(12, 2))


@pytest.fixture(scope="module")
async def invoices(backend: PostgresBackend) -> AsyncIterator[None]:
    async with backend.engine.begin() as connection:
        await connection.run_sync(Invoice.__table__.create, checkfirst=True)  # type: ignore[attr-defined]
    yield
    async with backend.engine.begin() as connection:
        await connection.run_sync(Invoice.__table__.drop)  # type: ignore[attr-defined]


async def test_app_model_crud(repo: EntityRepository, user: User, invoices: None) -> None:
    number = f"INV-{tag()}"
    invoice = await repo.create(Invoice, number=number, customer_id=user.id, total=Decimal("9.99"))
    assert invoice.status == "draft" and invoice.version == 1
    assert (await repo.get(Invoice, invoice.id)).total == Decimal("9.99")
    sent = await repo.update(Invoice, invoice.id, expected_version=1, status="sent")
    assert sent.status == "sent" and sent.version == 2
    page = await repo.list(Invoice, {"customer_id": user.id, "status": "sent"})
    assert [i.id for i in page] == [invoice.id]
    with pytest.raises(ConflictError) as caught:
        await repo.create(Invoice, number=number, customer_id=user.id, total=1)
    assert caught.value.field == "number"
    with pytest.raises(ValidationError) as caught:
        await repo.update(Invoice, invoice.id, status="void")
    assert caught.value.field == "status"
    with pytest.raises(ValidationError) as caught:
        await repo.create(Invoice, number=tag(), customer_id=user.id, total=Decimal("-1"))
    assert caught.value.field == "total"
    with pytest.raises(ValidationError) as caught:  # no deleted_at: soft delete refused
        await repo.delete(Invoice, invoice.id)
    await repo.delete(Invoice, invoice.id, soft=False)
    assert await repo.get_or_none(Invoice, invoice.id) is None


async def test_app_model_checks_exist_in_the_database(
    backend: PostgresBackend, invoices: None
) -> None:
    names = {c.name for c in Invoice.__table__.constraints}  # type: ignore[attr-defined]
    assert {"ck_test_app_invoices_status", "ck_test_app_invoices_total_non_negative"} <= names


async def test_model_without_entity_conventions(repo: EntityRepository) -> None:
    # The outbox has an integer identity key and no version or soft delete.
    row = await repo.create(Outbox, topic="user.created", payload={"id": "1"})
    assert isinstance(row.id, int) and row.delivered_at is None and row.attempts == 0
    assert (await repo.get(Outbox, row.id)).payload == {"id": "1"}
    with pytest.raises(ValidationError) as caught:
        await repo.update(Outbox, row.id, expected_version=1, attempts=1)
    assert caught.value.field == "expected_version"
    updated = await repo.update(Outbox, row.id, attempts=1)
    assert updated.attempts == 1
    with pytest.raises(ValidationError) as caught:
        await repo.get(Outbox, "1")
    assert caught.value.field == "id"
