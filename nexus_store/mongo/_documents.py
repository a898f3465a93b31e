"""Making caller data safe to store in MongoDB: keys, values and query values.

MongoDB reads ``$``-prefixed keys as operators and dotted keys as paths, and BSON keys are
C strings, so a NUL ends them early. Every mapping a caller hands us (event properties and
context, audit ``before``/``after``) goes through :func:`clean_document`, which refuses such
keys with a :class:`~nexus_store.errors.ValidationError` naming the full path
(``properties.$where``) instead of storing or interpreting them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import bson
import orjson
import pydantic
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from nexus_store._errors import describe
from nexus_store._text import text_problem
from nexus_store.errors import ValidationError

__all__ = [
    "BSON_CODEC",
    "MAX_DEPTH",
    "NO_NUL",
    "InputModel",
    "clean_document",
    "page_limit",
    "query_text",
    "screen_mapping",
    "screen_values",
    "time_range",
    "utc_millis",
    "validation_error",
]

#: ``Field(pattern=NO_NUL)``: text without NUL, checked inside pydantic-core.
NO_NUL = r"^[^\x00]*$"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: How deep a caller's mapping may nest, counting the mapping itself (``properties`` holding
#: a list of dicts is 3 levels). One limit for every path that stores caller data; with the
#: stored document's own level it stays far below MongoDB's 100 levels.
MAX_DEPTH = 32
#: How caller documents are encoded: a ``uuid.UUID`` becomes standard binary subtype 4, as
#: the client's ``uuidRepresentation="standard"`` does for documents it encodes itself.
BSON_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    uuid_representation=UuidRepresentation.STANDARD
)
# orjson hands these to the ``default`` hook instead of serialising them itself, so that
# the screen accepts exactly what clean_document accepts (orjson alone would take
# dataclasses, dates and times, and StrEnum/IntEnum members as text).
_SCREEN_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_MAX_PAGE = 1000


def utc_millis(value: dt.datetime, field: str) -> dt.datetime:
    """``value`` in UTC, cut to the millisecond BSON keeps; naive datetimes are refused."""
    if not isinstance(value, dt.datetime):
        raise ValidationError(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "naive datetime; give a timezone-aware datetime (UTC)")
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def time_range(start: dt.datetime, end: dt.datetime) -> dict[str, dt.datetime]:
    """The filter ``start <= value < end``, both ends as BSON keeps them; empty ranges refused."""
    start, end = utc_millis(start, "start"), utc_millis(end, "end")
    if start >= end:
        raise ValidationError("end", "must be later than start")
    return {"$gte": start, "$lt": end}


def page_limit(limit: int) -> int:
    """``limit`` if it is a page size a query may ask for (1 to 1000)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_PAGE:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_PAGE}")
    return limit


def _join(parent: str, key: str | int) -> str:
    return f"{parent}.{key}"


def _check_key(key: Any, parent: str) -> str:
    if type(key) is not str:
        raise ValidationError(parent, f"keys must be strings, got {type(key).__name__}")
    if not key:
        raise ValidationError(_join(parent, key), "empty key")
    if key[0] == "$":
        raise ValidationError(
            _join(parent, key), "keys must not start with '$' (MongoDB operator syntax)"
        )
    if "." in key:
        raise ValidationError(_join(parent, key), "keys must not contain '.' (MongoDB path syntax)")
    if "\x00" in key:
        raise ValidationError(_join(parent, key), "keys must not contain NUL")
    return key


def _clean_value(value: Any, parent: str, key: str | int, depth: int, binary: bool) -> Any:
    # The hot path: exact builtin scalars, checked without building the field path.
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValidationError(_join(parent, key), "integer does not fit in 64 bits")
        return value
    if value is None or kind is bool or kind is float:
        return value
    return _clean_other(value, parent, key, depth, binary)


def _clean_other(value: Any, parent: str, key: str | int, depth: int, binary: bool) -> Any:
    path = _join(parent, key)
    if isinstance(value, dict | Mapping):
        _check_depth(depth, path)
        return {
            _check_key(name, path): _clean_value(item, path, name, depth + 1, binary)
            for name, item in value.items()
        }
    if isinstance(value, list | tuple):  # a tuple is stored as an array (read back: a list)
        _check_depth(depth, path)
        return [
            _clean_value(item, path, index, depth + 1, binary) for index, item in enumerate(value)
        ]
    if isinstance(value, dt.datetime):
        return utc_millis(value, path)
    if binary and type(value) in (bytes, uuid.UUID):  # BSON binary, read back as the same type
        return value
    for base in (str, int, float):  # str/int/float subclasses such as enums: store the value
        if isinstance(value, base):
            return _clean_value(base(value), parent, key, depth, binary)
    raise ValidationError(path, f"unsupported type {type(value).__name__}; {_SUPPORTED}")


