"""Where reads run: outside a transaction on psycopg's pool, with SQL compiled once per
statement shape; inside one, or where only SQLAlchemy can run the statement, on SQLAlchemy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event

from nexus_store import NexusSettings
from nexus_store.postgres import _reads
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Organization, Project, Task, User
from nexus_store.postgres.repository import EntityRepository
from tests.support import tag, user_values


@pytest.fixture
async def private(migrated: NexusSettings) -> AsyncIterator[EntityRepository]:
    """A repository of its own: its statement cache starts empty."""
    async with _private(migrated) as (_backend, repo):
        yield repo


@pytest.fixture
async def observed(
    migrated: NexusSettings,
) -> AsyncIterator[tuple[PostgresBackend, EntityRepository]]:
    async with _private(migrated) as pair:
        yield pair


@asynccontextmanager
async def _private(
    settings: NexusSettings,
) -> AsyncIterator[tuple[PostgresBackend, EntityRepository]]:
    backend = PostgresBackend(settings.postgres)
    try:
        yield backend, EntityRepository(backend)
    finally:
        await backend.close()


@contextmanager
def sqlalchemy_reads(backend: PostgresBackend) -> Iterator[list[str]]:
    """The statements SQLAlchemy's autocommit read engine runs inside the block."""
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    engine = backend.autocommit_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _loaded(instance: Any) -> dict[str, tuple[type, Any]]:
    """Every loaded attribute with its exact type: Decimal is not float, aware not naive."""
    return {
        key: (type(value), value)
        for key, value in vars(instance).items()
        if not key.startswith("_sa_")
    }


async def _rich_rows(repo: EntityRepository) -> tuple[Organization, Project, list[Task]]:
    organization = await repo.create(Organization, name=f"org {tag()}", slug=f"o-{tag()}")
    project = await repo.create(
        Project,
        organization_id=organization.id,
        name=f"reads {tag()}",
        description="budget review",
        budget=Decimal("1234567890123.45"),
        start_date=date(2026, 1, 1),
    )
    tasks = [
        await repo.create(
            Task,
            project_id=project.id,
            title=f"task {index}",
            tags=["a", f"t{index}"],
            due_at=datetime(2026, 5, index + 1, 12, tzinfo=UTC),
            estimated_hours=Decimal("2.5") * index,
        )
        for index in range(3)
    ]
    return organization, project, tasks


async def test_reads_outside_a_transaction_equal_sqlalchemys_inside_one(
    observed: tuple[PostgresBackend, EntityRepository],
) -> None:
    """The driver path and SQLAlchemy's give the same values of the same types, for every
    read; and outside the transaction SQLAlchemy ran none of them."""
    backend, repo = observed
    organization, project, tasks = await _rich_rows(repo)
    user = await repo.create(User, **user_values(preferences={"theme": "dark", "n": [1, 2.5]}))

    async def reads() -> list[Any]:
        by_project = {"project_id": project.id}
        page = await repo.list(Task, by_project, order_by="-title", limit=2)
        rest = await repo.list(Task, by_project, order_by="-title", after=page.next_cursor)
        return [
            [_loaded(item) for item in page],
            [_loaded(item) for item in rest],
            [_loaded(p) for p in await repo.list(Project, {"organization_id": organization.id})],
            [_loaded(u) for u in await repo.list(User, {"email": user.email})],
            _loaded(await repo.get(User, user.id)),
            await repo.count(Task, {**by_project, "estimated_hours__gte": Decimal("2.5")}),
            await repo.exists(Task, {**by_project, "title": "task 2"}),
            await repo.exists(Task, {**by_project, "title": "task 9"}),
            [
                (_loaded(hit.item), hit.rank, hit.snippet)
                for hit in await repo.search(
                    Project, "budget", where={"organization_id": organization.id}, highlight=True
                )
            ],
        ]

    with sqlalchemy_reads(backend) as statements:
        outside = await reads()
    assert statements == []
    async with repo.transaction():
        inside = await reads()
    assert outside == inside
    listed = outside[0] + outside[1]
    assert [row["id"][1] for row in listed] == [t.id for t in reversed(tasks)]  # by -title
    assert listed[0]["due_at"] == (datetime, datetime(2026, 5, 3, 12, tzinfo=UTC))
    assert outside[2][0]["budget"] == (Decimal, Decimal("1234567890123.45"))
    assert outside[3][0]["preferences"] == (dict, {"theme": "dark", "n": [1, 2.5]})
    assert outside[5:8] == [2, True, False]
    assert len(outside[8]) == 1


async def test_one_compiled_shape_serves_every_value(private: EntityRepository) -> None:
    """The compiled SQL is cached per shape, never with the values of its first call."""
    repo = private
    first = await repo.create(User, **user_values(full_name="First"))
    second = await repo.create(User, **user_values(full_name="Second"))
    for _ in range(3):  # psycopg prepares a statement on its fifth run: past that too
        for user in (first, second):
            page = await repo.list(User, {"full_name": user.full_name, "id": user.id}, limit=5)
            assert [u.id for u in page] == [user.id]


async def test_statements_only_sqlalchemy_can_run_still_run_there(
    observed: tuple[PostgresBackend, EntityRepository],
) -> None:
    """An IN list is expanded by SQLAlchemy at execution; a JSONB value is adapted by it."""
    backend, repo = observed
    user = await repo.create(User, **user_values(preferences={"theme": "dark"}))
    with sqlalchemy_reads(backend) as statements:
        assert [u.id for u in await repo.list(User, {"id__in": [user.id, uuid.uuid4()]})] == [
            user.id
        ]
        contains = {"preferences__contains": {"theme": "dark"}, "id": user.id}
        assert await repo.count(User, contains) == 1
    assert len(statements) == 2


async def test_the_statement_cache_is_bounded(
    private: EntityRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filter shapes come from callers: past the bound, statements are compiled per call."""
    monkeypatch.setattr(_reads, "_MAX_CACHED_STATEMENTS", 4)
    repo = private
    user = await repo.create(User, **user_values(full_name="Bounded"))
    shapes = ["email", "username", "full_name", "id", "is_active", "version", "created_at"]
    for count in range(1, len(shapes) + 1):
        where = {name: getattr(user, name) for name in shapes[:count]}
        for _ in range(2):
            assert [u.id for u in await repo.list(User, where)] == [user.id]
    assert len(repo._reads._compiled) == 4  # the cache under test
