"""Settings for every backend, loaded from the environment and an optional TOML file.

Precedence, highest first: keyword arguments, environment variables, the TOML file, defaults.

Environment variables are ``NEXUS_<SECTION>__<FIELD>`` (``NEXUS_REDIS__CLUSTER=true``,
``NEXUS_EVENTS__FLUSH_AT=500``). The three URLs also have flat names, and the names the
seeds use are accepted as fallbacks:

=================  ======================  ==============
setting            preferred               also accepted
=================  ======================  ==============
``postgres.url``   ``NEXUS_POSTGRES_URL``  ``DATABASE_URL``
``mongo.url``      ``NEXUS_MONGO_URL``     ``MONGODB_URL``
``redis.url``      ``NEXUS_REDIS_URL``     ``REDIS_URL``
=================  ======================  ==============

The TOML file is ``NEXUS_CONFIG`` or the ``config_file`` argument (``nexus-store config example``
prints the documented example):

    settings = NexusSettings.load(config_file="nexus.toml", log={"format": "json"})

Passwords inside URLs are masked in ``repr``, in ``model_dump`` and in every log line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from nexus_store._secrets import SecretURL
from nexus_store._urls import check_mongo_url, check_postgres_url, check_redis_url
from nexus_store.errors import ConfigurationError
from nexus_store.redis.names import DEFAULT_DATABASES, StrategyName

__all__ = [
    "AuditSettings",
    "CacheSettings",
    "EventsSettings",
    "HealthSettings",
    "LogSettings",
    "MongoSettings",
    "NexusSettings",
    "OutboxSettings",
    "PostgresSettings",
    "QueueSettings",
    "RateLimitSettings",
    "RedisDatabases",
    "RedisSettings",
    "SessionSettings",
]

PositiveSeconds = Annotated[float, Field(gt=0)]
_URL_ALIASES: dict[str, tuple[str, ...]] = {
    "postgres": ("NEXUS_POSTGRES_URL", "DATABASE_URL"),
    "mongo": ("NEXUS_MONGO_URL", "MONGODB_URL"),
    "redis": ("NEXUS_REDIS_URL", "REDIS_URL"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked(
    url: SecretURL | None, check: Callable[[str, str], None], what: str
) -> SecretURL | None:
    """``url`` once ``check`` (see ``nexus_store._urls``) found nothing wrong with it."""
    if url is not None:
        check(url.get_secret_value(), what)
    return url


class PostgresSettings(_Section):
    """PostgreSQL: entities, migrations and the outbox."""

    url: SecretURL | None = None
    read_urls: list[SecretURL] = Field(
        default_factory=list,
        description="Streaming replicas; reads go there unless in a transaction or fresh=True.",
    )
    pool_size: int = Field(10, ge=1, le=1000)
    max_overflow: int = Field(20, ge=0, le=1000)
    pool_pre_ping: bool = Field(
        True,
        description="Ping a pooled connection before writes and transactions use it. "
        "Single-statement reads never ping (it would double their latency): they retry "
        "once on a dead connection instead.",
    )
    pool_timeout: PositiveSeconds = 10.0
    pool_recycle: PositiveSeconds = 1800.0
    connect_timeout: PositiveSeconds = 5.0
    statement_timeout: PositiveSeconds | None = 30.0
    migration_lock_id: int = Field(
        0x6E65787573, description="pg_advisory_lock key that serialises migrations."
    )
    search_language: str = Field(
        "english",
        max_length=63,
        pattern=r"^[a-z_]+$",
        description="Text search configuration (regconfig) of the search columns and of "
        "search(); the migration bakes it into the generated columns.",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: SecretURL | None) -> SecretURL | None:
        return _checked(url, check_postgres_url, "PostgreSQL")

    @field_validator("read_urls")
    @classmethod
    def _replica_urls(cls, urls: list[SecretURL]) -> list[SecretURL]:
        for index, url in enumerate(urls):
            _checked(url, check_postgres_url, f"replica {index}")
        return urls


class MongoSettings(_Section):
    """MongoDB: analytics events and the audit log."""

    url: SecretURL | None = None
    database: str = Field("nexus", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_-]+$")
    connect_timeout: PositiveSeconds = 5.0
    server_selection_timeout: PositiveSeconds = 5.0
    socket_timeout: PositiveSeconds = 10.0
    max_pool_size: int = Field(50, ge=1, le=10_000)
    app_name: str = "nexus-store"

    @field_validator("url")
    @classmethod
    def _mongo_url(cls, url: SecretURL | None) -> SecretURL | None:
        return _checked(url, check_mongo_url, "MongoDB")


_DATABASES_DOC = "Logical database index of each Redis area (standalone servers only)."

if TYPE_CHECKING:

    class RedisDatabases(_Section):
        """One ``int`` field per Redis area (built below from the area table)."""

        def __getattr__(self, area: str) -> int: ...

else:
    # One field per area of nexus_store.redis.names, defaulting to its position there.
    RedisDatabases = create_model(
        "RedisDatabases",
        __base__=_Section,
        __doc__=_DATABASES_DOC,
        __module__=__name__,
        **{area: (int, Field(index, ge=0, le=15)) for area, index in DEFAULT_DATABASES.items()},
    )


class RedisSettings(_Section):
    """Redis: sessions, cache, rate limits, realtime, queues and the analytics cache."""

    url: SecretURL | None = None
    cluster: bool = Field(
        False, description="Redis Cluster: one database, areas become key prefixes."
    )
    namespace: str = Field(
        "nexus",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every key and channel this SDK writes.",
    )
    databases: RedisDatabases = Field(default_factory=RedisDatabases)
    max_connections: int = Field(32, ge=1, le=10_000, description="Per logical-DB pool.")
    pool_timeout: PositiveSeconds = Field(2.0, description="Wait for a free pooled connection.")
    socket_timeout: PositiveSeconds = 2.0
    connect_timeout: PositiveSeconds = 2.0
    health_check_interval: int = Field(30, ge=0)
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries after a connection error or timeout (a restarted server then "
        "costs no failed call); each waits a jittered backoff of at most retry_backoff_cap.",
    )
    retry_backoff_cap: PositiveSeconds = Field(0.1, description="Longest wait between retries.")
    cache_url: SecretURL | None = Field(
        None,
        description="A second Redis server for the cache and analytics_cache areas, so that "
        "it may evict (allkeys-lru) while the main server keeps noeviction for sessions, "
        "limits and queues. None: every area on the main server.",
    )

    @field_validator("url", "cache_url")
    @classmethod
    def _redis_url(cls, url: SecretURL | None) -> SecretURL | None:
        return _checked(url, check_redis_url, "Redis")


class EventsSettings(_Section):
    """Analytics event ingestion (MongoDB)."""

    collection: str = "events"
    retention_days: int = Field(90, ge=1, description="TTL on ts; init reconciles it with collMod.")
    time_series: bool = Field(False, description="Create a time-series collection if supported.")
    max_event_bytes: int = Field(32 * 1024, ge=256, le=16 * 1024 * 1024)
    flush_at: int = Field(100, ge=1, le=100_000)
    flush_interval: PositiveSeconds = 0.5
    max_queue_size: int = Field(10_000, ge=1)
    on_full: Literal["block", "drop"] = Field(
        "block", description="block: backpressure on track(); drop: count and log the event."
    )
    retry_initial_backoff: PositiveSeconds = 0.1
    retry_max_backoff: PositiveSeconds = 10.0
    close_timeout: PositiveSeconds = Field(
        10.0, description="How long closing the store waits for MongoDB to take the buffer."
    )
    query_cache_ttl: int | None = Field(
        None, ge=1, description="Seconds to cache aggregation results in Redis (off when None)."
    )


class AuditSettings(_Section):
    """The tamper-evident audit log (MongoDB)."""

    collection: str = "audit_log"
    retention_days: int | None = Field(
        None, ge=1, description="Delete entries after N days (None keeps them forever)."
    )
    hmac_key: SecretStr | None = Field(None, description="Signs chain hashes and checkpoints.")
    write_concern: Literal["majority", "1"] = "majority"
    journal: bool = True
    checkpoint_every: int = Field(1000, ge=1)
    role_name: str = "nexusAuditWriter"
    signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key (PEM, or 64 hex digits) signing tree heads "
        "(the crypto extra); without it tree heads are signed with hmac_key.",
    )
    batch_max_entries: int = Field(
        500, ge=1, description="Most entries one group-commit insert_many writes."
    )
    batch_max_bytes: int = Field(
        4 * 1024 * 1024, ge=16 * 1024, description="Most canonical bytes per group commit."
    )
    lease_seconds: float = Field(
        0.05,
        gt=0,
        le=60,
        description="How long one process appends before another may take the sequencer "
        "lease; a writer that died frees it after this.",
    )


class SessionSettings(_Section):
    """Login sessions (Redis area ``sessions``)."""

    default_ttl: int = Field(
        3600, ge=1, description="Seconds a session lives; with sliding, seconds of idleness."
    )
    sliding: bool = Field(True, description="Each get() pushes the expiry back by the TTL.")
    max_lifetime: int | None = Field(
        7 * 24 * 3600, ge=1, description="Absolute cap from creation, sliding or not (None: none)."
    )
    max_data_bytes: int = Field(
        16 * 1024, ge=64, le=1024 * 1024, description="Largest session data, JSON-encoded."
    )


class CacheSettings(_Section):
    """The shared cache (Redis area ``cache``)."""

    default_ttl: int = Field(300, ge=1)
    serializer: Literal["json", "msgpack"] = "json"
    strict: bool = Field(False, description="Raise when Redis is down instead of missing.")
    lock_timeout: PositiveSeconds = Field(10.0, description="Stampede lock lifetime.")
    lock_wait: PositiveSeconds = Field(
        10.0, description="How long get_or_set waits for another caller's load before loading."
    )
    early_refresh: PositiveSeconds | None = Field(
        None,
        description="get_or_set reloads a value this many seconds before it expires "
        "(one caller reloads, the others keep reading the current value).",
    )
    stale_ttl: int = Field(
        0,
        ge=0,
        description="Seconds an expired value is kept to be served when its loader fails.",
    )
    max_value_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest encoded value set() accepts."
    )


class RateLimitSettings(_Section):
    """Rate limiting (Redis area ``ratelimit``): ``store.limiter`` and ``@rate_limit``."""

    strategy: StrategyName = Field("gcra", description="Algorithm when a limit does not name one.")
    fail_mode: Literal["fail_open", "fail_closed", "local"] = Field(
        "fail_closed",
        description=(
            "When Redis is unreachable: fail_open lets calls through, fail_closed refuses them "
            "(check/@rate_limit raise BackendUnavailableError), local limits in process."
        ),
    )
    recheck_interval: PositiveSeconds = Field(
        1.0,
        description="While Redis is unreachable, try it again at most this often; calls in "
        "between go straight to fail_mode.",
    )
    local_max_keys: int = Field(
        100_000, ge=1, description="Keys the in-process fallback keeps (least recent dropped)."
    )


class QueueSettings(_Section):
    """Reliable queues on Redis Streams (Redis area ``queue``)."""

    visibility_timeout: PositiveSeconds = Field(
        30.0, description="An unacked message is redelivered after this many idle seconds."
    )
    max_attempts: int = Field(
        5, ge=1, description="Deliveries before a message moves to the dead-letter stream."
    )
    max_length: int | None = Field(None, ge=1, description="Approximate stream cap (MAXLEN ~).")
    delete_acked: bool = Field(
        True, description="XDEL acked messages (work queue with one group per stream)."
    )
    max_payload_bytes: int = Field(1024 * 1024, ge=64, description="Largest encoded payload.")


class OutboxSettings(_Section):
    """The transactional outbox and its relay to the MongoDB audit log."""

    batch_size: int = Field(
        100, ge=1, le=10_000, description="Rows one relay claims and delivers per transaction."
    )
    poll_interval: PositiveSeconds = Field(
        0.5, description="Seconds the background relay sleeps when nothing is left to deliver."
    )
    prune_after_hours: PositiveSeconds = Field(
        24.0, description="Delivered rows older than this are deleted by the relay."
    )
    prune_interval: PositiveSeconds = Field(
        300.0, description="Seconds between two prunes by the background relay."
    )
    retry_max_backoff: PositiveSeconds = Field(
        30.0, description="Longest pause of the background relay after a failed delivery."
    )
    audited_tables: list[str] = Field(
        default_factory=list,
        description='Tables whose entity writes are audited without audit=True ("users").',
    )
    deliver_events: bool = Field(
        False,
        description="Also record each change as an analytics event named <table>.<action>.",
    )
    lag_warning_seconds: PositiveSeconds = Field(
        60.0, description="health warns when the oldest undelivered row is older than this."
    )


class LogSettings(_Section):
    """Logging. The SDK never configures logging: its events go to the application's
    structlog set-up or to stdlib ``logging`` (``nexus_store.*`` loggers), whose levels and
    handlers the application sets. ``format`` and ``level`` only shape the CLI's output."""

    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="CLI log output: auto is console on a terminal, JSON otherwise.",
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="CLI log level (info shows warnings and up: commands report progress)."
    )
    slow_threshold_ms: float = Field(
        250.0,
        ge=0,
        description="The SDK logs a slow_operation warning for backend calls slower than this.",
    )


