"""Keyset pagination: complete, without duplicates, while other writers insert."""

from __future__ import annotations

import asyncio
import uuid

from nexus_store.errors import ValidationError
from nexus_store.postgres.models import Organization, Project, User
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


async def _walk(
    repo: EntityRepository, where: dict[str, object], **kwargs: object
) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(100):  # bounded: a broken cursor must not loop forever
        page = await repo.list(User, where, after=cursor, **kwargs)  # type: ignore[arg-type]
        seen.extend(user.id for user in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


async def test_pages_cover_every_row_once_in_order(repo: EntityRepository) -> None:
    marker = tag()
    await repo.bulk_create(User, [user_values(full_name=marker) for _ in range(53)])
    ids = await _walk(repo, {"full_name": marker}, limit=10, order_by="username")
    assert len(ids) == 53 == len(set(ids))
    users = [await repo.get(User, user_id) for user_id in ids]
    assert [u.username for u in users] == sorted(u.username for u in users)


async def test_descending_and_mixed_orders(repo: EntityRepository) -> None:
    marker = tag()
    await repo.bulk_create(
        User, [user_values(full_name=marker, is_active=n % 2 == 0) for n in range(25)]
    )
    everything = (await repo.list(User, {"full_name": marker}, limit=100)).items
    by_email_desc = await _walk(repo, {"full_name": marker}, limit=7, order_by="-email")
    assert by_email_desc == [u.id for u in sorted(everything, key=lambda u: u.email, reverse=True)]
    mixed = await _walk(repo, {"full_name": marker}, limit=4, order_by=["-created_at", "email"])
    assert len(mixed) == 25 == len(set(mixed))


async def test_pagination_is_stable_while_rows_are_inserted(repo: EntityRepository) -> None:
    marker = tag()
    await repo.bulk_create(User, [user_values(full_name=marker) for _ in range(60)])
    original = {u.id for u in (await repo.list(User, {"full_name": marker}, limit=100)).items}
    stop = asyncio.Event()

    async def writer() -> int:
        written = 0
        while not stop.is_set() and written < 200:
            await repo.create(User, **user_values(full_name=marker))
            written += 1
            await asyncio.sleep(0)
        return written

    task = asyncio.create_task(writer())
    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(200):
        page = await repo.list(
            User, {"full_name": marker}, limit=7, after=cursor, order_by="created_at"
        )
        seen.extend(u.id for u in page.items)
        await repo.create(User, **user_values(full_name=marker))  # and one between pages
        cursor = page.next_cursor
        if cursor is None:
            break
    stop.set()
    written = await task
    assert written > 0
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert original <= set(seen), "a row that existed before paging was skipped"


async def test_cursor_is_tied_to_its_order(repo: EntityRepository) -> None:
    marker = tag()
    await repo.bulk_create(User, [user_values(full_name=marker) for _ in range(5)])
    page = await repo.list(User, {"full_name": marker}, limit=2, order_by="email")
    assert page.next_cursor is not None
    try:
        await repo.list(
            User, {"full_name": marker}, limit=2, order_by="username", after=page.next_cursor
        )
    except ValidationError as exc:
        assert exc.field == "after"
    else:
        raise AssertionError("a cursor for another order was accepted")


async def test_soft_deleted_rows_are_hidden_from_lists(
    repo: EntityRepository, organization: Organization
) -> None:
    kept = await repo.create(Project, organization_id=organization.id, name="kept")
    gone = await repo.create(Project, organization_id=organization.id, name="gone")
    await repo.delete(Project, gone.id)
    visible = await repo.list(Project, {"organization_id": organization.id})
    assert [p.id for p in visible] == [kept.id]
    everything = await repo.list(
        Project, {"organization_id": organization.id}, include_deleted=True
    )
    assert {p.id for p in everything} == {kept.id, gone.id}
    assert await repo.count(Project, {"organization_id": organization.id}) == 1
    deleted = await repo.list(
        Project,
        {"organization_id": organization.id, "deleted_at__is_null": False},
        include_deleted=True,
    )
    assert [p.id for p in deleted] == [gone.id]


async def test_filter_operators_select_the_right_rows(
    repo: EntityRepository, organization: Organization
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    for index, name in enumerate(names):
        await repo.create(
            Project,
            organization_id=organization.id,
            name=name,
            budget=index * 100,
            priority=["low", "medium", "high", "critical"][index],
        )
    base = {"organization_id": organization.id}

    async def names_for(where: dict[str, object]) -> set[str]:
        page = await repo.list(Project, {**base, **where}, limit=100)
        return {p.name for p in page.items}

    assert await names_for({"budget__gte": 200}) == {"gamma", "delta"}
    assert await names_for({"budget__lt": 100}) == {"alpha"}
    assert await names_for({"priority__in": ["low", "high"]}) == {"alpha", "gamma"}
    assert await names_for({"priority__not_in": ["low", "high"]}) == {"beta", "delta"}
    assert await names_for({"name__ne": "beta", "budget__lte": 200}) == {"alpha", "gamma"}
    assert await names_for({"name__ilike": "ELT"}) == {"delta"}
    assert await names_for({"description__is_null": True}) == set(names)
