"""Masking of secrets in URLs and in any text that leaves the SDK (logs, errors, reprs)."""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_MASK = "***"
# user:password@ inside any URL-looking text, including several hosts (mongodb://a:b@h1,h2).
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@"
)
# password=... in libpq keyword strings and query strings.
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<key>password\s*=\s*)(?P<pw>'[^']*'|[^\s&;]+)")

_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Remember a raw secret so that :func:`scrub` removes it wherever it appears."""
    if not secret or len(secret) < 3:  # masking "a" everywhere would mangle every message
        return
    with _known_lock:
        _known_secrets.add(secret)
        _known_secrets.add(quote(secret, safe=""))


def scrub(text: str) -> str:
    """Return ``text`` with URL passwords, ``password=`` values and known secrets masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{_MASK}", text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def scrub_value(value: Any) -> Any:
    """Scrub strings inside nested dicts, lists and tuples (log event dicts, reports)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(item) for item in value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def _password(url: str) -> str | None:
    """The password of ``url``, also when the URL is malformed (urlsplit refuses bad IPv6
    brackets): the settings refuse such a URL, and their message must not show it either."""
    if "://" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        found = _URL_CREDENTIALS.search(url)
        return found["pw"] if found else None


class SecretURL:
    """A connection URL whose password never shows in ``str``, ``repr`` or serialised output.

    ``url.get_secret_value()`` returns the real URL for the driver.

        >>> SecretURL("redis://:hunter2@localhost:6379/0")
        SecretURL('redis://:***@localhost:6379/0')
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw
        password = _password(raw)
        if password:
            register_secret(unquote(password))
            register_secret(password)

    def get_secret_value(self) -> str:
        return self._raw

    @property
    def scheme(self) -> str:
        return self._raw.partition("://")[0] if "://" in self._raw else ""

    @property
    def masked(self) -> str:
        return scrub(self._raw)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"SecretURL({self.masked!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretURL) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def build(value: Any) -> SecretURL:
            if isinstance(value, SecretURL):
                return value
            if not isinstance(value, str) or not value.strip():
                raise ValueError("must be a non-empty URL string")
            return cls(value.strip())

        return core_schema.no_info_plain_validator_function(
            build,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda url: url.masked, when_used="always"
            ),
        )
