"""The buffered analytics event writer (the writing half of ``store.events``).

``track()`` validates and encodes the event (applying :class:`Event`'s rules without building
one), then appends it to a bounded in-process buffer; a background task writes
``insert_many(ordered=False)`` batches when ``events.flush_at`` events are waiting or
``events.flush_interval`` has passed.

    await store.events.track("signup", user_id="u1", properties={"plan": "pro"})
    await store.events.track("paid", user_id="u1", wait=True)  # returns once stored
    await store.events.flush()  # everything tracked so far is stored
    store.events.stats()        # WriterStats(queued=0, written=2, ...)

While MongoDB is unreachable the buffer keeps its events and retries with exponential
backoff and full jitter. When the buffer is full, ``events.on_full`` decides: ``block``
makes ``track()`` wait for room; ``drop`` refuses the event, counts it in ``stats().dropped``
and logs a warning. A batch that is retried after a lost acknowledgement may reach the
server twice; the unique index on ``event_id`` keeps one copy, and the duplicate-key error
counts as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError, PyMongoError

from nexus_store._errors import describe
from nexus_store._text import record_of
from nexus_store.errors import BackendUnavailableError, ConfigurationError, ValidationError
from nexus_store.log import get_logger
from nexus_store.mongo.events.model import Event, encode_event
from nexus_store.telemetry import operation, watch

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from nexus_store.mongo.client import MongoBackend
    from nexus_store.settings import EventsSettings

__all__ = ["EventWriter", "WriterStats"]

_log = get_logger("nexus_store.events")
_DUPLICATE_KEY = 11000
_DROP_LOG_EVERY_SECONDS = 1.0
# What MongoDB 5+ puts in errInfo.details of error 121 that comes from the document itself:
# replaced before the details reach a log line or an exception.
_VALUE_KEYS = frozenset({"consideredValue", "consideredValues", "failingDocumentId"})
_REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters of the event writer, for the health report.

    ``queued`` is what the buffer holds now (including the batch being written); ``written``
    counts events confirmed stored; ``retried`` counts failed batch attempts that were
    retried; ``dropped`` counts events refused on a full buffer or abandoned at close;
    ``rejected`` counts events the server refused (its validator), which retrying cannot fix.
    """

    queued: int
    written: int
    retried: int
    dropped: int
    rejected: int
    last_error: str | None


def redact_details(details: Any) -> Any:
    """``errInfo.details`` of a validation failure with every value of the document replaced.

    The rules (operator names, property names, ``specifiedAs``, reasons, considered types)
    are kept: they say which rule failed without repeating what the event held.
    """
    if isinstance(details, dict):
        return {
            str(key): _REDACTED if key in _VALUE_KEYS else redact_details(value)
            for key, value in details.items()
        }
    if isinstance(details, list):
        return [redact_details(item) for item in details]
    return (
        details
        if isinstance(details, str | int | float | bool) or details is None
        else str(details)
    )


def _failed_property(details: Any, parent: str = "") -> str | None:
    """The path of the first property the validator names (``name``, ``properties``)."""
    if isinstance(details, dict):
        for item in details.get("propertiesNotSatisfied", ()) or ():
            name = f"{parent}{item.get('propertyName', '')}"
            return _failed_property(item.get("details"), f"{name}.") or name
        for item in details.get("missingProperties", ()) or ():
            return f"{parent}{item}"
        for key in ("schemaRulesNotSatisfied", "details"):
            found = _failed_property(details.get(key), parent)
            if found:
                return found
    if isinstance(details, list):
        for item in details:
            found = _failed_property(item, parent)
            if found:
                return found
    return None


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """Retrieve a given-up task's outcome, so that nothing is reported at loop shutdown."""
    if not task.cancelled():
        task.exception()


