"""Schema migrations (Alembic), serialised across processes by ``pg_advisory_lock``.

    from nexus_store.postgres import migrate

    plan = await migrate.upgrade(settings, dry_run=True)   # what would run; changes nothing
    result = await migrate.upgrade(settings)               # apply up to head
    state = await migrate.status(settings)                 # state.at_head, state.pending
    await migrate.downgrade(settings, "base")

Two deploys that upgrade at once are safe: the second waits for the lock, then finds the
schema at head and applies nothing. Alembic itself takes no lock.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import alembic.util
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from nexus_store._errors import describe
from nexus_store.errors import NexusStoreError, ValidationError
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.settings import NexusSettings

__all__ = [
    "MigrationResult",
    "MigrationStatus",
    "RevisionInfo",
    "downgrade",
    "history",
    "run_locked",
    "script_location",
    "status",
    "upgrade",
]


_BAD_REVISION = (alembic.util.CommandError, RevisionError)


@dataclass(frozen=True)
class RevisionInfo:
    """One migration script."""

    revision: str
    down_revisions: tuple[str, ...]
    description: str
    is_head: bool


@dataclass(frozen=True)
class MigrationStatus:
    """Where the database stands against the migration scripts."""

    current: list[str]
    heads: list[str]
    at_head: bool
    pending: list[RevisionInfo]


@dataclass(frozen=True)
class MigrationResult:
    """What an ``upgrade``/``downgrade`` did (or, with ``dry_run``, would do)."""

    direction: Literal["upgrade", "downgrade"]
    target: str
    before: list[str]
    after: list[str]
    dry_run: bool
    steps: list[RevisionInfo] = field(default_factory=list)


def script_location() -> Path:
    """The Alembic script directory (``migrations/``, shipped in the wheel as a package)."""
    return Path(str(importlib.resources.files("nexus_store.postgres._migrations")))


def _config(connection: Connection | None = None, settings: NexusSettings | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    # Revisions may read deploy settings (0003: postgres.search_language).
    config.attributes["settings"] = settings
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _info(script: Script, heads: Iterable[str]) -> RevisionInfo:
    down = script.down_revision
    downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    return RevisionInfo(script.revision, downs, script.doc or "", script.revision in heads)


def history() -> list[RevisionInfo]:
    """Every migration, oldest first."""
    scripts = _scripts()
    heads = scripts.get_heads()
    return [_info(script, heads) for script in reversed(list(scripts.walk_revisions()))]


def _path(direction: str, target: str, current: list[str]) -> list[RevisionInfo]:
    """The revisions an upgrade/downgrade from ``current`` to ``target`` runs, in order."""
    scripts = _scripts()
    heads = scripts.get_heads()
    try:
        if direction == "upgrade":
            found = scripts.iterate_revisions(target, tuple(current) or "base")
            return [_info(s, heads) for s in reversed(list(found))]
        found = scripts.iterate_revisions(
            tuple(current) or "base", target, select_for_downgrade=True
        )
        return [_info(s, heads) for s in found]
    except _BAD_REVISION as exc:
        raise ValidationError("revision", describe(exc)) from exc


def _current(connection: Connection) -> list[str]:
    heads = sorted(MigrationContext.configure(connection).get_current_heads())
    # End the read's implicit transaction: Alembic must own the transactions it runs in,
    # or it commits none of them.
    connection.rollback()
    return heads


@asynccontextmanager
async def _connection(settings: NexusSettings) -> AsyncIterator[AsyncConnection]:
    """One dedicated connection (no pool, no statement timeout: index builds can be long)."""
    backend = PostgresBackend(settings.postgres, poolclass=NullPool)
    try:
        with backend.unavailable():
            async with backend.engine.connect() as connection:
                await connection.execute(text("SET statement_timeout = 0"))
                await connection.commit()
                yield connection
    finally:
        await backend.close()


async def run_locked(settings: NexusSettings, work: Callable[[Connection], Any]) -> Any:
    """Run ``work(connection)`` under the migration advisory lock, on its own connection."""
    lock_id = settings.postgres.migration_lock_id
    async with _connection(settings) as connection:
        # Session-level lock: it survives the per-migration commits and is released below
        # (or by the server when the connection drops).
        await connection.execute(select(func.pg_advisory_lock(lock_id)))
        await connection.commit()
        try:
            return await connection.run_sync(work)
        finally:
            await connection.rollback()
            await connection.execute(select(func.pg_advisory_unlock(lock_id)))
            await connection.commit()


def _run_command(
    settings: NexusSettings, direction: str, target: str
) -> Callable[[Connection], tuple[list[str], list[Any]]]:
    def work(connection: Connection) -> tuple[list[str], list[Any]]:
        config = _config(connection, settings)
        try:
            getattr(command, direction)(config, target)
        except _BAD_REVISION as exc:
            raise ValidationError("revision", describe(exc)) from exc
        return _current(connection), config.attributes.get("applied", [])

    return work


async def _migrate(
    settings: NexusSettings,
    direction: Literal["upgrade", "downgrade"],
    target: str,
    dry_run: bool,
) -> MigrationResult:
    if dry_run:
        async with _connection(settings) as connection:
            before = await connection.run_sync(_current)
        steps = _path(direction, target, before)
        return MigrationResult(direction, target, before, before, True, steps)

    def work(connection: Connection) -> tuple[list[str], list[str], list[Any]]:
        before = _current(connection)
        after, applied = _run_command(settings, direction, target)(connection)
        return before, after, applied

    try:
        before, after, applied = await run_locked(settings, work)
    except NexusStoreError:
        raise
    except Exception as exc:
        raise NexusStoreError(f"{direction} to {target} failed: {describe(exc)}") from exc
    scripts = _scripts()
    heads = scripts.get_heads()
    steps = [_info(scripts.get_revision(step.up_revision_id), heads) for step in applied]
    return MigrationResult(direction, target, before, after, False, steps)


async def upgrade(
    settings: NexusSettings, revision: str = "head", *, dry_run: bool = False
) -> MigrationResult:
    """Upgrade to ``revision`` under the advisory lock; ``dry_run`` only lists the steps."""
    return await _migrate(settings, "upgrade", revision, dry_run)


async def downgrade(
    settings: NexusSettings, revision: str, *, dry_run: bool = False
) -> MigrationResult:
    """Downgrade to ``revision`` (``"base"`` drops every nexus-store table)."""
    return await _migrate(settings, "downgrade", revision, dry_run)


async def status(settings: NexusSettings) -> MigrationStatus:
    """Current revision(s), the head(s), and what an upgrade would apply."""
    async with _connection(settings) as connection:
        current = await connection.run_sync(_current)
    heads = sorted(_scripts().get_heads())
    return MigrationStatus(current, heads, current == heads, _path("upgrade", "heads", current))
