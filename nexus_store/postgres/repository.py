"""``store.entities``: a generic, safe repository over any model on ``Base``.

    from nexus_store.postgres.models import User

    user = await store.entities.create(User, email="ada@example.com", username="ada",
                                       password_hash=hashed)
    same = await store.entities.get(User, user.id)                 # NotFoundError if absent
    page = await store.entities.list(User, where={"is_active": True}, order_by="-created_at",
                                     limit=50)
    more = await store.entities.list(User, where={"is_active": True}, order_by="-created_at",
                                     limit=50, after=page.next_cursor)
    user = await store.entities.update(User, user.id, expected_version=user.version,
                                       full_name="Ada Lovelace")   # ConflictError if stale
    await store.entities.delete(User, user.id)                     # soft: sets deleted_at
    await store.entities.restore(User, user.id)
    await store.entities.update(User, user.id, full_name="Ada L.", audit=True)  # + change record
    async with store.entities.transaction():                       # all or nothing
        org = await store.entities.create(Organization, name="Acme", slug="acme")
        await store.entities.create(OrganizationMember, organization_id=org.id,
                                    user_id=user.id, role="owner")

Every value is checked against its column before SQL is sent (see ``_values``); filters
accept only mapped columns and whitelisted operators (see ``_query``); database errors come
back as :class:`ConflictError`, :class:`IntegrityError` or :class:`ValidationError` naming
the field and the constraint.

A write made with ``audit=True`` (or to a model whose ``AuditPolicy`` is enabled) also inserts
its change record into the ``outbox`` table, in the same transaction; the relay copies it to
the audit log (see :mod:`nexus_store.outbox`).

Reads outside a transaction run in autocommit (one round trip) and go to a read replica when
``postgres.read_urls`` is set, unless ``fresh=True``. Inside ``transaction()`` every call uses
the transaction's connection. Do not share one transaction between concurrent tasks.

The work is done by three parts, each with its own state: ``_reads.Reads`` (read targets,
precompiled lookups), ``_writes.Writes`` (single-row writes and their audit records) and
``_bulk.BulkInsert`` (COPY); they share one ``_transaction.Transactions``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from nexus_store.postgres._audit import Audits
from nexus_store.postgres._bulk import BulkInsert
from nexus_store.postgres._query import Page
from nexus_store.postgres._reads import Reads
from nexus_store.postgres._search import Searches, SearchHit
from nexus_store.postgres._transaction import Transactions
from nexus_store.postgres._writes import Writes
from nexus_store.postgres.engine import PostgresBackend
from nexus_store.postgres.models.base import Base

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["EntityRepository", "Page", "SearchHit"]

M = TypeVar("M", bound=Base)


class EntityRepository:
    """CRUD, keyset pagination, upsert, bulk insert and transactions for ``Base`` models."""

    def __init__(self, backends: Backends | PostgresBackend) -> None:
        audited_tables: Collection[str] = ()  # outbox.audited_tables, when there are settings
        if isinstance(backends, PostgresBackend):
            backend = backends
        else:
            backend, audited_tables = backends.postgres, backends.settings.outbox.audited_tables
        self._transactions = Transactions(backend.engine)
        audits = Audits(audited_tables)
        self._reads = Reads(backend, self._transactions)
        self._writes = Writes(backend, self._transactions, audits, self._reads)
        self._bulk = BulkInsert(backend, self._transactions, audits)
        self._search = Searches(backend, self._reads, backend.settings.search_language)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EntityRepository]:
        """Run several calls atomically; a nested ``transaction()`` is a savepoint.

            async with store.entities.transaction():
                account = await store.entities.create(FinancialAccount, ...)
                await store.entities.create(Transaction, account_id=account.id, ...)

        Any exception rolls everything back. After a database error inside the block the
        transaction is aborted: let the error leave the block (or use a nested transaction).
        """
        async with self._transactions.begin():
            yield self

    @asynccontextmanager
    async def tenant(self, organization_id: Any) -> AsyncIterator[EntityRepository]:
        """Scope every call inside to one organization's rows (row-level security).

            async with store.entities.tenant(org.id):
                page = await store.entities.list(Project, {"status": "active"})
                await store.entities.create(Project, organization_id=org.id, name="Apollo")

        Reads, writes, bulk inserts, ``list`` with cursors and ``count`` see and touch only
        rows of ``organization_id`` (and rows of child tables whose parent is one). Each
        transaction starts with ``set_config('app.tenant', id, true)``, so the scope never
        outlives the transaction on a pooled connection. The policies bind roles without
        ``BYPASSRLS``, such as ``nexus_app``; outside a scope such a role sees no row of a
        scoped table and cannot write one. ``ValidationError`` if the id is not a UUID.
        """
        async with self._transactions.scoped(organization_id):
            yield self

    # -- create --------------------------------------------------------------------------

    async def create(self, model: type[M], /, *, audit: bool | None = None, **values: Any) -> M:
        """Insert one row; returns it with defaults (id, timestamps, version) filled in."""
        return await self._writes.create(model, audit=audit, **values)

    async def put(self, entity: M, *, audit: bool | None = None) -> M:
        """Insert a model instance (``store.put(user)``); returns it refreshed from the row."""
        return await self._writes.put(entity, audit=audit)

    async def upsert(
        self,
        model: type[M],
        /,
        *,
        conflict: str | Sequence[str],
        update: Sequence[str] | None = None,
        audit: bool | None = None,
        **values: Any,
    ) -> M:
        """Insert, or update the row that has the same ``conflict`` column(s).

            user = await store.entities.upsert(User, conflict="email", email="a@x.io",
                                               username="a", password_hash=h)

        ``update`` limits which columns an existing row takes (default: all given except
        the conflict columns). An updated row gets a new version and is undeleted.
        """
        return await self._writes.upsert(
            model, conflict=conflict, update=update, audit=audit, **values
        )

    async def bulk_create(
        self,
        model: type[Base],
        rows: Iterable[Mapping[str, Any] | Base],
        *,
        audit: bool | None = None,
    ) -> int:
        """Insert many rows with COPY (binary) in one transaction; returns how many.

        Every value is checked before it is sent (a thousand rows at a time, while the
        server stores the previous thousand); one bad row (or one duplicate) inserts
        nothing. Inside ``transaction()`` the batch is a savepoint: a refused batch leaves
        the transaction usable. Rows must set the same columns (a missing column takes its
        Python default, else NULL).
        Give ``id`` values yourself if you need to know them.
        """
        return await self._bulk.bulk_create(model, rows, audit=audit)

    # -- read ----------------------------------------------------------------------------

    async def get_or_none(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M | None:
        """The row with key ``id``, or None (soft-deleted rows count as absent)."""
        return await self._reads.get_or_none(
            model, id, include_deleted=include_deleted, fresh=fresh
        )

    async def get(
        self, model: type[M], id: Any, /, *, include_deleted: bool = False, fresh: bool = False
    ) -> M:
        """The row with key ``id``; :class:`NotFoundError` if absent or soft-deleted."""
        return await self._reads.get(model, id, include_deleted=include_deleted, fresh=fresh)

    async def list(
        self,
        model: type[M],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int = 50,
        after: str | None = None,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> Page[M]:
        """One page of rows, in keyset order (stable while rows are inserted).

        ``order_by`` names NOT NULL columns, ``"-name"`` for descending; the key is added
        as the tie-breaker. Pass ``page.next_cursor`` as ``after`` for the next page.
        """
        return await self._reads.list(
            model,
            where,
            order_by=order_by,
            limit=limit,
            after=after,
            include_deleted=include_deleted,
            fresh=fresh,
        )

    async def search(
        self,
        model: type[M],
        text: str,
        /,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int = 20,
        after: str | None = None,
        fuzzy: bool = False,
        highlight: bool = False,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> Page[SearchHit[M]]:
        """Rows matching ``text``, best first: ``Page`` of ``SearchHit(item, rank, snippet)``.

            page = await store.entities.search(Document, '"road map" -draft', limit=20,
                                               where={"project_id": p.id}, highlight=True)

        Full text (projects, tasks, documents): ``text`` is read by ``websearch_to_tsquery``
        (quotes, ``or``, ``-word``; any text is valid), ranked by ``ts_rank_cd``; the title
        weighs more than the body. ``highlight`` adds a ``ts_headline`` snippet with matches
        in ``<b>...</b>`` (not HTML-escaped). ``fuzzy=True`` matches the short title field
        (users' username, projects' name, tasks' and documents' title) by trigram word
        similarity instead, for typos. ``where`` takes the filters of ``list``; pass
        ``page.next_cursor`` as ``after`` with the same text for the next page.
        """
        return await self._search.search(
            model,
            text,
            where=where,
            limit=limit,
            after=after,
            fuzzy=fuzzy,
            highlight=highlight,
            include_deleted=include_deleted,
            fresh=fresh,
        )

    async def count(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> int:
        """How many rows match ``where``."""
        return await self._reads.count(model, where, include_deleted=include_deleted, fresh=fresh)

    async def exists(
        self,
        model: type[Base],
        /,
        where: Mapping[str, Any] | None = None,
        *,
        include_deleted: bool = False,
        fresh: bool = False,
    ) -> bool:
        """Whether any row matches ``where``."""
        return await self._reads.exists(model, where, include_deleted=include_deleted, fresh=fresh)

    # -- update / delete -----------------------------------------------------------------

    async def update(
        self,
        model: type[M],
        id: Any,
        /,
        *,
        expected_version: int | None = None,
        audit: bool | None = None,
        **changes: Any,
    ) -> M:
        """Change columns of one row; ``expected_version`` makes it optimistic.

        Raises :class:`ConflictError` (field ``version``) when the row's version is not
        ``expected_version``, :class:`NotFoundError` when there is no such (live) row.
        """
        return await self._writes.update(
            model, id, expected_version=expected_version, audit=audit, **changes
        )

    async def delete(
        self, model: type[Base], id: Any, /, *, soft: bool = True, audit: bool | None = None
    ) -> None:
        """Delete one row: ``soft`` sets ``deleted_at`` (hidden, restorable), else removes it.

        A hard delete follows the foreign keys' ON DELETE rules; a RESTRICT raises
        :class:`IntegrityError` naming the constraint.
        """
        await self._writes.delete(model, id, soft=soft, audit=audit)

    async def restore(self, model: type[M], id: Any, /, *, audit: bool | None = None) -> M:
        """Undo a soft delete; :class:`NotFoundError` if there is no soft-deleted row."""
        return await self._writes.restore(model, id, audit=audit)
