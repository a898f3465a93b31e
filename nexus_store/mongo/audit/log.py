"""The append-only audit log (``store.audit``): record, verify, prove, query. No update, no delete.

    entry = await store.audit.record("admin:7", "update", "user", "42",
                                     before={"role": "member"}, after={"role": "admin"},
                                     ip="203.0.113.9", reason="ticket 1234")
    result = await store.audit.verify()            # VerifyResult(ok=True, checked=..., ...)
    await store.audit.verify(raise_on_tamper=True)  # or TamperDetected(seq=...)
    head = await store.audit.tree_head()           # signed: keep it outside the database
    proof = await store.audit.prove(entry.seq)     # check offline: nexus_store.audit_proofs
    page = await store.audit.by_actor("admin:7", limit=50)

**Group commit.** ``record()`` queues its entry and waits; one appender task per log takes
what is queued (up to ``audit.batch_max_entries`` entries and ``audit.batch_max_bytes``
canonical bytes), chains it onto the head and writes it as one ordered ``insert_many``
with the configured write concern (``majority``, journaled, by default). Each caller gets
its own entry once the batch is acknowledged.

**One writer at a time, across processes.** Before writing, the appender holds the
sequencer lease (:mod:`._sequencer`), so processes take turns instead of racing for
``seq``; the holder appends from its own last entry without reading. The unique index on
``seq`` stays the fence: a write that loses anyway re-reads the head (``majority`` when
writes are) and retries.

Every ``audit.checkpoint_every`` entries a signed checkpoint records the entry's hash and
the Merkle frontier in a collection that never expires, so that what remains after
retention deletes old entries still verifies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bson
from pymongo import WriteConcern
from pymongo.errors import BulkWriteError, WriteError
from pymongo.read_concern import ReadConcern

from nexus_store._text import record_of
from nexus_store.audit_proofs import (
    ConsistencyProof,
    InclusionProof,
    TreeHead,
    canonical_json,
    consistency_ranges,
    hashes,
    inclusion_ranges,
    leaf_hash,
    perfect_pieces,
    public_key_pem,
    root_of,
    sign_tree_head,
    verify_tree_head,
)
from nexus_store.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    TamperDetected,
    ValidationError,
)
from nexus_store.log import get_logger
from nexus_store.mongo._documents import page_limit, query_text, time_range, utc_millis
from nexus_store.mongo._layout import audit_max_length, checkpoint_collection, lease_collection
from nexus_store.mongo.audit._sequencer import SequencerLease
from nexus_store.mongo.audit._tree import (
    Frontier,
    frontier_nodes,
    range_hash,
    rebuilt_frontier,
    subtree_hashes,
)
from nexus_store.mongo.audit.chain import (
    CURRENT_VERSION,
    GENESIS,
    checkpoint_signature,
    entry_hash,
)
from nexus_store.mongo.audit.model import AuditEntry, AuditRecord
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from nexus_store.connections import Backends

__all__ = ["AuditLog", "AuditPage", "VerifyResult"]

_log = get_logger("nexus_store.audit")
_MAX_APPEND_ATTEMPTS = 50
_DUPLICATE_KEY = 11000
_IDEMPOTENCY_KEY_MAX = audit_max_length("idempotency_key")
_HEAD_FIELDS = {"_id": 0, "seq": 1, "hash": 1, "ts": 1, "expires_at": 1, "frontier": 1}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`. ``first_broken_seq`` and ``reason`` are set when
    ``ok`` is false; ``skipped_expired`` counts gaps explained by retention;
    ``tree_head_checked`` says whether a ``since`` tree head was compared."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    checkpoints_checked: int = 0
    skipped_expired: int = 0
    tree_head_checked: bool = False


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for older entries (None: done)."""

    entries: list[AuditEntry]
    next_cursor: int | None


@dataclass(slots=True)
class _Pending:
    record: AuditRecord
    key: str | None
    future: asyncio.Future[AuditEntry]
    attempts: int = 0
    run: _Run | None = None  # submitted in order with others (the relay's rows)


@dataclass(slots=True)
class _Run:
    """Entries submitted together in order: once one fails, the later ones are not written
    (they fail with the same error), so the order a relay delivers in survives a failure."""

    failure: BaseException | None = None


@dataclass(slots=True)
class _Head:
    """The newest entry of the chain, and the Merkle frontier after it."""

    seq: int
    hash: str
    expires_at: dt.datetime | None
    frontier: Frontier | None  # None: no tree can be kept (its nodes expired)


