"""MongoDB: the events, audit and checkpoint collections in mongodump's layout.

``<db>/<collection>.bson`` is the documents' raw BSON, one after another, exactly as the
server returned them (no decoding on the way out); ``<db>/<collection>.metadata.json`` holds
the collection's options (validator, validation level...), its indexes and its UUID in
canonical Extended JSON, as mongodump writes it, so ``mongorestore`` reads the archive too.

A restore loads each collection under a temporary name (``<name>__nxr_<hex>``), checks the
count, builds the indexes; once the restore is committed, each is renamed over its target
(``dropTarget``), or, for a time-series collection (which cannot be renamed), copied into a
new one (see :func:`publish`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from nexus_store.backup._pause import pause
from nexus_store.errors import BackendUnavailableError, BackupError, NexusStoreError
from nexus_store.mongo._layout import checkpoint_collection

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from nexus_store.backup._archive import ArchiveReader, ArchiveWriter
    from nexus_store.mongo.client import MongoBackend
    from nexus_store.settings import NexusSettings

__all__ = [
    "bson_documents",
    "collections",
    "discard_stages",
    "dump",
    "file_names",
    "holds_data",
    "publish",
    "stage",
]

_RAW = CodecOptions(document_class=RawBSONDocument)
_BATCH = 5000
_STAGED = "__nxr_"
_NAMESPACE_EXISTS = 48


def collections(settings: NexusSettings) -> dict[str, str]:
    """Role -> collection name, in dump order: checkpoints before the audit entries, so that
    every checkpoint in an archive names an entry the archive also holds."""
    return {
        "events": settings.events.collection,
        "checkpoints": checkpoint_collection(settings),
        "audit": settings.audit.collection,
    }


def file_names(database: str, collection: str) -> tuple[str, str]:
    return f"mongo/{database}/{collection}.bson", f"mongo/{database}/{collection}.metadata.json"


def _translate(exc: PyMongoError) -> NexusStoreError:
    """Unreachable: BackendUnavailableError; refused by the server: BackupError."""
    from nexus_store._errors import describe

    if isinstance(exc, ConnectionFailure):
        return BackendUnavailableError("mongo", describe(exc))
    return BackupError(f"mongo: {describe(exc)}")


async def dump(
    settings: NexusSettings,
    backend: MongoBackend,
    writer: ArchiveWriter,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Dump the collections; returns the manifest's ``mongo`` section."""
    db = backend.db
    counts: dict[str, int] = {}
    try:
        version = await backend.server_version()
        for role, name in collections(settings).items():
            bson_file, metadata_file = file_names(db.name, name)
            infos = await (await db.list_collections(filter={"name": name})).to_list()
            info: dict[str, Any] = (
                dict(infos[0]) if infos else {"type": "collection", "options": {}, "info": {}}
            )
            indexes = await (await db[name].list_indexes()).to_list() if infos else []
            metadata = {
                "indexes": [dict(index) for index in indexes],
                "uuid": _uuid_hex(info.get("info", {}).get("uuid")),
                "collectionName": name,
                "type": info.get("type", "collection"),
                "options": dict(info.get("options", {})),
            }
            count = 0
            file = writer.open(bson_file)
            with file as sink:
                raw: AsyncCollection[RawBSONDocument] = db.get_collection(  # type: ignore[assignment]
                    name, codec_options=_RAW
                )  # PyMongo types get_collection by the database's document class
                cursor = raw.find(
                    {}, batch_size=_BATCH, sort=[("seq", 1)] if role == "audit" else None
                )
                batch: list[bytes | memoryview] = []
                async for document in cursor:
                    batch.append(document.raw)
                    if len(batch) >= _BATCH:
                        sink.write(b"".join(batch))
                        count += len(batch)
                        batch.clear()
                sink.write(b"".join(batch))
                count += len(batch)
            assert file.record is not None
            writer.add(bson_file, file.record, documents=count)
            file = writer.open(metadata_file)
            with file as sink:
                sink.write(
                    json_util.dumps(
                        metadata, json_options=json_util.CANONICAL_JSON_OPTIONS
                    ).encode()
                )
            assert file.record is not None
            writer.add(metadata_file, file.record)
            counts[name] = count
            progress(f"{db.name}.{name}: {count} documents")
    except PyMongoError as exc:
        raise _translate(exc) from exc
    return {
        "database": db.name,
        "serverVersion": version,
        "collections": counts,
        "roles": collections(settings),
    }


