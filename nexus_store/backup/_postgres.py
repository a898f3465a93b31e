"""PostgreSQL: ``pg_dump -Fc`` of nexus-store's database in one exported snapshot, and a
restore into a fresh database that is then renamed over the target in one transaction.

The snapshot is exported by a REPEATABLE READ transaction that stays open while pg_dump
runs (``--snapshot``): the Alembic revision, the row counts and the outbox position written
to the manifest are read in exactly the snapshot that was dumped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from nexus_store._secrets import scrub
from nexus_store.backup._pause import pause
from nexus_store.errors import (
    BackendUnavailableError,
    BackupError,
    ConfigurationError,
    NexusStoreError,
)

if TYPE_CHECKING:
    from nexus_store.backup._archive import ArchiveReader, ArchiveWriter, FileRecord
    from nexus_store.postgres.engine import PostgresBackend
    from nexus_store.settings import NexusSettings

__all__ = [
    "DUMP_FILE",
    "PendingRecord",
    "PostgresTarget",
    "commit",
    "counts_of",
    "discard_stages",
    "drop",
    "drop_replaced",
    "dump",
    "exists",
    "holds_data",
    "stage",
    "translate",
    "write_record",
]

DUMP_FILE = "postgres/database.dump"
_READ = 1024 * 1024
# Temporary databases of a restore: <target>__nxr_<hex> (staged), <target>__nxo_<hex> (old).
_STAGED = "__nxr_"
_REPLACED = "__nxo_"
_MAX_NAME = 63
# Where a committed restore's plan waits in the target database until it is finished.
_RECORD_SCHEMA = sql.Identifier("nexus_restore")
_RECORD = sql.Identifier("nexus_restore", "pending")
_FIND_RECORD = "SELECT to_regclass('nexus_restore.pending')"
# True: this session is in ``database`` (not in one a restore renamed away) and no plan is there.
_SETTLED = "SELECT current_database() = %s AND to_regclass('nexus_restore.pending') IS NULL"
_RESTORE_LOCK = 0x6E78_7273  # pg_advisory_lock key of "finishing a restore" ("nxrs")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class PostgresTarget:
    """Where the database is, split into what libpq tools may see and the password."""

    database: str
    conninfo: str  # libpq URL without the password
    password: str | None

    @classmethod
    def from_settings(cls, settings: NexusSettings) -> PostgresTarget:
        if settings.postgres.url is None:
            raise ConfigurationError(
                "PostgreSQL is not configured: set NEXUS_POSTGRES_URL", setting="postgres.url"
            )
        url = make_url(settings.postgres.url.get_secret_value()).set(drivername="postgresql")
        if not url.database:
            raise ConfigurationError("postgres.url names no database", setting="postgres.url")
        return cls(
            url.database,
            url.set(password=None).render_as_string(hide_password=False),
            url.password if isinstance(url.password, str) else None,
        )

    def on(self, database: str) -> str:
        """The libpq URL of ``database`` on the same server (no password)."""
        return make_url(self.conninfo).set(database=database).render_as_string(hide_password=False)

    def environment(self) -> dict[str, str]:
        """The child's environment: the password goes by PGPASSWORD, never on the command line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    async def connect(self, database: str | None = None) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.on(database or self.database),
                password=self.password,
                autocommit=True,
                application_name="nexus-store-backup",
            )
        except psycopg.OperationalError as exc:
            raise BackendUnavailableError("postgres", scrub(str(exc).splitlines()[0])) from None


def translate(exc: psycopg.Error) -> NexusStoreError:
    """Unreachable: BackendUnavailableError; refused by the server: BackupError."""
    from nexus_store._errors import describe

    if isinstance(exc, psycopg.OperationalError):
        return BackendUnavailableError("postgres", describe(exc))
    return BackupError(f"postgres: {describe(exc)}")


