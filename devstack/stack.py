"""Where one group of tests, or one benchmark run, keeps its data.

A :class:`Stack` holds settings values by section (the backends' URLs, the MongoDB database,
the Redis namespace, plus any section a group always sets). Every ``NexusSettings`` and every
``NEXUS_*`` environment for a subprocess is derived from it, so the two never drift apart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devstack import servers
from nexus_store import NexusSettings

Sections = Mapping[str, Mapping[str, Any]]

# Test and benchmark output stays readable; tests that look at logs set their own.
QUIET_LOG = {"level": "warning", "format": "console"}


def merge_sections(*layers: Sections) -> dict[str, dict[str, Any]]:
    """Later layers win field by field within a section."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, fields in layer.items():
            merged[section] = {**merged.get(section, {}), **fields}
    return merged


def _variable(section: str, field: str) -> str:
    config = NexusSettings.model_config
    prefix, nested = config.get("env_prefix", ""), config.get("env_nested_delimiter") or "__"
    # URLs go by their flat names (NEXUS_POSTGRES_URL...), the ones deployments set.
    if field == "url":
        return f"{prefix}{section}_url".upper()
    return f"{prefix}{section}{nested}{field}".upper()


@dataclass(frozen=True)
class Stack:
    sections: Sections

    @classmethod
    def located(
        cls,
        *,
        postgres_url: str | None = None,
        mongo_url: str | None = None,
        mongo_database: str | None = None,
        redis_url: str | None = None,
        redis_namespace: str | None = None,
    ) -> Stack:
        """The backends given (the others stay unconfigured)."""
        given = {
            "postgres": {"url": postgres_url},
            "mongo": {"url": mongo_url, "database": mongo_database},
            "redis": {"url": redis_url, "namespace": redis_namespace},
        }
        sections = {
            section: {field: value for field, value in fields.items() if value is not None}
            for section, fields in given.items()
        }
        return cls({section: fields for section, fields in sections.items() if fields})

    @property
    def postgres_url(self) -> str:
        return str(self.sections["postgres"]["url"])

    @property
    def mongo_url(self) -> str:
        return str(self.sections["mongo"]["url"])

    @property
    def mongo_database(self) -> str:
        return str(self.sections["mongo"]["database"])

    @property
    def redis_url(self) -> str:
        return str(self.sections["redis"]["url"])

    @property
    def redis_namespace(self) -> str:
        return str(self.sections["redis"]["namespace"])

    def only(self, *names: str) -> Stack:
        """This stack with only the sections ``names`` (say, a Redis-only store)."""
        return Stack({name: self.sections[name] for name in names})

    def merged(self, **sections: Mapping[str, Any]) -> Stack:
        """This stack with ``sections`` merged in, field by field."""
        return Stack(merge_sections(self.sections, sections))

    def settings(self, **overrides: Mapping[str, Any]) -> NexusSettings:
        """Settings on this stack, quiet logs, then ``overrides`` (section -> fields)."""
        return NexusSettings.load(
            None, **merge_sections({"log": QUIET_LOG}, self.sections, overrides)
        )

    def environment(self, **overrides: Mapping[str, Any]) -> dict[str, str]:
        """The ``NEXUS_*`` variables that configure a subprocess like :meth:`settings`
        (without the log defaults: the caller decides what a subprocess logs)."""
        return {
            _variable(section, field): value if isinstance(value, str) else json.dumps(value)
            for section, fields in merge_sections(self.sections, overrides).items()
            for field, value in fields.items()
        }


@contextlib.contextmanager
def scratch_stack(
    postgres_server: str, mongo_url: str, redis_url: str, *, database: str, namespace: str
) -> Iterator[Stack]:
    """A stack on fresh data: a new PostgreSQL database and a MongoDB database, both named
    ``database``, and the Redis key namespace ``namespace``; all removed afterwards."""
    with (
        servers.scratch_postgres_database(postgres_server, database) as postgres_url,
        servers.scratch_mongo_database(mongo_url, database),
        servers.scratch_redis_namespace(redis_url, namespace),
    ):
        yield Stack.located(
            postgres_url=postgres_url,
            mongo_url=mongo_url,
            mongo_database=database,
            redis_url=redis_url,
            redis_namespace=namespace,
        )