def _uuid_hex(value: Any) -> str | None:
    if value is None:
        return None
    return getattr(value, "hex", str(value).replace("-", ""))


def bson_documents(chunks: Iterable[bytes], name: str) -> Iterator[bytes]:
    """Split a stream of concatenated BSON documents; a cut-off document is an error."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        start = 0
        while len(buffer) - start >= 4:
            (size,) = struct.unpack_from("<i", buffer, start)
            if size < 5:
                raise BackupError(f"corrupt BSON at byte {start}", file=name)
            if len(buffer) - start < size:
                break
            yield bytes(buffer[start : start + size])
            start += size
        del buffer[:start]
    if buffer:
        raise BackupError("ends inside a document (truncated)", file=name)


def _index_specs(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in index.items() if key not in ("v", "ns")}
        for index in metadata.get("indexes", [])
        if index.get("name") != "_id_"
    ]


def _options(index: dict[str, Any]) -> dict[str, Any]:
    """What an index does, apart from its name (some servers rename indexes)."""
    return {key: value for key, value in index.items() if key not in ("v", "ns", "name")}


async def _match_indexes(
    db: AsyncDatabase[dict[str, Any]], name: str, specs: list[dict[str, Any]]
) -> int:
    """Rebuild any index of ``name`` that differs from the archive's; returns how many.

    A real MongoDB keeps every index through ``renameCollection``; the nx-27017 substitute
    drops their options (a TTL index loses ``expireAfterSeconds``). Checking the result
    keeps the restore honest on any server.
    """
    found = {
        tuple(dict(index["key"]).items()): dict(index)
        async for index in await db[name].list_indexes()
    }
    rebuilt = 0
    for spec in specs:
        have = found.get(tuple(dict(spec["key"]).items()))
        if have is not None and _options(have) == _options(spec):
            continue
        if have is not None:
            await db[name].drop_index(have["name"])
        await db.command({"createIndexes": name, "indexes": [spec]})
        rebuilt += 1
    return rebuilt


async def holds_data(settings: NexusSettings, backend: MongoBackend) -> bool:
    try:
        for name in collections(settings).values():
            if await backend.db[name].find_one({}, projection={"_id": 1}) is not None:
                return True
    except PyMongoError as exc:
        raise _translate(exc) from exc
    return False


async def discard_stages(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Drop the collections that a restore killed before its commit left under temporary
    names (never while a committed restore is pending: publish needs them)."""
    for name in await db.list_collection_names():
        if _STAGED in name:
            await db.drop_collection(name)