def _die_with_parent() -> None:
    """In the child: be killed when the nexus-store process dies (Linux), so that a killed
    backup or restore leaves no pg_dump or pg_restore running on its own."""
    import contextlib
    import ctypes
    import signal

    # Not Linux: no prctl, and the tool ends when its pipe closes.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(
            f"{name} not found on PATH: install the PostgreSQL client tools "
            "(apt-get install postgresql-client)",
            setting=name,
        )
    return found


async def _run(
    args: Sequence[str],
    target: PostgresTarget,
    what: str,
    *,
    source: Iterable[bytes] | None = None,
    sink: Callable[[bytes], None] | None = None,
) -> None:
    """Run a client tool to its end: ``source`` streamed into its stdin, its stdout into
    ``sink``, or neither. Killed if this side fails; a non-zero exit is a BackupError with
    the tool's own message."""
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        *args,
        env=target.environment(),
        stdin=pipe if source is not None else asyncio.subprocess.DEVNULL,
        stdout=pipe if sink is not None else asyncio.subprocess.DEVNULL,
        stderr=pipe,
        preexec_fn=_die_with_parent,
    )
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    try:
        if source is not None:
            assert process.stdin is not None
            try:
                for block in source:
                    process.stdin.write(block)
                    await process.stdin.drain()
                process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tool stopped early: its message says why
        if sink is not None:
            assert process.stdout is not None
            while block := await process.stdout.read(_READ):
                sink(block)
        await process.wait()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise BackupError(f"{what} failed: {_failure(process, await errors)}", file=DUMP_FILE)


def _failure(process: asyncio.subprocess.Process, err: bytes) -> str:
    """The tool's own message, or the signal that ended it (SIGXFSZ: a file size limit)."""
    import signal

    code = process.returncode or 0
    if code < 0:
        return f"ended by {signal.Signals(-code).name} ({signal.strsignal(-code)})"
    return _first_lines(err)


def _first_lines(err: bytes) -> str:
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return scrub(" | ".join(lines[:3]))[:400] or "no message"


