"""``nexus-store outbox relay --once`` and ``nexus-store privacy export USER_ID``."""

from __future__ import annotations

import json
import uuid

from nexus_store import NexusStore
from nexus_store.postgres.models import User
from tests.support import run_cli


async def test_relay_once_and_export(store: NexusStore, crossstore_env: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:10]
    user = await store.entities.create(
        User, email=f"{tag}@example.com", username=f"u{tag}", password_hash="$h$cli-secret"
    )
    relayed = run_cli("outbox", "relay", "--once", env=crossstore_env)
    assert relayed.returncode == 0, relayed.stderr
    assert "1 row(s) delivered" in relayed.stderr
    assert [e.action for e in (await store.audit.by_resource("users", str(user.id))).entries] == [
        "create"
    ]

    exported = run_cli("privacy", "export", str(user.id), env=crossstore_env)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)  # stdout is the document and nothing else
    assert document["postgres"]["users"][0]["email"] == user.email
    assert [entry["action"] for entry in document["audit"]] == ["create"]
    assert "cli-secret" not in exported.stdout
    assert "export users" in exported.stderr and "bytes written" in exported.stderr


async def test_export_refuses_bad_and_unknown_ids(crossstore_env: dict[str, str]) -> None:
    bad = run_cli("privacy", "export", "42; DROP TABLE users", env=crossstore_env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "must be a UUID" in bad.stderr
    unknown = run_cli("privacy", "export", str(uuid.uuid4()), env=crossstore_env)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "not found" in unknown.stderr
