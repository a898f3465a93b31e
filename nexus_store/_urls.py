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
  connection keywords (not its debug ones), each given once (``host`` may repeat), with the
  values libpq accepts for the enumerated and numeric ones (``_POSTGRES_VALUES``);
- MongoDB (``mongodb``, ``mongodb+srv``): a comma-separated host list; ``mongodb+srv`` takes
  exactly one host name (at least three labels) and no port; the user name and password
  follow RFC 3986 as PyMongo requires; the database name has none of ``/\\. "$``; options
  pass PyMongo's own URI parser and client-option checks (no DNS lookup);
- Redis (``redis``, ``rediss``, ``unix``): one host, ``/N`` a database number 0-15 (the area
  map decides the database; this only catches typos), options are redis-py's URL options
  that both its clients take for the scheme, each once, with values in range
  (``_REDIS_VALUES``); ``unix`` needs a socket path.

Drivers are imported here only when a URL carries query options, to check them.
"""

from __future__ import annotations

import inspect
import ipaddress
import math
import re
from collections.abc import Callable
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

__all__ = ["check_mongo_url", "check_postgres_url", "check_redis_url"]

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
_PORT = re.compile(r"[0-9]{1,5}")
_COUNT = re.compile(r"[0-9]{1,9}")
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
        _check_postgres_options(options, what)


def _check_postgres_options(options: list[tuple[str, str]], what: str) -> None:
    from psycopg import pq  # the driver knows libpq's keywords; loaded only for options

    # dispchar "D": debug options (replication mode, SCRAM keys, a TLS key log file), not
    # for an application's connections.
    keywords = {option.keyword.decode(): option.dispchar for option in pq.Conninfo.get_defaults()}
    seen: set[str] = set()
    for name, value in options:
        if name not in keywords:
            raise _unknown(what, name, "libpq connection")
        if keywords[name] == b"D":
            raise ValueError(f"{what} URL: {name} is a libpq debug option, not for an application")
        # SQLAlchemy turns a repeated option into a tuple that libpq cannot take; only
        # host=a:5432&host=b:5432 (its multi-host form) may repeat.
        if name in seen and name != "host":
            raise ValueError(f"{what} URL: {name} is given twice")
        seen.add(name)
        check = _POSTGRES_VALUES.get(name)
        if check is not None and not check[0](value):
            raise ValueError(f"{what} URL: {name} must be {check[1]}")


def _one_of(*allowed: str, fold: bool = False) -> tuple[Callable[[str], bool], str]:
    """A check that the value is one of ``allowed`` (``fold``: case-insensitively, as libpq
    compares these), and its description."""
    choices = frozenset(item.lower() if fold else item for item in allowed)

    def check(value: str) -> bool:
        return (value.lower() if fold else value) in choices

    return check, "one of " + ", ".join(allowed)


def _count(value: str) -> bool:
    return _COUNT.fullmatch(value) is not None


def _ports(value: str) -> bool:
    return all(_PORT.fullmatch(item) and 1 <= int(item) <= 65535 for item in value.split(","))


def _host_list(value: str) -> bool:
    """libpq's host=: names, addresses or socket directories, comma-separated; SQLAlchemy's
    multi-host form adds :port to each."""
    for item in value.split(","):
        try:
            _check_host(item, "")
        except ValueError:
            return False
    return True


def _addresses(value: str) -> bool:
    try:
        for item in value.split(","):
            ipaddress.ip_address(item)
    except ValueError:
        return False
    return True


def _auth_methods(value: str) -> bool:
    methods = value.split(",")
    negated = {method.startswith("!") for method in methods}
    known = {"password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none"}
    return len(negated) == 1 and all(method.removeprefix("!") in known for method in methods)


def _server_name(value: str) -> bool:
    # The server cuts application_name at 63 bytes and turns non-ASCII into "?": refused,
    # so that what the server shows is what was configured.
    return value.isascii() and value.isprintable() and len(value) <= 63


_FLAG = _one_of("0", "1")
_TLS = _one_of("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", fold=True)
_PROTOCOL = _one_of("3.0", "3.2", "latest")
_SECONDS_TEXT = "a whole number of seconds"
# Option values libpq would refuse when connecting, or change silently, checked at load.
# Other keywords take free text (file names, user names, server options).
_POSTGRES_VALUES: dict[str, tuple[Callable[[str], bool], str]] = {
    "sslmode": _one_of("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "sslnegotiation": _one_of("postgres", "direct"),
    "sslcertmode": _one_of("disable", "allow", "require"),
    "gssencmode": _one_of("disable", "prefer", "require"),
    "channel_binding": _one_of("disable", "prefer", "require"),
    "target_session_attrs": _one_of(
        "any", "read-write", "read-only", "primary", "standby", "prefer-standby", fold=True
    ),
    "load_balance_hosts": _one_of("disable", "random"),
    "gsslib": _one_of("gssapi", "sspi"),
    # The SDK reads and writes Unicode: another client encoding would transcode or fail.
    "client_encoding": _one_of("UTF8", "UTF-8", fold=True),
    "ssl_min_protocol_version": _TLS,
    "ssl_max_protocol_version": _TLS,
    "min_protocol_version": _PROTOCOL,
    "max_protocol_version": _PROTOCOL,
    "sslcompression": _FLAG,
    "sslsni": _FLAG,
    "gssdelegation": _FLAG,
    "keepalives": _FLAG,
    "connect_timeout": (_count, _SECONDS_TEXT),
    "keepalives_idle": (_count, _SECONDS_TEXT),
    "keepalives_interval": (_count, _SECONDS_TEXT),
    "keepalives_count": (_count, "a whole number"),
    "tcp_user_timeout": (_count, "a whole number of milliseconds"),
    "port": (_ports, "port numbers from 1 to 65535, comma-separated"),
    "host": (_host_list, "host names, addresses or socket directories, comma-separated"),
    "hostaddr": (_addresses, "IP addresses, comma-separated"),
    "require_auth": (
        _auth_methods,
        "authentication methods (password, md5, gss, sspi, scram-sha-256, oauth, none), "
        "all negated with ! or none",
    ),
    "application_name": (_server_name, "printable ASCII, at most 63 characters"),
    "fallback_application_name": (_server_name, "printable ASCII, at most 63 characters"),
}


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
        _check_mongo_options(parts, what)


def _check_mongo_options(parts: SplitResult, what: str) -> None:
    """PyMongo's own option table, validators and cross-option rules (``w=0&journal=true``,
    ``directConnection`` with several hosts...), as ``MongoClient`` applies them, without its
    DNS lookups: a ``mongodb+srv`` URL is checked in its ``mongodb://`` form, its SRV-only
    options alone."""
    from pymongo.client_options import ClientOptions
    from pymongo.uri_parser import parse_uri, split_options

    # PyMongo keeps the last of a repeated option with a warning; only readPreferenceTags
    # is a list that repeats.
    names = [name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    repeated = {name for name in names if names.count(name) > 1} - {"readpreferencetags"}
    if repeated:
        raise ValueError(f"{what} URL: an option is given twice")
    if parts.scheme == "mongodb+srv":
        srv_only = ("srvmaxhosts=", "srvservicename=")
        if not _pymongo_accepts(lambda: split_options(parts.query, validate=True, warn=False)):
            raise _invalid_mongo_option(what)
        query = "&".join(
            item for item in re.split("[&;]", parts.query) if not item.lower().startswith(srv_only)
        )
        parts = parts._replace(scheme="mongodb", query=query)

    def client_options() -> None:
        parsed = parse_uri(parts.geturl(), validate=True, warn=False)
        ClientOptions(parsed["username"], parsed["password"], parsed["database"], parsed["options"])

    if not _pymongo_accepts(client_options):
        raise _invalid_mongo_option(what)


def _pymongo_accepts(check: Callable[[], object]) -> bool:
    # Outside the except block, the refusal carries no __context__: PyMongo's messages may
    # quote a value (a password).
    try:
        check()
    except Exception:
        return False
    return True


def _invalid_mongo_option(what: str) -> ValueError:
    return ValueError(
        f"{what} URL: an option is unknown or has an invalid value (see PyMongo's URI options)"
    )


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
        _check_redis_options(options, parts.scheme, what)


def _check_redis_options(options: list[tuple[str, str]], scheme: str, what: str) -> None:
    """Each option is one that redis-py's ``from_url`` parses and that the connection class of
    ``scheme`` takes, in both its blocking and its asyncio client (an option one of them does
    not take is a TypeError when the SDK first connects), with a value in range."""
    import redis.asyncio.connection
    import redis.connection

    parsers = redis.connection.URL_QUERY_ARGUMENT_PARSERS
    taken = _POOL_OPTIONS | (
        _init_parameters(_REDIS_CONNECTIONS[scheme], redis.connection)
        & _init_parameters(_REDIS_CONNECTIONS[scheme], redis.asyncio.connection)
    )
    seen: set[str] = set()
    for name, value in options:
        if name not in parsers and name not in _REDIS_STRING_OPTIONS:
            raise _unknown(what, name, "redis-py URL")
        if name not in taken:
            raise ValueError(
                f"{what} URL: {name} does not apply to {scheme}:// connections "
                "(in both redis-py's blocking and asyncio clients)"
            )
        if name in seen:
            raise ValueError(f"{what} URL: {name} is given twice")
        seen.add(name)
        parser: Callable[[str], object] = parsers.get(name, str)  # type: ignore[assignment]
        parsed = _parsed(parser, value)
        if parsed is _INVALID:
            raise ValueError(f"{what} URL: {name} has an invalid value")
        check = _REDIS_VALUES.get(name)
        if check is not None and not check[0](parsed):
            raise ValueError(f"{what} URL: {name} must be {check[1]}")


_INVALID = object()


def _parsed(parser: Callable[[str], object], value: str) -> object:
    # Outside the except block, the refusal carries no __context__: the parser's message
    # quotes the value.
    try:
        return parser(value)
    except (ValueError, TypeError):
        return _INVALID


def _init_parameters(class_name: str, module: object) -> frozenset[str]:
    """The keyword arguments a redis-py connection class takes, up its ``**kwargs`` chain."""
    names: set[str] = set()
    for cls in getattr(module, class_name).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(
            p.name for p in parameters if p.kind is p.KEYWORD_ONLY or p.default is not p.empty
        )
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return frozenset(names)


def _positive_seconds(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _at_least(low: int) -> Callable[[object], bool]:
    return lambda value: isinstance(value, int) and value >= low


def _tls_version(value: object) -> bool:
    import ssl

    return isinstance(value, int) and value in {version.value for version in ssl.TLSVersion}


# Options the connection pools take (the others go to each connection).
_POOL_OPTIONS = frozenset({"max_connections", "timeout"})
_REDIS_CONNECTIONS = {
    "redis": "Connection",
    "rediss": "SSLConnection",
    "unix": "UnixDomainSocketConnection",
}
# Values redis-py's parsers let through that fail later (socket_timeout=0 makes every socket
# non-blocking, protocol=4 fails at connect) or make no sense.
_REDIS_VALUES: dict[str, tuple[Callable[[object], bool], str]] = {
    "socket_timeout": (_positive_seconds, "a positive number of seconds"),
    "socket_connect_timeout": (_positive_seconds, "a positive number of seconds"),
    "timeout": (_positive_seconds, "a positive number of seconds"),
    "db": (lambda value: isinstance(value, int) and 0 <= value <= 15, "a number from 0 to 15"),
    "socket_read_size": (_at_least(1), "a positive whole number"),
    "max_connections": (_at_least(1), "a positive whole number"),
    "health_check_interval": (_at_least(0), "a whole number of seconds"),
    "protocol": (lambda value: value in (2, 3), "2 or 3"),
    "ssl_min_version": (_tls_version, "an ssl.TLSVersion value"),
    "ssl_cert_reqs": (
        lambda value: value in ("none", "optional", "required"),
        "none, optional or required",
    ),
    "client_name": (
        lambda value: isinstance(value, str) and value.isprintable() and " " not in value,
        "printable, without spaces (CLIENT SETNAME refuses them)",
    ),
}
