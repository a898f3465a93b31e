"""Create, read, update, delete, upsert, bulk insert and transactions on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from nexus_store import NexusStore
from nexus_store.errors import ConflictError, IntegrityError, NotFoundError, ValidationError
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import (
    FinancialAccount,
    Organization,
    Project,
    Task,
    Transaction,
    User,
)
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


async def test_create_fills_defaults_and_get_reads_it_back(repo: EntityRepository) -> None:
    values = user_values(preferences={"theme": "dark"})
    created = await repo.create(User, **values)
    assert isinstance(created.id, uuid.UUID)
    assert created.version == 1
    assert created.is_active is True and created.email_verified is False
    assert created.created_at.tzinfo is not None and created.updated_at == created.created_at
    fetched = await repo.get(User, created.id)
    assert (fetched.email, fetched.username, fetched.preferences) == (
        values["email"],
        values["username"],
        {"theme": "dark"},
    )
    # The key may be given as a string too.
    assert (await repo.get(User, str(created.id))).id == created.id


async def test_get_missing_raises_not_found_and_get_or_none_returns_none(
    repo: EntityRepository,
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError) as caught:
        await repo.get(User, missing)
    assert caught.value.kind == "User" and caught.value.key == missing
    assert await repo.get_or_none(User, missing) is None


async def test_store_put_inserts_the_instance(store: NexusStore, repo: EntityRepository) -> None:
    await repo.count(User)  # the schema exists (session fixture)
    entity = User(**user_values())
    returned = await store.put(entity)
    assert returned is entity and isinstance(entity.id, uuid.UUID) and entity.version == 1
    assert (await repo.get(User, entity.id)).email == entity.email


async def test_update_bumps_version_and_updated_at(repo: EntityRepository, user: User) -> None:
    updated = await repo.update(User, user.id, expected_version=1, full_name="Ada Lovelace")
    assert updated.full_name == "Ada Lovelace"
    assert updated.version == 2
    assert updated.updated_at >= user.updated_at
    again = await repo.update(User, user.id, email_verified=True)  # unconditional
    assert again.version == 3 and again.full_name == "Ada Lovelace"


async def test_stale_version_raises_conflict_and_changes_nothing(
    repo: EntityRepository, user: User
) -> None:
    await repo.update(User, user.id, expected_version=1, full_name="first")
    with pytest.raises(ConflictError) as caught:
        await repo.update(User, user.id, expected_version=1, full_name="second")
    assert caught.value.field == "version"
    assert (await repo.get(User, user.id)).full_name == "first"


async def test_concurrent_updates_with_same_version_one_wins(
    repo: EntityRepository, user: User
) -> None:
    results = await asyncio.gather(
        *(
            repo.update(User, user.id, expected_version=1, full_name=f"writer {n}")
            for n in range(5)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, User)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, User))
    assert (await repo.get(User, user.id)).version == 2


async def test_update_missing_row_is_not_found(repo: EntityRepository) -> None:
    with pytest.raises(NotFoundError):
        await repo.update(User, uuid.uuid4(), full_name="x")


async def test_soft_delete_hides_and_restore_brings_back(
    repo: EntityRepository, user: User
) -> None:
    await repo.delete(User, user.id)
    with pytest.raises(NotFoundError):
        await repo.get(User, user.id)
    assert not await repo.exists(User, {"id": user.id})
    hidden = await repo.get(User, user.id, include_deleted=True)
    assert hidden.deleted_at is not None
    with pytest.raises(NotFoundError):  # already deleted
        await repo.delete(User, user.id)
    restored = await repo.restore(User, user.id)
    assert restored.deleted_at is None and restored.version == hidden.version + 1
    assert (await repo.get(User, user.id)).id == user.id
    with pytest.raises(NotFoundError):  # nothing deleted to restore
        await repo.restore(User, user.id)


async def test_hard_delete_removes_and_cascades(
    repo: EntityRepository, organization: Organization
) -> None:
    project = await repo.create(Project, organization_id=organization.id, name="p")
    task = await repo.create(Task, project_id=project.id, title="t")
    await repo.delete(Project, project.id, soft=False)
    assert await repo.get_or_none(Project, project.id, include_deleted=True) is None
    # ON DELETE CASCADE took the task with it.
    assert await repo.get_or_none(Task, task.id, include_deleted=True) is None


async def test_hard_delete_restricted_by_ledger_rows(
    repo: EntityRepository, organization: Organization
) -> None:
    account = await repo.create(FinancialAccount, organization_id=organization.id, name="ops")
    await repo.create(Transaction, account_id=account.id, kind="credit", amount=Decimal("10.50"))
    with pytest.raises(IntegrityError) as caught:
        await repo.delete(FinancialAccount, account.id, soft=False)
    assert caught.value.constraint == "fk_transactions_account_id_financial_accounts"
    assert caught.value.field == "account_id"
    assert await repo.get(FinancialAccount, account.id)


async def test_soft_delete_refused_on_models_without_deleted_at(
    repo: EntityRepository, organization: Organization
) -> None:
    account = await repo.create(FinancialAccount, organization_id=organization.id, name="x")
    txn = await repo.create(Transaction, account_id=account.id, kind="debit", amount=1)
    with pytest.raises(ValidationError) as caught:
        await repo.delete(Transaction, txn.id)
    assert caught.value.field == "soft"


async def test_upsert_inserts_then_updates_and_undeletes(repo: EntityRepository) -> None:
    values = user_values(full_name="one")
    first = await repo.upsert(User, conflict="email", **values)
    assert first.version == 1
    await repo.delete(User, first.id)
    second = await repo.upsert(User, conflict="email", **{**values, "full_name": "two"})
    assert second.id == first.id
    assert second.full_name == "two" and second.version == 3 and second.deleted_at is None
    only_name = await repo.upsert(
        User,
        conflict="email",
        update=["full_name"],
        **{**values, "full_name": "three", "is_active": False},
    )
    assert only_name.full_name == "three" and only_name.is_active is True


async def test_upsert_conflict_must_be_a_unique_key(repo: EntityRepository) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.upsert(User, conflict="full_name", **user_values())
    assert caught.value.field == "conflict"


async def test_bulk_create_inserts_all_rows(repo: EntityRepository) -> None:
    marker = tag()
    rows = [user_values(full_name=f"bulk {marker}", preferences={"n": n}) for n in range(500)]
    assert await repo.bulk_create(User, rows) == 500
    assert await repo.count(User, {"full_name": f"bulk {marker}"}) == 500
    page = await repo.list(User, {"full_name": f"bulk {marker}", "preferences__contains": {"n": 7}})
    assert [u.preferences for u in page.items] == [{"n": 7}]
    assert page.items[0].version == 1 and page.items[0].is_active is True


async def test_bulk_create_duplicate_is_conflict_and_writes_nothing(
    repo: EntityRepository, user: User
) -> None:
    marker = tag()
    rows = [user_values(full_name=marker) for _ in range(10)]
    rows[5]["email"] = user.email
    with pytest.raises(ConflictError) as caught:
        await repo.bulk_create(User, rows)
    assert caught.value.field == "email"
    assert await repo.count(User, {"full_name": marker}) == 0


async def test_transaction_commits_all(repo: EntityRepository, organization: Organization) -> None:
    async with repo.transaction():
        project = await repo.create(Project, organization_id=organization.id, name="in tx")
        await repo.create(Task, project_id=project.id, title="one")
        # Reads inside the transaction see its own writes.
        assert await repo.count(Task, {"project_id": project.id}) == 1
    assert await repo.count(Task, {"project_id": project.id}) == 1


async def test_transaction_failing_halfway_leaves_nothing(
    repo: EntityRepository, organization: Organization, user: User
) -> None:
    name = f"rollback {tag()}"
    with pytest.raises(ConflictError):
        async with repo.transaction():
            project = await repo.create(Project, organization_id=organization.id, name=name)
            await repo.create(Task, project_id=project.id, title="will vanish")
            await repo.create(User, **user_values(email=user.email))  # duplicate email
    assert await repo.count(Project, {"name": name}, include_deleted=True) == 0
    assert await repo.get_or_none(Project, project.id, include_deleted=True) is None


async def test_transaction_rolls_back_on_any_exception(
    repo: EntityRepository, organization: Organization
) -> None:
    name = f"boom {tag()}"
    with pytest.raises(RuntimeError):
        async with repo.transaction():
            await repo.create(Project, organization_id=organization.id, name=name)
            raise RuntimeError("caller failure")
    assert not await repo.exists(Project, {"name": name})


async def test_nested_transaction_is_a_savepoint(
    repo: EntityRepository, organization: Organization
) -> None:
    outer, inner = f"outer {tag()}", f"inner {tag()}"
    async with repo.transaction():
        await repo.create(Project, organization_id=organization.id, name=outer)
        with pytest.raises(ValidationError):
            async with repo.transaction():
                await repo.create(Project, organization_id=organization.id, name=inner)
                await repo.create(Project, organization_id=organization.id, name="x" * 500)
    assert await repo.exists(Project, {"name": outer})
    assert not await repo.exists(Project, {"name": inner})


async def test_numeric_and_dates_round_trip_exactly(
    repo: EntityRepository, organization: Organization
) -> None:
    project = await repo.create(
        Project,
        organization_id=organization.id,
        name="money",
        budget=Decimal("1234567890123.45"),
        start_date=date(2026, 1, 1),
        end_date=date(2026, 12, 31),
    )
    fetched = await repo.get(Project, project.id)
    assert fetched.budget == Decimal("1234567890123.45")
    assert fetched.end_date == date(2026, 12, 31)
    task = await repo.create(
        Task,
        project_id=project.id,
        title="t",
        tags=["a", "b"],
        due_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
        estimated_hours=Decimal("2.5"),
    )
    found = await repo.list(Task, {"tags__contains": "b", "project_id": project.id})
    assert [t.id for t in found] == [task.id]
    assert found.items[0].due_at == datetime(2026, 5, 1, 12, tzinfo=UTC)


async def test_orm_sessions_get_the_same_optimistic_concurrency(
    backend: PostgresBackend, user: User
) -> None:
    async with (
        AsyncSession(backend.engine, expire_on_commit=False) as first,
        AsyncSession(backend.engine, expire_on_commit=False) as second,
    ):
        mine = await first.get_one(User, user.id)
        theirs = await second.get_one(User, user.id)
        mine.full_name = "first"
        await first.commit()
        assert mine.version == 2
        theirs.full_name = "second"
        with pytest.raises(StaleDataError):
            await second.commit()


async def test_bulk_create_normalises_values_a_whole_column_check_leaves_to_the_converter(
    repo: EntityRepository, organization: Organization
) -> None:
    """Key strings and a mix of given and omitted columns take the value-by-value path."""
    rows: list[dict[str, object]] = [
        {"organization_id": str(organization.id), "name": f"p{n}", "status": "active"}
        for n in range(50)
    ]
    rows[10] = {"organization_id": organization.id, "name": "p10"}  # status defaults
    assert await repo.bulk_create(Project, rows) == 50
    page = await repo.list(Project, {"organization_id": organization.id}, limit=100)
    statuses = {project.name: project.status for project in page.items}
    assert len(statuses) == 50 and statuses["p10"] == "planning" and statuses["p3"] == "active"