class HealthSettings(_Section):
    timeout: PositiveSeconds = 2.0
    # Who the report describes (application/health+json top-level fields); each is left out
    # of the report when unset: they are the application's, not nexus-store's.
    service_id: str | None = Field(None, min_length=1, description="serviceId of the report.")
    version: str | None = Field(None, min_length=1, description="version of the service.")
    release_id: str | None = Field(None, min_length=1, description="releaseId (build, commit).")
    description: str | None = Field(
        None, min_length=1, description="description (default: the probe's name)."
    )


def _url_aliases() -> dict[str, Any]:
    """NEXUS_POSTGRES_URL / DATABASE_URL and friends, as ``{section: {"url": ...}}``."""
    found: dict[str, Any] = {}
    for section, names in _URL_ALIASES.items():
        for name in names:
            value = os.environ.get(name)
            if value:
                found[section] = {"url": value}
                break
    return found


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            with self._path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"config file {self._path} does not exist", setting="config_file"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(
                f"config file {self._path} is not valid TOML: {exc}", setting="config_file"
            ) from exc
        section: dict[str, Any] = data.get("nexus", data)
        return section


def _deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class NexusSettings(BaseSettings):
    """Everything nexus-store can be told. Build it with :meth:`load` for typed errors."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get("NEXUS_CONFIG")
        return (
            init_settings,
            _NestedEnvSource(settings_cls),
            _TomlSource(settings_cls, Path(config_file) if config_file else None),
        )

    @model_validator(mode="after")
    def _distinct_redis_databases(self) -> Self:
        indexes = self.redis.databases.model_dump()
        if len(set(indexes.values())) != len(indexes):
            raise ValueError("redis.databases: each area needs its own logical DB index")
        return self

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> NexusSettings:
        """Build settings from overrides, the environment and ``config_file`` (or NEXUS_CONFIG).

        Raises :class:`ConfigurationError` naming each bad setting and what is wrong with it.
        """
        previous = os.environ.get("NEXUS_CONFIG")
        if config_file is not None:
            os.environ["NEXUS_CONFIG"] = str(config_file)
        try:
            return cls(**overrides)
        except pydantic.ValidationError as exc:
            error = _configuration_error(exc)
        finally:
            if config_file is not None:
                if previous is None:
                    os.environ.pop("NEXUS_CONFIG", None)
                else:
                    os.environ["NEXUS_CONFIG"] = previous
        # Raised outside the except block: ``from None`` only hides the pydantic error,
        # which would stay reachable as __context__, and its ``input_value`` is the URL with
        # its password. Error trackers walk __context__.
        raise error

    def describe(self) -> dict[str, Any]:
        """All settings as plain data, with every secret masked (for ``--format json``)."""
        return self.model_dump(mode="json")


class _NestedEnvSource(EnvSettingsSource):
    """NEXUS_SECTION__FIELD variables, plus the flat URL aliases, merged section by section."""

    def __call__(self) -> dict[str, Any]:
        nested = super().__call__()
        return _deep_merge(_url_aliases(), nested)


def _configuration_error(exc: pydantic.ValidationError) -> ConfigurationError:
    problems = []
    first_setting = None
    for error in exc.errors(include_input=False, include_url=False):
        setting = ".".join(str(part) for part in error["loc"]) or "settings"
        first_setting = first_setting or setting
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{setting}: {message}")
    return ConfigurationError(
        "invalid settings: "
        + "; ".join(problems)
        + " (fix the environment variable NEXUS_<SECTION>__<FIELD> or the config file)",
        setting=first_setting,
    )