async def stage(
    settings: NexusSettings,
    backend: MongoBackend,
    reader: ArchiveReader,
    tag: str,
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Load every collection under a temporary name; returns, per target collection, what
    :func:`publish` needs without the archive: the staged name, the count, the options and
    the indexes (canonical Extended JSON)."""
    db = backend.db
    source = reader.manifest["mongo"]["database"]
    plan: dict[str, dict[str, Any]] = {}
    try:
        for name, expected in reader.manifest["mongo"]["collections"].items():
            bson_file, metadata_file = file_names(source, name)
            metadata = json_util.loads(reader.read_bytes(metadata_file))
            temporary = name + _STAGED + tag
            options = dict(metadata.get("options", {}))
            time_series = "timeseries" in options
            plan[name] = {
                "staged": temporary,
                "count": expected,
                "timeSeries": time_series,
                "options": _json(options),
                "indexes": _json(_index_specs(metadata)),
            }
            # A time-series collection cannot be renamed: it is staged as a regular one and
            # copied into a new time-series collection by publish.
            await db.command({"create": temporary, **({} if time_series else options)})
            count = await _insert(db.get_collection(temporary, codec_options=_RAW), (
                RawBSONDocument(raw) for raw in bson_documents(reader.chunks(bson_file), bson_file)
            ))  # fmt: skip
            if count != expected:
                raise BackupError(
                    f"holds {count} documents, the manifest says {expected}", file=bson_file
                )
            indexes = _index_specs(metadata)
            if indexes and not time_series:
                await db.command({"createIndexes": temporary, "indexes": indexes})
            progress(f"{db.name}.{name}: {count} documents staged")
    except PyMongoError as exc:
        raise _translate(exc) from exc
    return plan


def _json(value: Any) -> str:
    return json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS)


async def _insert(target: AsyncCollection[Any], documents: Iterable[Any]) -> int:
    batch: list[Any] = []
    count = 0
    for document in documents:
        batch.append(document)
        if len(batch) >= _BATCH:
            await target.insert_many(batch, ordered=False)
            count += len(batch)
            batch.clear()
    if batch:
        await target.insert_many(batch, ordered=False)
        count += len(batch)
    return count


async def publish(backend: MongoBackend, plan: dict[str, dict[str, Any]]) -> None:
    """Put each staged collection in its target's place and drop the staged one.

    A regular collection is renamed over its target (``dropTarget``: one step each), then
    its indexes are checked against the archive's. A time-series one is copied into a new
    time-series collection created with the archived options, counted, and only then is the
    staged copy dropped. Idempotent: a collection whose staged copy is gone is done.
    """
    db = backend.db
    try:
        for name, step in plan.items():
            temporary = step["staged"]
            if not await _exists(db, temporary):
                continue
            indexes = json_util.loads(step["indexes"])
            if step["timeSeries"]:
                await _copy_time_series(db, name, step, indexes)
                continue
            try:
                await backend.client.admin.command(
                    "renameCollection",
                    f"{db.name}.{temporary}",
                    to=f"{db.name}.{name}",
                    dropTarget=True,
                )
            except OperationFailure as exc:
                # MongoDB answers every failure with a code, and never NamespaceExists
                # with dropTarget; the substitute answers "already exists" without one.
                if exc.code not in (None, _NAMESPACE_EXISTS):
                    raise
            if await _exists(db, temporary):
                await _rename_on_database(db, temporary, name)
            await _match_indexes(db, name, indexes)
            pause("mongo-publishing")  # between two collections
    except PyMongoError as exc:
        raise _translate(exc) from exc


async def _copy_time_series(
    db: AsyncDatabase[dict[str, Any]],
    name: str,
    step: dict[str, Any],
    indexes: list[dict[str, Any]],
) -> None:
    """Recreate ``name`` as a time-series collection and copy the staged documents in.
    Run again from the start after a kill: the staged copy is dropped last."""
    await db.drop_collection(name)
    await db.command({"create": name, **json_util.loads(step["options"])})
    staged: AsyncCollection[RawBSONDocument] = db.get_collection(  # type: ignore[assignment]
        step["staged"], codec_options=_RAW
    )  # PyMongo types get_collection by the database's document class
    target = db.get_collection(name, codec_options=_RAW)
    count = 0
    batch: list[RawBSONDocument] = []
    async for document in staged.find({}, batch_size=_BATCH):
        batch.append(document)
        if len(batch) >= _BATCH:
            count += await _insert(target, batch)
            batch = []
    count += await _insert(target, batch)
    if count != step["count"]:
        raise BackupError(f"copied {count} documents into {name}, expected {step['count']}")
    if indexes:
        await db.command({"createIndexes": name, "indexes": indexes})
    await db.drop_collection(step["staged"])


async def _exists(db: AsyncDatabase[dict[str, Any]], name: str) -> bool:
    # Membership, not just a non-empty answer: the substitute ignores the filter.
    return name in await db.list_collection_names(filter={"name": name})


async def _rename_on_database(db: AsyncDatabase[dict[str, Any]], temporary: str, name: str) -> None:
    """Some wire-compatible servers (the nx-27017 substitute) do not rename on ``admin``
    (they answer ``ok``, or "already exists" despite ``dropTarget``, and leave the collection
    where it was): there the target is dropped and the command sent to the collection's own
    database. Chosen by the result, so a real server never takes this path."""
    await db.drop_collection(name)
    try:
        await db.command("renameCollection", f"{db.name}.{temporary}", to=f"{db.name}.{name}")
    except OperationFailure as exc:
        raise BackupError(f"renaming {temporary} to {name} failed: {exc}") from exc
    if await _exists(db, temporary):
        raise BackupError(f"the server did not rename {temporary} to {name}")
