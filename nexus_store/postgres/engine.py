"""PostgreSQL connectivity: the primary async engine and optional read replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy.exc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from nexus_store._errors import unavailable_on
from nexus_store.errors import ConfigurationError
from nexus_store.postgres._status import connect_args, libpq_url, round_trip, server_version

if TYPE_CHECKING:
    from nexus_store._secrets import SecretURL
    from nexus_store.settings import PostgresSettings

__all__ = ["PostgresBackend", "sqlalchemy_url"]

_UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
)


# Pools for single-statement reads. Autocommit connections never hold a transaction, so
# nothing needs rolling back on return; they skip pre-ping because the repository retries
# a read once when its pooled connection turns out dead.
_AUTOCOMMIT: dict[str, Any] = {
    "isolation_level": "AUTOCOMMIT",
    "pool_reset_on_return": None,
    "pool_pre_ping": False,
}


def sqlalchemy_url(url: SecretURL) -> str:
    """The URL for SQLAlchemy with the psycopg 3 driver, whatever scheme was configured."""
    parsed = make_url(url.get_secret_value())
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class PostgresBackend:
    """Owns the engines and pools; repositories borrow connections from them.

    It holds at most ``3 * pool_capacity`` connections to the primary, three pools of
    ``pool_capacity`` each: ``engine`` (writes, transactions, the outbox relay, health),
    ``autocommit_engine`` (``list``/``count``/``exists`` and lookups that need SQLAlchemy)
    and the psycopg pool of lookups by key (``read_pool(0)``, opened on the first one). Each
    read replica has the last two of its own. Migrations use one more, unpooled, while they
    run.
    """

    name = "postgres"

    def __init__(self, settings: PostgresSettings, *, poolclass: type[Pool] | None = None) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "PostgreSQL is not configured: set NEXUS_POSTGRES_URL (or DATABASE_URL)",
                setting="postgres.url",
            )
        self.settings = settings
        self._poolclass = poolclass
        self.engine = self._engine(settings.url)
        # Single-statement reads need no BEGIN/ROLLBACK round trips: they run on a pool of
        # autocommit connections (switching a pooled connection per checkout costs more than
        # the lookup). Replicas only ever serve such reads.
        self.autocommit_engine = self._engine(settings.url, **_AUTOCOMMIT)
        self.read_engines = [self._engine(url, **_AUTOCOMMIT) for url in settings.read_urls]
        # Lookups by key skip SQLAlchemy altogether: its pool checkout alone costs ten
        # times psycopg_pool's. Target 0 is the primary, target i the replica read_urls[i-1];
        # each pool is created and opened on first use (an event loop is needed).
        self._read_urls = [settings.url, *settings.read_urls]
        self._read_pools: dict[int, AsyncConnectionPool[AsyncConnection[Any]]] = {}
        self._opening = asyncio.Lock()

    @property
    def pool_capacity(self) -> int:
        """The most connections one pool holds: ``pool_size + max_overflow``."""
        return self.settings.pool_size + self.settings.max_overflow

    def pool_in_use(self) -> int:
        """Connections of ``engine`` borrowed right now."""
        pool: Any = self.engine.pool
        return int(pool.checkedout()) if hasattr(pool, "checkedout") else 0

    async def read_pool(self, target: int) -> AsyncConnectionPool[AsyncConnection[Any]]:
        """The psycopg pool of autocommit connections for ``target`` (0: the primary, i: the
        i-th read replica), opened on first use.

        Opening waits for one connection, so an unreachable server fails within
        ``connect_timeout``; the pool is then dropped and the next call tries again.
        """
        pool = self._read_pools.get(target)
        if pool is not None:
            return pool
        async with self._opening:
            pool = self._read_pools.get(target)
            if pool is not None:
                return pool
            settings = self.settings
            connect = connect_args(settings)
            pool = AsyncConnectionPool(
                libpq_url(self._read_urls[target]),
                kwargs={"autocommit": True, **connect},
                min_size=1,
                max_size=self.pool_capacity,
                timeout=settings.pool_timeout,
                max_lifetime=settings.pool_recycle,
                name=f"nexus-store-read-{target}",
                open=False,
            )
            try:
                await pool.open(wait=True, timeout=connect["connect_timeout"])
            except BaseException:
                await pool.close(timeout=0)
                raise
            self._read_pools[target] = pool
            return pool

    def _engine(self, url: SecretURL, **extra: Any) -> AsyncEngine:
        settings = self.settings
        if self._poolclass is not None:
            extra["poolclass"] = self._poolclass
        else:
            extra.update(
                pool_size=settings.pool_size,
                max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout,
                pool_recycle=settings.pool_recycle,
            )
        extra.setdefault("pool_pre_ping", settings.pool_pre_ping)
        return create_async_engine(
            sqlalchemy_url(url),
            **extra,
            connect_args=connect_args(settings),
        )

    @property
    def database(self) -> str:
        return self.engine.url.database or ""

    def location(self) -> str:
        """Where entities live, for the routing table."""
        return f"database {self.database}"

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Translate connection failures raised inside the block."""
        with unavailable_on(self.name, *_UNAVAILABLE):
            yield

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection of ``engine`` as psycopg's own, for the status reads of
        :mod:`nexus_store.postgres._status` (shared with the SQLAlchemy-free exec probe).
        Connection failures raised inside the block are translated."""
        with unavailable_on(self.name, *_UNAVAILABLE, psycopg.OperationalError):
            async with self.engine.connect() as conn:
                driver: Any = (await conn.get_raw_connection()).driver_connection
                yield driver

    async def ping(self) -> float:
        """Round-trip one ``SELECT 1`` (checking out a connection included); returns seconds."""
        started = time.perf_counter()
        async with self.connection() as conn:
            await round_trip(conn)
        return time.perf_counter() - started

    async def server_version(self) -> str:
        async with self.connection() as conn:
            return await server_version(conn)

    async def close(self) -> None:
        pools = list(self._read_pools.values())
        self._read_pools.clear()
        for pool in pools:
            await pool.close()
        for engine in (self.engine, self.autocommit_engine, *self.read_engines):
            await engine.dispose()
