"""What the health checks read of PostgreSQL, on a psycopg connection, and the connection
that reads it without SQLAlchemy.

This is the one home of that SQL: :class:`~nexus_store.postgres.engine.PostgresBackend`
runs it on a connection borrowed from its engine (``store.health()``, ``store.connect()``,
the outbox relay's lag), :class:`DirectPostgres` on a single psycopg connection (the
``nexus-store health`` exec probe, which starts a new interpreter every few seconds and must
not pay for SQLAlchemy and the ORM models: a third of its start-up).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from nexus_store._errors import unavailable_on
from nexus_store.errors import ConfigurationError

if TYPE_CHECKING:
    from nexus_store._secrets import SecretURL
    from nexus_store.settings import PostgresSettings

__all__ = [
    "DirectPostgres",
    "OutboxBacklog",
    "connect_args",
    "current_revisions",
    "libpq_url",
    "outbox_backlog",
    "round_trip",
    "server_version",
]

_PING = "SELECT 1"
_SERVER_VERSION = "SHOW server_version"
# Alembic's default version table (``nexus_store.postgres.migrate`` keeps it), found on the
# search path as Alembic finds it.
_HAS_VERSION_TABLE = "SELECT to_regclass('alembic_version') IS NOT NULL"
_CURRENT_REVISIONS = "SELECT version_num FROM alembic_version"
# The ``outbox`` table of nexus_store.postgres.models.Outbox (its name is fixed).
_OUTBOX_BACKLOG = (
    "SELECT count(*), extract(epoch FROM now() - min(created_at)) "
    "FROM outbox WHERE delivered_at IS NULL"
)
_LIBPQ_SCHEME = "postgresql"


def libpq_url(url: SecretURL) -> str:
    """``url`` as libpq reads it: the settings accept ``postgresql+psycopg://`` (SQLAlchemy's
    spelling) beside libpq's own ``postgresql://`` and ``postgres://``."""
    raw = url.get_secret_value()
    scheme, separator, rest = raw.partition("://")
    return f"{_LIBPQ_SCHEME}{separator}{rest}" if scheme == "postgresql+psycopg" else raw


def connect_args(settings: PostgresSettings) -> dict[str, Any]:
    """The libpq connection parameters of every connection nexus-store opens."""
    options = []
    if settings.statement_timeout is not None:
        options.append(f"-c statement_timeout={int(settings.statement_timeout * 1000)}")
    return {
        # libpq's connect_timeout is whole seconds, and at least 2 (it reads 1 as 2).
        "connect_timeout": max(2, math.ceil(settings.connect_timeout)),
        "options": " ".join(options),
        "application_name": "nexus-store",
    }


async def round_trip(conn: psycopg.AsyncConnection[Any]) -> None:
    """One ``SELECT 1``."""
    await (await conn.execute(_PING)).fetchall()


async def server_version(conn: psycopg.AsyncConnection[Any]) -> str:
    row = await (await conn.execute(_SERVER_VERSION)).fetchone()
    return str(row[0]) if row else "unknown"


async def current_revisions(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """The Alembic revision(s) the database is at, none when the schema was never created."""
    exists = await (await conn.execute(_HAS_VERSION_TABLE)).fetchone()
    if not exists or not exists[0]:
        return []
    return sorted(str(row[0]) for row in await (await conn.execute(_CURRENT_REVISIONS)).fetchall())


async def outbox_backlog(conn: psycopg.AsyncConnection[Any]) -> tuple[int, float | None]:
    """Undelivered outbox rows, and the age in seconds of the oldest (None when none)."""
    row = await (await conn.execute(_OUTBOX_BACKLOG)).fetchone()
    pending, age = row if row else (0, None)
    return int(pending), None if age is None else max(0.0, float(age))


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """The outbox as a process that runs no relay sees it (no delivery, no delivery error);
    :class:`~nexus_store.outbox.OutboxLag` is the relay's own, with what it delivered."""

    pending: int
    oldest_age_seconds: float | None
    last_error: str | None = None


class DirectPostgres:
    """One psycopg connection, opened on first use, for a process that only reads status.

    It answers what the health checks ask of a PostgreSQL backend (``ping``,
    ``server_version``, ``connection``, ``lag``) like :class:`PostgresBackend` does, with
    the same SQL, without importing SQLAlchemy. Checks that run concurrently share the
    connection (psycopg runs their statements one after the other).
    """

    name = "postgres"
    #: This process holds at most this one connection.
    pool_capacity = 1

    def __init__(self, settings: PostgresSettings) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "PostgreSQL is not configured: set NEXUS_POSTGRES_URL (or DATABASE_URL)",
                setting="postgres.url",
            )
        self.settings = settings
        self._url = libpq_url(settings.url)
        self._connecting: asyncio.Task[psycopg.AsyncConnection[Any]] | None = None

    def pool_in_use(self) -> int:
        """Connections borrowed by the application: none, there is none in this process."""
        return 0

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        with unavailable_on(self.name, psycopg.OperationalError, psycopg.InterfaceError):
            yield

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection (opened by the first caller; a failure reaches every caller).
        Connection failures raised inside the block are translated."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(
                psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, **connect_args(self.settings)
                )
            )
        with self.unavailable():
            # Shielded: one check timing out must not cancel the others' connection.
            yield await asyncio.shield(self._connecting)

    async def ping(self) -> float:
        async with self.connection() as conn:
            started = time.perf_counter()
            await round_trip(conn)
        return time.perf_counter() - started

    async def server_version(self) -> str:
        async with self.connection() as conn:
            return await server_version(conn)

    async def lag(self) -> OutboxBacklog:
        async with self.connection() as conn:
            return OutboxBacklog(*await outbox_backlog(conn))

    async def close(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is None:
            return
        if not connecting.done():
            connecting.cancel()
            return
        if not connecting.cancelled() and connecting.exception() is None:
            await connecting.result().close()