class AuditLog:
    """The tamper-evident audit log. Built by ``NexusStore.audit``."""

    def __init__(self, backends: Backends) -> None:
        settings = backends.settings.audit
        self._settings = settings
        self._mongo = backends.mongo
        majority = settings.write_concern == "majority"
        concern = WriteConcern(w="majority" if majority else 1, j=settings.journal)
        # Reads that decide what is written next (the head, idempotency keys) or what is
        # signed see only majority-committed entries when writes wait for a majority: a
        # `local` read may return an entry that a failover rolls back.
        reads = ReadConcern("majority") if majority else ReadConcern()
        db = self._mongo.db
        self._entries: AsyncCollection[dict[str, Any]] = db.get_collection(
            settings.collection, write_concern=concern
        )
        self._committed = self._entries.with_options(read_concern=reads)
        self._checkpoints: AsyncCollection[dict[str, Any]] = db.get_collection(
            checkpoint_collection(backends.settings), write_concern=concern, read_concern=reads
        )
        self._lease = SequencerLease(
            db.get_collection(lease_collection(backends.settings), write_concern=concern),
            settings.lease_seconds,
        )
        secret = settings.hmac_key.get_secret_value() if settings.hmac_key else None
        self._key = secret.encode() if secret else None
        self._signing_key = (
            settings.signing_key.get_secret_value() if settings.signing_key else None
        )
        self._queue: collections.deque[_Pending] = collections.deque()
        self._appender: asyncio.Task[None] | None = None
        # The newest entry this writer knows of; None: read it (under the lease) first.
        self._head: _Head | None = None
        self._clock: Callable[[], dt.datetime] = _utc_now

    def __repr__(self) -> str:
        return f"AuditLog(collection={self._settings.collection!r}, signed={self._key is not None})"

    # -- recording -------------------------------------------------------------------------

    async def put(self, record: AuditRecord) -> AuditEntry:
        """Append ``record`` (the target of ``store.put(record)``)."""
        record_of(AuditRecord, record, "record")
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
        record, key = _validated(
            actor,
            action,
            resource_type,
            resource_id,
            before=before,
            after=after,
            ip=ip,
            user_agent=user_agent,
            reason=reason,
            idempotency_key=idempotency_key,
        )
        return await self._append(record, key)

    async def _append(self, record: AuditRecord, idempotency_key: str | None) -> AuditEntry:
        future: asyncio.Future[AuditEntry] = asyncio.get_running_loop().create_future()
        with operation(self._mongo, "audit.record", self._entries.name) as op:
            self._enqueue([_Pending(record, idempotency_key, future)])
            # not shielded: a caller that gives up cancels its own future only, which the
            # appender then leaves alone (its entry is still written with the batch)
            entry = await future
            op.note(seq=entry.seq)
        return entry

    async def _record_in_order(
        self, calls: Sequence[Mapping[str, Any]]
    ) -> list[AuditEntry | BaseException]:
        """For the outbox relay: ``record(**call)`` for each call, in this order, through
        the same group commit (so a batch of rows is one ``insert_many``, not one write
        each). Once one fails, validation included, the ones after it are not written and
        fail with the same error; the results come back in the order of ``calls``."""
        loop = asyncio.get_running_loop()
        run = _Run()
        pending: list[_Pending] = []
        refused: list[Exception] = []
        for call in calls:
            try:
                record, key = _validated(**call)
            except ValidationError as exc:
                refused = [exc] * (len(calls) - len(pending))
                break
            pending.append(_Pending(record, key, loop.create_future(), run=run))
        with operation(self._mongo, "audit.record_many", self._entries.name) as op:
            self._enqueue(pending)
            results = await asyncio.gather(
                *(item.future for item in pending), return_exceptions=True
            )
            op.note(rows=len(pending))
        return [*results, *refused]

    def _enqueue(self, pending: list[_Pending]) -> None:
        self._queue.extend(pending)
        if pending and (self._appender is None or self._appender.done()):
            self._appender = asyncio.create_task(self._drain())

    def _fail(self, pending: _Pending, exc: BaseException) -> None:
        """``pending`` will not be written: its caller hears ``exc``, and so do the entries
        submitted after it in the same run."""
        if pending.run is not None and pending.run.failure is None:
            pending.run.failure = exc
        if not pending.future.done():
            pending.future.set_exception(exc)

    async def aclose(self) -> None:
        """Wait for the entries already queued (the store calls this when it closes), then
        hand the lease on with this writer's head: the other writers need not wait for
        the term of one that has stopped."""
        if self._appender is not None:
            await asyncio.gather(self._appender, return_exceptions=True)
        # not after a failed write (head unknown): the server may be gone, and closing
        # would wait for it, while an unreleased lease costs the others at most its term
        if self._lease.unexpired() and self._head is not None:
            with self._mongo.unavailable():
                await self._lease.release(_handover(self._head))

    async def _drain(self) -> None:
        """The appender: group-commit what is queued until the queue is empty."""
        while self._queue:
            batch = self._take()
            try:
                with self._mongo.unavailable():
                    await self._commit(batch)
            except Exception as exc:  # every caller of the batch hears of it
                self._head = None
                for pending in batch:
                    self._fail(pending, exc)

    def _take(self) -> list[_Pending]:
        limit = self._settings.batch_max_entries
        batch: list[_Pending] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    def _requeue(self, pending: list[_Pending]) -> None:
        for item in reversed(pending):
            item.attempts += 1
            if item.attempts >= _MAX_APPEND_ATTEMPTS:
                self._fail(
                    item,
                    ConflictError(
                        f"audit append lost the race for a sequence number "
                        f"{_MAX_APPEND_ATTEMPTS} times",
                        field="seq",
                    ),
                )
            else:
                self._queue.appendleft(item)

    async def _commit(self, batch: list[_Pending]) -> None:
        if not self._lease.held() and await self._lease.acquire(_handover(self._head)):
            self._head = _from_handover(self._lease.handed_over)
        if self._head is None:
            self._head = await self._load_head()
        batch = await self._skip_stored_keys(batch)
        frontier = self._head.frontier.copy() if self._head.frontier is not None else None
        documents, owners, head, frontiers = self._chain(batch, self._head, frontier)
        if not documents:
            return
        try:
            await self._insert(documents)
        except BulkWriteError as exc:
            await self._partly_written(exc, documents, owners, frontiers)
            return
        self._head = _Head(head.seq, head.hash, head.expires_at, frontier)
        # checkpoints first: a caller that verifies as soon as it has its entry finds them
        await self._write_checkpoints(documents, frontiers)
        self._resolve(documents, owners)

    def _chain(
        self, batch: list[_Pending], head: _Head, frontier: Frontier | None
    ) -> tuple[list[dict[str, Any]], list[list[_Pending]], _Head, dict[int, list[bytes]]]:
        """The batch's entries chained onto ``head`` (``frontier`` grows with them), who
        waits for each, the new head, and the frontier at each checkpoint due (taken here,
        so a checkpoint never reads nodes that retention may have removed). What does not
        fit goes back to the queue."""
        documents: list[dict[str, Any]] = []
        frontiers: dict[int, list[bytes]] = {}
        owners: list[list[_Pending]] = []
        by_key: dict[str, int] = {}
        size = 0
        keep_left = self._settings.retention_days is not None
        every = self._settings.checkpoint_every
        for index, pending in enumerate(batch):
            if pending.run is not None and pending.run.failure is not None:
                self._fail(pending, pending.run.failure)  # an earlier entry of its run failed
                continue
            if pending.key is not None and pending.key in by_key:
                owners[by_key[pending.key]].append(pending)  # same key twice in one batch
                continue
            if documents and size >= self._settings.batch_max_bytes:
                self._queue.extendleft(reversed(batch[index:]))  # the next batch takes these
                break
            document, canonical = self._next_document(head, pending.record, pending.key)
            if len(canonical) > _LARGE_ENTRY and (problem := _too_large(document)) is not None:
                self._fail(pending, problem)  # refused before anything is sent
                continue
            if frontier is not None:
                if keep_left:  # what a proof needs once the entries before it expired
                    left = frontier.since(frontier.size - frontier.size % every)
                    if left:
                        document["left"] = [node.hex() for node in left]
                nodes = frontier.append(leaf_hash(document, canonical))
                document["tree"] = [node.hex() for node in nodes]
                if frontier.size % every == 0:
                    frontiers[frontier.size] = list(frontier.nodes)
            size += len(canonical)
            documents.append(document)
            owners.append([pending])
            if pending.key is not None:
                by_key[pending.key] = len(documents) - 1
            head = _Head(document["seq"], document["hash"], document.get("expires_at"), None)
        return documents, owners, head, frontiers

    async def _partly_written(
        self,
        exc: BulkWriteError,
        documents: list[dict[str, Any]],
        owners: list[list[_Pending]],
        frontiers: dict[int, list[bytes]],
    ) -> None:
        """Answer the entries written before the failure; the rest go again or hear why."""
        inserted = int(exc.details.get("nInserted", 0))
        errors = exc.details.get("writeErrors") or [{}]
        self._head = None
        await self._write_checkpoints(documents[:inserted], frontiers)
        self._resolve(documents[:inserted], owners[:inserted])
        if errors[0].get("code") == _DUPLICATE_KEY:
            # another writer took this seq (or this idempotency key): re-read, retry
            self._lease.lost()
            self._requeue([pending for group in owners[inserted:] for pending in group])
            return
        # the server refused this one entry (a value it cannot store): its callers hear
        # why, typed; the entries after it are chained again on the next turn
        refused = self._mongo.translate(exc)
        for pending in owners[inserted] if inserted < len(owners) else ():
            self._fail(pending, refused)
        self._requeue([pending for group in owners[inserted + 1 :] for pending in group])

    async def _insert(self, documents: list[dict[str, Any]]) -> None:
        """One ordered insert of the batch (``insert_one`` for a batch of one: the same
        command, less client work)."""
        if len(documents) > 1:
            await self._entries.insert_many(documents, ordered=True)
            return
        try:
            await self._entries.insert_one(documents[0])
        except WriteError as exc:
            error = {"index": 0, "code": exc.code, "errmsg": (exc.details or {}).get("errmsg")}
            raise BulkWriteError({"nInserted": 0, "writeErrors": [error]}) from exc

    def _resolve(self, documents: list[dict[str, Any]], owners: list[list[_Pending]]) -> None:
        for document, group in zip(documents, owners, strict=True):
            # built here from a validated record: validating it again would only cost time;
            # every field given (absent ones are None, their default), so no default is
            # looked up
            values: dict[str, Any] = {name: document.get(name) for name in _ENTRY_FIELDS}
            entry = AuditEntry.model_construct(**values)
            for pending in group:
                if not pending.future.done():
                    pending.future.set_result(entry)

    async def _skip_stored_keys(self, batch: list[_Pending]) -> list[_Pending]:
        """Answer the entries whose idempotency key is stored already; return the rest."""
        keys = list({pending.key for pending in batch if pending.key is not None})
        if not keys:
            return batch
        stored = {
            document["idempotency_key"]: AuditEntry.from_document(document)
            async for document in self._committed.find({"idempotency_key": {"$in": keys}})
        }
        rest = []
        for pending in batch:
            entry = stored.get(pending.key) if pending.key is not None else None
            if entry is None:
                rest.append(pending)
            elif not pending.future.done():
                pending.future.set_result(entry)
        return rest

    async def _load_head(self) -> _Head:
        """The newest majority-committed entry (or checkpoint, when retention has removed
        every entry) and the Merkle frontier after it; repairs the newest checkpoint."""
        newest = await self._committed.find_one({}, projection=_HEAD_FIELDS, sort=[("seq", -1)])
        if newest is None:
            checkpoint = await self._checkpoints.find_one(
                {}, projection=_HEAD_FIELDS, sort=[("seq", -1)]
            )
            if checkpoint is None:
                return _Head(0, GENESIS, None, Frontier())
            nodes = checkpoint.get("frontier")
            return _Head(
                checkpoint["seq"],
                checkpoint["hash"],
                checkpoint.get("expires_at"),
                Frontier(checkpoint["seq"], [bytes.fromhex(node) for node in nodes])
                if isinstance(nodes, list)
                else None,
            )
        seq = int(newest["seq"])
        pieces = perfect_pieces(0, seq)
        try:
            found = await subtree_hashes(self._committed, pieces, self._checkpoints)
            frontier: Frontier | None = Frontier(seq, [found[piece] for piece in pieces])
        except NotFoundError:
            frontier = None  # expired entries held nodes this tree needs
            _log.warning("audit_tree_unavailable", seq=seq)
        head = _Head(seq, newest["hash"], newest.get("expires_at"), frontier)
        await self._repair_checkpoint(seq)
        return head

    async def _repair_checkpoint(self, head_seq: int) -> None:
        """A writer that died between its batch and its checkpoint left none: write it."""
        seq = head_seq - head_seq % self._settings.checkpoint_every
        if seq < 1 or await self._checkpoints.find_one({"seq": seq}, projection={"_id": 1}):
            return
        entry = await self._committed.find_one({"seq": seq})
        if entry is None:
            return
        frontier = None
        if isinstance(entry.get("tree"), list):
            pieces = perfect_pieces(0, seq)
            try:
                found = await subtree_hashes(self._committed, pieces, self._checkpoints)
                frontier = [found[piece] for piece in pieces]
            except NotFoundError:
                frontier = None
        await self._insert_checkpoints([self._checkpoint(entry, frontier)])

    def _next_document(
        self, head: _Head, record: AuditRecord, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bytes]:
        ts = utc_millis(self._clock(), "ts")
        document: dict[str, Any] = {"seq": head.seq + 1, "ts": ts, **record.model_dump()}
        if idempotency_key is not None:
            document["idempotency_key"] = idempotency_key
        if self._settings.retention_days is not None:
            document["expires_at"] = ts + dt.timedelta(days=self._settings.retention_days)
        if head.expires_at is not None:
            document["prev_expires_at"] = head.expires_at
        document["v"] = CURRENT_VERSION
        document["prev_hash"] = head.hash
        canonical = canonical_json(document)
        document["hash"] = entry_hash(head.hash, document, self._key, canonical)
        return document, canonical

    def _checkpoint(self, entry: Mapping[str, Any], frontier: list[bytes] | None) -> dict[str, Any]:
        checkpoint: dict[str, Any] = {
            "seq": entry["seq"],
            "hash": entry["hash"],
            "ts": entry["ts"],
            "signature": checkpoint_signature(entry["seq"], entry["hash"], entry["ts"], self._key),
        }
        if entry.get("expires_at") is not None:
            checkpoint["expires_at"] = entry["expires_at"]
        if frontier is not None:
            checkpoint["frontier"] = [node.hex() for node in frontier]
        return checkpoint

    async def _write_checkpoints(
        self, documents: list[dict[str, Any]], frontiers: Mapping[int, list[bytes]]
    ) -> None:
        """The signed checkpoints due in ``documents``, each with the Merkle frontier at its
        seq when the appender kept the tree (``frontiers``)."""
        every = self._settings.checkpoint_every
        due = [document for document in documents if document["seq"] % every == 0]
        if not due:
            return
        try:
            await self._insert_checkpoints(
                [self._checkpoint(document, frontiers.get(document["seq"])) for document in due]
            )
        except Exception as exc:  # the entries are written; the next head read repairs it
            self._head = None
            _log.warning("audit_checkpoint_failed", seq=due[-1]["seq"], error=str(type(exc)))

    async def _insert_checkpoints(self, checkpoints: list[dict[str, Any]]) -> None:
        try:
            await self._checkpoints.insert_many(checkpoints, ordered=False)
        except BulkWriteError as exc:  # the previous or next writer wrote it
            if any(error.get("code") != _DUPLICATE_KEY for error in exc.details["writeErrors"]):
                raise

    # -- the Merkle tree -------------------------------------------------------------------

    async def _size(self) -> int:
        newest = await self._committed.find_one({}, projection={"seq": 1}, sort=[("seq", -1)])
        return int(newest["seq"]) if newest else 0

    async def tree_head(self) -> TreeHead:
        """A signed tree head over every majority-committed entry: size, RFC 9162 root hash,
        timestamp; Ed25519 with ``audit.signing_key``, else HMAC with ``audit.hmac_key``.
        Reads O(log n) entries. Keep it outside the database: it is what later proves the
        log was not truncated or rewritten (``verify(since=head)``)."""
        with (
            operation(self._mongo, "audit.tree_head", self._entries.name) as op,
            self._mongo.unavailable(),
        ):
            size = await self._size()
            root = await range_hash(self._committed, 0, size, self._checkpoints)
            op.note(size=size)
        return self._sign(size, root)

    def _sign(self, size: int, root: bytes) -> TreeHead:
        if self._signing_key is None and self._key is None:
            raise ConfigurationError(
                "signing tree heads needs audit.signing_key (Ed25519) or audit.hmac_key",
                setting="audit.signing_key",
            )
        timestamp = int(self._clock().timestamp() * 1000)
        return sign_tree_head(
            size, root, timestamp, private_key=self._signing_key, hmac_key=self._key
        )

    def public_key(self) -> str | None:
        """The PEM public key that verifies this log's tree heads (None with HMAC)."""
        return None if self._signing_key is None else public_key_pem(self._signing_key)

    def check_tree_head(self, head: TreeHead) -> bool:
        """Whether ``head`` carries this log's valid signature."""
        record_of(TreeHead, head, "head")
        return verify_tree_head(head, public_key=self.public_key(), hmac_key=self._key)

    async def prove(self, seq: int, *, tree_size: int | None = None) -> InclusionProof:
        """An RFC 9162 inclusion proof of entry ``seq`` in the tree of ``tree_size``
        entries (default: every committed entry), with the entry. O(log n) hashes from
        O(log n) entries."""
        _positive(seq, "seq")
        if tree_size is not None:
            _positive(tree_size, "tree_size")
        with (
            operation(self._mongo, "audit.prove", self._entries.name) as op,
            self._mongo.unavailable(),
        ):
            entry = await self._committed.find_one({"seq": seq}, projection={"_id": 0})
            if entry is None:
                raise NotFoundError("audit entry", seq)
            size = await self._size()
            if tree_size is not None:
                if tree_size > size:
                    raise ValidationError("tree_size", "the log is not that long")
                size = tree_size
            path = await self._path(inclusion_ranges(seq - 1, size))
            op.note(seq=seq, size=size)
        entry.pop("tree", None)
        entry.pop("left", None)
        return InclusionProof(seq, size, hashes(path), entry)

    async def prove_consistency(self, old_size: int, new_size: int) -> ConsistencyProof:
        """An RFC 9162 consistency proof: the tree of ``new_size`` entries extends the tree
        of ``old_size`` and changes nothing in it."""
        _positive(old_size, "old_size")
        _positive(new_size, "new_size")
        with (
            operation(self._mongo, "audit.prove_consistency", self._entries.name),
            self._mongo.unavailable(),
        ):
            if new_size > await self._size():
                raise ValidationError("new_size", "the log is not that long")
            path = await self._path(consistency_ranges(old_size, new_size))
        return ConsistencyProof(old_size, new_size, hashes(path))

    async def _path(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The MTH of each range, from one query for every subtree they decompose into."""
        split = [perfect_pieces(start, end) for start, end in ranges]
        found = await subtree_hashes(
            self._committed, [piece for pieces in split for piece in pieces], self._checkpoints
        )
        return [root_of([found[piece] for piece in pieces]) for pieces in split]

    # -- verifying -------------------------------------------------------------------------

    async def verify(
        self,
        start: int | None = None,
        end: int | None = None,
        *,
        since: TreeHead | None = None,
        raise_on_tamper: bool = False,
        batch_size: int = 1000,
    ) -> VerifyResult:
        """Re-walk the chain from ``start`` to ``end`` (seq, inclusive) and check every link.

        Detects edited, deleted, reordered and inserted entries, Merkle nodes that do not
        match the entries, and checkpoints that are missing or do not match. A gap is
        accepted only when the entry after it proves (``prev_expires_at``) that its
        predecessor had expired. With ``since``, a signed tree head kept outside the
        database, it also detects what the database alone cannot show: a log cut short
        (with or without its checkpoints, or wiped) or rewritten behind that head.
        Returns the first broken seq, or raises :class:`TamperDetected` with
        ``raise_on_tamper=True``.
        """
        for name, value in (("start", start), ("end", end)):
            if value is not None:
                _positive(value, name)
        _positive(batch_size, "batch_size", _MAX_BATCH)
        if since is not None:
            if not isinstance(since, TreeHead):
                raise ValidationError("since", "must be a TreeHead (store.audit.tree_head())")
            if start is not None:
                raise ValidationError("start", "a tree head is checked from the first entry")
            if not self.check_tree_head(since):
                raise ValidationError("since", "the tree head's signature does not verify")
        with (
            operation(self._mongo, "audit.verify", self._entries.name) as op,
            self._mongo.unavailable(),
        ):
            result = await self._walk(start, end, batch_size, since)
            op.note(checked=result.checked, ok=result.ok)
        if not result.ok:
            _log.error("audit_chain_broken", seq=result.first_broken_seq, reason=result.reason)
            if raise_on_tamper:
                raise TamperDetected(
                    f"audit chain broken at seq {result.first_broken_seq}: {result.reason}",
                    seq=result.first_broken_seq or 0,
                )
        return result

    async def _walk(  # noqa: PLR0911, PLR0912, PLR0915 - one pass over the chain, every check inline
        self, start: int | None, end: int | None, batch_size: int, since: TreeHead | None
    ) -> VerifyResult:
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
        # the Merkle tree is recomputed from the leaves while they are contiguous from 1
        frontier: Frontier | None = Frontier() if expected_seq == 1 else None
        if expected_seq > 1:
            before = await self._entries.find_one({"seq": expected_seq - 1}, projection={"hash": 1})
            expected_prev = before["hash"] if before else None
        checked = skipped = compared = 0
        since_root: bytes | None = None
        since_checked = False

        def broken(seq: int, reason: str) -> VerifyResult:
            return VerifyResult(False, checked, seq, reason, compared, skipped, since_checked)

        async with contextlib.aclosing(self._prefetched(query, batch_size)) as documents:
            async for document in documents:
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
                        return broken(
                            missing, f"entry {missing} is missing and was not due to expire"
                        )
                    skipped += seq - expected_seq
                    anchor = checkpoints.get(seq - 1)
                    expected_prev = anchor["hash"] if anchor else document.get("prev_hash")
                    frontier = rebuilt_frontier(seq - 1, _expired_nodes(checkpoints, document))
                canonical = canonical_json(document)
                reason = self._link_problem(
                    document, canonical, expected_prev, checkpoints.get(seq)
                )
                if reason is not None:
                    return broken(seq, reason)
                tree = document.get("tree")
                if frontier is not None:
                    left = document.get("left")
                    if left is not None and not _is_tail_of(left, frontier.nodes):
                        return broken(seq, "the entry's left Merkle nodes do not match the entries")
                    nodes_now = frontier.append(leaf_hash(document, canonical))
                    if tree is not None and tree != [node.hex() for node in nodes_now]:
                        return broken(seq, "the entry's Merkle nodes do not match the entries")
                    checkpoint = checkpoints.get(seq)
                    recorded = checkpoint.get("frontier") if checkpoint else None
                    if recorded is not None and recorded != [node.hex() for node in frontier.nodes]:
                        return broken(seq, "the checkpoint's Merkle frontier does not match")
                    if since is not None and seq == since.size:
                        since_root = frontier.root()
                elif document.get("v") is not None and not isinstance(tree, list):
                    return broken(seq, "the entry's Merkle nodes are missing")
                checked += 1
                compared += seq in checkpoints
                expected_seq = seq + 1
                expected_prev = document["hash"]
        last = expected_seq - 1
        # A checkpoint past the last entry records entries that are gone: the tail was cut.
        for seq, checkpoint in sorted(checkpoints.items()):
            expires_at = checkpoint.get("expires_at")
            if seq >= expected_seq and (expires_at is None or expires_at > now):
                reason = f"entries from {expected_seq} are missing; checkpoint {seq} records them"
                return broken(expected_seq, reason)
        # Checkpoints never expire: each multiple of checkpoint_every up to the last entry
        # has one, or one was deleted.
        every = self._settings.checkpoint_every
        first = start - 1 if start is not None else 0
        for seq in range(first - first % every + every, last + 1, every):
            if seq not in checkpoints:
                return broken(seq, f"the signed checkpoint of entry {seq} is missing (deleted)")
        if since is not None:
            since_checked = True
            if since.size > last:
                return broken(
                    last + 1,
                    f"the log ends at entry {last} but a signed tree head of "
                    f"{since.size} entries exists (truncated or wiped)",
                )
            if since_root is None and since.size > 0:
                since_checked = False  # its entries expired: the tree cannot be recomputed
            elif since.size > 0 and since_root is not None and since_root.hex() != since.root_hash:
                return broken(
                    since.size,
                    f"entries 1..{since.size} do not hash to the signed tree head's root "
                    "(rewritten behind it)",
                )
        return VerifyResult(True, checked, None, None, compared, skipped, since_checked)

    async def _prefetched(
        self, query: dict[str, Any], batch_size: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The entries in seq order; the next batch is on its way while this one is
        checked (the server works while the client hashes)."""
        batches: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=2)

        failures: list[Exception] = []

        async def fetch() -> None:
            try:
                cursor = self._entries.find(query, sort=[("seq", 1)], batch_size=batch_size)
                while batch := await cursor.to_list(batch_size):
                    await batches.put(batch)
            except Exception as exc:  # handed to the walk, after the entries before it
                failures.append(exc)
            await batches.put([])

        fetcher = asyncio.ensure_future(fetch())
        try:
            while batch := await batches.get():
                for document in batch:
                    yield document
            if failures:
                raise failures[0]
        finally:
            fetcher.cancel()

    def _link_problem(
        self,
        document: Mapping[str, Any],
        canonical: bytes,
        expected_prev: str | None,
        checkpoint: Mapping[str, Any] | None,
    ) -> str | None:
        """Why ``document`` does not continue the chain, or None when it does."""
        seq = document["seq"]
        prev_hash = document.get("prev_hash")
        if prev_hash != expected_prev:
            return (
                f"prev_hash does not match the hash of entry {seq - 1} "
                "(entries edited, reordered or removed)"
            )
        if entry_hash(str(prev_hash), document, self._key, canonical) != document.get("hash"):
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
            if (
                isinstance(cursor, bool)
                or not isinstance(cursor, int)
                or not 1 <= cursor <= _MAX_SEQ
            ):
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
        _positive(batch_size, "batch_size", _MAX_BATCH)
        with self._mongo.unavailable():
            async for document in self._entries.find({}, sort=[("seq", 1)], batch_size=batch_size):
                yield AuditEntry.from_document(document)


