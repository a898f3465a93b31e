"""The caller's transaction, and the connection every write runs on.

Inside ``store.entities.transaction()`` every call of the same repository, in the same task,
uses the transaction's connection (a context variable holds it); a nested ``transaction()``
is a savepoint. Outside, each write is its own transaction on the primary's engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus_store.postgres._integrity import translate_errors

__all__ = ["Transactions"]


@dataclass(frozen=True)
class _Open:
    owner: Transactions
    connection: AsyncConnection


_ACTIVE: ContextVar[_Open | None] = ContextVar("nexus_entities_tx", default=None)


class Transactions:
    """One repository's transactions on the primary ``engine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def active(self) -> AsyncConnection | None:
        """The connection of this repository's transaction open in this task, if any."""
        current = _ACTIVE.get()
        return current.connection if current is not None and current.owner is self else None

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """The connection every write runs on: the caller's transaction, or a new one.

        This is the single write path: work added here (an outbox row for ``audit=True``)
        commits or rolls back with the entity write.
        """
        active = self.active()
        with translate_errors():
            if active is not None:
                yield active
                return
            async with self._engine.begin() as connection:
                yield connection

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        """A transaction around the block; a savepoint when one is already open.

        Any exception rolls everything back. After a database error inside the block the
        transaction is aborted: let the error leave the block (or use a nested transaction).
        """
        active = self.active()
        if active is not None:
            with translate_errors():
                async with active.begin_nested():
                    yield
            return
        with translate_errors():
            connection = await self._engine.connect()
        try:
            with translate_errors():
                transaction = await connection.begin()
            token = _ACTIVE.set(_Open(self, connection))
            try:
                yield
            except BaseException:
                await transaction.rollback()
                raise
            finally:
                _ACTIVE.reset(token)
            with translate_errors():
                await transaction.commit()
        finally:
            await connection.close()
