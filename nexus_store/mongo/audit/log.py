"""The append-only audit log (``store.audit``): record, verify, query. No update, no delete.

    entry = await store.audit.record("admin:7", "update", "user", "42",
                                     before={"role": "member"}, after={"role": "admin"},
                                     ip="203.0.113.9", reason="ticket 1234")
    result = await store.audit.verify()            # VerifyResult(ok=True, checked=..., ...)
    await store.audit.verify(raise_on_tamper=True)  # or TamperDetected(seq=...)
    page = await store.audit.by_actor("admin:7", limit=50)
    older = await store.audit.by_actor("admin:7", limit=50, cursor=page.next_cursor)

Appending is optimistic: read the head (highest ``seq``), compute ``seq + 1`` and the hash,
insert; the unique index on ``seq`` turns a concurrent append by another process into a
duplicate-key error, and the writer re-reads the head and tries again. Tasks of one process
take an asyncio lock first, so they do not race each other. The result is one gap-free chain.

Each write waits for the configured write concern (``majority`` and journaled by default).
Every ``audit.checkpoint_every`` entries a signed checkpoint (HMAC with ``audit.hmac_key``)
records the entry's hash in a collection that never expires, so that what remains after
retention deletes old entries still verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import WriteConcern
from pymongo.errors import DuplicateKeyError

from nexus_store.errors import ConflictError, TamperDetected, ValidationError
from nexus_store.log import get_logger
from nexus_store.mongo._documents import page_limit, query_text, time_range, utc_millis
from nexus_store.mongo._layout import audit_max_length, checkpoint_collection
from nexus_store.mongo.audit.chain import GENESIS, checkpoint_signature, entry_hash
from nexus_store.mongo.audit.model import AuditEntry, AuditRecord
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from nexus_store.connections import Backends

__all__ = ["AuditLog", "AuditPage", "VerifyResult"]

_log = get_logger("nexus_store.audit")
_MAX_APPEND_ATTEMPTS = 200
_IDEMPOTENCY_KEY_MAX = audit_max_length("idempotency_key")
_HEAD_FIELDS = {"_id": 0, "seq": 1, "hash": 1, "ts": 1, "expires_at": 1}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`. ``first_broken_seq`` and ``reason`` are set when
    ``ok`` is false; ``skipped_expired`` counts gaps explained by retention."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0
    skipped_expired: int = 0


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for older entries (None: done)."""

    entries: list[AuditEntry]
    next_cursor: int | None


