"""Backup and restore throughput next to the plain tools, on the same data in the same run.

- ``postgres backup``: ``store.backup.create(only="postgres")`` (exported snapshot, counts,
  pg_dump -Fc streamed through SHA-256 into the archive) against a plain ``pg_dump -Fc -f``.
- ``postgres restore``: ``store.backup.restore(only="postgres", force=True)`` (checksum check,
  pg_restore into a new database, counts, switch-over, the replaced database dropped)
  against the same replacement by hand: ``dropdb`` of the previous copy, ``createdb`` and a
  plain ``pg_restore`` of the same dump.
- ``mongo backup``: the events and audit collections in mongodump's layout against a raw
  cursor dump (``find`` with raw BSON documents written to a file).
- ``mongo restore``: the SDK's staged restore (temporary names, count check, indexes,
  rename over the previous copy) against what ``mongorestore --drop`` does: drop the previous
  copy, ``insert_many`` the same documents, create the same indexes.

Units are rows (or documents) per second; the data's size in MB is in each pair's name.
Target: the SDK at 0.8x the plain tools or better.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from bench.harness import Pair
from devstack import servers
from devstack.stack import Stack
from nexus_store import NexusStore

ROWS = 50_000
EVENTS = 30_000
_RAW = CodecOptions(document_class=RawBSONDocument)


async def _run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {err.decode()[:300]}")


async def scenarios(env: Stack) -> list[Pair]:
    from nexus_store.mongo.schema import ensure_schema
    from nexus_store.postgres import migrate

    settings = env.settings()
    await migrate.upgrade(settings)
    store = NexusStore(settings)
    await ensure_schema(store.backends.mongo, settings)
    with (
        psycopg.connect(env.postgres_url) as conn,
        conn.cursor() as cursor,
        cursor.copy("COPY users (email, username, password_hash) FROM STDIN") as copy,
    ):
        for i in range(ROWS):
            copy.write_row((f"bench{i}@example.com", f"bench{i}", "$argon2id$" + "x" * 40))
    for start in range(0, EVENTS, 5000):
        for i in range(start, start + 5000):
            await store.events.track("bench", user_id=f"u{i % 500}", properties={"i": i})
        await store.events.flush()
    for i in range(200):
        await store.audit.record("bench", "touch", "item", str(i))

    work = Path(tempfile.mkdtemp(prefix="nexus-bench-backup-"))
    exits = contextlib.ExitStack()
    server = env.postgres_url.rsplit("/", 1)[0]
    tag = uuid.uuid4().hex[:8]
    restore_url = exits.enter_context(
        servers.scratch_postgres_database(env.postgres_url, f"nexus_bench_restore_{tag}")
    )
    target = env.merged(
        postgres={"url": restore_url}, mongo={"database": f"nexus_bench_restore_{tag}"}
    )
    exits.enter_context(servers.scratch_mongo_database(env.mongo_url, target.mongo_database))
    target_store = NexusStore(target.settings())
    runs = iter(range(10**9))
    archive = work / "reference"
    await store.backup.create(archive)  # what the restores read
    dump_bytes = (archive / "postgres/database.dump").stat().st_size
    mongo_bytes = sum(p.stat().st_size for p in (archive / "mongo").rglob("*.bson"))
    documents = EVENTS + 200
    plain_dump = work / "plain.dump"
    await _run("pg_dump", "-Fc", "-f", str(plain_dump), env.postgres_url)

    async def sdk_pg_backup() -> float:
        path = work / f"pg-{next(runs)}"
        started = time.perf_counter()
        await store.backup.create(path, only="postgres")
        elapsed = time.perf_counter() - started
        shutil.rmtree(path)
        return ROWS / elapsed

    async def plain_pg_dump() -> float:
        path = work / f"plain-{next(runs)}.dump"
        started = time.perf_counter()
        await _run("pg_dump", "-Fc", "-f", str(path), env.postgres_url)
        elapsed = time.perf_counter() - started
        path.unlink()
        return ROWS / elapsed

    async def sdk_pg_restore() -> float:
        started = time.perf_counter()
        await target_store.backup.restore(archive, only="postgres", force=True)
        return ROWS / (time.perf_counter() - started)

    plain_copy = f"nexus_bench_plain_{tag}"

    async def plain_pg_restore() -> float:
        started = time.perf_counter()
        await _run("dropdb", "--if-exists", f"--maintenance-db={server}/postgres", plain_copy)
        await _run("createdb", f"--maintenance-db={server}/postgres", plain_copy)
        await _run("pg_restore", "--no-owner", "-d", f"{server}/{plain_copy}", str(plain_dump))
        return ROWS / (time.perf_counter() - started)

    async def sdk_mongo_backup() -> float:
        path = work / f"mongo-{next(runs)}"
        started = time.perf_counter()
        await store.backup.create(path, only="mongo")
        elapsed = time.perf_counter() - started
        shutil.rmtree(path)
        return documents / elapsed

    async def raw_cursor_dump() -> float:
        db = store.backends.mongo.db
        path = work / f"raw-{next(runs)}.bson"
        started = time.perf_counter()
        with open(path, "wb") as handle:  # noqa: ASYNC230 - blocking writes, as the SDK's
            for name in (settings.events.collection, settings.audit.collection):
                cursor = db.get_collection(name, codec_options=_RAW).find({}, batch_size=5000)
                async for document in cursor:
                    handle.write(document.raw)
        elapsed = time.perf_counter() - started
        path.unlink()
        return documents / elapsed

    async def sdk_mongo_restore() -> float:
        started = time.perf_counter()
        await target_store.backup.restore(archive, only="mongo", force=True)
        return documents / (time.perf_counter() - started)

    async def raw_insert() -> float:
        from bson import json_util

        from nexus_store.backup._mongo import bson_documents

        db = target_store.backends.mongo.db
        files = sorted((archive / "mongo").rglob("*.bson"))
        started = time.perf_counter()
        for number, path in enumerate(files):
            name = f"raw_{number}"
            await db.drop_collection(name)
            collection = db.get_collection(name, codec_options=_RAW)
            batch = [RawBSONDocument(raw) for raw in bson_documents([path.read_bytes()], "x")]
            if batch:
                await collection.insert_many(batch, ordered=False)
            metadata = json_util.loads(path.with_suffix(".metadata.json").read_text())
            indexes = [
                {k: v for k, v in index.items() if k != "v"}
                for index in metadata["indexes"]
                if index["name"] != "_id_"
            ]
            if indexes:
                await db.command({"createIndexes": name, "indexes": indexes})
        return documents / (time.perf_counter() - started)

    async def close() -> None:
        await _run("dropdb", "--if-exists", f"--maintenance-db={server}/postgres", plain_copy)
        await store.close()
        await target_store.close()
        exits.close()
        shutil.rmtree(work, ignore_errors=True)

    pg_mb = f"{dump_bytes / 1e6:.1f} MB"
    mongo_mb = f"{mongo_bytes / 1e6:.1f} MB"
    return [
        Pair(
            f"postgres backup ({ROWS} users, {pg_mb} dump)",
            "rows/s",
            sdk_pg_backup,
            plain_pg_dump,
            raw_label="pg_dump -Fc",
            target=">= 0.8x",
        ),
        Pair(
            f"postgres restore ({ROWS} users, {pg_mb} dump)",
            "rows/s",
            sdk_pg_restore,
            plain_pg_restore,
            raw_label="dropdb + createdb + pg_restore",
            target=">= 0.8x",
        ),
        Pair(
            f"mongo backup ({documents} documents, {mongo_mb})",
            "docs/s",
            sdk_mongo_backup,
            raw_cursor_dump,
            raw_label="raw cursor dump",
            target=">= 0.8x",
        ),
        Pair(
            f"mongo restore ({documents} documents, {mongo_mb})",
            "docs/s",
            sdk_mongo_restore,
            raw_insert,
            raw_label="insert_many + createIndexes",
            target=">= 0.8x",
            teardown=close,
        ),
    ]
