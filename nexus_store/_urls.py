"""Checking connection URLs when the settings load, so that no driver meets a malformed one.

A URL that passed the settings but that a driver cannot parse fails later, from deep inside a
call, as a raw ``ValueError`` (``invalid literal for int()``), ``InvalidURI`` or
``ConfigurationError`` of the driver, possibly with the URL and its password in the message.
Each check here raises ``ValueError`` with a message that quotes nothing of the URL (a
malformed URL may put its password where a host or port belongs); the settings turn it into
a :class:`~nexus_store.errors.ConfigurationError` naming the setting.

Rules, per backend:

- every URL: a scheme the backend knows, a host (``[…]`` for IPv6), ports from 1 to 65535
  made of digits, no ``@`` left unencoded in the user name or password, query options the
  driver knows (with values it accepts where it can tell), no fragment;
- PostgreSQL (``postgresql``, ``postgres``, ``postgresql+psycopg``): one host, or none (the
  local socket, or ``?host=``); the database name at most 63 bytes; options are libpq's
  connection keywords;
- MongoDB (``mongodb``, ``mongodb+srv``): a comma-separated host list; ``mongodb+srv`` takes
  exactly one host name (at least three labels) and no port; the user name and password
  follow RFC 3986 as PyMongo requires; the database name has none of ``/\\. "$``; options
  are PyMongo's URI options with valid values;
- Redis (``redis``, ``rediss``, ``unix``): one host, ``/N`` a database number 0-15 (the area
  map decides the database; this only catches typos), options are redis-py's URL options;
  ``unix`` needs a socket path.

Drivers are imported here only when a URL carries query options, to check them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

__all__ = ["check_mongo_url", "check_postgres_url", "check_redis_url"]

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
_PORT = re.compile(r"[0-9]{1,5}")
_UNQUOTED_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MONGO_DATABASE_FORBIDDEN = re.compile(r'[/\\. "$]')
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_MONGO_SCHEMES = ("mongodb", "mongodb+srv")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# String-valued connection options redis-py passes through from a URL (the typed ones are
# in its URL_QUERY_ARGUMENT_PARSERS).
_REDIS_STRING_OPTIONS = frozenset(
    {
        "client_name",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_keyfile",
        "ssl_password",
    }
)
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def _split(raw: str, schemes: tuple[str, ...], what: str) -> SplitResult:
    if not unquote(raw).isprintable() or any(char.isspace() for char in raw):
        raise ValueError(f"{what} URL must not contain spaces or control characters (%00 included)")
    try:
        parts = urlsplit(raw)
    except ValueError:
        # urlsplit refuses malformed IPv6 brackets; its message would quote the URL.
        raise ValueError(f"{what} URL is malformed (check the [IPv6] host brackets)") from None
    # As written, not urlsplit's lowercased scheme: some driver versions (redis-py 8.0) refuse
    # "Redis://".
    scheme = raw.partition(":")[0]
    if parts.scheme not in schemes or scheme != parts.scheme:
        raise ValueError(
            f"{what} URL scheme must be one of {', '.join(schemes)}"
            + (f", got {scheme!r}" if scheme.isalnum() else "")
        )
    if parts.fragment or raw.endswith("#"):
        raise ValueError(f"{what} URL must not have a #fragment")
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and "@" in userinfo:
        raise ValueError(f"{what} URL: percent-encode '@' in the user name or password (as %40)")
    return parts


def _hosts(parts: SplitResult) -> list[str]:
    """The host[:port] entries of the network location (without the user information)."""
    hosts = parts.netloc.rpartition("@")[2]
    return hosts.split(",") if hosts else []


def _check_host(entry: str, what: str, *, port_allowed: bool = True) -> None:
    """One ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` entry."""
    if entry.startswith("["):
        address, bracket, rest = entry[1:].partition("]")
        if not bracket:
            raise ValueError(f"{what} URL: an IPv6 host needs its closing bracket")
        try:
            ipaddress.IPv6Address(unquote(address))
        except ValueError:
            raise ValueError(f"{what} URL: the bracketed host is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ValueError(f"{what} URL: only :port may follow an [IPv6] host")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = entry.partition(":")
        port = port_text if colon else None
        name = unquote(host)
        if name.startswith("/"):  # a percent-encoded socket path (libpq, PyMongo)
            pass
        elif not host:
            raise ValueError(f"{what} URL: a host is missing")
        elif len(host) > 253 or _HOSTNAME.fullmatch(host) is None:
            raise ValueError(
                f"{what} URL: the host must be a name, an IPv4 address or an [IPv6] address"
            )
    if port is None:
        return
    if not port_allowed:
        raise ValueError(f"{what} URL: mongodb+srv takes no port (DNS gives it)")
    if _PORT.fullmatch(port) is None or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} URL: the port must be a number from 1 to 65535")


def _options(parts: SplitResult, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"{what} URL: the query string is not name=value pairs") from None


def _unknown(what: str, name: str, known: str) -> ValueError:
    shown = name if name.isidentifier() and len(name) <= 40 else "an option"
    return ValueError(f"{what} URL: {shown} is not a {known} option")


# -- PostgreSQL ------------------------------------------------------------------------------


def check_postgres_url(raw: str, what: str = "PostgreSQL") -> None:
    """Raise ValueError unless ``raw`` is a PostgreSQL URL that libpq and SQLAlchemy parse."""
    parts = _split(raw, _POSTGRES_SCHEMES, what)
    hosts = _hosts(parts)
    if len(hosts) > 1:
        raise ValueError(f"{what} URL: give one host (several go in ?host=a,b&port=p,q)")
    for entry in hosts:
        _check_host(entry, what)
    database = unquote(parts.path.removeprefix("/"))
    if "/" in database or len(database.encode()) > 63:
        raise ValueError(f"{what} URL: the database name must be at most 63 bytes, without '/'")
    options = _options(parts, what)
    if options:
        from psycopg import pq  # the driver knows libpq's keywords; loaded only for options

        keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
        for name, value in options:
            if name not in keywords:
                raise _unknown(what, name, "libpq connection")
            if name == "sslmode" and value not in _SSLMODES:
                raise ValueError(f"{what} URL: sslmode must be one of {', '.join(_SSLMODES)}")
            if name in ("port", "connect_timeout") and not all(
                _PORT.fullmatch(item) for item in value.split(",")
            ):
                raise ValueError(f"{what} URL: {name} must be a number")


# -- MongoDB ---------------------------------------------------------------------------------


def check_mongo_url(raw: str, what: str = "MongoDB") -> None:
    """Raise ValueError unless ``raw`` is a MongoDB URL that PyMongo accepts."""
    parts = _split(raw, _MONGO_SCHEMES, what)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and (userinfo.count(":") > 1 or _UNQUOTED_PERCENT.search(userinfo)):
        raise ValueError(
            f"{what} URL: percent-encode ':', '/', '%' and '@' in the user name and password"
        )
    hosts = _hosts(parts)
    if not hosts:
        raise ValueError(f"{what} URL: a host is missing")
    srv = parts.scheme == "mongodb+srv"
    if srv and (len(hosts) != 1 or hosts[0].startswith("[") or hosts[0].count(".") < 2):
        raise ValueError(
            f"{what} URL: mongodb+srv needs exactly one host name with at least three labels"
        )
    for entry in hosts:
        _check_host(entry, what, port_allowed=not srv)
    database = unquote(parts.path.removeprefix("/"))
    if _MONGO_DATABASE_FORBIDDEN.search(database) or len(database) > 63:
        raise ValueError(f'{what} URL: the database name must not contain /\\. "$')
    if parts.query:
        _check_mongo_options(parts.query, what)


def _check_mongo_options(query: str, what: str) -> None:
    # PyMongo's own option table and validators, without the DNS lookups of parse_uri.
    from pymongo.uri_parser import split_options

    try:
        split_options(query, validate=True, warn=False)
    except Exception:  # its messages may quote a value (a password); say less
        raise ValueError(
            f"{what} URL: an option is unknown or has an invalid value (see PyMongo's URI options)"
        ) from None


# -- Redis -----------------------------------------------------------------------------------


def check_redis_url(raw: str, what: str = "Redis") -> None:
    """Raise ValueError unless ``raw`` is a Redis URL that redis-py parses."""
    parts = _split(raw, _REDIS_SCHEMES, what)
    if parts.scheme == "unix":
        if not parts.path or not parts.path.startswith("/"):
            raise ValueError(f"{what} URL: unix:// needs a socket path (unix:///run/redis.sock)")
    else:
        hosts = _hosts(parts)
        if len(hosts) != 1:
            raise ValueError(f"{what} URL: give exactly one host")
        _check_host(hosts[0], what)
        database = parts.path.removeprefix("/")
        if database and (not database.isdigit() or not 0 <= int(database) <= 15):
            raise ValueError(f"{what} URL: the database (/N) must be a number from 0 to 15")
    options = _options(parts, what)
    if options:
        _check_redis_options(options, what)


def _check_redis_options(options: list[tuple[str, str]], what: str) -> None:
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    for name, value in options:
        parser: Callable[[str], object] | None = URL_QUERY_ARGUMENT_PARSERS.get(name)  # type: ignore[assignment]
        if parser is None:
            if name not in _REDIS_STRING_OPTIONS:
                raise _unknown(what, name, "redis-py URL")
            continue
        try:
            parser(value)
        except (ValueError, TypeError):
            raise ValueError(f"{what} URL: {name} has an invalid value") from None
