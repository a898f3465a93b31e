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
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidDocument
from pydantic import Field, field_validator, model_validator

from nexus_store._errors import describe
from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import (
    BSON_CODEC,
    InputModel,
    clean_document,
    screen_mapping,
    screen_values,
    utc_millis,
)
from nexus_store.mongo._layout import EVENT_ID_MAX_LENGTH, EVENT_NAME_MAX_LENGTH

__all__ = ["Event", "encode_event", "new_event_id"]


class _Clock:
    """Event ids and default timestamps from one clock read, formatted once per millisecond.

    An id is milliseconds since the epoch (12 hex digits), a random per-process tag (10) and
    a counter (6), so ids sort by time and two processes never collide.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self.start_process()

    def start_process(self) -> None:
        # a forked child must not reuse its parent's tag
        self._tag = os.urandom(5).hex()
        self._current = (-1, "", DatetimeMS(0))

    def stamp(self) -> tuple[str, DatetimeMS]:
        """A new event id and the BSON date of now (shared by the events of a millisecond)."""
        millis = time.time_ns() // 1_000_000
        current = self._current  # one tuple, so threads never mix two milliseconds
        if current[0] != millis:
            current = self._current = (millis, f"{millis:012x}{self._tag}", DatetimeMS(millis))
        return f"{current[1]}{next(self._counter) & 0xFFFFFF:06x}", current[2]


_clock = _Clock()
os.register_at_fork(after_in_child=_clock.start_process)


def new_event_id() -> str:
    """A client-generated, time-ordered, unique id: 28 hex digits. Cheaper than an ObjectId."""
    return _clock.stamp()[0]


def _now() -> dt.datetime:
    """Now, in UTC, at the millisecond precision BSON keeps."""
    return dt.datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, dt.UTC)


def _text(value: Any, field: str, max_length: int) -> str:
    """``value`` if it is non-empty text of at most ``max_length`` characters without NUL."""
    if type(value) is str:
        text: str = value
    elif isinstance(value, str):
        text = str.__str__(value)  # a str subclass (a StrEnum member): store the text
    else:
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not text:
        raise ValidationError(field, "must not be empty")
    if len(text) > max_length:
        raise ValidationError(field, f"longer than {max_length} characters")
    if "\x00" in text:
        raise ValidationError(field, "must not contain NUL")
    return text


def _optional_id(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field, EVENT_ID_MAX_LENGTH)


def _identified(user_id: str | None, anonymous_id: str | None) -> None:
    if user_id is None and anonymous_id is None:
        raise ValidationError("user_id", "one of user_id and anonymous_id is required")


class Event(InputModel):
    """One analytics event.

    ``event_id`` is the idempotency key: resending an event with the same id stores it once.
    One of ``user_id`` and ``anonymous_id`` is required. ``ts`` must be timezone-aware; it
    is kept in UTC at millisecond precision. ``context`` holds Segment's context keys:
    ``ip``, ``user_agent``, ``library`` ({name, version}), ``page`` ({path, url, referrer,
    title}) and any others.

    ``store.events.track(...)`` applies the same rules without building this model.
    """

    name: str
    user_id: str | None = None
    anonymous_id: str | None = None
    session_id: str | None = None
    ts: dt.datetime = Field(default_factory=_now)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    event_id: str = Field(default_factory=new_event_id)

    @field_validator("name", mode="plain")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _text(value, "name", EVENT_NAME_MAX_LENGTH)

    @field_validator("event_id", mode="plain")
    @classmethod
    def _event_id(cls, value: Any) -> str:
        return _text(value, "event_id", EVENT_ID_MAX_LENGTH)

    @field_validator("user_id", "anonymous_id", "session_id", mode="plain")
    @classmethod
    def _ids(cls, value: Any, info: pydantic.ValidationInfo) -> str | None:
        return _optional_id(value, str(info.field_name))

    @field_validator("ts")
    @classmethod
    def _aware_utc(cls, value: dt.datetime) -> dt.datetime:
        return utc_millis(value, "ts")

    @field_validator("properties", "context", mode="plain")
    @classmethod
    def _safe_mapping(cls, value: Any, info: pydantic.ValidationInfo) -> dict[str, Any]:
        return screen_mapping(value, str(info.field_name))

    @model_validator(mode="after")
    def _identity(self) -> Event:
        _identified(self.user_id, self.anonymous_id)
        return self

    def to_document(self) -> dict[str, Any]:
        """The BSON document stored for this event (absent ids are left out)."""
        return _document(
            self.event_id,
            self.name,
            self.ts,
            (self.user_id, self.anonymous_id, self.session_id),
            properties=self.properties,
            context=self.context,
        )

    def to_bson(self) -> bytes:
        """:meth:`to_document` encoded as BSON, checked again (the model's dicts can change)."""
        return encode_event(
            self.name,
            user_id=self.user_id,
            anonymous_id=self.anonymous_id,
            session_id=self.session_id,
            properties=self.properties,
            context=self.context,
            ts=self.ts,
            event_id=self.event_id,
        )[1]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Event:
        """Rebuild an event read back from MongoDB (``_id`` and unknown fields are ignored)."""
        return cls(**{key: document[key] for key in cls.model_fields if key in document})


_NO_MAPPING: dict[str, Any] = {}  # encoded only, never handed out


def _document(
    event_id: str,
    name: str,
    ts: dt.datetime,
    ids: tuple[str | None, str | None, str | None],
    *,
    properties: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, Any]:
    """The stored layout of an event. ``ids`` are the user, anonymous and session ids; absent
    ones are left out (the validator allows a missing field, not a null one)."""
    document: dict[str, Any] = {"event_id": event_id, "name": name, "ts": ts}
    user_id, anonymous_id, session_id = ids
    if user_id is not None:
        document["user_id"] = user_id
    if anonymous_id is not None:
        document["anonymous_id"] = anonymous_id
    if session_id is not None:
        document["session_id"] = session_id
    document["properties"] = properties
    document["context"] = context
    return document


def encode_event(
    name: Any,
    *,
    user_id: Any = None,
    anonymous_id: Any = None,
    session_id: Any = None,
    properties: Any = None,
    context: Any = None,
    ts: Any = None,
    event_id: Any = None,
) -> tuple[str, bytes]:
    """Check an event's fields as :class:`Event` does and return its id and BSON document.

    The writer's hot path: no model is built, values are screened by orjson and keys by the
    BSON encoder's ``check_keys`` as the document is encoded, both in C; only a refusal pays
    for the Python walk that names the path.
    """
    name = _text(name, "name", EVENT_NAME_MAX_LENGTH)
    user_id = _optional_id(user_id, "user_id")
    anonymous_id = _optional_id(anonymous_id, "anonymous_id")
    session_id = _optional_id(session_id, "session_id")
    _identified(user_id, anonymous_id)
    if ts is None:
        stamped_id, ts = _clock.stamp()
    else:
        stamped_id = None
        if not isinstance(ts, dt.datetime):
            raise ValidationError("ts", f"must be a datetime, got {type(ts).__name__}")
        if ts.utcoffset() is None:
            utc_millis(ts, "ts")  # raises: naive
        # else BSON stores it in UTC at millisecond precision, as utc_millis would
    if event_id is None:
        event_id = stamped_id or new_event_id()
    else:
        event_id = _text(event_id, "event_id", EVENT_ID_MAX_LENGTH)
    document = _document(
        event_id,
        name,
        ts,
        (user_id, anonymous_id, session_id),
        properties=_NO_MAPPING if properties is None else screen_values(properties, "properties"),
        context=_NO_MAPPING if context is None else screen_values(context, "context"),
    )
    try:
        return event_id, bson.encode(document, check_keys=True, codec_options=BSON_CODEC)
    except (InvalidDocument, OverflowError) as exc:
        # raises, naming the path
        clean_document(document["properties"], "properties", binary=True)
        clean_document(document["context"], "context", binary=True)
        raise ValidationError("event", describe(exc)) from None
