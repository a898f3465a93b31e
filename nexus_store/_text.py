"""The one check every caller-supplied string goes through before it reaches a backend.

A string that a backend must store or send as text has to be valid Unicode that encodes to
UTF-8: a lone surrogate (``"\\ud800"``, what a broken JSON decoder or a ``surrogateescape``
file name yields) cannot be encoded, and the driver would raise ``UnicodeEncodeError`` from
deep inside a call. NUL is refused too: PostgreSQL text cannot hold it, BSON keys end at it
and C clients of a shared Redis cut keys there. Both are refused up front with a
:class:`ValidationError` naming the field, so a refused call writes nothing.

    checked = text("user_id", value)           # the str itself, or ValidationError

Flags and callbacks get the same treatment: a non-bool is refused rather than read for its
truthiness (:func:`flag`, so ``include_deleted="no"`` cannot silently mean True), and a
callback that is not callable is refused before any work, not when first called halfway
through (:func:`function`).
"""

from __future__ import annotations

from typing import TypeVar

from nexus_store.errors import ValidationError

__all__ = ["flag", "function", "record_of", "text", "text_problem"]

R = TypeVar("R")


def text_problem(value: str) -> str | None:
    """What makes ``value`` unfit to leave the process as text, or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():  # only non-ASCII text can hold a surrogate: skip the encode
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains a lone surrogate (U+{ord(value[exc.start]):04X}), not valid Unicode"
    return None


def text(field: str, value: object) -> str:
    """``value`` if it is a string fit to send as text; ValidationError naming ``field``."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(field, problem)
    return value


def flag(field: str, value: object) -> bool:
    """``value`` if it is True or False; ValidationError naming ``field`` otherwise."""
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be True or False, got {type(value).__name__}")
    return value


def function(field: str, value: object) -> None:
    """ValidationError naming ``field`` unless ``value`` is callable."""
    if not callable(value):
        raise ValidationError(field, f"must be a function, got {type(value).__name__}")


def record_of(kind: type[R], value: object, field: str) -> R:
    """``value`` if it is a ``kind`` (a sub-API's ``put`` record); ValidationError otherwise."""
    if not isinstance(value, kind):
        raise ValidationError(field, f"must be a {kind.__name__}, got {type(value).__name__}")
    return value
