"""The relay: delivers outbox rows to the MongoDB audit log, once, in commit order per resource.

With ``outbox.deliver_events``, each change is also tracked as an analytics event named
``<table>.<action>`` (event id ``outbox:<event_id>``, so a redelivery stores nothing new).

    store.outbox.start_relay()          # background task of this store
    ...
    print(await store.outbox.lag())     # OutboxLag(pending=0, oldest_age_seconds=None, ...)
    await store.close()                 # stops the relay after its current batch

or one pass from a script or the command line (``nexus-store outbox relay --once``):

    delivered = await store.outbox.relay_once()

How it keeps its promises:

- *Exactly once in the audit log.* Each row is recorded with ``idempotency_key =
  "outbox:<event_id>"``; recording a key again returns the stored entry. A relay that dies
  after recording but before marking the row delivered only causes a harmless re-record.
- *Several relays.* Rows are claimed with ``FOR UPDATE SKIP LOCKED`` in one statement that
  also sees the rows it skipped. A relay delivers only the claimed rows that come before the
  first row another relay holds, so two relays never interleave their rows in the chain;
  the other one simply finds nothing to do until the holder commits.
- *Commit order.* Outbox ids come from a sequence, so a transaction that commits late can
  hold a smaller id than rows already delivered. Nothing is skipped because of it: each row
  has its own ``delivered_at`` (there is no high-water mark). And for any one resource, ids
  follow commit order: the outbox row is inserted after the change, and a second writer of
  that row waits for the first one's lock, hence for its commit, before taking its own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, func, select, update

from nexus_store._errors import describe
from nexus_store.log import get_logger
from nexus_store.outbox.changes import AUDIT_TOPIC, outbox_table
from nexus_store.postgres._status import outbox_backlog
from nexus_store.telemetry import operation, watch

if TYPE_CHECKING:
    from nexus_store.connections import Backends
    from nexus_store.mongo.audit.log import AuditLog
    from nexus_store.mongo.events.service import Events

__all__ = ["OutboxLag", "OutboxRelay"]

_log = get_logger("nexus_store.outbox")
_PRUNE_CHUNK = 5000
_LAST_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """How far the audit log is behind PostgreSQL.

    ``pending``: rows not delivered yet; ``oldest_age_seconds``: age of the oldest of them
    (None when there are none); ``delivered``: rows this process delivered since it started;
    ``last_error``: the last delivery failure of this process, if any.
    """

    pending: int
    oldest_age_seconds: float | None
    delivered: int
    last_error: str | None


class OutboxRelay:
    """Delivery of outbox rows (``store.outbox``); see the module docstring."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends
        self._settings = backends.settings.outbox
        self._audit_log: AuditLog | None = None
        self._events: Events | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._delivered = 0
        self._last_error: str | None = None
        #: The last :meth:`lag` measured, for the ``nexus_store.outbox.*`` metrics.
        self.last_lag: OutboxLag | None = None
        watch("outbox", self)

    @property
    def _audit(self) -> AuditLog:
        if self._audit_log is None:
            from nexus_store.mongo.audit.log import AuditLog

            self._audit_log = AuditLog(self._backends)
        return self._audit_log

    # -- delivery --------------------------------------------------------------------------

    async def deliver_batch(self) -> int:
        """Claim up to ``outbox.batch_size`` rows, record them, mark them delivered.

        Returns how many rows were delivered (0: nothing to do, or another relay holds the
        next rows). If recording fails, the rows before the failing one are still marked
        delivered, the failing row's ``attempts`` and ``last_error`` are updated, and the
        error is raised.
        """
        table = outbox_table()
        postgres = self._backends.postgres
        with postgres.unavailable():
            async with postgres.engine.begin() as conn:
                with operation(postgres, "outbox.claim", table.name) as op:
                    rows = (await conn.execute(_claim_statement(self._settings.batch_size))).all()
                    op.note(rows=len(rows))
                done, failure = await self._record(rows)
                with operation(postgres, "outbox.mark", table.name, rows=len(done)):
                    if failure is not None:
                        await conn.execute(
                            update(table)
                            .where(table.c.id == rows[len(done)].id)
                            .values(
                                attempts=table.c.attempts + 1,
                                last_error=describe(failure)[:_LAST_ERROR_CHARS],
                            )
                        )
                    if done:
                        await conn.execute(
                            update(table)
                            .where(table.c.id.in_(done))
                            .values(
                                delivered_at=func.now(),
                                attempts=table.c.attempts + 1,
                                last_error=None,
                            )
                        )
        self._delivered += len(done)
        if failure is not None:
            self._last_error = describe(failure)
            raise failure
        return len(done)

    async def _record(self, rows: Sequence[Row[Any]]) -> tuple[list[int], Exception | None]:
        """Record ``rows`` in id order as one run of the audit log's group commit (a batch
        is one ordered ``insert_many``, not one round trip per row); returns the ids recorded
        before the first failure, and that failure. Nothing after a failed row is recorded,
        so the order of the log stays the commit order."""
        count, failure = len(rows), None
        if self._settings.deliver_events:
            tracked = [self._track(row) for row in rows]
            for index, outcome in enumerate(await asyncio.gather(*tracked, return_exceptions=True)):
                if isinstance(outcome, BaseException):
                    count, failure = index, _raised(outcome)
                    break
        calls = []
        for index, row in enumerate(rows[:count]):
            try:
                calls.append(_audit_call(row))
            except Exception as exc:  # a malformed payload: this row fails, in its place
                count, failure = index, exc
                break
        done: list[int] = []
        for row, result in zip(rows, await self._audit._record_in_order(calls), strict=False):
            if isinstance(result, BaseException):
                return done, _raised(result)
            done.append(row.id)
        return done, failure

    async def _track(self, row: Row[Any]) -> None:
        """The change as an analytics event; its id makes a redelivery a no-op."""
        from nexus_store.mongo.events.service import Events

        if self._events is None:
            self._events = Events(self._backends)
        payload = row.payload
        tracked = self._events.track(
            f"{row.aggregate_type}.{payload['action']}",
            user_id=payload["actor"],
            event_id=f"outbox:{row.event_id}",
            ts=row.created_at,
            properties={"resource_type": row.aggregate_type, "resource_id": row.aggregate_id},
            wait=True,
        )
        # A buffered event that outlives the timeout is stored later, once (same event_id).
        await asyncio.wait_for(tracked, self._backends.settings.mongo.socket_timeout)

    async def relay_once(self) -> int:
        """Deliver batches until none is left that this relay can claim; returns the count."""
        total = 0
        while delivered := await self.deliver_batch():
            total += delivered
        return total

    async def prune(self) -> int:
        """Delete rows delivered more than ``outbox.prune_after_hours`` ago; returns the count."""
        table = outbox_table()
        cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, self._prune_seconds)
        postgres = self._backends.postgres
        total = 0
        while True:  # chunks keep each transaction short; the loop ends on a partial chunk
            chunk = (
                select(table.c.id)
                .where(table.c.delivered_at < cutoff)
                .order_by(table.c.id)
                .limit(_PRUNE_CHUNK)
                .scalar_subquery()
            )
            with operation(postgres, "outbox.prune", table.name) as op, postgres.unavailable():
                async with postgres.engine.begin() as conn:
                    deleted = await conn.execute(table.delete().where(table.c.id.in_(chunk)))
                op.note(rows=deleted.rowcount)
            total += deleted.rowcount
            if deleted.rowcount < _PRUNE_CHUNK:
                return total

    @property
    def _prune_seconds(self) -> float:
        return self._settings.prune_after_hours * 3600.0

    async def lag(self) -> OutboxLag:
        """Undelivered rows and the age of the oldest, for ``health``."""
        postgres = self._backends.postgres
        with operation(postgres, "outbox.lag", outbox_table().name):
            async with postgres.connection() as conn:
                pending, age = await outbox_backlog(conn)
        self.last_lag = OutboxLag(
            pending=pending,
            oldest_age_seconds=age,
            delivered=self._delivered,
            last_error=self._last_error,
        )
        return self.last_lag

    # -- background task -------------------------------------------------------------------

    def start_relay(self) -> None:
        """Run the relay as a background task of this event loop (no-op when running)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping.clear()
        # A context of its own: its spans are not children of the caller's current span.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="nexus-outbox", context=contextvars.Context()
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the background relay after its current batch."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await task

    async def aclose(self) -> None:
        await self.stop()
        if self._events is not None:
            await self._events.aclose()

    async def _run(self) -> None:
        settings = self._settings
        pause = settings.poll_interval
        next_prune = time.monotonic()
        while not self._stopping.is_set():
            delivered = 0
            try:
                delivered = await self.deliver_batch()
                if time.monotonic() >= next_prune:
                    await self.prune()
                    next_prune = time.monotonic() + settings.prune_interval
                pause = settings.poll_interval
            except Exception as exc:  # the relay outlives outages; lag() shows the failure
                self._last_error = describe(exc)
                pause = min(pause * 2, settings.retry_max_backoff)
                _log.warning("outbox_relay_failed", error=self._last_error, retry_in=pause)
            if delivered < settings.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)


def _audit_call(row: Row[Any]) -> dict[str, Any]:
    """``audit.record``'s arguments for one outbox row (its event id makes the key)."""
    payload = row.payload
    return {
        "actor": payload["actor"],
        "action": payload["action"],
        "resource_type": row.aggregate_type,
        "resource_id": row.aggregate_id,
        "before": payload.get("before"),
        "after": payload.get("after"),
        "ip": payload.get("ip"),
        "user_agent": payload.get("user_agent"),
        "reason": payload.get("reason"),
        "idempotency_key": f"outbox:{row.event_id}",
    }


