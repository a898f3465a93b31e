from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.connection
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_store import ConfigurationError, NexusSettings
from nexus_store._secrets import scrub
from tests.support import assert_no_secret_in_chain

# The Redis option rules follow the installed redis-py's URL parser: 8.0 (the floor) parses
# neither ssl_validate_ocsp (later: blocking client only) nor ssl_min_version.
_REDIS_URL_OPTIONS = redis.connection.URL_QUERY_ARGUMENT_PARSERS
OCSP_REFUSED_BECAUSE = (
    "asyncio" if "ssl_validate_ocsp" in _REDIS_URL_OPTIONS else "not a redis-py URL option"
)
TLS_FLOOR_OPTION = "&ssl_min_version=771" if "ssl_min_version" in _REDIS_URL_OPTIONS else ""

PASSWORDS = {"postgres": "pg-S3cret!x", "mongo": "mongo-S3cret", "redis": "redis-S3cret"}
URLS = {
    "postgres": f"postgresql://app:{PASSWORDS['postgres'].replace('!', '%21')}@127.0.0.1:1/db",
    "mongo": f"mongodb://app:{PASSWORDS['mongo']}@127.0.0.1:2/?authSource=admin",
    "redis": f"redis://:{PASSWORDS['redis']}@127.0.0.1:3",
}


def test_defaults_follow_the_documented_map() -> None:
    settings = NexusSettings.load()
    assert settings.postgres.pool_size == 10
    assert settings.postgres.max_overflow == 20
    assert settings.postgres.pool_pre_ping is True
    assert settings.redis.databases.model_dump() == {
        "sessions": 0,
        "cache": 1,
        "ratelimit": 2,
        "realtime": 3,
        "queue": 4,
        "analytics_cache": 5,
    }
    assert settings.events.retention_days == 90
    assert settings.audit.retention_days is None


def test_environment_names_and_seed_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://seed@h/seed")
    monkeypatch.setenv("MONGODB_URL", "mongodb://seed-host")
    monkeypatch.setenv("NEXUS_REDIS_URL", "redis://preferred:6379")
    monkeypatch.setenv("REDIS_URL", "redis://seed:6379")
    monkeypatch.setenv("NEXUS_REDIS__CLUSTER", "true")
    monkeypatch.setenv("NEXUS_REDIS__DATABASES__CACHE", "7")
    settings = NexusSettings.load()
    assert settings.postgres.url is not None
    assert settings.postgres.url.get_secret_value() == "postgresql://seed@h/seed"
    assert settings.mongo.url is not None
    assert settings.mongo.url.get_secret_value() == "mongodb://seed-host"
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://preferred:6379"
    assert settings.redis.cluster is True
    assert settings.redis.databases.cache == 7


def test_toml_file_is_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "nexus.toml"
    config.write_text('[events]\nflush_at = 250\nretention_days = 30\n[log]\nformat = "json"\n')
    monkeypatch.setenv("NEXUS_EVENTS__FLUSH_AT", "500")
    settings = NexusSettings.load(config_file=config)
    assert settings.events.flush_at == 500
    assert settings.events.retention_days == 30
    assert settings.log.format == "json"


def test_shipped_example_config_loads(tmp_path: Path) -> None:
    from nexus_store.cli.config import example_text

    example = tmp_path / "nexus.toml"
    example.write_text(example_text("toml"))
    settings = NexusSettings.load(config_file=example)
    assert settings.redis.databases.analytics_cache == 5


