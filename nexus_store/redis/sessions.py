"""Login sessions in Redis (area ``sessions``, DB 0): opaque tokens, stored only as hashes.

    token = await store.sessions.create("user-42", {"role": "admin"}, ttl=3600)
    session = await store.sessions.get(token)         # NotFoundError if unknown/expired/revoked
    await store.sessions.update(token, {"role": "viewer"})
    for info in await store.sessions.list_for_user("user-42"):
        print(info.session_id, info.expires_at)       # metadata only: no token, no hash
    await store.sessions.revoke(token)
    await store.sessions.revoke_all("user-42")        # -> number of sessions ended

A token is ``<tag>.<43 random url-safe chars from secrets>``. ``tag`` is 16 bits of a hash
of the user id: it routes the token to the user's Redis Cluster slot, so that a session, the
user's index and every script touching both share one slot. Redis keeps the SHA-256 of the
token, never the token. Expiry runs on the Redis server's clock; ``get`` slides the expiry
when ``sessions.sliding`` is on, never past ``sessions.max_lifetime`` after creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_store._text import record_of, text
from nexus_store.errors import NotFoundError, ValidationError
from nexus_store.redis._codec import JSON
from nexus_store.redis._lua import LuaRunner, load_lua
from nexus_store.telemetry import operation

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["NewSession", "Session", "SessionInfo", "SessionStore"]

_TOKEN = re.compile(r"[0-9a-f]{4}\.[A-Za-z0-9_-]{43}")
_MAX_USER_ID = 256
_CREATE = load_lua("session_create")
_GET = load_lua("session_get")
_UPDATE = load_lua("session_update")
_REVOKE = load_lua("session_revoke")
_REVOKE_ALL = load_lua("session_revoke_all")
_LIST = load_lua("session_list")


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session to create; ``await store.put(NewSession("user-42", {...}))`` returns its token."""

    user_id: str
    data: dict[str, Any]
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What :meth:`SessionStore.list_for_user` shows about a session: never its token."""

    session_id: str
    user_id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Session(SessionInfo):
    """A live session, as :meth:`SessionStore.get` returns it."""

    data: dict[str, Any]


def _at(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def _user_id(user_id: object) -> str:
    # A string only: an int id read back as its text (Session.user_id "5" for 5), a silent
    # type change, and 5 and "5" shared one session index.
    checked = text("user_id", user_id)
    if not checked or len(checked) > _MAX_USER_ID:
        raise ValidationError("user_id", f"must be 1-{_MAX_USER_ID} characters long")
    return checked


def _user_tag(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=2).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class SessionStore:
    """Creates, reads, slides and revokes sessions. Built by ``NexusStore`` as ``store.sessions``.

    Redis being unreachable raises :class:`BackendUnavailableError` (``backend == "redis"``);
    nothing is guessed.
    """

    def __init__(self, backends: Backends) -> None:
        self._redis = backends.redis
        self._settings = backends.settings.sessions
        self._keys = self._redis.keyspace("sessions")
        self._slide = "1" if self._settings.sliding else "0"
        self._lua = LuaRunner(self._redis, "sessions")

    # -- keys ------------------------------------------------------------------------------

    def _session_prefix(self, tag: str) -> str:
        return self._keys.tagged("session", tag) + ":"

    def _index_key(self, user_id: str, tag: str) -> str:
        return self._keys.tagged("user", tag, user_id, field="user_id")

    def _session_key(self, token: object) -> tuple[str, str] | None:
        """(session key, index member) of a well-formed token; None for any other string."""
        if not isinstance(token, str):
            raise ValidationError("token", f"must be a string, got {type(token).__name__}")
        if _TOKEN.fullmatch(token) is None:
            return None
        member = _token_hash(token)
        return self._session_prefix(token[:4]) + member, member

    # -- validation ------------------------------------------------------------------------

    def _ttl_ms(self, ttl: float | None) -> int:
        if ttl is None:
            return self._settings.default_ttl * 1000
        # Redis expires in whole milliseconds: a shorter TTL would silently become 1 ms.
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0.001:
            raise ValidationError("ttl", f"must be at least 0.001 seconds (1 ms), got {ttl!r}")
        if ttl > 10 * 365 * 24 * 3600:
            raise ValidationError("ttl", "must be at most ten years")
        return int(ttl * 1000)

    def _encode_data(self, data: object) -> bytes:
        if not isinstance(data, dict):
            raise ValidationError("data", f"must be a dict, got {type(data).__name__}")
        encoded = JSON.dumps(data, field="data")
        if len(encoded) > self._settings.max_data_bytes:
            raise ValidationError(
                "data",
                f"is {len(encoded)} bytes as JSON; the limit is {self._settings.max_data_bytes} "
                "(sessions.max_data_bytes)",
            )
        return encoded

    # -- API -------------------------------------------------------------------------------

    async def put(self, record: NewSession) -> str:
        """Create the session described by ``record``; return its token."""
        record_of(NewSession, record, "record")
        return await self.create(record.user_id, record.data, record.ttl)

    async def create(self, user_id: str, data: dict[str, Any], ttl: float | None = None) -> str:
        """Start a session for ``user_id``; return its token (show it to the client once).

        ``ttl`` seconds (default ``sessions.default_ttl``) is the idle timeout when sliding,
        the lifetime otherwise; ``sessions.max_lifetime`` caps both.
        """
        user = _user_id(user_id)
        encoded = self._encode_data(data)
        ttl_ms = self._ttl_ms(ttl)
        tag = _user_tag(user)
        token = f"{tag}.{secrets.token_urlsafe(32)}"
        member = _token_hash(token)
        prefix = self._session_prefix(tag)
        max_lifetime = self._settings.max_lifetime
        with operation(self._redis, "sessions.create", "sessions"):
            await self._lua.run(
                _CREATE,
                [prefix + member, self._index_key(user, tag)],
                [
                    user,
                    encoded,
                    secrets.token_hex(8),
                    ttl_ms,
                    (max_lifetime or 0) * 1000,
                    member,
                    prefix,
                ],
            )
        return token

    async def get(self, token: str) -> Session:
        """The live session of ``token``. Unknown, malformed, expired and revoked tokens all
        raise the same ``NotFoundError("session", "for this token")``."""
        found = await self.get_or_none(token)
        if found is None:
            raise NotFoundError("session", "for this token")
        return found

    async def get_or_none(self, token: str) -> Session | None:
        """Like :meth:`get`, but None instead of NotFoundError."""
        located = self._session_key(token)
        if located is None:
            return None
        with operation(self._redis, "sessions.get", "sessions"):
            row = await self._lua.run(_GET, [located[0]], [self._slide])
        if not row:
            return None
        user, data, session_id, created, seen, expires = row
        return Session(
            session_id=session_id.decode(),
            user_id=user.decode(),
            created_at=_at(created),
            last_seen_at=_at(seen),
            expires_at=_at(expires),
            data=JSON.loads(data),
        )

    async def update(self, token: str, data: dict[str, Any]) -> None:
        """Replace the data of a live session (its expiry is unchanged)."""
        encoded = self._encode_data(data)
        located = self._session_key(token)
        updated = 0
        if located is not None:
            with operation(self._redis, "sessions.update", "sessions"):
                updated = await self._lua.run(_UPDATE, [located[0]], [encoded])
        if not updated:
            raise NotFoundError("session", "for this token")

    async def revoke(self, token: str) -> bool:
        """End one session. True if it was live; revoking twice is harmless."""
        located = self._session_key(token)
        if located is None:
            return False
        with operation(self._redis, "sessions.revoke", "sessions"):
            removed = await self._lua.run(_REVOKE, [located[0]], [located[1]])
        return bool(removed)

    async def revoke_all(self, user_id: str) -> int:
        """End every session of ``user_id`` atomically; return how many were live."""
        user = _user_id(user_id)
        tag = _user_tag(user)
        with operation(self._redis, "sessions.revoke_all", "sessions"):
            removed = await self._lua.run(
                _REVOKE_ALL, [self._index_key(user, tag)], [self._session_prefix(tag)]
            )
        return int(removed)

    async def list_for_user(self, user_id: str) -> list[SessionInfo]:
        """Metadata of the live sessions of ``user_id``, oldest first."""
        user = _user_id(user_id)
        tag = _user_tag(user)
        with operation(self._redis, "sessions.list", "sessions"):
            flat = await self._lua.run(
                _LIST, [self._index_key(user, tag)], [self._session_prefix(tag)]
            )
        infos = [
            SessionInfo(
                session_id=flat[i].decode(),
                user_id=user,
                created_at=_at(flat[i + 1]),
                last_seen_at=_at(flat[i + 2]),
                expires_at=_at(flat[i + 3]),
            )
            for i in range(0, len(flat), 4)
        ]
        return sorted(infos, key=lambda info: info.created_at)
