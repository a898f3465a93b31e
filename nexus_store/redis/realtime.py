"""Realtime pub/sub over Redis (area ``realtime``), with namespaced channel names.

    async with store.realtime.subscribe("chat:*") as messages:
        await store.realtime.publish("chat:lobby", {"from": "ada", "text": "hi"})
        async for message in messages:
            print(message.channel, message.message)   # "chat:lobby" {...}
            break

Pub/sub ignores database numbers, so every channel is sent as
``<namespace>:realtime:<channel>``: two applications (or test sessions) sharing one server
never hear each other. Channel names are validated rather than escaped, so that a pattern
like ``chat:*`` keeps its meaning: printable ASCII without spaces, braces or glob characters
(patterns may use ``*``, ``?`` and ``[...]``). Delivery is at most once, as with Redis
pub/sub itself; use :mod:`nexus_store.redis.queue` for messages that must not be lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from nexus_store._text import record_of
from nexus_store.errors import ValidationError
from nexus_store.redis._codec import JSON
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    import redis.asyncio.client

    from nexus_store.connections import Backends
    from nexus_store.redis.client import RedisBackend

__all__ = ["Realtime", "RealtimeMessage", "Subscription"]

_CHANNEL = re.compile(r"[A-Za-z0-9_.:@+=/%-]{1,200}")
_PATTERN = re.compile(r"[A-Za-z0-9_.:@+=/%*?\[\]^-]{1,200}")
_MAX_MESSAGE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class RealtimeMessage:
    """A message on a channel; ``await store.put(RealtimeMessage("chat:lobby", {...}))``
    publishes it and returns how many subscribers received it."""

    channel: str
    message: Any


class Subscription:
    """An async iterator of :class:`RealtimeMessage` for one channel pattern.

    Use it as ``async with`` (subscribed on entry, so nothing published afterwards is
    missed) or iterate it directly (subscribed on the first ``__anext__``). Close it with
    :meth:`aclose`, or leave the ``async with`` block.
    """

    def __init__(
        self, backend: RedisBackend, pubsub: redis.asyncio.client.PubSub, pattern: str, prefix: str
    ) -> None:
        self._backend = backend
        self._pubsub = pubsub
        self._pattern = pattern
        self._prefix = prefix
        self._subscribed = False

    async def _subscribe(self) -> None:
        if not self._subscribed:
            with self._backend.unavailable():
                await self._pubsub.psubscribe(self._pattern)
            self._subscribed = True

    async def __aenter__(self) -> Self:
        await self._subscribe()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RealtimeMessage:
        await self._subscribe()
        while True:
            with self._backend.unavailable():
                raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if raw is None or raw.get("type") != "pmessage":
                continue
            channel = raw["channel"].decode().removeprefix(self._prefix)
            return RealtimeMessage(channel, JSON.loads(raw["data"]))

    async def aclose(self) -> None:
        """Unsubscribe and give the connection back."""
        await self._pubsub.aclose()


class Realtime:
    """Publish and subscribe. Built by ``NexusStore`` as ``store.realtime``."""

    def __init__(self, backends: Backends) -> None:
        self._redis = backends.redis
        self._prefix = f"{backends.settings.redis.namespace}:realtime:"

    def _channel(self, channel: object) -> str:
        if not isinstance(channel, str) or _CHANNEL.fullmatch(channel) is None:
            raise ValidationError(
                "channel",
                "must be 1-200 characters of letters, digits and _.:@+=/%- "
                f"(no spaces, braces or glob characters), got {channel!r}",
            )
        return self._prefix + channel

    async def put(self, message: RealtimeMessage) -> int:
        """Publish ``message`` (the route target of ``store.put``)."""
        record_of(RealtimeMessage, message, "message")
        return await self.publish(message.channel, message.message)

    async def publish(self, channel: str, message: Any) -> int:
        """Send ``message`` (JSON-encodable) to ``channel``; return how many subscribers of
        this server (all nodes, on a cluster) received it."""
        name = self._channel(channel)
        encoded = JSON.dumps(message, field="message")
        if len(encoded) > _MAX_MESSAGE_BYTES:
            raise ValidationError("message", f"is over {_MAX_MESSAGE_BYTES} bytes as JSON")
        with operation(self._redis, "realtime.publish", "realtime"), self._redis.unavailable():
            receivers = await self._redis.pubsub_client().publish(name, encoded)
        return int(receivers)

    def subscribe(self, pattern: str) -> Subscription:
        """Messages of every channel matching the glob ``pattern`` (``"chat:*"``)."""
        if not isinstance(pattern, str) or _PATTERN.fullmatch(pattern) is None:
            raise ValidationError(
                "pattern",
                "must be 1-200 characters of letters, digits, _.:@+=/%- and the glob "
                f"characters *?[]^, got {pattern!r}",
            )
        pubsub = self._redis.pubsub_client().pubsub()
        return Subscription(self._redis, pubsub, self._prefix + pattern, self._prefix)
