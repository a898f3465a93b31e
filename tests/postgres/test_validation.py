"""Bad input and hostile filters give ValidationError naming the field; nothing is written."""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from nexus_store.errors import ConflictError, IntegrityError, ValidationError
from nexus_store.postgres.models import (
    Budget,
    FinancialAccount,
    Organization,
    Project,
    Task,
    Transaction,
    User,
)
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": 42}, "email"),
        ({"email": "x" * 321}, "email"),
        ({"username": "a\x00b"}, "username"),
        ({"is_active": "yes"}, "is_active"),
        ({"is_active": 1}, "is_active"),
        ({"preferences": {"bad": math.nan}}, "preferences.bad"),
        ({"preferences": {"ok": [1, {"deep": object()}]}}, "preferences.ok[1].deep"),
        ({"preferences": {1: "non-string key"}}, "preferences"),
        ({"last_login_at": datetime(2026, 1, 1, 12, 0)}, "last_login_at"),  # naive
        ({"last_login_at": "2026-01-01"}, "last_login_at"),
        ({"email": None}, "email"),
        ({"version": 7}, "version"),
        ({"nickname": "x"}, "nickname"),
    ],
)
async def test_bad_user_values(repo: EntityRepository, changes: dict[str, Any], field: str) -> None:
    marker = tag()
    with pytest.raises(ValidationError) as caught:
        await repo.create(User, **user_values(full_name=marker, **changes))
    assert caught.value.field == field
    assert not await repo.exists(User, {"full_name": marker}, include_deleted=True)


async def test_missing_required_column(repo: EntityRepository) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create(User, email=f"{tag()}@example.com", username=tag())
    assert (caught.value.field, caught.value.problem) == ("password_hash", "is required")


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        (Decimal("NaN"), "not a finite number"),
        (Decimal("Infinity"), "not a finite number"),
        (10.5, "not a float"),
        (Decimal("-1.00"), "must be > 0"),
        (Decimal("0"), "must be > 0"),
        (Decimal("1.005"), "more than 2 decimal places"),
        (Decimal("12345678901234.00"), "does not fit NUMERIC(15, 2)"),
        ("10.00", "must be a Decimal"),
        (True, "must be a Decimal"),
    ],
)
async def test_bad_money(
    repo: EntityRepository, organization: Organization, amount: Any, problem: str
) -> None:
    account = await repo.create(FinancialAccount, organization_id=organization.id, name=tag())
    with pytest.raises(ValidationError) as caught:
        await repo.create(Transaction, account_id=account.id, kind="debit", amount=amount)
    assert caught.value.field == "amount"
    assert problem in caught.value.problem
    assert await repo.count(Transaction, {"account_id": account.id}) == 0


async def test_bad_choices_and_minimums(repo: EntityRepository, organization: Organization) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create(Project, organization_id=organization.id, name="p", status="done")
    assert caught.value.field == "status" and "planning" in caught.value.problem
    with pytest.raises(ValidationError) as caught:
        await repo.create(Project, organization_id=organization.id, name="p", budget=-1)
    assert caught.value.field == "budget"
    project = await repo.create(Project, organization_id=organization.id, name="p")
    with pytest.raises(ValidationError) as caught:
        await repo.create(Task, project_id=project.id, title="t", tags=["ok", 3])
    assert caught.value.field == "tags[1]"
    with pytest.raises(ValidationError) as caught:
        await repo.create(Task, project_id=project.id, title="t", tags=["x" * 51])
    assert caught.value.field == "tags[0]"


async def test_database_check_becomes_validation_error(
    repo: EntityRepository, organization: Organization
) -> None:
    # A cross-column rule only the database checks: period_end before period_start.
    with pytest.raises(ValidationError) as caught:
        await repo.create(
            Budget,
            organization_id=organization.id,
            name="b",
            amount=100,
            period_start=date(2026, 2, 1),
            period_end=date(2026, 1, 1),
        )
    assert caught.value.field == "period_end"
    assert "ck_budgets_period" in caught.value.problem


