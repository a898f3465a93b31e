"""Redis: the durable areas' keys as ``DUMP`` payloads with their absolute expiry.

Only the store's namespace is scanned (``SCAN MATCH <prefix>*``), key by key, so it works on a
shared server and on a cluster alike (redis-py scans every primary). A restore stages each
key under a temporary name with ``RESTORE key <expiry> payload REPLACE ABSTTL`` (a session
comes back with the expiry it had, however long the archive waited; a key whose expiry has
passed is skipped); once the restore is committed, :func:`publish` replaces each area's keys
with the staged ones.

``<area>.keys`` is a sequence of records: key length (u32), key, payload length (u32),
payload, absolute expiry in Unix milliseconds (i64, 0 for none), all big-endian.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from nexus_store.backup._pause import pause
from nexus_store.errors import BackupError, ValidationError
from nexus_store.redis.names import AREAS

if TYPE_CHECKING:
    import redis.asyncio

    from nexus_store.backup._archive import ArchiveReader, ArchiveWriter
    from nexus_store.redis.client import RedisBackend
    from nexus_store.redis.names import Area

__all__ = [
    "DURABLE_AREAS",
    "areas_from",
    "discard_staged",
    "dump",
    "holds_data",
    "publish",
    "record_key",
    "stage",
]

#: What a backup holds by default: what cannot be rebuilt (cache and limits can).
DURABLE_AREAS: tuple[Area, ...] = ("sessions", "queue")
_PIPELINE = 500
_HEADER = struct.Struct(">I")
_EXPIRY = struct.Struct(">q")
_STAGED = "__nxr_"
_RECORD = "__nx_restore_pending"


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


def record_key(backend: RedisBackend) -> str:
    """Where a restore without PostgreSQL or MongoDB keeps its plan until it is finished:
    inside the namespace (the documented ACL ``~<namespace>:*`` covers it), and never part
    of an area's keys."""
    return f"{backend.settings.namespace}:{_RECORD}"


async def _keys(backend: RedisBackend, area: Area) -> list[bytes]:
    client = backend.client(area)
    pattern = backend.keyspace(area).pattern
    record = record_key(backend).encode()
    return [key async for key in client.scan_iter(match=pattern, count=1000) if key != record]


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
                async for part in _dumped(client, keys):
                    sink.write(b"".join(
                        _HEADER.pack(len(key)) + key + _HEADER.pack(len(payload)) + payload
                        + _EXPIRY.pack(now + ttl if ttl >= 0 else 0)
                        for key, payload, ttl in part
                    ))  # fmt: skip
                    count += len(part)
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
        return any([await _keys(backend, area) for area in areas])


def _rename(key: bytes, source: str, target: str) -> bytes:
    """The key under the target namespace (archives may come from another namespace)."""
    head = source.encode() + b":"
    if source == target or not key.startswith(head):
        return key
    return target.encode() + b":" + key[len(head) :]


def _stage_prefix(backend: RedisBackend, tag: str, area: Area) -> str:
    """Where a restore stages an area's keys: outside every area's scan pattern (no key
    starts with ``<namespace>__``), one prefix per area (areas may share a database)."""
    return f"{backend.settings.namespace}{_STAGED}{tag}:{area}:"


async def stage(
    backend: RedisBackend,
    reader: ArchiveReader,
    areas: tuple[Area, ...],
    tag: str,
    progress: Callable[[str], None],
) -> dict[str, int]:
    """Write each area's archived keys under the restore's staging prefix (the target's keys
    are untouched); returns the keys staged per area. Expired ones are skipped."""
    source = reader.manifest["redis"]["namespace"]
    target = backend.settings.namespace
    staged: dict[str, int] = {}
    for area in areas:
        name = file_name(area)
        parsed = list(records(reader.chunks(name), name))
        expected = reader.manifest["redis"]["areas"][area]
        if len(parsed) != expected:
            raise BackupError(f"holds {len(parsed)} keys, the manifest says {expected}", file=name)
        prefix = _stage_prefix(backend, tag, area).encode()
        with backend.unavailable():
            client = backend.client(area)
            now = await _now_ms(client)
            live = [item for item in parsed if item[2] == 0 or item[2] > now]
            for start in range(0, len(live), _PIPELINE):
                pipe = client.pipeline(transaction=False)
                for key, payload, expires in live[start : start + _PIPELINE]:
                    pipe.restore(
                        prefix + _rename(key, source, target), expires, payload, replace=True,
                        absttl=expires != 0,
                    )  # fmt: skip
                await pipe.execute()
        staged[area] = len(live)
        progress(f"redis {area}: {len(live)} keys staged")
    return staged


async def _dumped(
    client: redis.asyncio.Redis, keys: list[bytes]
) -> AsyncIterator[list[tuple[bytes, bytes, int]]]:
    """``(key, DUMP payload, PTTL ms)`` of ``keys``, one pipelined round trip per chunk;
    keys that expired since they were listed are left out."""
    for start in range(0, len(keys), _PIPELINE):
        part = keys[start : start + _PIPELINE]
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.dump(key)
            pipe.pttl(key)
        replies = await pipe.execute()
        yield [
            (key, payload, ttl)
            for key, payload, ttl in zip(part, replies[::2], replies[1::2], strict=True)
            if payload is not None and ttl != -2
        ]


async def _unlink(client: redis.asyncio.Redis, keys: list[bytes]) -> None:
    for start in range(0, len(keys), _PIPELINE):
        await client.unlink(*keys[start : start + _PIPELINE])


async def _staged_keys(backend: RedisBackend, tag: str, area: Area) -> list[bytes]:
    client = backend.client(area)
    pattern = _stage_prefix(backend, tag, area) + "*"
    return [key async for key in client.scan_iter(match=pattern, count=1000)]


async def publish(backend: RedisBackend, tag: str, areas: tuple[Area, ...]) -> dict[str, int]:
    """Replace each area's keys with the ones staged under ``tag``; returns the keys written
    per area. Idempotent while the staged keys exist (they are removed by
    :func:`discard_staged`, once every area is published)."""
    written: dict[str, int] = {}
    with backend.unavailable():
        for area in areas:
            client = backend.client(area)
            stale = await _keys(backend, area)
            await _unlink(client, stale)
            pause("redis-publishing")  # an area emptied, not yet refilled
            staged = await _staged_keys(backend, tag, area)
            cut = len(_stage_prefix(backend, tag, area))
            count = 0
            async for part in _dumped(client, staged):
                pipe = client.pipeline(transaction=False)
                for key, payload, ttl in part:
                    pipe.restore(key[cut:], max(ttl, 0), payload, replace=True)
                await pipe.execute()
                count += len(part)
            written[area] = count
    return written


async def discard_staged(backend: RedisBackend, areas: tuple[Area, ...], tag: str = "") -> None:
    """Remove the keys staged under ``tag`` (every restore's when empty)."""
    with backend.unavailable():
        for area in areas:
            client = backend.client(area)
            pattern = f"{backend.settings.namespace}{_STAGED}{tag}*"
            await _unlink(
                client, [key async for key in client.scan_iter(match=pattern, count=1000)]
            )
