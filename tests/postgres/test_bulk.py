"""bulk_create batches larger than one chunk: rows past the first chunk are checked while the
COPY runs (``_bulk._CHUNK``), so a bad one ends a COPY already under way. The promise is the
same as for a small batch: the error names the row, and nothing of the batch is written."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nexus_store.errors import ConflictError, ValidationError
from nexus_store.postgres._bulk import _CHUNK
from nexus_store.postgres.models import Organization, Project, User
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values

BIG = 2 * _CHUNK + 7  # three chunks, the last one short


def _users(marker: str, count: int = BIG) -> list[dict[str, Any]]:
    return [user_values(full_name=marker, is_active=True) for _ in range(count)]


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("email", "nul\x00@example.com"),
        ("email", "x" * 400),
        ("username", "lone\ud800"),
        ("username", "x" * 51),
        ("full_name", 7),
        ("is_active", 1),
        ("email", None),
        ("last_login_at", datetime(2026, 1, 1)),  # naive
    ],
)
@pytest.mark.parametrize(
    ("count", "position"),
    [(300, 217), (BIG, BIG - 1)],
    ids=["within-the-first-chunk", "last-row-of-the-last-chunk"],
)
async def test_one_bad_value_among_many_is_named_and_nothing_is_written(
    repo: EntityRepository, column: str, bad: object, count: int, position: int
) -> None:
    """Columns are checked whole first (the fast path); one bad value anywhere still gets the
    value-by-value error naming its row, also when the COPY is already under way."""
    marker = tag()
    rows = [
        user_values(full_name=marker, is_active=True, last_login_at=datetime.now(UTC))
        for _ in range(count)
    ]
    rows[position][column] = bad
    with pytest.raises(ValidationError) as caught:
        await repo.bulk_create(User, rows)
    assert caught.value.field == f"rows[{position}].{column}"
    assert await repo.count(User, {"full_name": marker}) == 0


async def test_a_nan_past_the_first_chunk_is_refused_not_stored(
    repo: EntityRepository, organization: Organization
) -> None:
    name = tag()
    rows: list[dict[str, Any]] = [
        {"organization_id": organization.id, "name": name, "budget": Decimal(n)} for n in range(BIG)
    ]
    rows[_CHUNK + 3]["budget"] = Decimal("NaN")
    with pytest.raises(ValidationError) as caught:
        await repo.bulk_create(Project, rows)
    assert caught.value.field == f"rows[{_CHUNK + 3}].budget"
    assert await repo.count(Project, {"name": name}) == 0


async def test_a_refused_batch_leaves_the_callers_transaction_usable(
    repo: EntityRepository,
) -> None:
    """The COPY that a late bad row ends rolls back to before the call, not further: the
    caller's earlier and later writes in the same transaction commit."""
    marker = tag()
    rows = _users(marker)
    rows[-1]["email"] = "x" * 400
    async with repo.transaction():
        before = await repo.create(User, **user_values(full_name=marker))
        with pytest.raises(ValidationError) as caught:
            await repo.bulk_create(User, rows)
        after = await repo.create(User, **user_values(full_name=marker))
    assert caught.value.field == f"rows[{BIG - 1}].email"
    page = await repo.list(User, {"full_name": marker}, limit=10)
    assert {user.id for user in page.items} == {before.id, after.id}


async def test_a_duplicate_inside_the_callers_transaction_rolls_back_only_the_batch(
    repo: EntityRepository, user: User
) -> None:
    marker = tag()
    rows = _users(marker)
    rows[-1]["email"] = user.email
    async with repo.transaction():
        kept = await repo.create(User, **user_values(full_name=marker))
        with pytest.raises(ConflictError):
            await repo.bulk_create(User, rows)
    page = await repo.list(User, {"full_name": marker}, limit=10)
    assert [found.id for found in page.items] == [kept.id]


async def test_a_column_only_a_late_row_gives_is_copied_for_every_row(
    repo: EntityRepository,
) -> None:
    """The column list is the union of every row's keys, not the first chunk's: rows
    without the column get its default (NULL here), the late row its value."""
    marker = tag()
    rows = _users(marker)
    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows[-2]["last_login_at"] = seen
    assert await repo.bulk_create(User, rows) == BIG
    page = await repo.list(User, {"full_name": marker, "last_login_at__is_null": False}, limit=10)
    assert [found.email for found in page.items] == [rows[-2]["email"]]
    assert page.items[0].last_login_at == seen
    assert await repo.count(User, {"full_name": marker}) == BIG


async def test_a_key_that_is_no_column_in_a_late_row_is_refused_before_any_sql(
    repo: EntityRepository,
) -> None:
    marker = tag()
    rows = _users(marker)
    rows[-1]["nickname"] = "late"
    with pytest.raises(ValidationError) as caught:
        await repo.bulk_create(User, rows)
    assert caught.value.field == "rows.nickname"
    assert await repo.count(User, {"full_name": marker}) == 0


async def test_values_past_the_first_chunk_are_normalised_like_the_first(
    repo: EntityRepository, organization: Organization
) -> None:
    """A chunk whose whole-column check fails (a key given as text) goes value by value;
    the chunks around it keep the whole-column path, and every row lands."""
    name = tag()
    rows: list[dict[str, Any]] = [
        {"organization_id": organization.id, "name": name, "status": "active"} for _ in range(BIG)
    ]
    rows[_CHUNK + 1]["organization_id"] = str(organization.id)
    assert await repo.bulk_create(Project, rows) == BIG
    assert await repo.count(Project, {"name": name, "organization_id": organization.id}) == BIG
