"""``store.backup``: create, verify, restore, list and prune backup archives.

What a backup guarantees across the stores (see docs/backup.md): PostgreSQL is dumped first,
in one snapshot S, and MongoDB after it. Every outbox row delivered at S therefore has its
audit entry (and event) in the MongoDB copy; rows not yet delivered at S are delivered again
by the relay after a restore, and the idempotency key (``outbox:<event_id>``) makes that a
no-op for the ones the MongoDB copy already holds: each change reaches the audit log exactly
once. Redis is copied last, key by key (no cross-key snapshot).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, get_args

import orjson
import psycopg

from nexus_store._text import flag, function, text
from nexus_store.backup import _mongo, _postgres, _redis
from nexus_store.backup._archive import (
    FORMAT_VERSION,
    MANIFEST,
    ArchiveReader,
    ArchiveWriter,
    load_key,
)
from nexus_store.backup._chain import ChainCheck, check_chain
from nexus_store.errors import BackupError, ConfigurationError, ValidationError
from nexus_store.log import get_logger

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.redis.names import Area
    from nexus_store.settings import NexusSettings

__all__ = [
    "STORES",
    "ArchiveInfo",
    "Backup",
    "BackupReport",
    "Count",
    "PruneReport",
    "RestoreReport",
    "StoreName",
    "VerifyReport",
]

_log = get_logger("nexus_store.backup")
StoreName = Literal["postgres", "mongo", "redis"]
STORES: tuple[StoreName, ...] = get_args(StoreName)
#: Written next to the manifest when a restore starts switching; removed when it is done.
JOURNAL = "restore-pending.json"
Progress = Callable[[str, str], None]


def _quiet(store: str, message: str) -> None:
    _log.info("backup_progress", store=store, message=message)


@dataclass(frozen=True, slots=True)
class Count:
    """How many rows (PostgreSQL table), documents (MongoDB collection) or keys (Redis
    area) one part of a store holds."""

    store: str
    part: str
    count: int


def _count_rows(store: str, counts: dict[str, int]) -> list[Count]:
    return [Count(store, part, count) for part, count in counts.items()]


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: str
    stores: list[str]
    encrypted: bool
    files: int
    bytes: int
    counts: list[Count]
    seconds: float


@dataclass(frozen=True, slots=True)
class VerifyReport:
    path: str
    files: int
    bytes: int
    encrypted: bool
    audit_checked: int | None
    audit_checkpoints: int | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RestoreReport:
    path: str
    stores: list[str]
    counts: list[Count]
    resumed: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    name: str
    created: str
    stores: list[str]
    encrypted: bool
    bytes: int


@dataclass(frozen=True, slots=True)
class PruneReport:
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _store_name(only: object) -> str | None:
    """``only`` if it is None or a store name; ValidationError naming ``only`` otherwise."""
    if only is not None and (not isinstance(only, str) or only not in STORES):
        raise ValidationError("only", f"unknown store {only!r}; one of {', '.join(STORES)}")
    return only


def _stores(only: StoreName | str | None, available: list[str], *, archive: bool) -> list[str]:
    """The stores to work on: ``only``, or every one ``available`` (in the archive, or
    configured)."""
    if _store_name(only) is None:
        return available
    if only not in available:
        if archive:
            raise BackupError(f"the archive holds no {only} backup", file=MANIFEST)
        raise ConfigurationError(f"{only} is not configured", setting=f"{only}.url")
    return [only]


def _settings_facts(settings: NexusSettings) -> dict[str, Any]:
    """The settings a restore depends on; never a URL or a key."""
    return {
        "mongoDatabase": settings.mongo.database,
        "eventsCollection": settings.events.collection,
        "auditCollection": settings.audit.collection,
        "eventsRetentionDays": settings.events.retention_days,
        "auditRetentionDays": settings.audit.retention_days,
        "auditSigned": settings.audit.hmac_key is not None,
        "redisNamespace": settings.redis.namespace,
        "redisCluster": settings.redis.cluster,
        "redisDatabases": settings.redis.databases.model_dump(),
    }


def _audit_key(settings: NexusSettings) -> bytes | None:
    secret = settings.audit.hmac_key.get_secret_value() if settings.audit.hmac_key else None
    return secret.encode() if secret else None


def _chain_of(reader: ArchiveReader, settings: NexusSettings) -> ChainCheck | None:
    """The audit chain inside the archive, or None when it holds no MongoDB copy."""
    from bson import decode_all
    from bson.codec_options import CodecOptions

    section = reader.manifest.get("mongo")
    if section is None:
        return None
    roles, database = section["roles"], section["database"]
    options: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=dt.UTC)

    def documents(role: str) -> list[dict[str, Any]]:
        name = _mongo.file_names(database, roles[role])[0]
        return [
            decode_all(raw, options)[0] for raw in _mongo.bson_documents(reader.chunks(name), name)
        ]

    found = check_chain(
        documents("audit"), documents("checkpoints"), _audit_key(settings), dt.datetime.now(dt.UTC)
    )
    if not found.ok:
        raise BackupError(
            f"audit chain broken at seq {found.first_broken_seq}: {found.reason}",
            file=_mongo.file_names(database, roles["audit"])[0],
        )
    return found


def _known_revision(revision: str | None) -> None:
    if revision is None:
        return
    from nexus_store.postgres.migrate import history

    if revision not in {info.revision for info in history()}:
        raise BackupError(
            f"the archive's schema revision {revision!r} is newer than this nexus-store knows; "
            "upgrade nexus-store before restoring",
            file=MANIFEST,
        )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _typed(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """PostgreSQL driver errors (the dump, restore and switch statements) as SDK errors."""

    @functools.wraps(method)
    async def typed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except psycopg.Error as exc:
            raise _postgres.translate(exc) from exc

    return typed


class Backup:
    """Backups of every configured store. Built by ``NexusStore.backup``.

    ``verify``, ``list`` and ``prune`` need no server.
    """

    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._settings = backends.settings

    def __repr__(self) -> str:
        return f"Backup(stores={self._backends.configured()!r})"

    # -- create ----------------------------------------------------------------------------

    @_typed
    async def create(
        self,
        path: str | Path,
        *,
        only: StoreName | None = None,
        encrypt: bool = False,
        key_file: Path | None = None,
        redis_areas: tuple[str, ...] = _redis.DURABLE_AREAS,
        progress: Progress = _quiet,
    ) -> BackupReport:
        """Write a new archive at ``path`` (a directory that must not exist yet)."""
        started = dt.datetime.now(dt.UTC)
        encrypt = flag("encrypt", encrypt)
        function("progress", progress)  # called between steps, after work was done
        stores = _stores(only, list(self._backends.configured()), archive=False)
        areas = _redis.areas_from(redis_areas)
        target, key_file = _path("path", path), _key_file(key_file)
        key = load_key(key_file, required=True) if encrypt else None
        writer = ArchiveWriter(target, key)
        manifest: dict[str, Any] = {
            "formatVersion": FORMAT_VERSION,
            "nexusStoreVersion": _version(),
            "created": started.isoformat(),
            "encrypted": encrypt,
            "stores": stores,
            "settings": _settings_facts(self._settings),
            "files": writer.files,
        }
        try:
            # Order matters: PostgreSQL's snapshot first, then MongoDB (see the module doc).
            if "postgres" in stores:
                manifest["postgres"] = await _postgres.dump(
                    self._settings, writer, lambda m: progress("postgres", m)
                )
            if "mongo" in stores:
                manifest["mongo"] = await _mongo.dump(
                    self._settings, self._backends.mongo, writer, lambda m: progress("mongo", m)
                )
            if "redis" in stores:
                manifest["redis"] = await _redis.dump(
                    self._backends.redis, areas, writer, lambda m: progress("redis", m)
                )
            manifest["finished"] = dt.datetime.now(dt.UTC).isoformat()
            writer.commit(manifest)
        except BaseException:
            writer.abandon()
            raise
        seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
        return BackupReport(
            str(path),
            stores,
            encrypt,
            len(writer.files),
            sum(f["size"] for f in writer.files.values()),
            _counts(manifest),
            seconds,
        )

    # -- verify ----------------------------------------------------------------------------

    def verify(self, path: str | Path, *, key_file: Path | None = None) -> VerifyReport:
        """Check every file against the manifest and the audit chain inside; no server needed.

        Raises :class:`BackupError` naming the first bad file. An encrypted archive's files
        are authenticated and its chain checked when a key is available.
        """
        return verify_archive(self._settings, _path("path", path), key_file=_key_file(key_file))

    # -- restore ---------------------------------------------------------------------------

    @_typed
    async def restore(
        self,
        path: str | Path,
        *,
        only: StoreName | None = None,
        force: bool = False,
        key_file: Path | None = None,
        progress: Progress = _quiet,
    ) -> RestoreReport:
        """Restore the archive into the configured stores, all or nothing.

        The archive is checked first (manifest, checksums, decryption, audit chain, schema
        revision), then the target (refused when it holds data, unless ``force``). Each store
        is loaded under temporary names; only then are they switched over. A restore killed
        while switching is finished by running it again (``restore-pending.json``).
        """
        started = dt.datetime.now(dt.UTC)
        # Every argument is checked before the archive is read: force="no" must not force.
        force = flag("force", force)
        function("progress", progress)  # called between steps, after work was done
        _store_name(only)
        archive, key_file = _path("path", path), _key_file(key_file)
        if (archive / JOURNAL).exists():
            return await self._resume(archive, key_file, progress, started)
        reader = ArchiveReader(archive, load_key(key_file, required=False))
        stores = _stores(only, list(reader.manifest["stores"]), archive=True)
        self._check_archive(reader, stores, key_file, progress)
        areas = tuple(reader.manifest.get("redis", {}).get("areas", {}))
        if not force:
            await self._refuse_non_empty(stores, _redis.areas_from(areas))
        journal: dict[str, Any] = {"stores": stores}
        pg_target = (
            _postgres.PostgresTarget.from_settings(self._settings) if "postgres" in stores else None
        )
        try:
            if pg_target is not None:
                progress("postgres", "restoring into a new database")
                await _postgres.discard_stages(pg_target)
                journal["postgres"] = await _postgres.stage(reader, pg_target)
                staged_counts = await _postgres.counts_of(pg_target, journal["postgres"])
                _compare(staged_counts, reader.manifest["postgres"]["tables"], "postgres")
            if "mongo" in stores:
                journal["mongo"] = await _mongo.stage(
                    self._settings, self._backends.mongo, reader, lambda m: progress("mongo", m)
                )
            if "redis" in stores:
                # Parsed (checked) now; written while switching (they replace key by key).
                for area, expected in reader.manifest["redis"]["areas"].items():
                    name = _redis.file_name(area)
                    found = len(list(_redis.records(reader.chunks(name), name)))
                    if found != expected:
                        raise BackupError(
                            f"holds {found} keys, the manifest says {expected}", file=name
                        )
        except BaseException:
            await self._discard(stores, journal, pg_target)
            raise
        _write_journal(archive, journal)
        return await self._switch(archive, reader, journal, progress, started, resumed=False)

    def _check_archive(
        self, reader: ArchiveReader, stores: list[str], key_file: Path | None, progress: Progress
    ) -> None:
        """Everything that can refuse the archive, before anything is written."""
        if reader.encrypted and reader.key is None:
            load_key(key_file, required=True)  # raises, naming where the key goes
        progress("archive", "checking checksums")
        chosen = [name for name in reader.files if name.split("/", 1)[0] in stores]
        for name in chosen:
            reader.check(name)
        if reader.encrypted:
            for name in chosen:
                for _ in reader.chunks(name):
                    pass
        if "mongo" in stores:
            _chain_of(reader, self._settings)
        if "postgres" in stores:
            _known_revision(reader.manifest["postgres"].get("alembicRevision"))

    async def _refuse_non_empty(self, stores: list[str], areas: tuple[Area, ...]) -> None:
        found = []
        if "postgres" in stores and await _postgres.holds_data(
            _postgres.PostgresTarget.from_settings(self._settings)
        ):
            found.append("postgres")
        if "mongo" in stores and await _mongo.holds_data(self._settings, self._backends.mongo):
            found.append("mongo")
        if "redis" in stores and await _redis.holds_data(self._backends.redis, areas):
            found.append("redis")
        if found:
            raise BackupError(
                f"the target already holds nexus-store data ({', '.join(found)}); "
                "restore with --force to replace it"
            )

    async def _discard(
        self,
        stores: list[str],
        journal: dict[str, Any],
        pg_target: _postgres.PostgresTarget | None,
    ) -> None:
        """Remove what a failed restore staged; the target was not touched. (A staged
        database whose load failed was dropped by ``_postgres.stage`` already.)"""
        from nexus_store._errors import describe

        try:
            if pg_target is not None and journal.get("postgres"):
                await _postgres.drop(pg_target, journal["postgres"])
            if "mongo" in stores:
                await _mongo.discard_stages(self._backends.mongo.db)
        except Exception as exc:  # the original failure matters more
            _log.warning("backup_discard_failed", error=describe(exc))

    async def _resume(
        self, archive: Path, key_file: Path | None, progress: Progress, started: dt.datetime
    ) -> RestoreReport:
        journal = orjson.loads((archive / JOURNAL).read_bytes())
        reader = ArchiveReader(archive, load_key(key_file, required=False))
        progress("archive", "finishing the restore that was switching when it stopped")
        return await self._switch(archive, reader, journal, progress, started, resumed=True)

    async def _switch(
        self,
        archive: Path,
        reader: ArchiveReader,
        journal: dict[str, Any],
        progress: Progress,
        started: dt.datetime,
        *,
        resumed: bool,
    ) -> RestoreReport:
        """Every step may run again after a kill: each one checks what is left to do.

        The counts reported for PostgreSQL and MongoDB are the ones counted in the staged
        copies, which had to equal the manifest's before the switch.
        """
        stores: list[str] = journal["stores"]
        counts: list[Count] = []
        if "postgres" in stores:
            target = _postgres.PostgresTarget.from_settings(self._settings)
            if await _postgres.exists(target, journal["postgres"]):
                await _postgres.switch(target, journal["postgres"])
            found = reader.manifest["postgres"]["tables"]
            counts += _count_rows("postgres", found)
            progress("postgres", f"{sum(found.values())} rows")
        if "mongo" in stores:
            await _mongo.switch(self._backends.mongo, reader, journal["mongo"])
            found = reader.manifest["mongo"]["collections"]
            counts += _count_rows("mongo", found)
            progress("mongo", f"{sum(found.values())} documents")
        if "redis" in stores:
            areas = _redis.areas_from(reader.manifest["redis"]["areas"])
            written = await _redis.restore(
                self._backends.redis, reader, areas, lambda m: progress("redis", m)
            )
            counts += _count_rows("redis", written)
        (archive / JOURNAL).unlink(missing_ok=True)
        seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
        return RestoreReport(str(archive), stores, counts, resumed, seconds)

    # -- list and prune --------------------------------------------------------------------

    @staticmethod
    def archives(directory: str | Path) -> list[ArchiveInfo]:
        """The complete archives in ``directory``, oldest first."""
        return list_archives(_path("directory", directory))

    @staticmethod
    def prune(
        directory: str | Path, *, keep_daily: int, keep_weekly: int, dry_run: bool = False
    ) -> PruneReport:
        """Keep the newest archive of each of the last ``keep_daily`` days and of each of the
        last ``keep_weekly`` ISO weeks that have one; delete the other archives."""
        return prune_archives(
            _path("directory", directory), keep_daily, keep_weekly, dry_run=dry_run
        )


def _write_journal(archive: Path, journal: dict[str, Any]) -> None:
    partial = archive / (JOURNAL + ".tmp")
    try:
        partial.write_bytes(orjson.dumps(journal))
        os.replace(partial, archive / JOURNAL)
    except OSError as exc:
        raise BackupError(
            f"cannot write the restore journal ({exc.strerror}); the target was not changed",
            file=JOURNAL,
        ) from None


def _compare(found: dict[str, int], expected: dict[str, int], store: str) -> None:
    differing = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if differing:
        raise BackupError(
            f"{store} restored counts (found, expected) differ from the manifest: {differing}",
            file=MANIFEST,
        )


def _counts(manifest: dict[str, Any]) -> list[Count]:
    counts: list[Count] = []
    for store, part in (("postgres", "tables"), ("mongo", "collections"), ("redis", "areas")):
        if store in manifest:
            counts += _count_rows(store, manifest[store][part])
    return counts


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nexus-store")
    except PackageNotFoundError:
        return "unknown"


def verify_archive(settings: NexusSettings, path: Path, *, key_file: Path | None) -> VerifyReport:
    key = load_key(key_file, required=False)
    reader = ArchiveReader(path, key)
    reader.check_all()
    note = None
    chain: ChainCheck | None = None
    if reader.encrypted and key is None:
        note = "encrypted and no key given: checksums checked, contents and audit chain not"
    else:
        if reader.encrypted:
            for name in reader.files:
                for _ in reader.chunks(name):
                    pass
        chain = _chain_of(reader, settings)
    return VerifyReport(
        str(path),
        len(reader.files),
        sum(f["size"] for f in reader.files.values()),
        reader.encrypted,
        chain.checked if chain else None,
        chain.checkpoints if chain else None,
        note,
    )


_NAME_MAX, _PATH_MAX = 255, 4096  # bytes: Linux, macOS and NTFS all cap a name at 255


def _path(field: str, value: object) -> Path:
    """``value`` (a str or path-like naming a file system path) as a Path; ValidationError
    naming ``field`` for anything else (bytes, numbers, text with NUL or a lone surrogate)."""
    name = text(field, os.fspath(value) if isinstance(value, str | os.PathLike) else value)
    path = Path(name)
    # Past these the OS raises OSError (ENAMETOOLONG) from the first stat.
    if len(name.encode()) > _PATH_MAX or any(len(p.encode()) > _NAME_MAX for p in path.parts):
        raise ValidationError(field, f"is longer than a file system path can be ({len(name)})")
    return path


def _key_file(value: object) -> Path | None:
    return None if value is None else _path("key_file", value)


def list_archives(directory: Path) -> list[ArchiveInfo]:
    if not directory.is_dir():
        raise BackupError("not a directory", file=str(directory))
    found = []
    for child in sorted(directory.iterdir()):
        manifest_path = child / MANIFEST
        if not manifest_path.is_file():
            continue
        try:
            manifest = orjson.loads(manifest_path.read_bytes())
            found.append(
                ArchiveInfo(
                    child.name,
                    str(manifest["created"]),
                    list(manifest["stores"]),
                    bool(manifest.get("encrypted")),
                    sum(int(f["size"]) for f in manifest["files"].values()),
                )
            )
        except (OSError, KeyError, TypeError, ValueError):
            _log.warning("backup_unreadable_manifest", archive=child.name)
    return sorted(found, key=lambda info: info.created)


def prune_archives(
    directory: Path, keep_daily: int, keep_weekly: int, *, dry_run: bool
) -> PruneReport:
    for name, value in (("keep_daily", keep_daily), ("keep_weekly", keep_weekly)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(name, "must be an integer of 0 or more")
    archives = list_archives(directory)
    keep: set[str] = set()
    days: list[str] = []
    weeks: list[tuple[int, int]] = []
    for info in reversed(archives):  # newest first: the first seen per period is its newest
        created = dt.datetime.fromisoformat(info.created)
        day = created.date().isoformat()
        week = created.isocalendar()[:2]
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.add(info.name)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.append(week)
            keep.add(info.name)
    report = PruneReport()
    for info in archives:
        if info.name in keep:
            report.kept.append(info.name)
            continue
        report.deleted.append(info.name)
        if not dry_run:
            shutil.rmtree(directory / info.name)
    return report
