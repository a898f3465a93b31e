"""The archive format without servers: sealed chunks, checksums, the offline chain check,
listing and pruning."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest

from nexus_store.backup._archive import (
    CHUNK,
    MANIFEST,
    MANIFEST_CHECKSUM,
    ArchiveReader,
    ArchiveWriter,
)
from nexus_store.backup._chain import check_chain
from nexus_store.backup.service import list_archives, prune_archives
from nexus_store.errors import BackupError
from nexus_store.mongo.audit.chain import GENESIS, checkpoint_signature, entry_hash
from tests.support import run_cli

KEY = secrets.token_bytes(32)
PAYLOAD = secrets.token_bytes(CHUNK * 2 + 12345)  # three chunks, the last one short


def _write(path: Path, key: bytes | None, files: dict[str, bytes], created: str = "") -> Path:
    writer = ArchiveWriter(path, key)
    for name, data in files.items():
        file = writer.open(name)
        with file as sink:
            for start in range(0, len(data), 100_000):
                sink.write(data[start : start + 100_000])
        assert file.record is not None
        writer.add(name, file.record)
    created = created or dt.datetime.now(dt.UTC).isoformat()
    writer.commit(
        {
            "formatVersion": 1,
            "created": created,
            "stores": ["postgres"],
            "encrypted": key is not None,
            "files": writer.files,
        }
    )
    return path


def _reseal_manifest(archive: Path, name: str) -> None:
    """Point the manifest at the file's current bytes (an attacker who rewrites both)."""
    manifest = orjson.loads((archive / MANIFEST).read_bytes())
    data = (archive / name).read_bytes()
    manifest["files"][name].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    raw = orjson.dumps(manifest)
    (archive / MANIFEST).write_bytes(raw)
    (archive / MANIFEST_CHECKSUM).write_text(hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "sealed"])
def test_files_read_back_exactly_and_the_stored_bytes_match_the_manifest(
    tmp_path: Path, key: bytes | None
) -> None:
    archive = _write(tmp_path / "a", key, {"postgres/x.dump": PAYLOAD, "redis/empty.keys": b""})
    reader = ArchiveReader(archive, key)
    reader.check_all()
    assert reader.read_bytes("postgres/x.dump") == PAYLOAD
    assert reader.read_bytes("redis/empty.keys") == b""
    stored = (archive / "postgres/x.dump").read_bytes()
    assert (stored == PAYLOAD) is (key is None)
    assert not list(tmp_path.glob("*.partial-*"))


def test_sealed_chunks_cannot_be_reordered_dropped_moved_or_opened_with_another_key(
    tmp_path: Path,
) -> None:
    archive = _write(tmp_path / "a", KEY, {"postgres/x.dump": PAYLOAD, "redis/y.keys": PAYLOAD})
    name = "postgres/x.dump"
    with pytest.raises(BackupError, match="cannot be decrypted") as wrong:
        ArchiveReader(archive, secrets.token_bytes(32)).read_bytes(name)
    assert wrong.value.file == name

    stored = (archive / name).read_bytes()
    header, sealed = stored[:16], CHUNK + 16
    first, second, rest = (
        stored[16 : 16 + sealed],
        stored[16 + sealed : 16 + 2 * sealed],
        stored[16 + 2 * sealed :],
    )
    for label, forged in {
        "swapped": header + second + first + rest,
        "last chunk dropped": header + first + second,
        "moved from another file": (archive / "redis/y.keys").read_bytes(),
    }.items():
        (archive / name).write_bytes(forged)
        _reseal_manifest(archive, name)
        reader = ArchiveReader(archive, KEY)
        reader.check(name)  # the checksums were rewritten to match...
        with pytest.raises(BackupError, match="cannot be decrypted"):  # ...GCM still refuses
            reader.read_bytes(name)
        assert label


def test_an_existing_path_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(BackupError, match="already exists"):
        ArchiveWriter(tmp_path / "a", None)


def _chain(count: int, key: bytes | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    entries, checkpoints, previous = [], [], GENESIS
    ts = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for seq in range(1, count + 1):
        document = {"seq": seq, "ts": ts, "actor": "a", "action": "b", "resource_type": "c",
                    "resource_id": str(seq), "prev_hash": previous}  # fmt: skip
        document["hash"] = previous = entry_hash(previous, document, key)
        entries.append(document)
        if seq % 5 == 0:
            signature = checkpoint_signature(seq, document["hash"], ts, key)
            checkpoints.append({"seq": seq, "hash": document["hash"], "ts": ts,
                                "signature": signature})  # fmt: skip
    return entries, checkpoints


@pytest.mark.parametrize("key", [None, b"hmac-key"], ids=["sha256", "hmac"])
def test_offline_chain_check_finds_edits_gaps_and_a_cut_tail(key: bytes | None) -> None:
    now = dt.datetime.now(dt.UTC)
    entries, checkpoints = _chain(12, key)
    found = check_chain(entries, checkpoints, key, now)
    assert (found.ok, found.checked, found.checkpoints) == (True, 12, 2)

    edited = [dict(e) for e in entries]
    edited[6]["actor"] = "mallory"
    assert check_chain(edited, checkpoints, key, now).first_broken_seq == 7
    assert check_chain(entries[:3] + entries[4:], checkpoints, key, now).first_broken_seq == 4
    cut = check_chain(entries[:8], checkpoints, key, now)
    assert (cut.ok, cut.first_broken_seq) == (False, 9)
    assert "checkpoint 10" in (cut.reason or "")
    if key is not None:
        assert not check_chain(entries, checkpoints, b"other", now).ok


def test_list_and_prune_keep_the_newest_of_each_recent_day_and_week(tmp_path: Path) -> None:
    base = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    ages = [0, 0.1, 1, 2, 3, 9, 16, 23, 40]  # days ago; two on the newest day
    for age in ages:
        created = base - dt.timedelta(days=age)
        _write(tmp_path / f"b-{age}", None, {"postgres/x.dump": b"x"}, created.isoformat())
    (tmp_path / "b-incomplete.partial-1234").mkdir()  # a killed create: not an archive
    listed = list_archives(tmp_path)
    assert [a.name for a in listed] == [f"b-{age}" for age in reversed(ages)]

    plan = prune_archives(tmp_path, keep_daily=3, keep_weekly=3, dry_run=True)
    assert sorted(plan.kept) == sorted(["b-0", "b-1", "b-2", "b-9", "b-16"])
    assert len(os.listdir(tmp_path)) == len(ages) + 1  # a dry run deletes nothing

    result = run_cli(
        "backup", "prune", str(tmp_path), "--keep-daily", "3", "--keep-weekly", "3",
        "--format", "json", env={},
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert sorted(result.json()["deleted"]) == sorted(plan.deleted)
    assert sorted(a.name for a in list_archives(tmp_path)) == sorted(plan.kept)
    listing = run_cli("backup", "list", str(tmp_path), "--format", "json", env={})
    assert [a["name"] for a in listing.json()] == [a.name for a in list_archives(tmp_path)]