@pytest.mark.parametrize(
    ("overrides", "setting", "problem"),
    [
        ({"postgres": {"pool_size": 0}}, "postgres.pool_size", "greater than or equal to 1"),
        ({"redis": {"url": "http://x"}}, "redis.url", "scheme"),
        ({"events": {"on_full": "explode"}}, "events.on_full", "'block' or 'drop'"),
        ({"redis": {"databases": {"cache": 0}}}, "redis.databases", "its own logical DB"),
        ({"unknown": 1}, "unknown", "Extra inputs"),
    ],
)
def test_validation_errors_name_setting_and_problem(
    overrides: dict[str, object], setting: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        NexusSettings.load(**overrides)
    assert setting in str(caught.value)
    assert problem in str(caught.value)


def test_missing_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        NexusSettings.load(config_file=tmp_path / "absent.toml")


def test_passwords_are_masked_in_repr_dump_and_errors() -> None:
    settings = NexusSettings.load(
        **{name: {"url": url} for name, url in URLS.items()}, audit={"hmac_key": "hmac-S3cret"}
    )
    rendered = [repr(settings), str(settings), json.dumps(settings.describe())]
    with pytest.raises(ConfigurationError) as caught:
        NexusSettings.load(postgres={"url": URLS["postgres"], "pool_size": -1})
    rendered.append(str(caught.value))
    for text in rendered:
        for secret in [*PASSWORDS.values(), "hmac-S3cret", "pg-S3cret%21x"]:
            assert secret not in text
    assert "***" in rendered[0]


def test_scrub_masks_urls_keywords_and_registered_secrets() -> None:
    NexusSettings.load(postgres={"url": URLS["postgres"]})
    assert "pg-S3cret" not in scrub("connect failed: password=pg-S3cret!x host=h")
    assert scrub("mongodb://u:p4ss@h1,h2/db") == "mongodb://u:***@h1,h2/db"
    assert "pg-S3cret!x" not in scrub("driver said pg-S3cret!x somewhere")


def test_import_loads_no_driver() -> None:
    code = (
        "import sys, nexus_store;"
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('redis','pymongo','sqlalchemy','psycopg','motor')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- strict URLs: every malformed URL is a ConfigurationError naming its setting ----------

FUZZ_PASSWORD = "Fz-S3cret"
SCHEMES = {
    "postgres": ("postgresql", "postgres", "postgresql+psycopg"),
    "mongo": ("mongodb", "mongodb+srv"),
    "redis": ("redis", "rediss", "unix"),
}
URL_SETTINGS = [("postgres", "url"), ("postgres", "read_urls"), ("mongo", "url")]
URL_SETTINGS += [("redis", "url"), ("redis", "cache_url")]


# Each piece of a URL: well-formed values first, then hostile ones.
_PASSWORDS = [FUZZ_PASSWORD, f"{FUZZ_PASSWORD}%40x", f"{FUZZ_PASSWORD}@x", f"{FUZZ_PASSWORD}:x"]
_PASSWORDS += [f"{FUZZ_PASSWORD}%zz", f"{FUZZ_PASSWORD}/x"]
_PIECES = {
    "scheme": (["ftp", "http", "mysql", "", "Redis", "mongodb+srv"], None),
    "userinfo": (
        ["", *(f"app:{pw}@" for pw in _PASSWORDS[:2])],
        [f"app:{pw}@" for pw in _PASSWORDS[2:]] + [f"{FUZZ_PASSWORD}@"],
    ),
    "host": (
        ["localhost", "127.0.0.1", "db.example.com", "[::1]", "[fe80::1%25eth0]"],
        ["::1", "[::1", "[zz]", "", "host name", "hö", "a" * 300, "h1,h2", "-x", "."],
    ),
    "port": (["", ":1", ":5432", ":65535"], [":0", ":65536", ":x", ":-1", ":99999999999", ":"]),
    "path": (["", "/", "/db", "/0", "/15"], ["/16", "/a/b", "/db.x", "/" + "d" * 70, "/%00"]),
    "query": (
        [
            "",
            "?connect_timeout=5",
            "?authSource=admin",
            "?db=3",
            "?replicaSet=rs0",
            "?sslmode=require",
            "?socket_timeout=1.5",
            "?target_session_attrs=read-write&keepalives=1&keepalives_idle=30",
            "?application_name=nexus-api",
            "?protocol=3&health_check_interval=10",
            "?maxPoolSize=50&w=majority&retryWrites=true",
        ],
        [
            "?sslmode=bogus",
            "?unknown=1",
            "?w=majority&journal=maybe",
            "?socket_timeout=x",
            "?=",
            "?a",
            "#frag",
            "?port=x",
            # libpq keywords with values libpq refuses when connecting, or changes silently
            "?target_session_attrs=bogus",
            "?keepalives=2",
            "?connect_timeout=-1",
            "?application_name=%C3%A9t%C3%A9",
            "?client_encoding=LATIN1",
            "?replication=database",
            "?sslmode=require&sslmode=disable",
            "?hostaddr=not-an-address",
            f"?sslpassword={FUZZ_PASSWORD}&gssencmode=maybe",
            f"?connect_timeout={FUZZ_PASSWORD}",
            # redis-py options with values its parsers let through, or no client takes
            "?socket_timeout=nan",
            "?socket_timeout=0",
            "?protocol=4",
            "?max_connections=0",
            "?ssl_validate_ocsp=true",
            "?parser_class=x",
            "?client_name=a%20b",
            "?retry_on_error=NoSuchError",
            f"?ssl_password={FUZZ_PASSWORD}&socket_connect_timeout={FUZZ_PASSWORD}",
            # PyMongo options refused by its validators or its cross-option rules
            "?w=0&journal=true",
            "?w=1&w=majority",
            "?maxPoolSize=-1",
            "?tls=true&ssl=false",
            "?appname=" + "a" * 200,
            f"?authMechanismProperties=AWS_SESSION_TOKEN:{FUZZ_PASSWORD}&w=-5",
        ],
    ),
}


@st.composite
def _urls(draw: st.DrawFn, backend: str) -> str:
    """A URL of ``backend``'s schemes made of well-formed pieces, with up to two of them
    (or none) swapped for hostile ones: most examples are near misses."""
    pieces = {"scheme": draw(st.sampled_from(SCHEMES[backend]))}
    for name, (good, _) in _PIECES.items():
        if name != "scheme":
            pieces[name] = draw(st.sampled_from(good))
    for name in draw(st.lists(st.sampled_from(list(_PIECES)), max_size=2, unique=True)):
        good, hostile = _PIECES[name]
        pieces[name] = draw(st.sampled_from(hostile or good))
    return "{scheme}://{userinfo}{host}{port}{path}{query}".format(**pieces)


def _driver_accepts(section: str, url: str) -> None:
    """An independent oracle: the driver's own parser takes every URL the settings accept."""
    if section == "postgres":
        from psycopg.conninfo import conninfo_to_dict
        from sqlalchemy.engine import make_url

        from nexus_store._secrets import SecretURL
        from nexus_store.postgres.engine import sqlalchemy_url

        parsed = make_url(sqlalchemy_url(SecretURL(url)))
        assert parsed.port is None or 1 <= parsed.port <= 65535
        conninfo_to_dict(parsed.set(drivername="postgresql").render_as_string(False))
    elif section == "redis":
        from redis.connection import parse_url

        if not url.startswith("unix"):
            parse_url(url)
    elif url.startswith("mongodb://"):
        from pymongo.uri_parser import parse_uri

        parse_uri(url, validate=True, warn=False)


@given(section=st.sampled_from(URL_SETTINGS), data=st.data())
@settings(max_examples=3 * settings.default.max_examples)
def test_malformed_urls_are_configuration_errors_naming_the_setting(
    section: tuple[str, str], data: st.DataObject
) -> None:
    backend, field = section
    url = data.draw(_urls(backend), label="url")
    value: object = [url] if field == "read_urls" else url
    try:
        NexusSettings.load(**{backend: {field: value}})
    except ConfigurationError as error:
        assert error.setting == f"{backend}.{field}"
        assert_no_secret_in_chain(error, FUZZ_PASSWORD)
    else:
        _driver_accepts(backend, url)


@pytest.mark.parametrize(
    ("backend", "url", "problem"),
    [
        ("postgres", "postgresql://u:pw@localhost:notaport/db", "port"),
        ("postgres", "postgresql://u:pw@localhost:0/db", "port"),
        ("postgres", "postgresql://u:pw@localhost:65536/db", "port"),
        ("postgres", "postgresql://u:pw@h1:5432,h2:5432/db", "one host"),
        ("postgres", "postgresql://u:pw@[::1/db", "malformed"),
        ("postgres", "postgresql://u@h/db?sslmode=bogus", "sslmode"),
        ("postgres", "postgresql://u@h/db?nope=1", "nope is not a libpq"),
        ("redis", "redis://localhost:notaport/0", "port"),
        ("redis", "redis://localhost:6379/99", "database"),
        ("redis", "redis://localhost:6379/0?socket_timeout=abc", "socket_timeout"),
        ("redis", "redis://localhost:6379/0?bogus=1", "bogus is not a redis-py"),
        ("redis", "unix://", "socket path"),
        ("mongo", "mongodb://u:pw@x@host", "percent-encode"),
        ("mongo", "mongodb+srv://u:pw@nonexistent.invalid/", "three labels"),
        ("mongo", "mongodb+srv://u:pw@a.b.example:27017/", "no port"),
        ("mongo", "mongodb://h/db?w=majority&bogus=1", "option"),
        ("mongo", "mongodb://h/bad.db", "database name"),
        # every option value is checked, not only sslmode, port and connect_timeout
        ("postgres", "postgresql://u@h/db?target_session_attrs=bogus", "target_session_attrs"),
        ("postgres", "postgresql://u@h/db?keepalives_idle=-1", "keepalives_idle"),
        ("postgres", "postgresql://u@h/db?keepalives=yes", "keepalives must be one of 0, 1"),
        ("postgres", "postgresql://u@h/db?application_name=%C3%A9", "application_name"),
        ("postgres", "postgresql://u@h/db?client_encoding=latin1", "client_encoding"),
        ("postgres", "postgresql://u@h/db?require_auth=!md5,password", "require_auth"),
        ("postgres", "postgresql://u@h/db?hostaddr=h", "hostaddr"),
        # replication is a debug option in every libpq (sslkeylogfile only from libpq 18 on)
        ("postgres", "postgresql://u@h/db?replication=database", "debug option"),
        ("postgres", "postgresql://u@h/db?sslmode=require&sslmode=disable", "twice"),
        ("redis", "redis://h:6379/0?socket_timeout=nan", "socket_timeout must be a positive"),
        ("redis", "redis://h:6379/0?protocol=4", "protocol must be 2 or 3"),
        ("redis", "redis://h:6379/0?max_connections=0", "max_connections"),
        ("redis", "redis://h:6379/0?ssl_cert_reqs=none", "does not apply to redis://"),
        ("redis", "rediss://h:6379/0?ssl_cert_reqs=bogus", "ssl_cert_reqs must be"),
        ("redis", "rediss://h:6379/0?ssl_validate_ocsp=true", OCSP_REFUSED_BECAUSE),
        ("redis", "unix:///run/redis.sock?socket_keepalive=true", "does not apply to unix://"),
        ("redis", "redis://h:6379/0?client_name=a%20b", "client_name"),
        ("redis", "redis://h:6379/0?parser_class=x", "parser_class is not a redis-py"),
        ("mongo", "mongodb://h/?w=0&journal=true", "option"),
        ("mongo", "mongodb://h1,h2/?directConnection=true", "option"),
        ("mongo", "mongodb://h/?srvMaxHosts=2", "option"),
        ("mongo", "mongodb://h/?w=1&W=majority", "twice"),  # PyMongo kept the last, warning
        ("mongo", "mongodb+srv://u:pw@cluster0.example.com/?w=0&journal=true", "option"),
    ],
)
def test_each_url_rule_names_the_setting_and_the_problem(
    backend: str, url: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        NexusSettings.load(**{backend: {"url": url}})
    assert caught.value.setting == f"{backend}.url"


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("postgres", "postgresql://u:p%40ss@[::1]:5432/db"),
        ("postgres", "postgresql:///db?host=/var/run/postgresql"),
        ("postgres", "postgres://u@h/db?sslmode=verify-full&application_name=x"),
        ("postgres", "postgresql+psycopg://u@%2Fvar%2Frun%2Fpostgresql/db"),
        ("mongo", "mongodb://u:p%40ss@h1:27017,h2:27018,[::1]:27019/db?replicaSet=rs0"),
        ("mongo", "mongodb+srv://u:pw@cluster0.example.com/?retryWrites=true"),
        ("redis", "rediss://:pw@[::1]:6380/2?ssl_cert_reqs=none"),
        ("redis", "unix:///run/redis.sock?db=1"),
        ("postgres", "postgresql://u@h/db?host=a:5432&host=b:5433&target_session_attrs=primary"),
        ("postgres", "postgresql://u@h/db?keepalives=1&keepalives_idle=30&require_auth=!md5"),
        ("postgres", "postgresql://u@h/db?hostaddr=::1,127.0.0.1&ssl_min_protocol_version=tlsv1.3"),
        ("redis", f"rediss://h:6380/0?ssl_cert_reqs=required{TLS_FLOOR_OPTION}&protocol=3"),
        ("redis", "redis://h:6379?retry_on_error=ConnectionError,TimeoutError&timeout=5"),
        ("mongo", "mongodb+srv://u:pw@cluster0.example.com/?srvMaxHosts=2&w=majority"),
        ("mongo", "mongodb://h/?readPreference=secondary&readPreferenceTags=dc:ny,rack:1"),
    ],
)
def test_well_formed_urls_of_every_form_load(backend: str, url: str) -> None:
    loaded = NexusSettings.load(**{backend: {"url": url}})
    assert getattr(loaded, backend).url.get_secret_value() == url


def test_a_bad_scheme_leaves_no_password_in_the_exception_chain() -> None:
    """pydantic's own error holds ``input_value='ftp://postgres:<password>@…'``; it was
    reachable as ``__context__`` even though the raise said ``from None``."""
    with pytest.raises(ConfigurationError) as caught:
        NexusSettings.load(postgres={"url": f"ftp://postgres:{FUZZ_PASSWORD}@localhost/db"})
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert_no_secret_in_chain(caught.value, FUZZ_PASSWORD)


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ("postgres", f"postgresql://u@h/db?sslpassword={FUZZ_PASSWORD}&connect_timeout=x"),
        ("postgres", f"postgresql://u@h/db?connect_timeout={FUZZ_PASSWORD}"),
        ("redis", f"redis://h:6379?socket_timeout={FUZZ_PASSWORD}"),
        ("redis", f"rediss://h:6379?ssl_password={FUZZ_PASSWORD}&ssl_cert_reqs=x"),
        ("mongo", f"mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:{FUZZ_PASSWORD}&w=-5"),
        ("mongo", f"mongodb://h/?appname={FUZZ_PASSWORD}&maxPoolSize={FUZZ_PASSWORD}"),
    ],
)
def test_a_refused_option_value_leaves_no_secret_in_the_exception_chain(
    backend: str, url: str
) -> None:
    """The drivers' parsers quote the value they refuse (``invalid literal for int() with
    base 10: '<value>'``); an option value may be a password."""
    with pytest.raises(ConfigurationError) as caught:
        NexusSettings.load(**{backend: {"url": url}})
    assert caught.value.setting == f"{backend}.url"
    assert_no_secret_in_chain(caught.value, FUZZ_PASSWORD)
