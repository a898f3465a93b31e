"""The caller's transaction, its tenant scope, and the connection every write runs on.

Inside ``store.entities.transaction()`` every call of the same repository, in the same task,
uses the transaction's connection (a context variable holds it); a nested ``transaction()``
is a savepoint. Outside, each write is its own transaction on the primary's engine.

Inside ``store.entities.tenant(org_id)`` every transaction the repository opens (and the one
already open) first runs ``set_config('app.tenant', org_id, true)``: the setting is
transaction-local, so a pooled connection never carries it into another request, and the
row-level security policies of migration 0002 read it. A read outside a transaction carries
the setting in its own statement instead (:func:`scope_condition`): one statement is one
transaction in autocommit, so it needs neither a transaction nor a second statement.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, TextClause, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from nexus_store.errors import ValidationError
from nexus_store.postgres._integrity import translate_errors

__all__ = ["TENANT_SETTING", "Transactions", "scope_condition"]

# The setting the row-level security policies read (migrations/versions/0002).
TENANT_SETTING = "app.tenant"


@dataclass(frozen=True)
class _Open:
    owner: Transactions
    connection: AsyncConnection


_ACTIVE: ContextVar[_Open | None] = ContextVar("nexus_entities_tx", default=None)
# The tenant is the request's, not one repository's: every repository in the task (entities,
# approvals) scopes its transactions to it.
_TENANT: ContextVar[str | None] = ContextVar("nexus_entities_tenant", default=None)


def _scope_statement(organization_id: str) -> Any:
    return select(func.set_config(TENANT_SETTING, organization_id, True))


def scope_condition(organization_id: str | None) -> TextClause:
    """A condition that scopes the single statement it is added to (on an autocommit
    connection) to ``organization_id``; None leaves the value to bind as ``tenant``.

    The uncorrelated sub-select is an InitPlan of a one-time filter, which PostgreSQL
    evaluates before the scans below it, so the transaction-local setting is in place when
    the policies read it (migration 0006 makes them read it once, when the scan starts) and
    ends with the statement. Were a plan ever to read it first, the policies would see no
    tenant: no rows, never another tenant's.
    """
    return text(f"(SELECT set_config('{TENANT_SETTING}', :tenant, true)) IS NOT NULL").bindparams(
        bindparam("tenant", organization_id, type_=String)
    )


class Transactions:
    """One repository's transactions on the primary ``engine``, and its tenant scope."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def active(self) -> AsyncConnection | None:
        """The connection of this repository's transaction open in this task, if any."""
        current = _ACTIVE.get()
        return current.connection if current is not None and current.owner is self else None

    def tenant(self) -> str | None:
        """The organization id (text) of the tenant scope of this task, if any."""
        return _TENANT.get()

    async def _apply_scope(self, connection: AsyncConnection) -> None:
        organization_id = self.tenant()
        if organization_id is not None:
            await connection.execute(_scope_statement(organization_id))

    @asynccontextmanager
    async def scoped(self, organization_id: Any) -> AsyncIterator[None]:
        """Every call inside sees and writes only ``organization_id``'s rows (see module)."""
        if isinstance(organization_id, str):
            try:
                organization_id = uuid.UUID(organization_id)
            except ValueError:
                raise ValidationError("organization_id", "must be a UUID") from None
        if not isinstance(organization_id, uuid.UUID):
            raise ValidationError("organization_id", "must be a UUID")
        previous = self.tenant()
        token = _TENANT.set(str(organization_id))
        try:
            active = self.active()
            if active is not None:  # entered inside a transaction: scope it from now on
                with translate_errors():
                    await self._apply_scope(active)
            yield
        except BaseException:
            _TENANT.reset(token)
            # An aborted transaction runs nothing more, so restoring may fail: the error
            # already leaving the block is the one to report.
            with suppress(Exception):
                await self._restore(previous)
            raise
        _TENANT.reset(token)
        with translate_errors():
            await self._restore(previous)

    async def _restore(self, previous: str | None) -> None:
        """Leaving a scope inside a still-open transaction: put the outer scope back ('' is
        "no tenant" to the policies)."""
        active = self.active()
        if active is not None:
            await active.execute(_scope_statement(previous or ""))

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """The connection every write runs on: the caller's transaction, or a new one.

        This is the single write path: work added here (an outbox row for ``audit=True``,
        the tenant scope) commits or rolls back with the entity write.
        """
        active = self.active()
        with translate_errors():
            if active is not None:
                yield active
                return
            async with self._engine.begin() as connection:
                await self._apply_scope(connection)
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
                await self._apply_scope(connection)
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
