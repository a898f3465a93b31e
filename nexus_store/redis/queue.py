"""Reliable queues on Redis Streams with consumer groups (area ``queue``, DB 4).

    message_id = await store.queue.enqueue("emails", {"to": "ada@example.com"})
    for delivery in await store.queue.consume("emails", "mailers", "worker-1", count=10):
        send(delivery.payload)
        await store.queue.ack("emails", "mailers", delivery.id)
    print(await store.queue.stats("emails"))

A consumed message stays pending in its group until acked. If its consumer dies, or takes
longer than ``visibility_timeout``, the next ``consume`` of any consumer of the group claims
it again (XAUTOCLAIM) with ``attempts`` one higher. A message claimed for the
``queue.max_attempts + 1``-th time goes to the queue's dead-letter stream instead; read it
with :meth:`Queue.dead_letters`. Delivery is therefore at least once: make handlers
idempotent (``delivery.id`` is a stable key for that).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions

from nexus_store._text import record_of, text
from nexus_store.errors import NexusStoreError, QueueError, ValidationError
from nexus_store.redis._codec import JSON
from nexus_store.redis._lua import LuaRunner, load_lua
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["DeadLetter", "Delivery", "GroupStats", "Queue", "QueueMessage", "QueueStats"]

_MAX_NAME = 200
_MAX_BATCH = 1000
_CONSUME = load_lua("queue_consume")
_ACK = load_lua("queue_ack")


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A message to enqueue; ``await store.put(QueueMessage("emails", {...}))`` returns its id."""

    queue: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to a consumer. Ack it by ``id`` once handled."""

    queue: str
    id: str
    payload: Any
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that ran out of attempts, as kept in the dead-letter stream."""

    id: str  # id in the dead-letter stream
    original_id: str
    group: str
    attempts: int
    payload: Any


@dataclass(frozen=True, slots=True)
class GroupStats:
    consumers: int
    pending: int
    lag: int | None  # entries not yet delivered to the group (None if Redis cannot tell)


@dataclass(frozen=True, slots=True)
class QueueStats:
    length: int
    dead_letters: int
    groups: Mapping[str, GroupStats]


_MESSAGE_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_MAX_SECONDS = 24 * 3600


def _name(field: str, value: object) -> str:
    value = text(field, value)
    if not value or len(value) > _MAX_NAME:
        raise ValidationError(field, f"must be a non-empty string of at most {_MAX_NAME} chars")
    if not value.isprintable():
        raise ValidationError(field, "must not contain control characters or newlines")
    return value


def _message_ids(ids: tuple[object, ...]) -> list[str]:
    """The ids as ``enqueue`` returned them (``"<ms>-<seq>"``); XACK would read ``"*"``,
    ``"+"`` or ``"-"`` as a range or an auto id, never as one message."""
    for index, message_id in enumerate(ids):
        if not isinstance(message_id, str) or _MESSAGE_ID.fullmatch(message_id) is None:
            raise ValidationError(
                f"ids[{index}]", f"must be a message id like '1700000000000-0', got {message_id!r}"
            )
    return list(ids)  # type: ignore[arg-type]  # every one checked to be a str above


