"""Approval fixtures: a module's own PostgreSQL database (migrated to head, plus the test
model's table) and Redis namespace, so outbox rows and notifications can be counted exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from devstack.stack import Stack, scratch_stack
from nexus_store import NexusSettings, NexusStore
from nexus_store.approvals import ApprovalPolicy
from nexus_store.postgres import migrate
from nexus_store.postgres.models import Entity, non_negative


class Expense(Entity):
    """An application model whose ``amount`` needs two approvals (seed 004)."""

    __tablename__ = "test_approval_expenses"
    __approval__ = ApprovalPolicy(fields=frozenset({"amount"}), approvals=2)

    title: Mapped[str] = mapped_column(String(100))
    amount: Mapped[Decimal] = non_negative(Numeric(12, 2))


@pytest.fixture(scope="module")
def approvals_stack(postgres_url: str, mongo_url: str, redis_url: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    with scratch_stack(
        postgres_url, mongo_url, redis_url, database=f"nexus_ap_{tag}", namespace=f"ap{tag}"
    ) as scratch:
        yield scratch


@pytest.fixture(scope="module")
async def settings(approvals_stack: Stack) -> NexusSettings:
    settings = approvals_stack.settings()
    await migrate.upgrade(settings)
    async with NexusStore(settings) as store, store.backends.postgres.engine.begin() as connection:
        await connection.run_sync(Expense.__table__.create)  # type: ignore[attr-defined]
    return settings


@pytest.fixture
async def expense(store: NexusStore) -> Expense:
    return await store.entities.create(Expense, title="conference", amount=Decimal("100.00"))


@pytest.fixture
def postgres_dsn(settings: NexusSettings) -> str:
    return settings.postgres.url.get_secret_value()  # type: ignore[union-attr]
