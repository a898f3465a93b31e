"""Bad archives and occupied targets are refused, naming the file, and nothing is written."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from devstack.stack import Stack
from nexus_store import NexusStore
from nexus_store.backup._archive import MANIFEST, MANIFEST_CHECKSUM
from nexus_store.errors import BackupError, ConfigurationError, ValidationError
from tests.support import _child_env, cli_command, run_cli_many


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def _files(archive: Path) -> list[str]:
    return sorted(orjson.loads((archive / MANIFEST).read_bytes())["files"])


def _rewrite_manifest(archive: Path, **changes: Any) -> None:
    import hashlib

    manifest = orjson.loads((archive / MANIFEST).read_bytes())
    for dotted, value in changes.items():
        section, _, field = dotted.rpartition("__")
        (manifest[section] if section else manifest)[field] = value
    data = orjson.dumps(manifest)
    (archive / MANIFEST).write_bytes(data)
    (archive / MANIFEST_CHECKSUM).write_text(hashlib.sha256(data).hexdigest())


async def _empty(stack: Stack, snapshot: Any) -> None:
    """The target holds nothing: no table, no document, no key, no staged leftovers."""
    import psycopg

    state = await snapshot(stack.settings())
    assert state["postgres"] == {}
    assert not any(state["mongo"].values())
    assert not any(value for key, value in state.items() if key.startswith("redis:"))
    server, name = stack.postgres_url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres") as conn:
        staged = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (name[:40] + "%",)
        ).fetchall()
    assert [row[0] for row in staged] == [name]


def _flip(path: Path, offset: int) -> None:
    """Flip one bit of the byte at ``offset`` (modulo the size); an empty file gains a byte."""
    data = bytearray(path.read_bytes()) or bytearray(b"\x00")
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
async def test_one_flipped_byte_in_any_file_is_refused_before_anything_is_written(
    kind: str, archives: dict[str, Path], target_stack: Stack, key_file: Path, snapshot: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    names = [*_files(archives[kind]), MANIFEST]
    async with NexusStore(target_stack.settings()) as store:
        for index, name in enumerate(names):
            archive = tmp_path / f"{kind}-{index}"
            shutil.copytree(archives[kind], archive)
            _flip(archive / name, secrets.randbelow(10**6))
            with pytest.raises(BackupError) as refused:
                await store.backup.restore(archive, key_file=key_file)
            assert refused.value.file == name
            assert (
                "checksum mismatch" in refused.value.problem or "extended" in refused.value.problem
            )
    await _empty(target_stack, snapshot)


async def test_truncated_and_missing_files_are_refused(
    archives: dict[str, Path], target_stack: Stack, snapshot: Any, tmp_path: Path
) -> None:
    archive = _copy(archives["plain"], tmp_path)
    dump = archive / "postgres/database.dump"
    dump.write_bytes(dump.read_bytes()[:-100])
    async with NexusStore(target_stack.settings()) as store:
        with pytest.raises(BackupError, match="truncated") as refused:
            await store.backup.restore(archive)
        assert refused.value.file == "postgres/database.dump"
        shutil.copy(archives["plain"] / "postgres/database.dump", dump)
        (archive / "redis/sessions.keys").unlink()
        with pytest.raises(BackupError, match="missing") as refused:
            await store.backup.restore(archive)
        assert refused.value.file == "redis/sessions.keys"
        (archive / MANIFEST).unlink()
        with pytest.raises(BackupError, match="not a complete archive") as refused:
            await store.backup.restore(archive)
        assert refused.value.file == MANIFEST
    await _empty(target_stack, snapshot)


async def test_a_tampered_encrypted_file_with_a_matching_checksum_is_refused(
    archives: dict[str, Path], target_stack: Stack, key_file: Path, snapshot: Any, tmp_path: Path
) -> None:
    """Even when the manifest is rewritten to match, AES-GCM refuses the altered chunk."""
    import hashlib

    archive = _copy(archives["encrypted"], tmp_path)
    name = "redis/queue.keys"
    _flip(archive / name, 40)
    data = (archive / name).read_bytes()
    manifest = orjson.loads((archive / MANIFEST).read_bytes())
    manifest["files"][name]["sha256"] = hashlib.sha256(data).hexdigest()
    _rewrite_manifest(archive, files=manifest["files"])
    async with NexusStore(target_stack.settings()) as store:
        with pytest.raises(BackupError, match="cannot be decrypted") as refused:
            await store.backup.restore(archive, key_file=key_file)
    assert refused.value.file == name
    await _empty(target_stack, snapshot)


async def test_newer_format_newer_schema_and_unknown_store_are_refused(
    archives: dict[str, Path], target_stack: Stack, snapshot: Any, tmp_path: Path
) -> None:
    async with NexusStore(target_stack.settings()) as store:
        archive = _copy(archives["plain"], tmp_path / "format")
        _rewrite_manifest(archive, formatVersion=99)
        with pytest.raises(BackupError, match="format version 99 is newer"):
            await store.backup.restore(archive)
        archive = _copy(archives["plain"], tmp_path / "schema")
        _rewrite_manifest(archive, postgres__alembicRevision="ffffffffffff")
        with pytest.raises(BackupError, match="schema revision 'ffffffffffff' is newer"):
            await store.backup.restore(archive)
        with pytest.raises(ValidationError, match="unknown store 'mysql'"):
            await store.backup.restore(archives["plain"], only="mysql")  # type: ignore[arg-type]
    await _empty(target_stack, snapshot)


def test_cli_wrong_key_names_the_file_and_exits_1(
    archives: dict[str, Path], target_stack: Stack, tmp_path: Path
) -> None:
    encrypted, plain = str(archives["encrypted"]), str(archives["plain"])
    wrong = {**target_stack.environment(), "NEXUS_BACKUP_KEY": secrets.token_hex(32)}
    result, verified = run_cli_many(
        [("backup", "restore", encrypted), ("backup", "verify", encrypted)], env=wrong
    )
    no_key, unknown, missing = run_cli_many(
        [
            ("backup", "verify", encrypted),
            ("backup", "restore", plain, "--only", "mysql"),
            ("backup", "verify", str(tmp_path / "nowhere")),
        ],
        env={},
    )
    assert result.returncode == 1, result.output
    assert "cannot be decrypted: wrong key" in result.stderr
    assert "mongo/" in result.stderr or "postgres/" in result.stderr or "redis/" in result.stderr
    assert verified.returncode == 1 and "cannot be decrypted" in verified.stderr
    assert no_key.returncode == 0 and "no key given" in no_key.stderr
    assert unknown.returncode == 2
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    for done in (result, verified, no_key, unknown, missing):
        assert "Traceback" not in done.output


async def test_restore_onto_data_without_force_is_refused(
    archives: dict[str, Path], populated: Any, snapshot: Any
) -> None:
    before = await snapshot(populated.settings)
    async with NexusStore(populated.settings) as store:
        with pytest.raises(BackupError, match="already holds nexus-store data") as refused:
            await store.backup.restore(archives["plain"])
    assert "--force" in refused.value.problem
    assert await snapshot(populated.settings) == before


def test_a_full_disk_is_a_typed_error_and_leaves_no_partial_archive(
    populated: Any, source_stack: Stack, tmp_path: Path
) -> None:
    """RLIMIT_FSIZE makes every write past 64 KiB fail (EFBIG), as a full disk would (the
    MongoDB files are written by nexus-store itself; pg_dump reports its own failures)."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    archive = tmp_path / "archive"
    done = subprocess.run(
        cli_command("backup", "create", str(archive), "--only", "mongo"),
        env=_child_env(source_stack.environment()),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,  # a resource limit for the child only
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot write" in done.stderr or "no space" in done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []  # the partial archive was removed


def test_without_a_key_the_error_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from nexus_store.backup._archive import load_key

    monkeypatch.delenv("NEXUS_BACKUP_KEY", raising=False)
    monkeypatch.delenv("NEXUS_BACKUP_KEY_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="NEXUS_BACKUP_KEY"):
        load_key(None, required=True)


async def test_a_role_without_createdb_gets_a_typed_error_and_the_target_is_untouched(
    archives: dict[str, Path], target_stack: Stack, snapshot: Any, unique: str
) -> None:
    """A driver refusal reaches the caller as a nexus-store error, never a psycopg one."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    role = f"nexus_bk_nocreate_{unique}"
    server = target_stack.postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    try:
        url = (
            make_url(target_stack.postgres_url)
            .set(username=role, password=None)
            .render_as_string(hide_password=False)
        )
        limited = target_stack.merged(postgres={"url": url})
        async with NexusStore(limited.settings()) as store:
            with pytest.raises(BackupError, match="permission denied to create database"):
                await store.backup.restore(archives["plain"], only="postgres")
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    await _empty(target_stack, snapshot)


async def test_a_dump_pg_restore_rejects_leaves_no_staged_database(
    archives: dict[str, Path], target_stack: Stack, snapshot: Any, tmp_path: Path
) -> None:
    """A dump with a valid checksum that pg_restore cannot read (written so by a bad tool,
    say): the staged database is dropped and the target keeps its state."""
    import hashlib

    archive = _copy(archives["plain"], tmp_path)
    name = "postgres/database.dump"
    (archive / name).write_bytes(b"PGDMP" + secrets.token_bytes(4000))
    manifest = orjson.loads((archive / MANIFEST).read_bytes())
    data = (archive / name).read_bytes()
    manifest["files"][name].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    _rewrite_manifest(archive, files=manifest["files"])
    async with NexusStore(target_stack.settings()) as store:
        with pytest.raises(BackupError, match="pg_restore failed") as refused:
            await store.backup.restore(archive)
    assert refused.value.file == name
    await _empty(target_stack, snapshot)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        # Read for their truthiness before: force="no" forced a restore over live data.
        ({"force": "no"}, "force"),
        ({"force": 1}, "force"),
        # Called between steps: a non-function failed with TypeError after work was done.
        ({"progress": "quiet"}, "progress"),
        # Checked only once the archive was read.
        ({"only": ["postgres"]}, "only"),
    ],
)
async def test_restore_arguments_are_checked_before_the_archive_is_read(
    archives: dict[str, Path],
    target_stack: Stack,
    snapshot: Any,
    arguments: dict[str, Any],
    field: str,
) -> None:
    async with NexusStore(target_stack.settings()) as store:
        with pytest.raises(ValidationError) as refused:
            await store.backup.restore(archives["plain"], **arguments)
    assert refused.value.field == field
    await _empty(target_stack, snapshot)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"encrypt": "no"}, "encrypt"),  # was read as True
        ({"progress": 5}, "progress"),
        ({"redis_areas": 5}, "redis_areas"),  # TypeError: 'int' object is not iterable
        ({"redis_areas": "sessions"}, "redis_areas"),
    ],
)
async def test_create_arguments_are_refused_before_any_work(
    source_stack: Stack, tmp_path: Path, arguments: dict[str, Any], field: str
) -> None:
    target = tmp_path / "archive"
    async with NexusStore(source_stack.settings()) as store:
        with pytest.raises(ValidationError) as refused:
            await store.backup.create(target, **arguments)
    assert refused.value.field == field
    assert not target.exists()
