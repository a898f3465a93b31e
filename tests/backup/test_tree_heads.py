"""Signed tree heads: ``backup create`` stores the log's head, ``backup verify`` checks the
archived audit log against it (and against one kept elsewhere) offline, with
nexus_store.audit_proofs. The chain alone cannot catch a rewrite that recomputes every hash
after the edited entry (without ``audit.hmac_key`` the chain hashes are plain SHA-256); the
signed head does."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import bson
import orjson
import pytest
from bson.codec_options import CodecOptions

from nexus_store import NexusStore
from nexus_store.backup import _mongo
from nexus_store.backup._archive import MANIFEST, MANIFEST_CHECKSUM
from nexus_store.backup.service import verify_archive
from nexus_store.errors import BackupError, ConfigurationError
from nexus_store.mongo.audit.chain import checkpoint_signature, entry_hash
from tests.backup.test_archive import _reseal_manifest
from tests.support import run_cli

_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def _files(archive: Path, role: str) -> str:
    section = orjson.loads((archive / MANIFEST).read_bytes())["mongo"]
    return _mongo.file_names(section["database"], section["roles"][role])[0]


def _read(archive: Path, name: str) -> list[dict[str, Any]]:
    return bson.decode_all((archive / name).read_bytes(), _OPTIONS)


def _rewrite_manifest(archive: Path, change: Any) -> None:
    manifest = orjson.loads((archive / MANIFEST).read_bytes())
    change(manifest)
    raw = orjson.dumps(manifest)
    (archive / MANIFEST).write_bytes(raw)
    (archive / MANIFEST_CHECKSUM).write_text(hashlib.sha256(raw).hexdigest() + "\n")


def _rewrite_history(archive: Path, seq: int) -> None:
    """Change entry ``seq``'s action and recompute every later hash and checkpoint, then
    the manifest's sizes and checksums: what an attacker with the archive (and no HMAC key)
    can do."""
    audit_file, checkpoint_file = _files(archive, "audit"), _files(archive, "checkpoints")
    entries = sorted(_read(archive, audit_file), key=lambda d: d["seq"])
    previous = None
    for entry in entries:
        if entry["seq"] == seq:
            entry["action"] = "rewritten"
        if entry["seq"] >= seq:
            assert previous is not None
            entry["prev_hash"] = previous["hash"]
            entry["hash"] = entry_hash(entry["prev_hash"], entry, None)
        previous = entry
    by_seq = {entry["seq"]: entry for entry in entries}
    checkpoints = _read(archive, checkpoint_file)
    for checkpoint in checkpoints:
        checkpoint["hash"] = by_seq[checkpoint["seq"]]["hash"]
        checkpoint["signature"] = checkpoint_signature(
            checkpoint["seq"], checkpoint["hash"], checkpoint["ts"], None
        )
    for name, documents in ((audit_file, entries), (checkpoint_file, checkpoints)):
        (archive / name).write_bytes(b"".join(bson.encode(d) for d in documents))
        _reseal_manifest(archive, name)


async def test_create_stores_the_head_and_verify_checks_it(
    populated: Any, archives: dict[str, Path], tmp_path: Path
) -> None:
    manifest = orjson.loads((archives["plain"] / MANIFEST).read_bytes())
    head = manifest["mongo"]["treeHead"]
    assert head["algorithm"] == "ed25519"
    assert head["size"] == manifest["mongo"]["collections"]["audit_log"]
    report = verify_archive(populated.settings, archives["plain"], key_file=None)
    assert report.tree_heads == f"archived tree head (size {head['size']}) verified"

    # A head kept elsewhere: the live log's, now (the archive's log must extend it).
    async with NexusStore(populated.settings) as store:
        kept = await store.audit.tree_head()
    assert kept.size == head["size"]
    head_file = tmp_path / "head.json"
    head_file.write_text(kept.to_json())
    done = run_cli(
        "backup", "verify", str(archives["plain"]), "--tree-head", str(head_file),
        env={"NEXUS_AUDIT__SIGNING_KEY": populated.settings.audit.signing_key.get_secret_value()},
    )  # fmt: skip
    assert done.returncode == 0, done.output
    assert "given tree head" in done.output

    # A head the archive does not extend (a later, larger one) and a forged one are refused.
    larger = dataclasses.replace(kept, size=kept.size + 1)
    for head_given, problem in (
        (larger, "valid signature"),
        (dataclasses.replace(kept, root_hash="00" * 32), "valid signature"),
    ):
        with pytest.raises(BackupError, match=problem):
            verify_archive(
                populated.settings, archives["plain"], key_file=None, tree_head=head_given
            )
    # Without the log's key: the entries are checked against the root, and the report says
    # that the signature was not; a given head cannot be checked at all.
    keyless = populated.settings.model_copy(
        update={"audit": populated.settings.audit.model_copy(update={"signing_key": None})}
    )
    report = verify_archive(keyless, archives["plain"], key_file=None)
    assert report.tree_heads is not None and "signature not checked" in report.tree_heads
    with pytest.raises(ConfigurationError, match=r"audit\.signing_key"):
        verify_archive(keyless, archives["plain"], key_file=None, tree_head=kept)


async def test_rewritten_history_with_recomputed_hashes_fails_against_the_head(
    populated: Any, archives: dict[str, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "tampered"
    shutil.copytree(archives["plain"], archive)
    _rewrite_history(archive, seq=5)
    with pytest.raises(BackupError, match="do not hash to the tree head's root") as caught:
        verify_archive(populated.settings, archive, key_file=None)
    assert caught.value.file == _files(archive, "audit")
    done = run_cli(
        "backup", "verify", str(archive),
        env={"NEXUS_AUDIT__SIGNING_KEY": populated.settings.audit.signing_key.get_secret_value()},
    )  # fmt: skip
    assert done.returncode == 1, done.output

    # The control: the same rewrite passes every other check once the head is gone.
    _rewrite_manifest(archive, lambda manifest: manifest["mongo"].pop("treeHead"))
    report = verify_archive(populated.settings, archive, key_file=None)
    assert report.tree_heads is None and report.audit_checked


def test_a_head_file_that_is_not_one_is_a_usage_error(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "head.json"
    bad.write_text('{"size": 1}')
    done = run_cli("backup", "verify", str(archives["plain"]), "--tree-head", str(bad), env={})
    assert done.returncode == 2, done.output
    assert "tree_head" in done.output
