"""``nexus-store outbox relay --once`` and ``nexus-store privacy export USER_ID``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from nexus_store import NexusStore
from nexus_store.postgres.models import User
from tests.crossstore.conftest import environment_for


def cli(urls: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("NEXUS_")}
    return subprocess.run(
        [sys.executable, "-m", "nexus_store.cli", *args],
        env={**inherited, **environment_for(urls)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_relay_once_and_export(xstore: NexusStore, crossstore_urls: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:10]
    user = await xstore.entities.create(
        User, email=f"{tag}@example.com", username=f"u{tag}", password_hash="$h$cli-secret"
    )
    relayed = cli(crossstore_urls, "outbox", "relay", "--once")
    assert relayed.returncode == 0, relayed.stderr
    assert "1 row(s) delivered" in relayed.stderr
    assert [e.action for e in (await xstore.audit.by_resource("users", str(user.id))).entries] == [
        "create"
    ]

    exported = cli(crossstore_urls, "privacy", "export", str(user.id))
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)  # stdout is the document and nothing else
    assert document["postgres"]["users"][0]["email"] == user.email
    assert [entry["action"] for entry in document["audit"]] == ["create"]
    assert "cli-secret" not in exported.stdout
    assert "export users" in exported.stderr and "bytes written" in exported.stderr


async def test_export_refuses_bad_and_unknown_ids(crossstore_urls: dict[str, str]) -> None:
    bad = cli(crossstore_urls, "privacy", "export", "42; DROP TABLE users")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "must be a UUID" in bad.stderr
    unknown = cli(crossstore_urls, "privacy", "export", str(uuid.uuid4()))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "not found" in unknown.stderr