class AuditLog:
    """The tamper-evident audit log. Built by ``NexusStore.audit``."""

    def __init__(self, backends: Backends) -> None:
        settings = backends.settings.audit
        self._settings = settings
        self._mongo = backends.mongo
        concern = WriteConcern(
            w="majority" if settings.write_concern == "majority" else 1, j=settings.journal
        )
        db = self._mongo.db
        self._entries: AsyncCollection[dict[str, Any]] = db.get_collection(
            settings.collection, write_concern=concern
        )
        self._checkpoints: AsyncCollection[dict[str, Any]] = db.get_collection(
            checkpoint_collection(backends.settings), write_concern=concern
        )
        secret = settings.hmac_key.get_secret_value() if settings.hmac_key else None
        self._key = secret.encode() if secret else None
        self._lock = asyncio.Lock()
        # The last entry this instance wrote: appending from it needs no read, and a stale
        # one (another process appended since) only costs a duplicate-key retry.
        self._last: dict[str, Any] | None = None
        self._clock: Callable[[], dt.datetime] = _utc_now

    def __repr__(self) -> str:
        return f"AuditLog(collection={self._settings.collection!r}, signed={self._key is not None})"

    # -- recording -------------------------------------------------------------------------

    async def put(self, record: AuditRecord) -> AuditEntry:
        """Append ``record`` (the target of ``store.put(record)``)."""
        return await self._append(record, None)

    async def record(  # noqa: PLR0917 - positional, as documented in the issue
        self,
        actor: str,
        action: str,
        resource_type: str,
        resource_id: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> AuditEntry:
        """Append one entry and return it once the write concern is satisfied.

        With ``idempotency_key``, recording the same key again returns the entry already
        stored and does not extend the chain (for relays that may deliver twice).
        """
        record = AuditRecord(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
            ip=ip,
            user_agent=user_agent,
            reason=reason,
        )
        key = (
            None
            if idempotency_key is None
            else query_text(idempotency_key, "idempotency_key", max_length=_IDEMPOTENCY_KEY_MAX)
        )
        return await self._append(record, key)

    async def _append(self, record: AuditRecord, idempotency_key: str | None) -> AuditEntry:
        async with self._lock:
            with (
                operation(self._mongo, "audit.record", self._entries.name) as op,
                self._mongo.unavailable(),
            ):
                for attempt in range(_MAX_APPEND_ATTEMPTS):
                    if idempotency_key is not None:
                        existing = await self._entries.find_one(
                            {"idempotency_key": idempotency_key}
                        )
                        if existing is not None:
                            return AuditEntry.from_document(existing)
                    head = self._last if self._last is not None else await self._head()
                    document = self._next_document(head, record, idempotency_key)
                    try:
                        await self._entries.insert_one(document)
                    except DuplicateKeyError:
                        # Another process took this seq (or this idempotency key): re-read.
                        self._last = None
                        await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))  # noqa: S311
                        continue
                    self._last = document
                    await self._checkpoint_if_due(document, head)
                    op.note(seq=document["seq"], attempts=attempt + 1)
                    return AuditEntry.from_document(document)
        raise ConflictError(
            f"audit append lost the race for a sequence number {_MAX_APPEND_ATTEMPTS} times",
            field="seq",
        )

    async def _head(self) -> dict[str, Any] | None:
        """The newest entry, or the newest checkpoint when retention has removed them all."""
        head = await self._entries.find_one({}, projection=_HEAD_FIELDS, sort=[("seq", -1)])
        if head is not None:
            return head
        return await self._checkpoints.find_one({}, projection=_HEAD_FIELDS, sort=[("seq", -1)])

    def _next_document(
        self, head: Mapping[str, Any] | None, record: AuditRecord, idempotency_key: str | None
    ) -> dict[str, Any]:
        ts = utc_millis(self._clock(), "ts")
        document: dict[str, Any] = {
            "seq": head["seq"] + 1 if head else 1,
            "ts": ts,
            **record.model_dump(),
        }
        if idempotency_key is not None:
            document["idempotency_key"] = idempotency_key
        if self._settings.retention_days is not None:
            document["expires_at"] = ts + dt.timedelta(days=self._settings.retention_days)
        if head is not None and head.get("expires_at") is not None:
            document["prev_expires_at"] = head["expires_at"]
        document["prev_hash"] = head["hash"] if head else GENESIS
        document["hash"] = entry_hash(document["prev_hash"], document, self._key)
        return document

    async def _checkpoint_if_due(
        self, document: Mapping[str, Any], head: Mapping[str, Any] | None
    ) -> None:
        """Checkpoint every ``checkpoint_every``-th entry.

        The writer of the next entry writes it too (a duplicate is ignored), so a writer
        that died between its entry and its checkpoint leaves no hole.
        """
        every = self._settings.checkpoint_every
        if document["seq"] % every == 0:
            await self._write_checkpoint(document)
        elif document["seq"] % every == 1 and head is not None and "ts" in head:
            await self._write_checkpoint(head)

    async def _write_checkpoint(self, entry: Mapping[str, Any]) -> None:
        checkpoint: dict[str, Any] = {
            "seq": entry["seq"],
            "hash": entry["hash"],
            "ts": entry["ts"],
            "signature": checkpoint_signature(entry["seq"], entry["hash"], entry["ts"], self._key),
        }
        if entry.get("expires_at") is not None:
            checkpoint["expires_at"] = entry["expires_at"]
        with contextlib.suppress(DuplicateKeyError):  # the previous or next writer wrote it
            await self._checkpoints.insert_one(checkpoint)

    # -- verifying -------------------------------------------------------------------------

    async def verify(
        self,
        start: int | None = None,
        end: int | None = None,
        *,
        raise_on_tamper: bool = False,
        batch_size: int = 1000,
    ) -> VerifyResult:
        """Re-walk the chain from ``start`` to ``end`` (seq, inclusive) and check every link.

        Detects edited, deleted, reordered and inserted entries, and checkpoints that do not
        match. A gap is accepted only when the entry after it proves (``prev_expires_at``)
        that its predecessor had expired. Returns the first broken seq, or raises
        :class:`TamperDetected` with ``raise_on_tamper=True``.
        """
        for name, value in (("start", start), ("end", end)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValidationError(name, "must be a positive sequence number")
        with (
            operation(self._mongo, "audit.verify", self._entries.name) as op,
            self._mongo.unavailable(),
        ):
            result = await self._walk(start, end, batch_size)
            op.note(checked=result.checked, ok=result.ok)
        if not result.ok:
            _log.error("audit_chain_broken", seq=result.first_broken_seq, reason=result.reason)
            if raise_on_tamper:
                raise TamperDetected(
                    f"audit chain broken at seq {result.first_broken_seq}: {result.reason}",
                    seq=result.first_broken_seq or 0,
                )
        return result

    async def _walk(self, start: int | None, end: int | None, batch_size: int) -> VerifyResult:
        seq_filter: dict[str, int] = {}
        if start is not None:
            seq_filter["$gte"] = start
        if end is not None:
            seq_filter["$lte"] = end
        query = {"seq": seq_filter} if seq_filter else {}
        # from start - 1: the checkpoint just before the range can anchor its first entry
        anchors = {"seq": {**seq_filter, "$gte": start - 1}} if start is not None else query
        checkpoints = {cp["seq"]: cp async for cp in self._checkpoints.find(anchors)}
        now = self._clock()
        expected_seq = start or 1
        expected_prev: str | None = GENESIS
        if expected_seq > 1:
            before = await self._entries.find_one({"seq": expected_seq - 1}, projection={"hash": 1})
            expected_prev = before["hash"] if before else None
        checked = skipped = compared = 0

        def broken(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, seq, reason, compared, skipped)

        cursor = self._entries.find(query, sort=[("seq", 1)], batch_size=batch_size)
        async for document in cursor:
            seq = document.get("seq")
            if not isinstance(seq, int) or seq < expected_seq:
                return broken(expected_seq, f"unexpected entry with seq {seq!r} (inserted)")
            if seq > expected_seq or expected_prev is None:
                expired = document.get("prev_expires_at")
                if expired is None or expired > now:
                    # Older entries may have expired legitimately; the one before this entry
                    # provably had not, unless nothing can be known about it.
                    leading = checked == 0 and expired is not None
                    missing = seq - 1 if leading or seq == expected_seq else expected_seq
                    return broken(missing, f"entry {missing} is missing and was not due to expire")
                skipped += seq - expected_seq
                anchor = checkpoints.get(seq - 1)
                expected_prev = anchor["hash"] if anchor else document.get("prev_hash")
            reason = self._link_problem(document, expected_prev, checkpoints.get(seq))
            if reason is not None:
                return broken(seq, reason)
            checked += 1
            compared += seq in checkpoints
            expected_seq = seq + 1
            expected_prev = document["hash"]
        # A checkpoint past the last entry records entries that are gone: the tail was cut.
        for seq, checkpoint in sorted(checkpoints.items()):
            expires_at = checkpoint.get("expires_at")
            if seq >= expected_seq and (expires_at is None or expires_at > now):
                reason = f"entries from {expected_seq} are missing; checkpoint {seq} records them"
                return broken(expected_seq, reason)
        return VerifyResult(True, checked, None, None, compared, skipped)

    def _link_problem(
        self,
        document: Mapping[str, Any],
        expected_prev: str | None,
        checkpoint: Mapping[str, Any] | None,
    ) -> str | None:
        """Why ``document`` does not continue the chain, or None when it does."""
        seq = document["seq"]
        if document.get("prev_hash") != expected_prev:
            return (
                f"prev_hash does not match the hash of entry {seq - 1} "
                "(entries edited, reordered or removed)"
            )
        if entry_hash(str(document.get("prev_hash")), document, self._key) != document.get("hash"):
            return "hash does not match the entry's content (entry edited)"
        if checkpoint is not None:
            signature = checkpoint_signature(seq, checkpoint["hash"], checkpoint["ts"], self._key)
            if checkpoint["hash"] != document["hash"] or checkpoint.get("signature") != signature:
                return "entry does not match its signed checkpoint"
        return None

    # -- queries ---------------------------------------------------------------------------

    async def by_actor(
        self, actor: str, *, limit: int = 50, cursor: int | None = None
    ) -> AuditPage:
        """Entries recorded for ``actor``, newest first."""
        return await self._page({"actor": query_text(actor, "actor")}, limit, cursor)

    async def by_resource(
        self, resource_type: str, resource_id: str, *, limit: int = 50, cursor: int | None = None
    ) -> AuditPage:
        """Entries about one resource, newest first."""
        match = {
            "resource_type": query_text(resource_type, "resource_type"),
            "resource_id": query_text(resource_id, "resource_id"),
        }
        return await self._page(match, limit, cursor)

    async def in_range(
        self, start: dt.datetime, end: dt.datetime, *, limit: int = 50, cursor: int | None = None
    ) -> AuditPage:
        """Entries with ``start <= ts < end``, newest first."""
        return await self._page({"ts": time_range(start, end)}, limit, cursor)

    async def _page(self, match: dict[str, Any], limit: int, cursor: int | None) -> AuditPage:
        limit = page_limit(limit)
        if cursor is not None:
            if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 1:
                raise ValidationError("cursor", "not a cursor returned by this query")
            match = {**match, "seq": {"$lt": cursor}}
        with (
            operation(self._mongo, "audit.query", self._entries.name) as op,
            self._mongo.unavailable(),
        ):
            found = self._entries.find(match, sort=[("seq", -1)], limit=limit + 1)
            documents = await found.to_list()
            op.note(rows=len(documents))
        entries = [AuditEntry.from_document(document) for document in documents[:limit]]
        next_cursor = entries[-1].seq if len(documents) > limit else None
        return AuditPage(entries, next_cursor)

    async def entries(self, *, batch_size: int = 1000) -> AsyncIterator[AuditEntry]:
        """Every stored entry, oldest first (for exports and external anchoring)."""
        with self._mongo.unavailable():
            async for document in self._entries.find({}, sort=[("seq", 1)], batch_size=batch_size):
                yield AuditEntry.from_document(document)
