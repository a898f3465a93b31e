"""PostgreSQL entities: ``store.entities`` against raw psycopg on the same rows, same server.

    python -m bench.run --only postgres --repeats 3

- bulk_create 50,000 users (rows/s): ``bulk_create`` (checks every value, then binary COPY)
  against psycopg ``executemany`` (pipelined) and against raw binary COPY of the same rows.
  A report-only line shows SQLAlchemy Core ``insert()`` executemany, the path not taken.
- get by id, 20,000 lookups (us/op): ``get`` against a prepared psycopg lookup on one held
  autocommit connection (the fastest a client can be).
- list, page of 100 with a filter (us/op): ``list(where=..., order_by=..., limit=100)``
  against the same SQL through psycopg.

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
from nexus_store.postgres.models import User
from nexus_store.postgres.repository import EntityRepository

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
            target="report",
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
            target="<= 1.5x",
            setup=seed,
            raw_label="psycopg prepared",
        ),
        Pair(
            "postgres list page of 100 with filter",
            "us/op",
            sdk_list,
            raw_list,
            higher_is_better=False,
            target="report",
            raw_label="psycopg prepared",
            setup=seed,
            teardown=close,
        ),
    ]
