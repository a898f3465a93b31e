"""Every error path that touches a URL: a typed error, and no password anywhere in its chain.

Logging frameworks and error trackers (Sentry and others) render ``__cause__`` and
``__context__``, ``args`` and notes, not only ``str(exc)``: each test walks all of them
(``tests.support.exception_chain_texts``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from devstack.servers import closed_port
from nexus_store import NexusSettings, NexusStore
from nexus_store.errors import BackendUnavailableError, ConfigurationError
from nexus_store.postgres.models import User
from tests.support import assert_no_secret_in_chain, run_cli

PASSWORD = "Chain-S3cret"
FAST = {"server_selection_timeout": 1.0, "connect_timeout": 1.0, "socket_timeout": 1.0}


async def _typed_failure(
    settings: NexusSettings, call: Callable[[NexusStore], Awaitable[Any]]
) -> BackendUnavailableError:
    async with NexusStore(settings) as store:
        with pytest.raises(BackendUnavailableError) as caught:
            await call(store)
    assert_no_secret_in_chain(caught.value, PASSWORD)
    return caught.value


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.entities.count(User),  # SQLAlchemy pool
        lambda store: store.entities.get(User, "00000000-0000-0000-0000-000000000000"),  # psycopg
    ],
    ids=["count", "get"],
)
async def test_postgres_unreachable(call: Callable[[NexusStore], Awaitable[Any]]) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{closed_port()}/db"
    settings = NexusSettings.load(postgres={"url": url, "connect_timeout": 1, "pool_timeout": 1})
    error = await _typed_failure(settings, call)
    assert error.backend == "postgres"


async def test_redis_unreachable() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    settings = NexusSettings.load(
        redis={"url": url, "retries": 0, "connect_timeout": 0.5, "socket_timeout": 0.5}
    )
    error = await _typed_failure(settings, lambda store: store.sessions.create("u", {}))
    assert error.backend == "redis"


async def test_mongo_unreachable() -> None:
    url = f"mongodb://app:{PASSWORD}@127.0.0.1:{closed_port()}/"
    settings = NexusSettings.load(mongo={"url": url, **FAST})
    error = await _typed_failure(settings, lambda store: store.audit.verify())
    assert error.backend == "mongo"


async def test_mongo_login_refused_or_answered_unexpectedly(mongo_url: str) -> None:
    """Real MongoDB refuses the unknown user (code 18); the nx-27017 substitute answers the
    SASL start without the ``payload`` field PyMongo reads (it raised ``KeyError: 'payload'``).
    Either way the caller gets BackendUnavailableError."""
    scheme, rest = mongo_url.split("://", 1)
    url = f"{scheme}://nobody:{PASSWORD}@{rest.rpartition('@')[2]}"
    settings = NexusSettings.load(mongo={"url": url, **FAST})
    for call in (lambda store: store.audit.verify(), lambda store: store.backends.mongo.ping()):
        error = await _typed_failure(settings, call)
        assert error.backend == "mongo"


async def test_mongo_srv_name_unknown_to_dns() -> None:
    """The SRV lookup happens on first use: PyMongo's ConfigurationError escaped verify()."""
    url = f"mongodb+srv://app:{PASSWORD}@cluster0.nonexistent.invalid/"
    settings = NexusSettings.load(mongo={"url": url, **FAST})
    error = await _typed_failure(settings, lambda store: store.audit.verify())
    assert error.backend == "mongo"


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("NEXUS_POSTGRES_URL", f"postgresql://app:{PASSWORD}@127.0.0.1:notaport/db"),
        ("NEXUS_REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:notaport/0"),
        ("NEXUS_MONGO_URL", f"mongodb://app:{PASSWORD}@x@127.0.0.1/"),
        ("NEXUS_POSTGRES_URL", f"ftp://app:{PASSWORD}@127.0.0.1/db"),
    ],
)
def test_health_with_a_malformed_url_exits_2_naming_the_setting(variable: str, url: str) -> None:
    """It exited 1 ("warn") before: the URL reached the driver, which raised ValueError."""
    result = run_cli("health", "--format", "json", env={variable: url})
    assert result.returncode == 2, result.output
    setting = variable.removeprefix("NEXUS_").lower().replace("_url", ".url")
    assert setting in result.output
    assert PASSWORD not in result.output


def test_settings_errors_of_every_url_keep_the_password_out_of_the_chain() -> None:
    for section, url in [
        ("postgres", f"ftp://app:{PASSWORD}@h/db"),
        ("postgres", f"postgresql://app:{PASSWORD}@h:99999/db"),
        ("mongo", f"mongodb://app:{PASSWORD}@x@h/"),
        ("mongo", f"mongodb://app:{PASSWORD}@h/?authMechanism={PASSWORD}"),
        ("redis", f"redis://:{PASSWORD}@[::1/0"),
        ("redis", f"redis://:{PASSWORD}@h:6379/0?socket_timeout={PASSWORD}"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            NexusSettings.load(**{section: {"url": url}})
        assert caught.value.setting == f"{section}.url"
        assert_no_secret_in_chain(caught.value, PASSWORD)
