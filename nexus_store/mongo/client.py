"""MongoDB connectivity on PyMongo's native asyncio client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bson.errors import BSONError
from pymongo import AsyncMongoClient
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteError,
)
from pymongo.errors import ConfigurationError as PyMongoConfigurationError

from nexus_store._errors import describe, unavailable_on
from nexus_store.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    NexusStoreError,
)

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.monitoring import _EventListener

    from nexus_store.settings import MongoSettings

__all__ = ["MongoBackend"]


_AUTHENTICATION_FAILED = 18
_DUPLICATE_KEY = 11000


def _raised_in_driver(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is PyMongo's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pymongo.")


class MongoBackend:
    """Owns the client and the configured database.

    ``event_listeners`` are PyMongo monitoring listeners (command, pool, server events),
    for APM and for tests that assert the exact commands sent.
    """

    name = "mongo"

    def __init__(
        self, settings: MongoSettings, *, event_listeners: Sequence[_EventListener] = ()
    ) -> None:
        if settings.url is None:
            raise ConfigurationError(
                "MongoDB is not configured: set NEXUS_MONGO_URL (or MONGODB_URL)",
                setting="mongo.url",
            )
        self.settings = settings
        # PyMongo before 4.11 resolves a mongodb+srv name here, not on first use.
        with self.unavailable():
            self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                settings.url.get_secret_value(),
                appname=settings.app_name,
                connectTimeoutMS=int(settings.connect_timeout * 1000),
                serverSelectionTimeoutMS=int(settings.server_selection_timeout * 1000),
                socketTimeoutMS=int(settings.socket_timeout * 1000),
                maxPoolSize=settings.max_pool_size,
                tz_aware=True,
                uuidRepresentation="standard",
                event_listeners=list(event_listeners),
            )
        self.db: AsyncDatabase[dict[str, Any]] = self.client[settings.database]

    def location(self, collection: str) -> str:
        """Where ``collection`` lives, for the routing table."""
        return f"{self.settings.database}.{collection}"

    def translate(self, exc: PyMongoError | BSONError) -> NexusStoreError:
        """What a driver error other than a lost connection means for the caller.

        A document the server refused (a write error: a validator, a value it cannot store)
        is an :class:`IntegrityError`, a taken unique key a :class:`ConflictError`; any other
        refusal leaves the backend unable to serve the call (:class:`BackendUnavailableError`).
        """
        if isinstance(exc, BSONError):  # not encodable, or larger than a document may be
            return IntegrityError(f"{self.name} cannot store the document: {describe(exc)}")
        if isinstance(exc, BulkWriteError):
            errors = exc.details.get("writeErrors") or [{}]
            code, message = errors[0].get("code"), str(errors[0].get("errmsg") or exc)
        elif isinstance(exc, WriteError):
            code, message = exc.code, str((exc.details or {}).get("errmsg") or exc)
        else:
            return BackendUnavailableError(self.name, describe(exc))
        text = describe(RuntimeError(message)).removeprefix("RuntimeError: ")
        if code == _DUPLICATE_KEY:
            message = f"{self.name}: a unique key is taken ({text})"
            return ConflictError(message, constraint="unique")
        return IntegrityError(f"{self.name} refused the document (code {code}): {text}")

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Translate driver failures raised inside the block into nexus-store errors.

        Connection failures become :class:`BackendUnavailableError`, and so does PyMongo's
        ConfigurationError (a ``mongodb+srv`` name that DNS does not know is
        only found on first use), a refused login (OperationFailure code 18) and a KeyError
        raised inside PyMongo (a server whose authentication reply lacks a field it expects,
        ``KeyError: 'payload'``): either way the server cannot be used, and the caller gets
        the SDK's error. A refused document becomes :class:`IntegrityError` (a taken unique
        key :class:`ConflictError`), any other driver error :class:`BackendUnavailableError`:
        callers never see PyMongo's exceptions. Code expecting a particular server error
        (a duplicate key it can retry) catches it inside the block.
        """
        try:
            with unavailable_on(self.name, ConnectionFailure, PyMongoConfigurationError):
                yield
        except (PyMongoError, BSONError) as exc:
            if isinstance(exc, OperationFailure) and exc.code == _AUTHENTICATION_FAILED:
                raise BackendUnavailableError(self.name, describe(exc)) from exc
            raise self.translate(exc) from exc
        except KeyError as exc:
            if not _raised_in_driver(exc):
                raise
            raise BackendUnavailableError(
                self.name, f"unexpected reply from the server ({describe(exc)})"
            ) from exc

    async def ping(self) -> float:
        started = time.perf_counter()
        with self.unavailable():
            await self.client.admin.command("ping")
        return time.perf_counter() - started

    async def server_version(self) -> str:
        with self.unavailable():
            info = await self.client.admin.command("buildInfo")
        return str(info.get("version", "unknown"))

    async def close(self) -> None:
        await self.client.close()
