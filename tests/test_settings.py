from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nexus_store import ConfigurationError, NexusSettings
from nexus_store._secrets import scrub

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
