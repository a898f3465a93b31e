"""PostgreSQL entities: ``store.entities`` against raw psycopg on the same rows, same server.

    python -m bench.run --only postgres --repeats 3

- bulk_create 50,000 users (rows/s): ``bulk_create`` (checks every value, then binary COPY)
  against psycopg ``executemany`` (pipelined) and against raw binary COPY of the same rows.
  A report-only line shows SQLAlchemy Core ``insert()`` executemany, the path not taken.
- get by id, 20,000 lookups (us/op): ``get`` against a prepared psycopg lookup on one held
  autocommit connection (the fastest a client can be).
- list, page of 100 with a filter (us/op): ``list(where=..., order_by=..., limit=100)``
  against the same SQL through psycopg.
- search, page of 20 (us/op): ``search(Project, word)`` against the same
  ``websearch_to_tsquery`` / ``ts_rank_cd`` query through psycopg, over 20,000 projects.
- tenant-scoped get and list (us/op): inside ``tenant(org)`` as a role the row-level
  security policies bind (a throwaway ``nexus_bench_app_*`` role, dropped afterwards)
  against the same calls unscoped as the owner, with the organization as an explicit filter:
  the whole price of tenancy (the ``set_config`` each statement carries, and the policy).

The users table is truncated before each bulk run, so every run inserts into the same state.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy import insert

from bench.harness import Pair
from devstack.stack import Stack
from nexus_store.postgres import migrate
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models import Organization, Project, User
from nexus_store.postgres.repository import EntityRepository

PROJECTS = 20_000
SEARCHES = 500
_WORDS = (
    "apollo gemini mercury orbit launch budget review roadmap quarterly design audit "
    "migration platform mobile billing onboarding security compliance analytics search"
)
VOCABULARY = _WORDS.split()
_SEARCH = (
    "SELECT id, organization_id, owner_id, name, description, status, priority, start_date, "
    "end_date, budget, created_at, updated_at, version, deleted_at, "
    "ts_rank_cd(search_vector, q)::float8 AS rank FROM projects, "
    "websearch_to_tsquery('english', %s) AS q WHERE search_vector @@ q AND deleted_at IS NULL "
    "ORDER BY rank DESC, id LIMIT 21"
)
BULK_ROWS = 50_000
LOOKUPS = 20_000
LIST_PAGES = 1_000
COLUMNS = ("email", "username", "password_hash", "full_name", "is_active")
_INSERT = f"INSERT INTO users ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s)"
_COPY = f"COPY users ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_LOOKUP = (
    "SELECT id, email, username, password_hash, full_name, is_active, email_verified, "
    "preferences, last_login_at, created_at, updated_at, version, deleted_at "
    "FROM users WHERE id = %s AND deleted_at IS NULL"
)
_LIST = (
    "SELECT id, email, username, password_hash, full_name, is_active, email_verified, "
    "preferences, last_login_at, created_at, updated_at, version, deleted_at FROM users "
    "WHERE is_active AND full_name = %s AND deleted_at IS NULL "
    "ORDER BY created_at DESC, id DESC LIMIT 101"
)


def _rows(count: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    return [
        {
            "email": f"user{index}.{run}@example.com",
            "username": f"u{index}_{run}",
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + "x" * 43,
            "full_name": f"Team {index % 50}",
            "is_active": index % 7 != 0,
        }
        for index in range(count)
    ]


async def scenarios(env: Stack) -> list[Pair]:
    await migrate.upgrade(env.settings())
    backend = PostgresBackend(env.settings().postgres)
    repo = EntityRepository(backend)
    raw = await psycopg.AsyncConnection.connect(env.postgres_url, autocommit=True)
    ids: list[uuid.UUID] = []

    async def truncate() -> None:
        await raw.execute("TRUNCATE users CASCADE")

    async def sdk_bulk() -> float:
        await truncate()
        rows = _rows(BULK_ROWS)
        started = time.perf_counter()
        await repo.bulk_create(User, rows)
        return BULK_ROWS / (time.perf_counter() - started)

    async def raw_executemany() -> float:
        await truncate()
        rows = [tuple(row[c] for c in COLUMNS) for row in _rows(BULK_ROWS)]
        started = time.perf_counter()
        async with raw.transaction(), raw.cursor() as cursor:
            await cursor.executemany(_INSERT, rows)
        return BULK_ROWS / (time.perf_counter() - started)

    async def raw_copy() -> float:
        await truncate()
        rows = [tuple(row[c] for c in COLUMNS) for row in _rows(BULK_ROWS)]
        started = time.perf_counter()
        async with raw.transaction(), raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(["varchar", "varchar", "varchar", "varchar", "bool"])
            for row in rows:
                await copy.write_row(row)
        return BULK_ROWS / (time.perf_counter() - started)

    async def core_executemany() -> float:
        await truncate()
        rows = _rows(BULK_ROWS)
        started = time.perf_counter()
        async with backend.engine.begin() as connection:
            await connection.execute(insert(User.__table__), rows)  # type: ignore[arg-type]
        return BULK_ROWS / (time.perf_counter() - started)

    async def seed() -> None:
        await truncate()
        await repo.bulk_create(User, _rows(LOOKUPS))
        cursor = await raw.execute("SELECT id FROM users")
        ids[:] = [row[0] for row in await cursor.fetchall()]
        random.Random(7).shuffle(ids)
        await raw.execute("ANALYZE users")

    async def sdk_get() -> float:
        started = time.perf_counter()
        for user_id in ids:
            await repo.get(User, user_id)
        return (time.perf_counter() - started) / len(ids) * 1e6

    async def raw_get() -> float:
        started = time.perf_counter()
        for user_id in ids:
            cursor = await raw.execute(_LOOKUP, (user_id,), prepare=True)
            await cursor.fetchone()
        return (time.perf_counter() - started) / len(ids) * 1e6

    async def sdk_list() -> float:
        started = time.perf_counter()
        for index in range(LIST_PAGES):
            page = await repo.list(
                User,
                {"is_active": True, "full_name": f"Team {index % 50}"},
                order_by="-created_at",
                limit=100,
            )
            assert len(page.items) == 100, len(page.items)
        return (time.perf_counter() - started) / LIST_PAGES * 1e6

    async def raw_list() -> float:
        started = time.perf_counter()
        for index in range(LIST_PAGES):
            cursor = await raw.execute(_LIST, (f"Team {index % 50}",), prepare=True)
            assert len(await cursor.fetchall()) == 101
        return (time.perf_counter() - started) / LIST_PAGES * 1e6

    async def close() -> None:
        await truncate()
        await raw.close()
        await backend.close()

    # -- search and tenancy, over projects of two organizations ---------------------------

    organizations: list[uuid.UUID] = []
    project_ids: list[uuid.UUID] = []
    role = f"nexus_bench_app_{uuid.uuid4().hex[:8]}"
    scoped_backend: list[PostgresBackend] = []

    async def seed_projects() -> None:
        for name in ("a", "b"):
            org = await repo.create(Organization, name=name, slug=f"{name}-{uuid.uuid4().hex[:8]}")
            organizations.append(org.id)
        words = random.Random(11)
        rows = [
            {
                "id": uuid.uuid4(),
                "organization_id": organizations[index % 2],
                "name": " ".join(words.sample(VOCABULARY, 2)),
                "description": " ".join(words.choices(VOCABULARY, k=12)),
            }
            for index in range(PROJECTS)
        ]
        await repo.bulk_create(Project, rows)
        project_ids[:] = [row["id"] for row in rows if row["organization_id"] == organizations[0]]
        random.Random(7).shuffle(project_ids)
        await raw.execute("ANALYZE projects")
        # A role without BYPASSRLS, as the application runs (trust authentication here).
        await raw.execute(f"CREATE ROLE {role} LOGIN NOBYPASSRLS")
        await raw.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        app_url = env.postgres_url.replace("postgres@", f"{role}@", 1)
        scoped_backend.append(PostgresBackend(env.settings(postgres={"url": app_url}).postgres))

    def scoped_repo() -> EntityRepository:
        return EntityRepository(scoped_backend[0])

    async def sdk_search() -> float:
        started = time.perf_counter()
        for index in range(SEARCHES):
            word = VOCABULARY[index % len(VOCABULARY)]
            page = await repo.search(Project, f"{word} {VOCABULARY[(index * 7) % 20]}")
            assert page.items or word
        return (time.perf_counter() - started) / SEARCHES * 1e6

    async def raw_search() -> float:
        started = time.perf_counter()
        for index in range(SEARCHES):
            word = VOCABULARY[index % len(VOCABULARY)]
            text = f"{word} {VOCABULARY[(index * 7) % 20]}"
            cursor = await raw.execute(_SEARCH, (text,), prepare=True)
            await cursor.fetchall()
        return (time.perf_counter() - started) / SEARCHES * 1e6

    async def scoped_get() -> float:
        scoped = scoped_repo()
        started = time.perf_counter()
        async with scoped.tenant(organizations[0]):
            for key in project_ids[: LOOKUPS // 4]:
                await scoped.get(Project, key)
        return (time.perf_counter() - started) / (LOOKUPS // 4) * 1e6

    async def unscoped_get() -> float:
        started = time.perf_counter()
        for key in project_ids[: LOOKUPS // 4]:
            await repo.get(Project, key)
        return (time.perf_counter() - started) / (LOOKUPS // 4) * 1e6

    async def scoped_list() -> float:
        scoped = scoped_repo()
        started = time.perf_counter()
        async with scoped.tenant(organizations[0]):
            for _ in range(LIST_PAGES // 2):
                page = await scoped.list(Project, {"status": "planning"}, limit=100)
                assert len(page.items) == 100
        return (time.perf_counter() - started) / (LIST_PAGES // 2) * 1e6

    async def unscoped_list() -> float:
        where = {"organization_id": organizations[0], "status": "planning"}
        started = time.perf_counter()
        for _ in range(LIST_PAGES // 2):
            page = await repo.list(Project, where, limit=100)
            assert len(page.items) == 100
        return (time.perf_counter() - started) / (LIST_PAGES // 2) * 1e6

    async def clear_projects() -> None:
        while scoped_backend:
            await scoped_backend.pop().close()
        await raw.execute("DELETE FROM organizations WHERE id = ANY(%s)", (organizations,))
        organizations.clear()
        await raw.execute(f"DROP OWNED BY {role}")
        await raw.execute(f"DROP ROLE {role}")

    async def clear_projects_and_close() -> None:
        await clear_projects()
        await close()

    return [
        Pair(
            "postgres bulk_create 50k users vs executemany",
            "rows/s",
            sdk_bulk,
            raw_executemany,
            target=">= 1.0x (raw executemany)",
            raw_label="psycopg executemany",
        ),
        Pair(
            "postgres bulk_create 50k users vs COPY",
            "rows/s",
            sdk_bulk,
            raw_copy,
            target=">= 0.95x",
            raw_label="psycopg binary COPY",
        ),
        Pair(
            "postgres Core insert executemany 50k (path not taken)",
            "rows/s",
            core_executemany,
            target="report",
        ),
        Pair(
            "postgres get by id (20k lookups)",
            "us/op",
            sdk_get,
            raw_get,
            higher_is_better=False,
            target="<= 1.1x",
            setup=seed,
            raw_label="psycopg prepared",
        ),
        Pair(
            "postgres list page of 100 with filter",
            "us/op",
            sdk_list,
            raw_list,
            higher_is_better=False,
            target="<= 1.3x",
            raw_label="psycopg prepared",
            setup=seed,
        ),
        Pair(
            "postgres search page of 20 (websearch_to_tsquery, ts_rank_cd)",
            "us/op",
            sdk_search,
            raw_search,
            higher_is_better=False,
            target="report",
            raw_label="psycopg prepared",
            setup=seed_projects,
            teardown=clear_projects,
        ),
        Pair(
            "postgres tenant-scoped get vs unscoped get",
            "us/op",
            scoped_get,
            unscoped_get,
            higher_is_better=False,
            target="<= 1.1x",
            raw_label="unscoped get (owner)",
            setup=seed_projects,
            teardown=clear_projects,
        ),
        Pair(
            "postgres tenant-scoped list vs unscoped list",
            "us/op",
            scoped_list,
            unscoped_list,
            higher_is_better=False,
            target="<= 1.1x",
            raw_label="unscoped list (owner)",
            setup=seed_projects,
            teardown=clear_projects_and_close,
        ),
    ]
