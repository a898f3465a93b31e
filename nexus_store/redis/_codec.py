"""Value encodings for Redis: JSON (orjson) or msgpack. Never pickle.

A shared store is readable and writable by every process that holds its password; decoding
pickle from it would let any of them run code in ours. Both codecs here only build plain data.

    codec = codec_for("msgpack")
    raw = codec.dumps({"a": 1}, field="value")
    assert codec.loads(raw) == {"a": 1}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import orjson

from nexus_store.errors import ValidationError

__all__ = ["JSON", "MSGPACK", "Codec", "DecodeError", "codec_for"]


class DecodeError(ValueError):
    """Stored bytes are not a value this codec wrote (foreign, corrupt or truncated)."""


# A msgpack float 64 (0xcb) whose exponent bits are all ones: NaN or ±Infinity.
_NON_FINITE_DOUBLE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
_SCALARS = (str, int, float, type(None))


def _plain_data_problem(value: Any, field: str, *, binary: bool) -> tuple[str, str] | None:
    """``(path, problem)`` of the first part of ``value`` that would not read back equal.

    Needed because both encoders change such values without a word: orjson
    writes NaN and ±Infinity as ``null`` and datetimes, UUIDs and dataclasses as strings or
    objects; msgpack keeps NaN but its reader refuses non-string map keys (the value would
    silently read back as absent). ``binary``: the format carries ``bytes`` (msgpack).
    Paths read like ``value.items[2].price``.
    """
    pending: list[tuple[Any, str]] = [(value, field)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, f"{item} is not a finite number; it cannot be stored faithfully"
        elif isinstance(item, _SCALARS) or (binary and isinstance(item, bytes)):
            # bool is an int; str, int and float subclasses (enums) read back as their base.
            continue
        elif isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str):
                    return path, f"keys must be strings, got {type(key).__name__}"
                pending.append((member, f"{path}.{key}"))
        elif isinstance(item, list | tuple):  # a tuple reads back as a list
            pending.extend((member, f"{path}[{i}]") for i, member in enumerate(item))
        else:
            return path, (
                f"{type(item).__name__} is not plain data (use dict, list, str, int, float, "
                f"bool, None{', bytes' if binary else ''})"
            )
    return None


@dataclass(frozen=True, slots=True)
class Codec:
    """Encodes plain data (dict, list, str, int, float, bool, None) to bytes and back.

    What would not read back equal is refused with a ValidationError naming its path: NaN
    and ±Infinity, non-string keys, any other type. The one normalisation: a tuple reads
    back as a list (and a str or int enum as its value).
    """

    name: Literal["json", "msgpack"]

    def dumps(self, value: Any, *, field: str = "value") -> bytes:
        """Encode ``value``; refuse what the format cannot carry with a ValidationError."""
        return self.dumps_entry(None, value, field=field)

    def dumps_entry(self, header: int | None, value: Any, *, field: str = "value") -> bytes:
        """Encode ``[header, value]`` (``value`` alone when ``header`` is None), checking
        ``value`` as :meth:`dumps` does."""
        document = value if header is None else [header, value]
        binary = self.name == "msgpack"
        try:
            if binary:
                raw: bytes = msgpack.packb(document, use_bin_type=True, datetime=False)
            else:
                raw = orjson.dumps(document)
        except (TypeError, ValueError, OverflowError) as exc:
            problem = _plain_data_problem(value, field, binary=binary)
            raise ValidationError(
                *problem or (field, f"cannot be encoded as {self.name}: {exc} (plain data only)")
            ) from None
        # Reading the bytes back is the cheap test (a few hundred ns in C); only a value
        # that does not survive it, or msgpack holding a float with an all-ones exponent
        # (±Infinity survives msgpack, but JSON cannot carry it: both refuse it alike), is
        # walked in Python to find and name the culprit.
        try:
            suspect = self.loads(raw) != document or (
                binary and _NON_FINITE_DOUBLE.search(raw) is not None
            )
        except DecodeError:
            suspect = True
        if suspect:
            problem = _plain_data_problem(value, field, binary=binary)
            if problem is not None:
                raise ValidationError(*problem)
        return raw

    def loads(self, raw: bytes) -> Any:
        """Decode bytes written by :meth:`dumps`; raise :class:`DecodeError` otherwise."""
        try:
            if self.name == "json":
                return orjson.loads(raw)
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
            raise DecodeError(f"not a {self.name} value: {type(exc).__name__}") from None


JSON = Codec("json")
MSGPACK = Codec("msgpack")


def codec_for(name: Literal["json", "msgpack"]) -> Codec:
    return JSON if name == "json" else MSGPACK