_ENTRY_FIELDS = tuple(AuditEntry.model_fields)
_MAX_SEQ = 2**63 - 1  # BSON's int64: a larger number cannot even be sent in a query
_MAX_BATCH = 100_000
_MAX_DOCUMENT = 16 * 1024 * 1024 - 4096  # MongoDB's BSON limit, less room for the tree
_LARGE_ENTRY = 1024 * 1024  # canonical bytes past which the BSON size is worth measuring


def _positive(value: Any, name: str, maximum: int = _MAX_SEQ) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValidationError(name, f"must be an integer from 1 to {maximum}")


def _too_large(document: dict[str, Any]) -> ValidationError | None:
    """A refusal naming the larger snapshot when ``document`` exceeds what MongoDB stores
    (checked before the batch is sent: a driver refusing it mid-batch would leave the
    entries before it written but unanswered)."""
    size = len(bson.encode(document))
    if size <= _MAX_DOCUMENT:
        return None
    before, after = (len(bson.encode({"v": document.get(name)})) for name in ("before", "after"))
    field = "before" if before > after else "after"
    return ValidationError(
        field, f"the entry would take {size} bytes; MongoDB stores at most {_MAX_DOCUMENT}"
    )


def _validated(
    actor: str,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[AuditRecord, str | None]:
    """What :meth:`AuditLog.record` appends, or a ValidationError naming the field."""
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
    if idempotency_key is None:
        return record, None
    return record, query_text(idempotency_key, "idempotency_key", max_length=_IDEMPOTENCY_KEY_MAX)


def _is_tail_of(left: Any, nodes: list[bytes]) -> bool:
    """Whether ``left`` lists the last ``len(left)`` of ``nodes`` (hex)."""
    if not isinstance(left, list) or len(left) > len(nodes):
        return False
    return left == [node.hex() for node in nodes[len(nodes) - len(left) :]]


def _expired_nodes(
    checkpoints: Mapping[int, Mapping[str, Any]], first: Mapping[str, Any]
) -> dict[tuple[int, int], bytes]:
    """The tree nodes before ``first`` (the entry after a gap) that its ``left`` and the
    newest checkpoint before it hold."""
    size = first["seq"] - 1
    nodes: dict[tuple[int, int], bytes] = {}
    older = [seq for seq in checkpoints if seq <= size]
    recorded = checkpoints[max(older)].get("frontier") if older else None
    if isinstance(recorded, list):
        nodes.update(frontier_nodes(max(older), recorded))
    left = first.get("left")
    if isinstance(left, list):
        nodes.update(frontier_nodes(size, left))
    return nodes


def _handover(head: _Head | None) -> dict[str, Any] | None:
    """``head`` as the lease document keeps it for the next holder (None: nothing to leave)."""
    if head is None or head.frontier is None:
        return None
    return {
        "seq": head.seq,
        "hash": head.hash,
        "expires_at": head.expires_at,
        "frontier": [node.hex() for node in head.frontier.nodes],
    }


def _from_handover(left: Mapping[str, Any] | None) -> _Head | None:
    """The head the previous holder left (None: read it)."""
    if left is None:
        return None
    try:
        seq, frontier = int(left["seq"]), [bytes.fromhex(node) for node in left["frontier"]]
        if len(frontier) != seq.bit_count():
            return None
        return _Head(seq, str(left["hash"]), left.get("expires_at"), Frontier(seq, frontier))
    except (KeyError, TypeError, ValueError):  # not what a holder leaves: read the head
        return None
