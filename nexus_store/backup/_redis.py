"""Redis: the durable areas' keys as ``DUMP`` payloads with their absolute expiry.

Only the store's namespace is scanned (``SCAN MATCH <prefix>*``), key by key, so it works on a
shared server and on a cluster alike (redis-py scans every primary). A restore writes each
key with ``RESTORE key <expiry> payload REPLACE ABSTTL``: a session comes back with the
expiry it had, however long the archive waited; a key whose expiry has passed is skipped.

``<area>.keys`` is a sequence of records: key length (u32), key, payload length (u32),
payload, absolute expiry in Unix milliseconds (i64, 0 for none), all big-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from nexus_store.errors import BackupError, ValidationError
from nexus_store.redis.names import AREAS

if TYPE_CHECKING:
    import redis.asyncio

    from nexus_store.backup._archive import ArchiveReader, ArchiveWriter
    from nexus_store.redis.client import RedisBackend
    from nexus_store.redis.names import Area

__all__ = ["DURABLE_AREAS", "areas_from", "dump", "holds_data", "restore"]

#: What a backup holds by default: what cannot be rebuilt (cache and limits can).
DURABLE_AREAS: tuple[Area, ...] = ("sessions", "queue")
_PIPELINE = 500
_HEADER = struct.Struct(">I")
_EXPIRY = struct.Struct(">q")


def areas_from(names: Iterable[str]) -> tuple[Area, ...]:
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise ValidationError("redis_areas", "must be a list of Redis area names")
    chosen: list[Area] = []
    for name in names:
        if name not in AREAS:
            raise ValidationError("redis_areas", f"unknown Redis area {name!r}; one of {AREAS}")
        chosen.append(name)  # checked against AREAS just above
    return tuple(dict.fromkeys(chosen))


def file_name(area: str) -> str:
    return f"redis/{area}.keys"


async def _now_ms(client: redis.asyncio.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _keys(backend: RedisBackend, area: Area) -> list[bytes]:
    client = backend.client(area)
    pattern = backend.keyspace(area).pattern
    return [key async for key in client.scan_iter(match=pattern, count=1000)]


async def dump(
    backend: RedisBackend,
    areas: tuple[Area, ...],
    writer: ArchiveWriter,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Dump each area; returns the manifest's ``redis`` section."""
    counts: dict[str, int] = {}
    with backend.unavailable():
        version = await backend.server_version()
        for area in areas:
            client = backend.client(area)
            keys = await _keys(backend, area)
            now = await _now_ms(client)
            count = 0
            name = file_name(area)
            file = writer.open(name)
            with file as sink:
                for start in range(0, len(keys), _PIPELINE):
                    part = keys[start : start + _PIPELINE]
                    pipe = client.pipeline(transaction=False)
                    for key in part:
                        pipe.dump(key)
                        pipe.pttl(key)
                    replies = await pipe.execute()
                    records = []
                    for index, key in enumerate(part):
                        payload, ttl = replies[2 * index], replies[2 * index + 1]
                        if payload is None or ttl == -2:  # expired since the scan
                            continue
                        expires = now + ttl if ttl >= 0 else 0
                        records.append(
                            _HEADER.pack(len(key)) + key + _HEADER.pack(len(payload)) + payload
                            + _EXPIRY.pack(expires)
                        )  # fmt: skip
                    sink.write(b"".join(records))
                    count += len(records)
            assert file.record is not None
            writer.add(name, file.record, keys=count)
            counts[area] = count
            progress(f"redis {area}: {count} keys")
    return {
        "serverVersion": version,
        "cluster": backend.settings.cluster,
        "namespace": backend.settings.namespace,
        "areas": counts,
    }


def records(chunks: Iterable[bytes], name: str) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, payload, absolute expiry ms) of each record; a cut-off record is an error."""
    buffer = b"".join(chunks)
    offset = 0
    try:
        while offset < len(buffer):
            (size,) = _HEADER.unpack_from(buffer, offset)
            key = buffer[offset + 4 : offset + 4 + size]
            offset += 4 + size
            (size,) = _HEADER.unpack_from(buffer, offset)
            payload = buffer[offset + 4 : offset + 4 + size]
            offset += 4 + size
            (expires,) = _EXPIRY.unpack_from(buffer, offset)
            offset += 8
            if offset > len(buffer) or len(payload) != size:
                raise struct.error("short record")
            yield key, payload, expires
    except struct.error:
        raise BackupError(f"ends inside a record at byte {offset} (truncated)", file=name) from None


async def holds_data(backend: RedisBackend, areas: tuple[Area, ...]) -> bool:
    with backend.unavailable():
        for area in areas:
            client = backend.client(area)
            async for _ in client.scan_iter(match=backend.keyspace(area).pattern, count=1000):
                return True
    return False


def _rename(key: bytes, source: str, target: str) -> bytes:
    """The key under the target namespace (archives may come from another namespace)."""
    head = source.encode() + b":"
    if source == target or not key.startswith(head):
        return key
    return target.encode() + b":" + key[len(head) :]


async def restore(
    backend: RedisBackend,
    reader: ArchiveReader,
    areas: tuple[Area, ...],
    progress: Callable[[str], None],
) -> dict[str, int]:
    """Replace each area's keys with the archive's; returns the keys written per area.

    Idempotent: running it again (after a killed restore) gives the same keys.
    """
    source = reader.manifest["redis"]["namespace"]
    target = backend.settings.namespace
    written: dict[str, int] = {}
    parsed = {
        area: list(records(reader.chunks(file_name(area)), file_name(area))) for area in areas
    }
    with backend.unavailable():
        for area in areas:
            client = backend.client(area)
            stale = await _keys(backend, area)
            for start in range(0, len(stale), _PIPELINE):
                await client.unlink(*stale[start : start + _PIPELINE])
            now = await _now_ms(client)
            live = [item for item in parsed[area] if item[2] == 0 or item[2] > now]
            for start in range(0, len(live), _PIPELINE):
                pipe = client.pipeline(transaction=False)
                for key, payload, expires in live[start : start + _PIPELINE]:
                    pipe.restore(
                        _rename(key, source, target), expires, payload, replace=True,
                        absttl=expires != 0,
                    )  # fmt: skip
                await pipe.execute()
            written[area] = len(live)
            progress(f"redis {area}: {len(live)} keys restored")
    return written