def _raised(outcome: BaseException) -> Exception:
    """A failure to report on the row; a cancellation is not one: it goes on."""
    if not isinstance(outcome, Exception):
        raise outcome
    return outcome


def _claim_statement(limit: int) -> Any:
    """The next ``limit`` undelivered rows, locked; stops before a row another relay holds.

    One statement, one snapshot: the candidates (unlocked, in id order), the candidates this
    transaction could lock (SKIP LOCKED), and of those only the ones before the first
    candidate it could not lock.
    """
    table = outbox_table()
    candidates = (
        select(table.c.id)
        .where(table.c.delivered_at.is_(None), table.c.topic == AUDIT_TOPIC)
        .order_by(table.c.id)
        .limit(limit)
        .cte("candidates")
    )
    locked = (
        select(
            table.c.id,
            table.c.event_id,
            table.c.aggregate_type,
            table.c.aggregate_id,
            table.c.payload,
            table.c.created_at,
        )
        .where(table.c.id.in_(select(candidates.c.id)), table.c.delivered_at.is_(None))
        .with_for_update(skip_locked=True)
        .cte("locked")
    )
    first_held = (
        select(func.min(candidates.c.id))
        .where(candidates.c.id.not_in(select(locked.c.id)))
        .scalar_subquery()
    )
    return (
        select(locked)
        .where(first_held.is_(None) | (locked.c.id < first_held))
        .order_by(locked.c.id)
    )
