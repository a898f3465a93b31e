"""Regressions of issue 18 on PostgreSQL: text that cannot leave the process, wrong types in
``order_by``, and secret columns that a filter or an ordering would read back."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from nexus_store.errors import ValidationError
from nexus_store.postgres.models import ApiKey, Document, Organization, User
from nexus_store.postgres.repository import EntityRepository
from tests.support import user_values


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"username": "ada\ud800"}, "username"),  # raised UnicodeEncodeError from psycopg
        ({"full_name": "\udfff"}, "full_name"),
        ({"preferences": {"theme": "\ud800"}}, "preferences.theme"),
        ({"preferences": {"\ud800": 1}}, "preferences"),
        ({"preferences": {"list": ["ok", "\x00"]}}, "preferences.list[1]"),
    ],
)
async def test_lone_surrogates_and_nul_in_text_are_refused_and_nothing_is_written(
    repo: EntityRepository, changes: dict[str, Any], field: str
) -> None:
    values = user_values(**changes)
    before = await repo.count(User)
    with pytest.raises(ValidationError) as caught:
        await repo.create(User, **values)
    assert caught.value.field == field
    assert await repo.count(User) == before


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ({"username": "\ud800"}, "where.username"),  # raised UnicodeEncodeError
        ({"username__in": ["a", "\udc80"]}, "where.username__in"),
        ({"email__ilike": "x\ud800"}, "where.email__ilike"),
        ({"preferences__contains": {"k": "\ud800"}}, "where.preferences__contains.k"),
    ],
)
async def test_lone_surrogates_in_filters_are_refused(
    repo: EntityRepository, where: dict[str, Any], field: str
) -> None:
    for call in (repo.list, repo.count, repo.exists):
        with pytest.raises(ValidationError) as caught:
            await call(User, where)
        assert caught.value.field == field


@pytest.mark.parametrize("order_by", [5, 1.5, {"email": 1}, b"email", ["email", 3]])
async def test_order_by_of_a_wrong_type_names_order_by(
    repo: EntityRepository, order_by: Any
) -> None:
    """``order_by=5`` raised TypeError: 'int' object is not iterable."""
    with pytest.raises(ValidationError) as caught:
        await repo.list(User, None, order_by=order_by)
    assert caught.value.field == "order_by"


@pytest.mark.parametrize(
    "where",
    [
        {"password_hash__like": "$argon2id$v=19$m=65536$S"},  # matched a row: a prefix oracle
        {"password_hash": "$argon2id$x"},
        {"password_hash__gte": "$"},
        {"password_hash__in": ["a", "b"]},
        {"password_hash__is_null": False},
    ],
)
async def test_password_hash_is_not_filterable(
    repo: EntityRepository, user: User, where: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="holds a secret") as caught:
        await repo.list(User, where)
    assert caught.value.field == f"where.{next(iter(where))}"


@pytest.mark.parametrize("order_by", ["password_hash", "-password_hash"])
async def test_password_hash_is_not_orderable(
    repo: EntityRepository, user: User, order_by: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.list(User, None, order_by=order_by)
    assert caught.value.field == "order_by"


async def test_api_key_hash_opts_in_to_exact_lookup_only(
    repo: EntityRepository, user: User
) -> None:
    key_hash = hashlib.sha256(user.email.encode()).hexdigest()
    key = await repo.create(
        ApiKey, user_id=user.id, name="ci", prefix=key_hash[:8], key_hash=key_hash
    )
    found = await repo.list(ApiKey, {"key_hash": key_hash})
    assert [item.id for item in found] == [key.id]
    for where in ({"key_hash__like": key_hash[:4]}, {"key_hash__gt": ""}, {"key_hash__ne": ""}):
        with pytest.raises(ValidationError, match="only by exact match"):
            await repo.list(ApiKey, where)
    with pytest.raises(ValidationError):
        await repo.list(ApiKey, None, order_by="key_hash")


@pytest.mark.parametrize("rows", [5, None, "rows", b"rows", {"email": "a@b.c"}])
async def test_bulk_create_rows_that_are_not_a_list_name_rows(
    repo: EntityRepository, rows: Any
) -> None:
    """``rows=5`` raised TypeError; a dict was iterated into its keys."""
    before = await repo.count(User)
    with pytest.raises(ValidationError) as caught:
        await repo.bulk_create(User, rows)
    assert caught.value.field == "rows"
    assert await repo.count(User) == before


@pytest.mark.parametrize(
    ("conflict", "update", "field"),
    [
        (5, None, "conflict"),
        ([["slug"]], None, "conflict"),
        ("slug", 5, "update"),
        ("slug", [{"name"}], "update"),
    ],
)
async def test_upsert_conflict_and_update_of_a_wrong_type_are_named(
    repo: EntityRepository, conflict: Any, update: Any, field: str
) -> None:
    """A list inside ``conflict`` raised TypeError (unhashable) from the unique-set check."""
    with pytest.raises(ValidationError) as caught:
        await repo.upsert(Organization, conflict=conflict, update=update, name="n", slug="s-x")
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        # Found by the long fuzz profile: TypeError unhashable type from the lookup cache.
        ({"include_deleted": bytearray(b"x")}, "include_deleted"),
        ({"include_deleted": "no"}, "include_deleted"),  # was read as True
        ({"fresh": ""}, "fresh"),
        ({"fresh": [1]}, "fresh"),
    ],
)
async def test_get_flags_that_are_not_booleans_are_named(
    repo: EntityRepository, flags: dict[str, Any], field: str
) -> None:
    user = await repo.create(User, **user_values())
    for call in (repo.get, repo.get_or_none):
        with pytest.raises(ValidationError) as caught:
            await call(User, user.id, **flags)
        assert caught.value.field == field


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"include_deleted": "no"}, "include_deleted"),  # read as True before
        ({"include_deleted": 0}, "include_deleted"),
        ({"fresh": "yes"}, "fresh"),
        ({"fresh": None}, "fresh"),
    ],
)
async def test_filter_read_flags_that_are_not_booleans_are_named(
    repo: EntityRepository, flags: dict[str, Any], field: str
) -> None:
    """``list``, ``count``, ``exists`` and ``search`` read the flags as the lookups do."""
    await repo.create(User, **user_values())
    calls = (
        lambda: repo.list(User, **flags),
        lambda: repo.count(User, **flags),
        lambda: repo.exists(User, {}, **flags),
        lambda: repo.search(Document, "word", **flags),
    )
    for call in calls:
        with pytest.raises(ValidationError) as caught:
            await call()
        assert caught.value.field == field