async def _tables(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    rows = await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    return [row[0] for row in await rows.fetchall()]


async def _counts(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    counts = {}
    for table in await _tables(conn):
        cursor = await conn.execute(
            sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
        )
        row = await cursor.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


async def _scalar(conn: psycopg.AsyncConnection[Any], query: str | sql.Composed) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    return row[0] if row else None


async def dump(
    settings: NexusSettings, writer: ArchiveWriter, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Dump the database into the archive; returns the manifest's ``postgres`` section."""
    pg_dump = tool("pg_dump")
    target = PostgresTarget.from_settings(settings)
    conn = await target.connect()
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = await _scalar(conn, "SELECT pg_export_snapshot()")
        args = [
            pg_dump, "--format=custom", "--no-owner", "--no-privileges",
            f"--snapshot={snapshot}", f"--dbname={target.conninfo}",
        ]  # fmt: skip
        # The exporting transaction stays open while pg_dump reads its snapshot; meanwhile it
        # reads the counts, revision and outbox position in that same snapshot, so the two
        # scans of every table overlap instead of running one after the other.
        dumping = asyncio.ensure_future(_dump_file(args, target, writer))
        try:
            version = await _scalar(conn, "SHOW server_version")
            counts = await _counts(conn)
            revision = None
            outbox: dict[str, Any] | None = None
            if "alembic_version" in counts:
                revision = await _scalar(conn, "SELECT version_num FROM alembic_version")
            if "outbox" in counts:
                cursor = await conn.execute(
                    "SELECT coalesce(max(id), 0), count(*) FILTER (WHERE delivered_at IS NULL) "
                    "FROM outbox"
                )
                last_id, undelivered = (await cursor.fetchone()) or (0, 0)
                outbox = {"lastId": int(last_id), "undelivered": int(undelivered)}
            progress(f"snapshot {snapshot}: {sum(counts.values())} rows in {len(counts)} tables")
        except BaseException:
            dumping.cancel()
            with contextlib.suppress(BaseException):
                await dumping
            raise
        record = await dumping
        writer.add(DUMP_FILE, record, rows=sum(counts.values()))
    finally:
        await conn.close()
    return {
        "database": target.database,
        "serverVersion": version,
        "alembicRevision": revision,
        "tables": counts,
        "outbox": outbox,
        "file": DUMP_FILE,
    }


async def _dump_file(args: list[str], target: PostgresTarget, writer: ArchiveWriter) -> FileRecord:
    """pg_dump into the archive: written by pg_dump itself to a seekable file (the archive
    then records where each table's data starts, which parallel pg_restore needs) and hashed;
    or, with a key, streamed through the archive's encryption (never in clear on disk)."""
    if writer.key is None:
        await _run([*args, f"--file={writer.local_path(DUMP_FILE)}"], target, "pg_dump")
        return writer.record_written(DUMP_FILE)
    file = writer.open(DUMP_FILE)
    with file as sink:
        await _run(args, target, "pg_dump", sink=sink.write)
    assert file.record is not None
    return file.record


async def holds_data(target: PostgresTarget) -> bool:
    """Whether the target database exists with rows in a table other than alembic_version."""
    if not await exists(target, target.database):
        return False
    conn = await target.connect()
    try:
        for table in await _tables(conn):
            if table == "alembic_version":
                continue
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM public.{})").format(sql.Identifier(table))
            if (await (await conn.execute(query)).fetchone() or (False,))[0]:
                return True
        return False
    finally:
        await conn.close()


def stage_prefix(database: str) -> str:
    """How the names of ``database``'s staged copies start (8 hex digits follow)."""
    return database[: _MAX_NAME - len(_STAGED) - 8] + _STAGED


def _replaced_prefix(database: str) -> str:
    """How the temporary name of the database being replaced starts."""
    return database[: _MAX_NAME - len(_REPLACED) - 8] + _REPLACED


async def discard_stages(target: PostgresTarget) -> None:
    """Drop the staged and replaced databases that a killed restore left behind."""
    admin = await target.connect("postgres")
    try:
        cursor = await admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) "
            "OR starts_with(datname, %s)",
            (stage_prefix(target.database), _replaced_prefix(target.database)),
        )
        for (name,) in await cursor.fetchall():
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        await admin.close()


async def stage(reader: ArchiveReader, target: PostgresTarget) -> str:
    """Restore the dump into a new database; returns its name. The target is untouched."""
    pg_restore = tool("pg_restore")
    staged = stage_prefix(target.database) + secrets.token_hex(4)
    admin = await target.connect("postgres")
    try:
        await admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(staged))
        )
    finally:
        await admin.close()
    try:
        await _load(reader, target, staged, pg_restore)
    except BaseException:
        await drop(target, staged)
        raise
    return staged


async def _load(
    reader: ArchiveReader, target: PostgresTarget, staged: str, pg_restore: str
) -> None:
    args = [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error",
            f"--dbname={target.on(staged)}"]  # fmt: skip
    if not reader.encrypted:
        # A file (not a pipe) lets pg_restore load tables and build indexes in parallel.
        await _run([*args, "--jobs=2", str(reader.path / DUMP_FILE)], target, "pg_restore")
        return
    await _run(args, target, "pg_restore", source=reader.chunks(DUMP_FILE))


async def commit(target: PostgresTarget, staged: str, plan: dict[str, Any]) -> None:
    """The restore's commit point: ``plan`` is written into the staged database, then the
    staged database takes the target's name in one transaction (the old one aside). Before
    that transaction commits the target is as it was; after it, it holds the plan, which
    whoever opens the store next finishes (see ``_pending``). The old database is dropped
    afterwards (or by :func:`drop_replaced` when killed before)."""
    await write_record(target, plan, staged)
    replaced = _replaced_prefix(target.database) + secrets.token_hex(4)
    present = await exists(target, target.database)
    admin = await target.connect("postgres")
    try:
        async with admin.transaction():
            if present:
                # Renaming needs the database to itself: other sessions are ended.
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (target.database,),
                )
                await admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(target.database), sql.Identifier(replaced)
                    )
                )
            pause("committing")  # inside the transaction: a kill here rolls it back
            await admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(staged), sql.Identifier(target.database)
                )
            )
    finally:
        await admin.close()