async def test_duplicate_email_and_username_name_the_field(
    repo: EntityRepository, user: User
) -> None:
    with pytest.raises(ConflictError) as caught:
        await repo.create(User, **user_values(email=user.email))
    assert (caught.value.field, caught.value.constraint) == ("email", "ix_users_email")
    assert user.email not in str(caught.value)  # values (personal data) stay out of messages
    with pytest.raises(ConflictError) as caught:
        await repo.create(User, **user_values(username=user.username))
    assert caught.value.field == "username"
    other = await repo.create(User, **user_values())
    with pytest.raises(ConflictError) as caught:
        await repo.update(User, other.id, email=user.email)
    assert caught.value.field == "email"


async def test_missing_foreign_key_is_integrity_error(repo: EntityRepository) -> None:
    with pytest.raises(IntegrityError) as caught:
        await repo.create(Project, organization_id=uuid.uuid4(), name="orphan")
    assert caught.value.field == "organization_id"
    assert caught.value.constraint == "fk_projects_organization_id_organizations"


async def test_managed_and_key_columns_cannot_be_updated(
    repo: EntityRepository, user: User
) -> None:
    for changes in (
        {"id": uuid.uuid4()},
        {"created_at": user.created_at},
        {"version": 9},
        {"deleted_at": None},
    ):
        with pytest.raises(ValidationError):
            await repo.update(User, user.id, **changes)
    with pytest.raises(ValidationError) as caught:
        await repo.update(User, user.id, expected_version="1", full_name="x")
    assert caught.value.field == "expected_version"
    with pytest.raises(ValidationError) as caught:
        await repo.get(User, "not-a-uuid")
    assert caught.value.field == "id"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ({"email; DROP TABLE users": "x"}, "where.email; DROP TABLE users"),
        ({"email__eq; DROP TABLE users --": "x"}, "where.email__eq; DROP TABLE users --"),
        ({"password_hash__regex": ".*"}, "where.password_hash__regex"),
        ({"users.email": "x"}, "where.users.email"),
        ({"__class__": "x"}, "where.__class__"),
        ({"email__in": "a@x.io"}, "where.email__in"),
        ({"email__in": ["a@x.io", 3]}, "where.email__in"),
        ({"is_active": "true"}, "where.is_active"),
        ({"created_at__gte": datetime(2026, 1, 1)}, "where.created_at__gte"),
        ({"created_at__gte": "2026-01-01'; --"}, "where.created_at__gte"),
        ({"id": "1 OR 1=1"}, "where.id"),
        ({"email__is_null": "no"}, "where.email__is_null"),
        ({"email__contains": "x"}, "where.email__contains"),
        ({"preferences__lt": {"a": 1}}, "where.preferences__lt"),
        ({"preferences__contains": {"$where": math.inf}}, "where.preferences__contains.$where"),
        ({"version__like": "1"}, "where.version__like"),
    ],
)
async def test_bad_filters(repo: EntityRepository, where: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.list(User, where)
    assert caught.value.field == field
    with pytest.raises(ValidationError):
        await repo.count(User, where)


async def test_injection_in_values_is_just_data(repo: EntityRepository, user: User) -> None:
    hostile = "x@example.com' OR '1'='1"
    assert await repo.count(User, {"email": hostile}) == 0
    assert await repo.count(User, {"email__ilike": "%"}) == 0  # % is literal, not a wildcard
    assert await repo.count(User, {"username__like": "u%", "id": user.id}) == 0
    assert await repo.count(User, {"username__like": "u_", "id": user.id}) == 1
    await repo.update(User, user.id, full_name="100% _sure_ \\o/")
    assert await repo.count(User, {"full_name__like": "100% _sure_ \\o", "id": user.id}) == 1
    assert await repo.count(User) > 0  # the table is still there


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"order_by": "email; DROP TABLE users"}, "order_by"),
        ({"order_by": "full_name"}, "order_by"),  # nullable: no stable keyset
        ({"order_by": "preferences"}, "order_by"),
        ({"limit": 0}, "limit"),
        ({"limit": 100_000}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"after": "not-a-cursor"}, "after"),
    ],
)
async def test_bad_list_arguments(
    repo: EntityRepository, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.list(User, **kwargs)
    assert caught.value.field == field


async def test_bad_model_argument(repo: EntityRepository) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.get(dict, uuid.uuid4())  # type: ignore[type-var]
    assert caught.value.field == "model"
