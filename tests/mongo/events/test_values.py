"""Every Python value a caller may put in event properties: stored faithfully or refused
with its path, the same way through ``track()``, ``put()`` and ``Event(...)``.

What is "stored" is checked on the encoded BSON, decoded with the client's own options
(``tz_aware``, standard UUIDs), which is what real MongoDB hands back; the substitute keeps
UUIDs as plain bytes, so a round trip through it would prove nothing about them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections import OrderedDict, namedtuple
from typing import Any

import bson
import pydantic
import pytest
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions

from nexus_store.errors import ValidationError
from nexus_store.mongo._documents import MAX_DEPTH
from nexus_store.mongo.events.model import Event, encode_event
from nexus_store.mongo.events.service import Events

# How the application's client decodes (MongoBackend: tz_aware=True, standard UUIDs).
CLIENT_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, uuid_representation=UuidRepresentation.STANDARD
)


class Color(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


class Plan(enum.StrEnum):
    PRO = "pro"


@dataclasses.dataclass
class Point:
    x: int


class Profile(pydantic.BaseModel):
    name: str


Pair = namedtuple("Pair", "left right")
TOKYO = dt.timezone(dt.timedelta(hours=9))
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

# value -> what reads back (stored faithfully, or the documented conversion)
STORED: list[tuple[str, Any, Any]] = [
    ("uuid", ID, ID),
    ("bytes", b"\x00\xffraw", b"\x00\xffraw"),
    ("tuple", (1, "a"), [1, "a"]),  # an array, read back as a list (as JSON does)
    ("namedtuple", Pair(1, 2), [1, 2]),
    ("int enum", Size.LARGE, 3),  # members of str/int/float enums: their value
    ("str enum", Plan.PRO, "pro"),
    ("ordered dict", OrderedDict(a=1), {"a": 1}),
    (
        "tokyo datetime",  # the same instant, in UTC, at the millisecond BSON keeps
        dt.datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=TOKYO),
        dt.datetime(2026, 3, 1, 0, 0, 0, 123000, tzinfo=dt.UTC),
    ),
    ("nan", float("nan"), "nan"),
    ("int64 max", 2**63 - 1, 2**63 - 1),  # read back as bson.Int64, an int
]

REFUSED: list[tuple[str, Any]] = [
    ("decimal", decimal.Decimal("9.99")),  # Decimal128 would read back as another type
    ("date", dt.date(2026, 3, 1)),
    ("time", dt.time(12, 0)),
    ("naive datetime", dt.datetime(2026, 3, 1)),
    ("bytearray", bytearray(b"x")),
    ("memoryview", memoryview(b"x")),
    ("set", {1, 2}),
    ("frozenset", frozenset({1})),
    ("plain enum", Color.RED),
    ("dataclass", Point(1)),
    ("pydantic model", Profile(name="a")),
    ("int beyond 64 bits", 2**63),
    ("object", object()),
]


def _read_back(data: bytes) -> Any:
    return bson.decode(data, codec_options=CLIENT_CODEC)["properties"]["deep"]["value"]


@pytest.mark.parametrize(("label", "value", "expected"), STORED, ids=[s[0] for s in STORED])
def test_stored_faithfully(label: str, value: Any, expected: Any) -> None:
    properties = {"deep": {"value": value}}
    _, tracked = encode_event("x", user_id="u", properties=properties)
    put = Event(name="x", user_id="u", properties=properties).to_bson()
    for data in (tracked, put):
        stored = _read_back(data)
        if expected == "nan":
            assert stored != stored  # NaN stays NaN, never null
        else:
            assert stored == expected and isinstance(stored, type(expected)), label
    if isinstance(value, uuid.UUID):  # standard binary subtype 4, not the legacy subtype 3
        raw = bson.decode(tracked)["properties"]["deep"]["value"]
        assert isinstance(raw, Binary) and raw.subtype == 4


@pytest.mark.parametrize(("label", "value"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_with_the_path(label: str, value: Any) -> None:
    properties = {"deep": [{"ok": 1}, {"value": value}]}
    with pytest.raises(ValidationError) as tracked:
        encode_event("x", user_id="u", properties=properties)
    assert tracked.value.field == "properties.deep.1.value", label
    with pytest.raises(ValidationError) as built:
        Event(name="x", user_id="u", properties=properties)
    assert built.value.field == "properties.deep.1.value", label
    with pytest.raises(ValidationError) as in_context:
        encode_event("x", user_id="u", context={"value": value})
    assert in_context.value.field == "context.value", label


def test_scalar_types_of_numeric_libraries() -> None:
    """The two shapes numpy's scalars come in (numpy is not in the toolchain): a subclass of
    float (``numpy.float64``) is stored as its plain value; a number-like object that is no
    int subclass (``numpy.int64``, with ``__index__``) is refused with its path."""

    class Float64(float):
        pass

    class Int64:
        def __index__(self) -> int:
            return 1

    _, data = encode_event("x", user_id="u", properties={"deep": {"value": Float64(1.5)}})
    stored = _read_back(data)
    assert stored == 1.5 and type(stored) is float
    with pytest.raises(ValidationError) as caught:
        encode_event("x", user_id="u", properties={"n": Int64()})
    assert caught.value.field == "properties.n"


def _nested(levels: int) -> dict[str, Any]:
    """A ``properties`` mapping ``levels`` deep, counting itself, alternating dicts and lists."""
    value: Any = "leaf"
    for level in range(levels - 1):
        value = [value] if level % 2 else {"k": value}
    return {"k": value}


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100, 254, 300])
def test_one_nesting_limit_everywhere(levels: int) -> None:
    assert MAX_DEPTH < 100 - 1  # MongoDB's limit, with the event document's own level
    encode_event("x", user_id="u", properties=_nested(MAX_DEPTH))  # at the limit: accepted
    Event(name="x", user_id="u", properties=_nested(MAX_DEPTH))
    for attempt in (
        lambda: encode_event("x", user_id="u", properties=_nested(levels)),
        lambda: encode_event("x", user_id="u", context=_nested(levels)),
        lambda: Event(name="x", user_id="u", properties=_nested(levels)),
    ):
        with pytest.raises(ValidationError) as caught:
            attempt()
        assert f"nested deeper than {MAX_DEPTH} levels" in str(caught.value)
        assert caught.value.field.count(".") == MAX_DEPTH  # the path to the first level too many


def test_braces_in_text_do_not_count_as_nesting() -> None:
    # the fast screen counts { and [ in orjson's output; text full of them is not nesting
    encode_event("x", user_id="u", properties={"text": "{[" * 500})


async def test_put_refuses_what_track_refuses(mongo_stack, open_backends) -> None:
    events = Events(await open_backends(mongo_stack.settings()))
    event = Event(name="x", user_id="u", properties={"ok": 1})
    event.properties["later"] = {"id": ID, "when": dt.date(2026, 1, 1)}  # the dict is mutable
    with pytest.raises(ValidationError) as caught:
        await events.put(event)
    assert caught.value.field == "properties.later.when"
    deep = Event(name="x", user_id="u")
    deep.properties.update(_nested(MAX_DEPTH + 1))
    with pytest.raises(ValidationError, match="nested deeper"):
        await events.put(deep)
    assert events.stats().queued == 0  # a refused call writes nothing
    await events.track("x", user_id="u", properties={"id": ID}, wait=True)
    await events.aclose()