_SUPPORTED = (
    "use str, int (64-bit), float, bool, None, an aware datetime, bytes, uuid.UUID, "
    "lists and mappings (convert Decimal, date, set, enum or model values yourself)"
)


def _check_depth(depth: int, path: str) -> None:
    if depth >= MAX_DEPTH:
        raise ValidationError(path, f"nested deeper than {MAX_DEPTH} levels")


def clean_document(value: Mapping[str, Any], path: str, *, binary: bool = False) -> dict[str, Any]:
    """A plain-dict copy of ``value`` that is safe to store, or a ValidationError.

    Keys must be non-empty strings without a leading ``$``, a ``.`` or NUL. Values may be
    None, bool, int (64-bit), float, str, aware datetime, lists (or tuples) and mappings of
    those, nested at most :data:`MAX_DEPTH` levels; with ``binary`` also ``bytes`` and
    ``uuid.UUID`` (BSON binary subtypes 0 and 4). Datetimes become UTC at millisecond
    precision, as BSON stores them; members of str/int/float enums become their value.

        >>> clean_document({"plan": "pro"}, "properties")
        {'plan': 'pro'}
    """
    return {
        _check_key(key, path): _clean_value(item, path, key, 1, binary)
        for key, item in value.items()
    }


def _screen_default(value: Any) -> Any:
    """orjson's hook for what it does not take itself; ``None`` marks a value as accepted."""
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise TypeError("naive datetime")
        return None
    if isinstance(value, dict | Mapping):  # a dict subclass or another mapping: walk on
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    if type(value) is bytes or isinstance(value, str | float):
        return None
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return None
    raise TypeError(type(value).__name__)


def screen_values(value: Any, field: str) -> dict[str, Any]:
    """``value`` as a dict, once orjson (in C) accepts every value in it; else a ValidationError.

    orjson walks the values: 64-bit integers, JSON types, UUIDs, and through
    :func:`_screen_default` aware datetimes, bytes and str/int/float subclasses. Its output
    bounds the nesting: a value cannot nest deeper than it has ``{`` and ``[`` characters,
    so only a value with more than :data:`MAX_DEPTH` of them is walked to measure it. Keys
    are left to the BSON encoder's ``check_keys`` (see :func:`screen_mapping`). Only when a
    screen objects does the slower :func:`clean_document` run, to name the offending path.
    """
    if type(value) is dict:
        mapping: dict[str, Any] = value
    elif isinstance(value, Mapping):
        mapping = dict(value)
    else:
        raise ValidationError(field, f"must be a mapping, got {type(value).__name__}")
    try:
        encoded = orjson.dumps(mapping, default=_screen_default, option=_SCREEN_OPTIONS)
    except orjson.JSONEncodeError as exc:
        clean_document(mapping, field, binary=True)  # raises, naming the path
        raise ValidationError(field, describe(exc)) from None
    if encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH:
        clean_document(mapping, field, binary=True)  # raises when it is really too deep
    return mapping


def screen_mapping(value: Any, field: str) -> dict[str, Any]:
    """A shallow copy of ``value`` once C-speed screens accept it; else a ValidationError.

    :func:`screen_values` checks the values and the BSON encoder with ``check_keys`` the keys
    (no ``$`` prefix, no dot, no NUL). Only when one objects does the slower
    :func:`clean_document` run, to name the offending path.
    """
    value = screen_values(value, field)
    try:
        bson.encode(value, check_keys=True, codec_options=BSON_CODEC)
    except (InvalidDocument, OverflowError) as exc:
        clean_document(value, field, binary=True)  # raises, naming the path
        raise ValidationError(field, describe(exc)) from None
    return dict(value)


def query_text(value: Any, field: str, *, max_length: int = 1024) -> str:
    """A query value that can only ever be matched as a literal string.

    A dict such as ``{"$ne": None}`` would turn a lookup into an operator, so only ``str``
    passes.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    problem = text_problem(value)  # NUL, or a lone surrogate BSON cannot encode
    if problem is not None:
        raise ValidationError(field, problem)
    if len(value) > max_length:
        raise ValidationError(field, f"longer than {max_length} characters")
    return value


class InputModel(pydantic.BaseModel):
    """A frozen pydantic model whose validation errors are nexus-store ``ValidationError``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None


def validation_error(exc: pydantic.ValidationError) -> ValidationError:
    """The first error of a pydantic failure as ours, naming its field."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValidationError):
        return cause
    field = ".".join(str(part) for part in error["loc"]) or "record"
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_NUL:
        return ValidationError(field, "must not contain NUL")
    return ValidationError(field, error["msg"])
