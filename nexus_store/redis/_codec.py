"""Value encodings for Redis: JSON (orjson) or msgpack. Never pickle.

A shared store is readable and writable by every process that holds its password; decoding
pickle from it would let any of them run code in ours. Both codecs here only build plain data.

    codec = codec_for("msgpack")
    raw = codec.dumps({"a": 1}, field="value")
    assert codec.loads(raw) == {"a": 1}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import orjson

from nexus_store.errors import ValidationError

__all__ = ["JSON", "MSGPACK", "Codec", "DecodeError", "codec_for"]


class DecodeError(ValueError):
    """Stored bytes are not a value this codec wrote (foreign, corrupt or truncated)."""


@dataclass(frozen=True, slots=True)
class Codec:
    """Encodes plain data (dict, list, str, int, float, bool, None) to bytes and back."""

    name: Literal["json", "msgpack"]

    def dumps(self, value: Any, *, field: str = "value") -> bytes:
        """Encode ``value``; refuse what the format cannot carry with a ValidationError."""
        try:
            if self.name == "json":
                return orjson.dumps(value)
            packed: bytes = msgpack.packb(value, use_bin_type=True, datetime=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(
                field, f"cannot be encoded as {self.name}: {exc} (plain data only)"
            ) from None
        return packed

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
