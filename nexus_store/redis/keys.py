"""Key namespacing: every key the SDK writes is ``<namespace>:[<area>:]<escaped parts>``.

Caller-supplied parts are percent-escaped, so a part can never contain the separator, a glob
character, whitespace or a hash-tag brace, and so can never reach into another key's namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nexus_store._text import text_problem
from nexus_store.errors import ValidationError

__all__ = ["MAX_KEY_PART_BYTES", "Keyspace", "escape_part"]

MAX_KEY_PART_BYTES = 512
_UNSAFE = re.compile(rb"[^A-Za-z0-9_.\-@+=/]")
_SAFE = re.compile(r"[A-Za-z0-9_.\-@+=/]+")


def escape_part(part: str | int, *, field: str = "key") -> str:
    """Percent-escape one caller-supplied key part; refuse empty, over-long or non-text
    parts (a lone surrogate or NUL: see ``nexus_store._text``)."""
    if isinstance(part, bool) or not isinstance(part, str | int):
        raise ValidationError(field, f"must be a string, got {type(part).__name__}")
    text = str(part)
    if len(text) <= MAX_KEY_PART_BYTES and _SAFE.fullmatch(text):
        return text  # nothing to escape: the common case, kept cheap for hot paths
    problem = text_problem(text)
    if problem is not None:
        raise ValidationError(field, problem)
    raw = text.encode("utf-8")
    if not raw:
        raise ValidationError(field, "must not be empty")
    escaped = _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], raw)
    if len(escaped) > MAX_KEY_PART_BYTES:
        raise ValidationError(
            field, f"is {len(escaped)} bytes once escaped; the limit is {MAX_KEY_PART_BYTES}"
        )
    return escaped.decode("ascii")


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Builds the keys of one area. ``prefix`` already ends with ``:``."""

    area: str
    prefix: str

    def key(self, *parts: str | int, field: str = "key") -> str:
        """``prefix`` + escaped parts joined by ``:``."""
        return self.prefix + ":".join(escape_part(part, field=field) for part in parts)

    def tagged(self, kind: str, tag: str | int, *parts: str | int, field: str = "key") -> str:
        """A key whose escaped ``tag`` is a Redis Cluster hash tag: ``prefix kind:{tag}:parts``.

        Keys that share a tag land in one cluster slot, so one Lua script may touch them all.
        """
        tail = "".join(":" + escape_part(part, field=field) for part in parts)
        return f"{self.prefix}{kind}:{{{escape_part(tag, field=field)}}}{tail}"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this area (prefix has no glob characters)."""
        return self.prefix + "*"