def _already_stored(error: dict[str, Any]) -> bool:
    """A duplicate ``event_id``: an earlier attempt of this batch (or a resend) stored it."""
    if error.get("code") != _DUPLICATE_KEY:
        return False
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["event_id"]
    return "event_id" in str(error.get("errmsg", ""))


class EventWriter:
    """Buffers tracked events and writes them to ``collection`` in batches."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        settings: EventsSettings,
        mongo: MongoBackend,
    ) -> None:
        self._settings = settings
        self._mongo = mongo
        # Events are encoded once, in track(), and sent as raw BSON (the driver re-encodes
        # nothing and adds no _id; the server assigns it).
        self._raw_collection = cast("AsyncCollection[RawBSONDocument]", collection)
        # Encoded events, oldest first. Plain bytes: nothing for the garbage collector to
        # walk, however full the buffer is. Event number n (counting from 0 since start) is
        # at self._buffer[n - self._taken]; track(wait=True) callers wait in self._waiters[n].
        self._buffer: deque[bytes] = deque()
        self._in_flight: list[bytes] = []
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._taken = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._urgent = False
        self._closing = False
        self._close_deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepted = 0
        self._settled = 0
        self._written = 0
        self._retried = 0
        self._dropped = 0
        self._rejected = 0
        self._last_error: str | None = None
        self._last_drop_log = -_DROP_LOG_EVERY_SECONDS
        self._full_drops = 0  # refused on a full buffer (dropped also counts abandoned ones)
        self._logged_drops = 0
        self._last_dropped_name = ""
        self._drop_log_pending: asyncio.TimerHandle | None = None
        self._given_up = False  # close_timeout passed while a batch was in flight
        # read on every track(): plain attributes, not settings lookups
        self._max_event_bytes = self._settings.max_event_bytes
        self._max_queue_size = self._settings.max_queue_size
        self._flush_at = self._settings.flush_at
        watch("events", self)  # last: a metric reader may call stats() from its own thread

    # -- writing ---------------------------------------------------------------------------

    async def track(
        self,
        name: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        session_id: str | None = None,
        properties: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        ts: dt.datetime | None = None,
        event_id: str | None = None,
        wait: bool = False,
    ) -> str:
        """Validate an event and buffer it; with ``wait=True``, return once it is stored.

        Returns the ``event_id`` (generated unless given). Raises :class:`ValidationError`
        (nothing is buffered) for bad input or an event larger than ``events.max_event_bytes``.
        The rules are :class:`Event`'s, checked without building one.
        """
        event_id, data = encode_event(
            name,
            user_id=user_id,
            anonymous_id=anonymous_id,
            session_id=session_id,
            properties=properties,
            context=context,
            ts=ts,
            event_id=event_id,
        )
        await self._enqueue(data, name, wait=wait)
        return event_id

    async def put(self, event: Event) -> Event:
        """Buffer an :class:`Event` (the target of ``store.put(event)``)."""
        record_of(Event, event, "event")
        await self._enqueue(event.to_bson(), event.name, wait=False)
        return event

    async def flush(self) -> None:
        """Return once every event accepted before this call is stored (or rejected).

        While MongoDB is unreachable this waits for it; ``aclose()`` bounds that wait.
        """
        target = self._accepted
        while self._settled < target:
            self._urgent = True
            self._start_flusher()
            self._wake.set()
            await self._progress.wait()

    async def aclose(self) -> None:
        """Drain the buffer, waiting at most ``events.close_timeout`` for MongoDB.

        Events still unwritten after that are counted in ``dropped`` and logged as an error.
        The bound holds whatever the driver's own timeouts are: a batch still in flight at
        the deadline is given up (it may or may not have reached the server) and the task
        writing it is cancelled, not awaited.
        """
        if self._closing:
            return
        self._closing = True
        self._close_deadline = time.monotonic() + self._settings.close_timeout
        task = self._task
        if task is not None:
            self._urgent = True
            self._wake.set()
            done, _ = await asyncio.wait({task}, timeout=self._settings.close_timeout)
            if not done:
                self._give_up(task)
        if self._buffer:  # never reached the flusher (no running task)
            self._abandon_rest(self._taken, "closed before the flusher ran")
        self._log_drops()

    def _give_up(self, task: asyncio.Task[None]) -> None:
        """Stop waiting for ``task`` at the close deadline and abandon what it holds."""
        self._given_up = True
        first = self._taken - len(self._in_flight)
        # Counted as dropped below, so no longer queued, even while a driver that ignores the
        # cancellation (PyMongo 4.10) keeps the task alive.
        self._in_flight = []
        task.cancel()
        # Whatever it ends with is this writer's no more (it checks _given_up).
        task.add_done_callback(_consume_outcome)
        self._abandon_rest(first, self._last_error or "close_timeout reached")
        self._signal_progress()

    def stats(self) -> WriterStats:
        """A snapshot of the writer's counters."""
        return WriterStats(
            queued=len(self._buffer) + len(self._in_flight),
            written=self._written,
            retried=self._retried,
            dropped=self._dropped,
            rejected=self._rejected,
            last_error=self._last_error,
        )

    async def _enqueue(self, data: bytes, name: str, *, wait: bool) -> None:
        if self._closing:
            raise ConfigurationError("the event store is closed; open a new NexusStore")
        if len(data) > self._max_event_bytes:
            raise ValidationError(
                "event", f"{len(data)} bytes exceeds events.max_event_bytes={self._max_event_bytes}"
            )
        buffer = self._buffer
        while len(buffer) + len(self._in_flight) >= self._max_queue_size:
            if self._settings.on_full == "drop":
                self._count_drop(name)
                return
            self._start_flusher()
            self._wake.set()
            await self._progress.wait()
            if self._closing:
                raise ConfigurationError("the event store closed while track() waited for room")
        waiter = None
        if wait:
            waiter = self._waiters[self._accepted] = asyncio.get_running_loop().create_future()
        buffer.append(data)
        self._accepted += 1
        task = self._task
        if task is None or task.done():
            self._start_flusher()
        waiting = len(buffer)
        # The first event starts the flush_interval timer; a full batch or a waiter goes now.
        if waiting == 1 or waiting >= self._flush_at or wait:
            self._urgent = self._urgent or wait
            self._wake.set()
        if waiter is not None:
            await waiter

    def _count_drop(self, name: str) -> None:
        self._dropped += 1
        self._full_drops += 1
        self._last_dropped_name = name
        if self._drop_log_pending is not None:
            return
        wait = self._last_drop_log + _DROP_LOG_EVERY_SECONDS - time.monotonic()
        if wait <= 0:
            self._log_drops()
        else:
            # At most one line a second, and the line after the burst carries its total.
            self._drop_log_pending = asyncio.get_running_loop().call_later(wait, self._log_drops)

    def _log_drops(self) -> None:
        """Log the buffer-full drops not yet logged, with the running total."""
        if self._drop_log_pending is not None:
            self._drop_log_pending.cancel()
            self._drop_log_pending = None
        if self._full_drops == self._logged_drops:
            return
        self._last_drop_log = time.monotonic()
        _log.warning(
            "event_dropped",
            reason="buffer full",
            dropped=self._full_drops - self._logged_drops,
            dropped_total=self._dropped,
            max_queue_size=self._settings.max_queue_size,
            event_name=self._last_dropped_name,
        )
        self._logged_drops = self._full_drops

    # -- the background flusher ------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._task is None or self._task.done():
            # A context of its own: the batches' spans must not become children of whichever
            # request's span was current when the first event was tracked.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="nexus-events", context=contextvars.Context()
            )

    async def _run(self) -> None:
        while not self._given_up:
            if not self._buffer:
                self._urgent = False
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if (
                not self._urgent
                and not self._closing
                and len(self._buffer) < self._settings.flush_at
            ):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.flush_interval)
            count = min(len(self._buffer), self._settings.flush_at)
            first = self._taken
            self._in_flight = [self._buffer.popleft() for _ in range(count)]
            self._taken += count
            try:
                await self._write(first, self._in_flight)
            finally:
                self._in_flight = []
                self._signal_progress()

    def _signal_progress(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    async def _write(self, first: int, batch: list[bytes]) -> None:
        """Store events ``first`` .. ``first + len(batch) - 1``, retrying until done or closed."""
        documents = [RawBSONDocument(data) for data in batch]
        collection = self._raw_collection
        attempt = 0
        while True:
            try:
                with operation(self._mongo, "events.flush", collection.name, size=len(batch)):
                    await collection.insert_many(documents, ordered=False)
                if self._given_up:  # abandoned and counted at close while this ran
                    return
            except BulkWriteError as exc:
                if self._given_up:
                    return
                self._settle_partial(first, len(batch), dict(exc.details))
                return
            except PyMongoError as exc:
                if self._given_up:
                    return
                self._last_error = describe(exc)
                if self._past_close_deadline():
                    self._abandon_rest(first, self._last_error)
                    return
                self._retried += 1
                delay = self._backoff(attempt)
                _log.warning(
                    "event_batch_retry",
                    size=len(batch),
                    attempt=attempt + 1,
                    retry_in_s=round(delay, 3),
                    error=self._last_error,
                )
                attempt += 1
                await asyncio.sleep(self._bounded_by_deadline(delay))
                continue
            if attempt:
                _log.info("event_batch_recovered", size=len(batch), attempts=attempt + 1)
            self._settle(range(first, first + len(batch)))
            return

    def _settle_partial(self, first: int, size: int, details: dict[str, Any]) -> None:
        failures: dict[int, dict[str, Any]] = {
            first + error["index"]: error
            for error in details.get("writeErrors", [])
            if not _already_stored(error)
        }
        self._settle([number for number in range(first, first + size) if number not in failures])
        for number, error in failures.items():
            message = str(error.get("errmsg", "rejected by the server"))
            self._rejected += 1
            self._settled += 1
            self._last_error = describe(RuntimeError(message))
            raw_details = (error.get("errInfo") or {}).get("details")
            rules = None if raw_details is None else redact_details(raw_details)
            _log.error("event_rejected", code=error.get("code"), error=message, details=rules)
            field = "event"
            if rules is not None:
                failed = _failed_property(rules)
                field = "event" if failed is None else f"event.{failed}"
                message = f"{message}; failed rules: {orjson.dumps(rules).decode()}"
            self._resolve(number, ValidationError(field, f"rejected by MongoDB: {message}"))

    def _settle(self, stored: Sequence[int]) -> None:
        self._written += len(stored)
        self._settled += len(stored)
        if self._waiters:
            for number in stored:
                self._resolve(number, None)

    def _abandon_rest(self, first: int, reason: str) -> None:
        """Give up on event ``first`` and everything after it still in the buffer."""
        count = self._taken + len(self._buffer) - first
        self._taken += len(self._buffer)
        self._buffer.clear()
        self._dropped += count
        self._settled += count
        _log.error("events_abandoned_at_close", count=count, error=reason)
        for number in range(first, first + count):
            self._resolve(number, BackendUnavailableError("mongo", reason))

    def _resolve(self, number: int, error: Exception | None) -> None:
        waiter = self._waiters.pop(number, None)
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so that many writers do not retry in step."""
        ceiling = self._settings.retry_initial_backoff * 2 ** min(attempt, 30)
        return random.uniform(0, min(self._settings.retry_max_backoff, ceiling))  # noqa: S311

    def _past_close_deadline(self) -> bool:
        return self._close_deadline is not None and time.monotonic() >= self._close_deadline

    def _bounded_by_deadline(self, delay: float) -> float:
        if self._close_deadline is None:
            return delay
        return max(0.0, min(delay, self._close_deadline - time.monotonic()))