async def write_record(
    target: PostgresTarget, plan: dict[str, Any], database: str | None = None
) -> None:
    """Write ``plan`` into ``database`` (the target by default) in one transaction: the
    commit point of a restore that does not replace the database itself."""
    conn = await target.connect(database)
    try:
        async with conn.transaction():
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(_RECORD_SCHEMA))
            await conn.execute(sql.SQL("CREATE TABLE {} (plan jsonb NOT NULL)").format(_RECORD))
            await conn.execute(
                sql.SQL("INSERT INTO {} (plan) VALUES (%s)").format(_RECORD), (Jsonb(plan),)
            )
    finally:
        await conn.close()


async def drop_replaced(target: PostgresTarget) -> None:
    """Drop the database(s) a committed restore replaced."""
    admin = await target.connect("postgres")
    try:
        cursor = await admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (_replaced_prefix(target.database),),
        )
        for (name,) in await cursor.fetchall():
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        await admin.close()


async def settled(backend: PostgresBackend, database: str) -> bool:
    """Whether a pooled connection of the store shows ``database`` holding no committed
    restore: the common case of every readiness probe, answered without a new connection
    (a new server process) per probe. False whenever it cannot tell, and the caller then
    looks on a new connection (:meth:`PendingRecord.open`): the switch-over ends the
    target's sessions, so a pooled one from before it fails, and one that escaped would
    sit in the database renamed away, which ``current_database()`` names."""
    try:
        pool = await backend.read_pool(0)
        async with pool.connection() as conn:
            cursor = await conn.execute(_SETTLED, (database,))
            row = await cursor.fetchone()
    except Exception:  # whatever failed, the new connection's look tells (or raises)
        return False
    return bool(row and row[0])


class PendingRecord:
    """The plan of a committed restore, in the target database, held under an advisory lock
    so that two processes never finish the same restore at once."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, target: PostgresTarget) -> tuple[bool, PendingRecord | None]:
        """Whether the target database exists, and the record if a restore is pending there
        (taken under the lock: waiting for whoever is finishing it now)."""
        try:
            conn = await target.connect()
        except BackendUnavailableError:
            if await exists(target, target.database):
                raise
            return False, None  # no target database: nothing restored into it yet
        try:
            if await _scalar(conn, _FIND_RECORD) is None:
                await conn.close()
                return True, None
            await conn.execute("SELECT pg_advisory_lock(%s)", (_RESTORE_LOCK,))
            return True, cls(conn)
        except BaseException:
            await conn.close()
            raise

    async def read(self) -> dict[str, Any] | None:
        """None when another process finished it while this one waited for the lock."""
        if await _scalar(self._conn, _FIND_RECORD) is None:
            return None
        plan: dict[str, Any] | None = await _scalar(
            self._conn, sql.SQL("SELECT plan FROM {}").format(_RECORD)
        )
        return plan

    async def write(self, plan: dict[str, Any]) -> None:
        await self._conn.execute(sql.SQL("UPDATE {} SET plan = %s").format(_RECORD), (Jsonb(plan),))

    async def clear(self) -> None:
        await self._conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_RECORD_SCHEMA))

    async def close(self) -> None:
        await self._conn.close()  # ends the session, and with it the advisory lock


async def exists(target: PostgresTarget, database: str) -> bool:
    admin = await target.connect("postgres")
    try:
        cursor = await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return await cursor.fetchone() is not None
    finally:
        await admin.close()


async def drop(target: PostgresTarget, name: str) -> None:
    admin = await target.connect("postgres")
    try:
        await admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    finally:
        await admin.close()


async def counts_of(target: PostgresTarget, database: str | None = None) -> dict[str, int]:
    conn = await target.connect(database)
    try:
        return await _counts(conn)
    finally:
        await conn.close()