def _seconds(field: str, value: object, *, low: float) -> float:
    """A number of seconds above ``low`` and at most a day (NaN and Infinity refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low < value <= _MAX_SECONDS
    ):
        raise ValidationError(
            field, f"must be a number of seconds above {low:g} and at most {_MAX_SECONDS}"
        )
    return float(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Queue:
    """Enqueue, consume, ack, redeliver and dead-letter. Built by ``NexusStore`` as
    ``store.queue``; every Redis failure raises ``BackendUnavailableError``."""

    def __init__(self, backends: Backends) -> None:
        self._redis = backends.redis
        self._settings = backends.settings.queue
        self._keys = self._redis.keyspace("queue")
        self._lua = LuaRunner(self._redis, "queue")
        self._client = self._lua.client
        self._groups: set[tuple[str, str]] = set()

    def _stream(self, queue: str) -> str:
        return self._keys.tagged("q", _name("queue", queue), field="queue")

    def _dead(self, queue: str) -> str:
        return self._keys.tagged("q", _name("queue", queue), "dead", field="queue")

    async def put(self, message: QueueMessage) -> str:
        """Enqueue ``message`` (the route target of ``store.put``); return its id."""
        record_of(QueueMessage, message, "message")
        return await self.enqueue(message.queue, message.payload)

    async def enqueue(self, queue: str, payload: Any) -> str:
        """Append ``payload`` (JSON-encodable) to ``queue``; return the message id."""
        stream = self._stream(queue)
        encoded = JSON.dumps(payload, field="payload")
        if len(encoded) > self._settings.max_payload_bytes:
            raise ValidationError(
                "payload",
                f"is {len(encoded)} bytes as JSON; the limit is "
                f"{self._settings.max_payload_bytes} (queue.max_payload_bytes)",
            )
        with (
            operation(self._redis, "queue.enqueue", "queue", queue=queue),
            self._redis.unavailable(),
        ):
            message_id = await self._client.xadd(
                stream,
                {"p": encoded},
                maxlen=self._settings.max_length,
                approximate=True,
            )
        return _text(message_id)

    async def _ensure_group(self, stream: str, group: str) -> None:
        if (stream, group) in self._groups:
            return
        try:
            # From "0": messages enqueued before the group existed are work too.
            await self._client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    async def consume(
        self,
        queue: str,
        group: str,
        consumer: str,
        count: int = 10,
        visibility_timeout: float | None = None,
        *,
        block: float | None = None,
    ) -> list[Delivery]:
        """Up to ``count`` messages for ``consumer`` of ``group``: first those whose holder
        left them unacked longer than ``visibility_timeout`` seconds, then new ones.

        With ``block`` seconds, waits that long for a new message when none is ready.
        """
        stream, dead = self._stream(queue), self._dead(queue)
        _name("group", group)
        _name("consumer", consumer)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_BATCH:
            raise ValidationError("count", f"must be an integer from 1 to {_MAX_BATCH}")
        timeout = (
            self._settings.visibility_timeout
            if visibility_timeout is None
            else _seconds("visibility_timeout", visibility_timeout, low=0)
        )
        if block is not None and not (type(block) is int and block == 0):
            block = _seconds("block", block, low=0)
        with (
            operation(self._redis, "queue.consume", "queue", queue=queue) as op,
            self._redis.unavailable(),
        ):
            await self._ensure_group(stream, group)
            args: list[str | int] = [
                group,
                consumer,
                count,
                int(timeout * 1000),
                self._settings.max_attempts,
                "1" if self._settings.delete_acked else "0",
            ]
            try:
                flat = await self._lua.run(_CONSUME, [stream, dead], args)
            except NexusStoreError as exc:
                refusal = exc.__cause__
                if not isinstance(refusal, redis.exceptions.ResponseError):
                    raise
                if "NOGROUP" not in str(refusal):
                    raise QueueError(f"consume from {queue!r} failed: {refusal}") from refusal
                self._groups.discard((stream, group))  # the stream was deleted meanwhile
                await self._ensure_group(stream, group)
                flat = await self._lua.run(_CONSUME, [stream, dead], args)
            deliveries = [
                Delivery(
                    queue,
                    _text(flat[i]),
                    JSON.loads(dict(_pairs(flat[i + 2]))[b"p"]),
                    int(flat[i + 1]),
                )
                for i in range(1, len(flat), 3)
            ]
            # Block in slices shorter than the socket timeout, which would otherwise cut a
            # long XREADGROUP BLOCK short with a TimeoutError.
            deadline = time.monotonic() + (block or 0)
            while not deliveries and (remaining := deadline - time.monotonic()) > 0:
                wait = min(remaining, self._redis.settings.socket_timeout / 2)
                answer = await self._client.xreadgroup(
                    group, consumer, {stream: ">"}, count=count, block=max(1, int(wait * 1000))
                )
                deliveries = [
                    Delivery(queue, _text(message_id), JSON.loads(fields[b"p"]), 1)
                    for message_id, fields in _stream_entries(answer)
                ]
            op.note(count=len(deliveries))
        return deliveries

    async def ack(self, queue: str, group: str, *ids: str) -> int:
        """Mark messages handled; return how many were pending. Acking twice is harmless."""
        stream = self._stream(queue)
        _name("group", group)
        checked = _message_ids(ids)
        if not checked:
            return 0
        with operation(self._redis, "queue.ack", "queue", queue=queue):
            acked = await self._lua.run(
                _ACK, [stream], [group, "1" if self._settings.delete_acked else "0", *checked]
            )
        return int(acked)

    async def dead_letters(self, queue: str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead-lettered messages of ``queue``."""
        dead = self._dead(queue)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_BATCH:
            raise ValidationError("count", f"must be an integer from 1 to {_MAX_BATCH}")
        with (
            operation(self._redis, "queue.dead_letters", "queue", queue=queue),
            self._redis.unavailable(),
        ):
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._client.xrange(
                dead, count=count
            )  # type: ignore[assignment]
        return [
            DeadLetter(
                id=_text(message_id),
                original_id=_text(fields[b"id"]),
                group=_text(fields[b"group"]),
                attempts=int(fields[b"attempts"]),
                payload=JSON.loads(fields[b"p"]),
            )
            for message_id, fields in entries
        ]

    async def stats(self, queue: str) -> QueueStats:
        """Stream length, dead letters and, per group, consumers, pending and lag."""
        stream, dead = self._stream(queue), self._dead(queue)
        with operation(self._redis, "queue.stats", "queue", queue=queue), self._redis.unavailable():
            length = await self._client.xlen(stream)
            dead_count = await self._client.xlen(dead)
            try:
                groups = await self._client.xinfo_groups(stream)
            except redis.exceptions.ResponseError:  # no such stream yet
                groups = []
        return QueueStats(
            length=int(length),
            dead_letters=int(dead_count),
            groups={
                _text(info["name"]): GroupStats(
                    consumers=int(info["consumers"]),
                    pending=int(info["pending"]),
                    lag=None if info.get("lag") is None else int(info["lag"]),
                )
                for info in groups
            },
        )


def _pairs(fields: Any) -> list[tuple[bytes, bytes]]:
    """Stream fields from a script: a flat [field, value, ...] list."""
    return list(zip(fields[::2], fields[1::2], strict=True))


def _stream_entries(answer: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREADGROUP's entries for one stream, whether the reply is RESP2 (list) or RESP3 (map)."""
    if not answer:
        return []
    if isinstance(answer, dict):
        (entries,) = answer.values()
        return list(entries[0]) if entries and isinstance(entries[0], list) else list(entries)
    return list(answer[0][1])
