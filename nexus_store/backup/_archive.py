"""The archive on disk: a directory of files listed, with size and SHA-256, in its manifest.

    PATH/manifest.json                     what is inside (see docs/backup.md)
    PATH/postgres/database.dump            pg_dump custom format
    PATH/mongo/<db>/<collection>.bson      mongodump's layout
    PATH/mongo/<db>/<collection>.metadata.json
    PATH/redis/<area>.keys                 DUMP payloads with their absolute expiry

An archive is written under a temporary name next to PATH and renamed to PATH when complete,
so a killed ``create`` never leaves a half archive at PATH.

Encrypted files (``--encrypt``) are AES-256-GCM in 1 MiB chunks: a header (magic and an
8-byte random nonce prefix), then each chunk sealed with the nonce ``prefix || index`` and the
associated data ``file name || index || last-chunk flag``, so a chunk cannot be edited, moved
to another file, reordered or dropped (truncation included) without failing to open. The
manifest records the SHA-256 of the stored (encrypted) bytes, so ``verify`` checks every file
without the key.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from nexus_store.errors import BackupError, ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CHUNK",
    "FORMAT_VERSION",
    "MANIFEST",
    "ArchiveReader",
    "ArchiveWriter",
    "load_key",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The manifest's own SHA-256, so that a damaged manifest is refused, not trusted.
MANIFEST_CHECKSUM = "manifest.json.sha256"
CHUNK = 1024 * 1024
_MAGIC = b"NXBKGCM1"
_PREFIX_BYTES = 8
_TAG_BYTES = 16
#: The environment variable holding the encryption key (64 hex digits or 44 base64 chars).
KEY_VARIABLE = "NEXUS_BACKUP_KEY"
KEY_FILE_VARIABLE = "NEXUS_BACKUP_KEY_FILE"


def _cipher(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # the crypto extra is optional
        raise ConfigurationError(
            "encrypted backups need the cryptography package: pip install 'nexus-store[crypto]'",
            setting="backup.encrypt",
        ) from None
    return AESGCM(key)


def _parse_key(text: str, where: str) -> bytes:
    import base64
    import binascii

    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise ConfigurationError(
            f"{where}: the backup key must be 32 bytes, as 64 hex digits or base64",
            setting="backup.key",
        )
    return key


def load_key(key_file: Path | None = None, *, required: bool) -> bytes | None:
    """The AES-256 key: from ``key_file``, else ``NEXUS_BACKUP_KEY_FILE``, else
    ``NEXUS_BACKUP_KEY``. Never from a command-line argument (it would show in ``ps``)."""
    path = key_file or (
        Path(os.environ[KEY_FILE_VARIABLE]) if KEY_FILE_VARIABLE in os.environ else None
    )
    if path is not None:
        try:
            return _parse_key(path.read_text(encoding="ascii"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"{path}: cannot read the backup key ({type(exc).__name__})", setting="backup.key"
            ) from None
    if os.environ.get(KEY_VARIABLE):
        return _parse_key(os.environ[KEY_VARIABLE], KEY_VARIABLE)
    if required:
        raise ConfigurationError(
            f"no backup key: set {KEY_VARIABLE} or {KEY_FILE_VARIABLE}, or pass --key-file",
            setting="backup.key",
        )
    return None


def _aad(name: str, index: int, last: bool) -> bytes:
    return name.encode() + struct.pack(">I?", index, last)


@dataclass
class FileRecord:
    size: int
    sha256: str


class _Sink:
    """One archive file being written: hashes (and seals) what it stores."""

    def __init__(self, handle: IO[bytes], name: str, key: bytes | None) -> None:
        self._handle = handle
        self._name = name
        self._digest = hashlib.sha256()
        self._size = 0
        self._aead = _cipher(key) if key is not None else None
        self._prefix = secrets.token_bytes(_PREFIX_BYTES)
        self._pending = bytearray()
        self._index = 0
        if self._aead is not None:
            self._store(_MAGIC + self._prefix)

    def _store(self, data: bytes) -> None:
        try:
            self._handle.write(data)
        except OSError as exc:
            raise _write_error(exc, self._name) from None
        self._digest.update(data)
        self._size += len(data)

    def _seal(self, chunk: bytes, last: bool) -> None:
        assert self._aead is not None
        nonce = self._prefix + struct.pack(">I", self._index)
        self._store(self._aead.encrypt(nonce, chunk, _aad(self._name, self._index, last)))
        self._index += 1

    def write(self, data: bytes) -> None:
        if self._aead is None:
            self._store(data)
            return
        self._pending += data
        while len(self._pending) > CHUNK:
            self._seal(bytes(self._pending[:CHUNK]), last=False)
            del self._pending[:CHUNK]

    def finish(self) -> FileRecord:
        if self._aead is not None:
            self._seal(bytes(self._pending), last=True)
            self._pending.clear()
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise _write_error(exc, self._name) from None
        return FileRecord(self._size, self._digest.hexdigest())


def _write_error(exc: OSError, name: str) -> BackupError:
    if exc.errno == errno.ENOSPC:
        return BackupError("no space left on the device", file=name)
    return BackupError(f"cannot write ({exc.strerror or type(exc).__name__})", file=name)


class ArchiveWriter:
    """Writes an archive under ``<PATH>.partial-<hex>``; :meth:`commit` renames it to PATH."""

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self.key = key
        if path.exists():
            raise BackupError("already exists; choose a new archive path", file=str(path))
        self.staging = path.with_name(f"{path.name}.partial-{secrets.token_hex(4)}")
        try:
            self.staging.mkdir(parents=True)
        except OSError as exc:
            raise _write_error(exc, str(self.staging)) from None
        self.files: dict[str, dict[str, Any]] = {}

    def local_path(self, name: str) -> Path:
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def record_written(self, name: str) -> FileRecord:
        """Size and SHA-256 of ``name``, written in clear by a tool (pg_dump ``--file``)."""
        digest = hashlib.sha256()
        size = 0
        with open(self.staging / name, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
                size += len(block)
        return FileRecord(size, digest.hexdigest())

    def open(self, name: str) -> _FileContext:
        return _FileContext(self, name)

    def add(self, name: str, record: FileRecord, **facts: Any) -> None:
        self.files[name] = {"size": record.size, "sha256": record.sha256, **facts}

    def commit(self, manifest: dict[str, Any]) -> None:
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        try:
            for name, content in (
                (MANIFEST, data),
                (MANIFEST_CHECKSUM, hashlib.sha256(data).hexdigest().encode() + b"\n"),
            ):
                with open(self.staging / name, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
            self.staging.rename(self.path)
        except OSError as exc:
            raise _write_error(exc, MANIFEST) from None

    def abandon(self) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)


class _FileContext:
    def __init__(self, writer: ArchiveWriter, name: str) -> None:
        self._writer = writer
        self._name = name
        self._handle: IO[bytes] | None = None
        self.sink: _Sink | None = None
        self.record: FileRecord | None = None

    def __enter__(self) -> _Sink:
        try:
            self._handle = open(self._writer.local_path(self._name), "wb")
        except OSError as exc:
            raise _write_error(exc, self._name) from None
        self.sink = _Sink(self._handle, self._name, self._writer.key)
        return self.sink

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._handle is not None and self.sink is not None
        try:
            if exc_type is None:
                self.record = self.sink.finish()
        finally:
            self._handle.close()


class ArchiveReader:
    """Reads an archive, checking each file against the manifest before using it."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self.key = key
        self.manifest = self._load_manifest()
        self.encrypted = bool(self.manifest.get("encrypted"))

    def _load_manifest(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise BackupError("no archive here (not a directory)", file=str(self.path))
        try:
            data = (self.path / MANIFEST).read_bytes()
            checksum = (self.path / MANIFEST_CHECKSUM).read_text(encoding="ascii").strip()
        except FileNotFoundError as exc:
            missing = Path(str(exc.filename)).name
            raise BackupError("missing; this is not a complete archive", file=missing) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupError(f"unreadable ({type(exc).__name__})", file=MANIFEST) from None
        if hashlib.sha256(data).hexdigest() != checksum:
            raise BackupError(f"checksum mismatch (see {MANIFEST_CHECKSUM})", file=MANIFEST)
        try:
            manifest = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BackupError("not valid JSON", file=MANIFEST) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise BackupError("not a nexus-store backup manifest", file=MANIFEST)
        version = manifest.get("formatVersion")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BackupError(
                f"archive format version {version!r} is newer than this nexus-store reads "
                f"({FORMAT_VERSION}); upgrade nexus-store",
                file=MANIFEST,
            )
        return manifest

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files: dict[str, dict[str, Any]] = self.manifest["files"]
        return files

    def check(self, name: str) -> None:
        """The stored file has the manifest's size and SHA-256."""
        expected = self.files.get(name)
        if expected is None:
            raise BackupError("not listed in the manifest", file=name)
        path = self.path / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BackupError("missing from the archive", file=name) from None
        if size != expected["size"]:
            raise BackupError(
                f"truncated or extended: {size} bytes, the manifest says {expected['size']}",
                file=name,
            )
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        if digest.hexdigest() != expected["sha256"]:
            raise BackupError("checksum mismatch (SHA-256 differs from the manifest)", file=name)

    def check_all(self) -> None:
        for name in self.files:
            self.check(name)

    def chunks(self, name: str) -> Iterator[bytes]:
        """The plaintext of ``name`` in chunks (decrypted and authenticated when sealed)."""
        path = self.path / name
        with open(path, "rb") as handle:
            if not self.encrypted:
                while block := handle.read(CHUNK):
                    yield block
                return
            if self.key is None:
                raise BackupError("the archive is encrypted: a backup key is needed", file=name)
            yield from self._open_sealed(handle, name, _cipher(self.key))

    @staticmethod
    def _open_sealed(handle: IO[bytes], name: str, aead: AESGCM) -> Iterator[bytes]:
        from cryptography.exceptions import InvalidTag

        header = handle.read(len(_MAGIC) + _PREFIX_BYTES)
        if len(header) != len(_MAGIC) + _PREFIX_BYTES or not header.startswith(_MAGIC):
            raise BackupError("not an encrypted nexus-store file (bad header)", file=name)
        prefix = header[len(_MAGIC) :]
        index = 0
        sealed = handle.read(CHUNK + _TAG_BYTES)
        while True:
            following = handle.read(CHUNK + _TAG_BYTES)
            last = not following
            nonce = prefix + struct.pack(">I", index)
            try:
                plain = aead.decrypt(nonce, sealed, _aad(name, index, last))
            except InvalidTag:
                raise BackupError(
                    "cannot be decrypted: wrong key, or the file was altered or truncated",
                    file=name,
                ) from None
            yield plain
            if last:
                return
            sealed = following
            index += 1

    def read_bytes(self, name: str) -> bytes:
        return b"".join(self.chunks(name))
