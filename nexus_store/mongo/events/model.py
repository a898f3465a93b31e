"""The analytics :class:`Event`, close to Segment's ``track`` call.

    event = Event(name="checkout", user_id="u1", properties={"total": 42.5},
                  context={"ip": "203.0.113.9", "page": {"path": "/cart"}})
    await store.put(event)

Bad input raises :class:`nexus_store.errors.ValidationError` naming the field
(``properties.$where``, ``ts``, ``user_id``), never pydantic's own error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from typing import Any

import bson
import pydantic
from pydantic import Field, field_validator, model_validator

from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import (
    NO_NUL,
    InputModel,
    screen_mapping,
    utc_millis,
    validation_error,
)

__all__ = ["Event", "new_event_id", "validate_event"]

_ID_MAX = 128
_NAME_MAX = 200


_process_tag = os.urandom(5).hex()
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _new_process_tag() -> None:
    global _process_tag  # noqa: PLW0603 - a forked child must not reuse its parent's tag
    _process_tag = os.urandom(5).hex()


os.register_at_fork(after_in_child=_new_process_tag)


def new_event_id() -> str:
    """A client-generated, time-ordered, unique id: 28 hex digits.

    Milliseconds since the epoch (12), a random per-process tag (10) and a counter (6), so
    ids sort by time and two processes never collide. Cheaper than an ObjectId.
    """
    counter = next(_counter) & 0xFFFFFF
    return f"{time.time_ns() // 1_000_000:012x}{_process_tag}{counter:06x}"


def _now() -> dt.datetime:
    """Now, in UTC, at the millisecond precision BSON keeps."""
    return dt.datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, dt.UTC)


class Event(InputModel):
    """One analytics event.

    ``event_id`` is the idempotency key: resending an event with the same id stores it once.
    One of ``user_id`` and ``anonymous_id`` is required. ``ts`` must be timezone-aware; it
    is kept in UTC at millisecond precision. ``context`` holds Segment's context keys:
    ``ip``, ``user_agent``, ``library`` ({name, version}), ``page`` ({path, url, referrer,
    title}) and any others.
    """

    name: str = Field(min_length=1, max_length=_NAME_MAX, pattern=NO_NUL)
    user_id: str | None = Field(None, min_length=1, max_length=_ID_MAX, pattern=NO_NUL)
    anonymous_id: str | None = Field(None, min_length=1, max_length=_ID_MAX, pattern=NO_NUL)
    session_id: str | None = Field(None, min_length=1, max_length=_ID_MAX, pattern=NO_NUL)
    ts: dt.datetime = Field(default_factory=_now)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    event_id: str = Field(
        default_factory=new_event_id, min_length=1, max_length=_ID_MAX, pattern=NO_NUL
    )

    @field_validator("ts")
    @classmethod
    def _aware_utc(cls, value: dt.datetime) -> dt.datetime:
        return utc_millis(value, "ts")

    @field_validator("properties", "context", mode="plain")
    @classmethod
    def _safe_mapping(cls, value: Any, info: pydantic.ValidationInfo) -> dict[str, Any]:
        return screen_mapping(value, str(info.field_name))

    @model_validator(mode="after")
    def _identified(self) -> Event:
        if self.user_id is None and self.anonymous_id is None:
            raise ValidationError("user_id", "one of user_id and anonymous_id is required")
        return self

    def to_document(self) -> dict[str, Any]:
        """The BSON document stored for this event (absent ids are left out)."""
        document: dict[str, Any] = {"event_id": self.event_id, "name": self.name, "ts": self.ts}
        if self.user_id is not None:
            document["user_id"] = self.user_id
        if self.anonymous_id is not None:
            document["anonymous_id"] = self.anonymous_id
        if self.session_id is not None:
            document["session_id"] = self.session_id
        document["properties"] = self.properties
        document["context"] = self.context
        return document

    def to_bson(self) -> bytes:
        """:meth:`to_document` encoded as BSON (what the writer sends)."""
        return bson.encode(self.to_document())

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Event:
        """Rebuild an event read back from MongoDB (``_id`` and unknown fields are ignored)."""
        return cls(**{key: document[key] for key in cls.model_fields if key in document})


def validate_event(fields: dict[str, Any]) -> Event:
    """``Event(**fields)`` without the keyword round trip (the writer's hot path)."""
    try:
        return Event.__pydantic_validator__.validate_python(fields)  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None
