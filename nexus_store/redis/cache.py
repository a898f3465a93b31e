"""The shared cache in Redis (area ``cache``, DB 1), with stampede protection and tags.

    await store.cache.set("user:42", {"name": "Ada"}, ttl=60, tags=["user:42"])
    await store.cache.get("user:42")                       # -> {"name": "Ada"} or None
    profile = await store.cache.get_or_set("profile:42", load_profile, ttl=300)
    await store.cache.invalidate_tag("user:42")            # drops every entry tagged so

    @cached(ttl=60)                                        # standalone: NexusSettings.load()
    def exchange_rate(currency: str) -> float: ...

    @store.cache.cached(ttl=60, key=lambda user_id: f"orders:{user_id}", tags=["orders"])
    async def orders(user_id: int) -> list[dict]: ...

``get_or_set`` runs the loader once for any number of concurrent callers on a cold key, in
this process (they share one in-flight call) and across processes (a Redis lock ``SET NX
PX``; the others poll for the value with a capped backoff). With ``early_refresh`` the caller
that wins the lock reloads a value shortly before it expires while the others keep reading
it; with ``stale_ttl`` an expired value is kept that long and served if the loader fails.

Values are JSON (orjson) or msgpack, per ``cache.serializer``; never pickle. Each entry is
stored as ``[fresh_until_ms, value]`` on the client's clock; TTLs count whole milliseconds
(at least 0.001 s, a fraction of a millisecond is dropped). When Redis is unreachable a read
is a miss and a write is skipped, both logged and counted in :meth:`Cache.stats`, unless
``cache.strict`` is on, which raises :class:`BackendUnavailableError` instead.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import orjson

from nexus_store import telemetry
from nexus_store._text import function, record_of, text
from nexus_store.errors import BackendUnavailableError, NexusStoreError, ValidationError
from nexus_store.log import get_logger
from nexus_store.redis._codec import DecodeError, codec_for
from nexus_store.redis._default_store import default_store
from nexus_store.redis._lua import LuaRunner, LuaScript, SyncLuaRunner, load_lua
from nexus_store.redis.keys import escape_part

if TYPE_CHECKING:
    from nexus_store.connections import Backends

__all__ = ["Cache", "CacheEntry", "CacheStats", "cached"]

T = TypeVar("T")
P = ParamSpec("P")
Tags = Sequence[str] | Callable[..., Sequence[str]]

_log = get_logger("nexus_store.cache")
_MISSING: Any = object()
_LOAD: Any = object()  # flow step: "call the loader now"
_FIRST_POLL = 0.005
_MAX_POLL = 0.1
_UNLOCK = load_lua("cache_unlock")
_MAX_TTL = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A value to cache; ``await store.put(CacheEntry("k", v, ttl=60, tags=["t"]))``."""

    key: str
    value: Any
    ttl: float | None = None
    tags: Sequence[str] = ()


@dataclass(slots=True)
class CacheStats:
    """Counters since the cache was built. ``errors`` counts Redis failures absorbed as misses
    or skipped writes; ``stale_served`` values served after a loader failed."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    loads: int = 0
    lock_waits: int = 0
    early_refreshes: int = 0
    stale_served: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Script:
    """A flow step: run ``script`` through the driver's Lua runner."""

    script: LuaScript
    keys: list[str]
    args: list[str]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one get_or_set call works on, validated before any I/O."""

    entry_key: str
    lock_key: str
    tag_keys: list[str]
    fresh_ms: int
    px: int  # physical TTL: fresh_ms + stale_ttl
    early_ms: int


# A step of a get_or_set flow: called with a client, returns a value (sync) or awaitable.
_Step = Callable[[Any], Any]
_Flow = Generator[Any, Any, Any]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seconds(name: str, value: float | None, default: float | None) -> float | None:
    if value is None:
        return default
    # NaN compares False with everything: test for the accepted range, not for the bad one.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_TTL:
        raise ValidationError(
            name, f"must be a number of seconds from 0 to {_MAX_TTL} (ten years), got {value!r}"
        )
    return float(value)


class Cache:
    """Cache operations on Redis. Built by ``NexusStore`` as ``store.cache``."""

    def __init__(self, backends: Backends) -> None:
        self._redis = backends.redis
        self._settings = backends.settings.cache
        self._cluster = backends.settings.redis.cluster
        self._keys = self._redis.keyspace("cache")
        self._entry_prefix = self._keys.key("c") + ":"
        self._codec = codec_for(self._settings.serializer)
        self._lua = LuaRunner(self._redis, "cache")
        self._lua_sync = SyncLuaRunner(self._redis, "cache")
        self._client = self._lua.client
        self._stats = CacheStats()
        self._degraded = False
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    # -- keys and encoding -----------------------------------------------------------------

    def _entry_key(self, key: str) -> str:
        return self._entry_prefix + escape_part(text("key", key))

    def _tag_keys(self, tags: Iterable[str]) -> list[str]:
        if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
            raise ValidationError("tags", "must be a list of tags, not one string")
        return [self._keys.key("t", text("tags", tag), field="tags") for tag in tags]

    def _ttls(self, ttl: float | None, stale_ttl: float | None) -> tuple[int, int]:
        """(fresh ms, physical ms): an entry outlives its freshness by ``stale_ttl``."""
        fresh = _seconds("ttl", ttl, float(self._settings.default_ttl))
        stale = _seconds("stale_ttl", stale_ttl, float(self._settings.stale_ttl))
        assert fresh is not None and stale is not None
        # Entries expire in whole milliseconds: a shorter TTL would silently become 1 ms.
        if fresh < 0.001:
            raise ValidationError("ttl", f"must be at least 0.001 seconds (1 ms), got {fresh!r}")
        fresh_ms = int(fresh * 1000)
        return fresh_ms, fresh_ms + int(stale * 1000)

    def _encode(self, value: Any, fresh_ms: int) -> bytes:
        raw = self._codec.dumps_entry(_now_ms() + fresh_ms, value, field="value")
        if len(raw) > self._settings.max_value_bytes:
            raise ValidationError(
                "value",
                f"is {len(raw)} bytes encoded; the limit is {self._settings.max_value_bytes} "
                "(cache.max_value_bytes)",
            )
        return raw

    def _decode(self, raw: bytes | None) -> tuple[int, Any] | None:
        """``(fresh_until_ms, value)`` of a stored entry, or None."""
        if raw is None:
            return None
        try:
            fresh_until, value = self._codec.loads(raw)
            return int(fresh_until), value
        except (DecodeError, TypeError, ValueError):
            # Written by something else (another serializer, another program): never trust
            # it, treat it as absent.
            self._stats.errors += 1
            _log.warning("cache_entry_undecodable", serializer=self._codec.name)
            return None

    def _write_step(self, entry_key: str, raw: bytes, px: int, tag_keys: list[str]) -> _Step:
        if not tag_keys:
            return lambda client: client.set(entry_key, raw, px=px)

        def write(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            for tag_key in tag_keys:
                # The tag set lives at least as long as its longest-lived entry.
                pipe.sadd(tag_key, entry_key)
                pipe.pexpire(tag_key, px, nx=True)
                pipe.pexpire(tag_key, px, gt=True)
            pipe.set(entry_key, raw, px=px)
            return pipe.execute()

        return write

    # -- failure policy --------------------------------------------------------------------

    def _unavailable(self, exc: NexusStoreError, operation: str) -> None:
        """Count and log an unreachable Redis; re-raise it when ``cache.strict``, and always
        re-raise other failures (a refused command is a bug to fix, not a miss)."""
        self._stats.errors += 1
        if self._settings.strict or not isinstance(exc, BackendUnavailableError):
            raise exc
        if not self._degraded:
            self._degraded = True
            _log.warning("cache_unavailable", operation=operation, error=str(exc), behaviour="miss")

    def _available(self) -> None:
        if self._degraded:
            self._degraded = False
            _log.info("cache_recovered")

    async def _call_or_miss(self, operation: str, step: _Step) -> Any:
        """Call one Redis step; a failure becomes ``_MISSING`` (or raises when strict)."""
        try:
            with telemetry.operation(self._redis, operation, "cache"), self._redis.unavailable():
                result = await step(self._client)
        except BackendUnavailableError as exc:
            self._unavailable(exc, operation)
            return _MISSING
        self._available()
        return result

    # -- basic operations ------------------------------------------------------------------

    async def put(self, entry: CacheEntry) -> None:
        """Store ``entry`` (the route target of ``store.put``)."""
        record_of(CacheEntry, entry, "entry")
        await self.set(entry.key, entry.value, entry.ttl, tags=entry.tags)

    async def get(self, key: str, default: Any = None) -> Any:
        """The fresh value of ``key``, or ``default`` on a miss (or when Redis is down)."""
        # The hot path: one operation block, no other context manager or object.
        entry_key = self._entry_key(key)
        try:
            with telemetry.operation(self._redis, "cache.get", "cache"):
                raw = await self._client.get(entry_key)
        except self._redis.errors as exc:
            self._unavailable(self._redis.translate(exc), "cache.get")
            return default
        if self._degraded:
            self._available()
        found = self._decode(raw)  # type: ignore[arg-type]  # bytes: no decode_responses
        if found is None or found[0] <= _now_ms():
            self._stats.misses += 1
            return default
        self._stats.hits += 1
        return found[1]

    async def set(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Sequence[str] = (),
        stale_ttl: float | None = None,
    ) -> bool:
        """Cache ``value`` for ``ttl`` seconds (``cache.default_ttl``) under ``key``.

        Returns False when Redis was unreachable and the write was skipped (non-strict).
        """
        fresh_ms, px = self._ttls(ttl, stale_ttl)
        step = self._write_step(
            self._entry_key(key), self._encode(value, fresh_ms), px, self._tag_keys(tags)
        )
        if await self._call_or_miss("cache.set", step) is _MISSING:
            return False
        self._stats.sets += 1
        return True

    async def delete(self, *keys: str) -> int:
        """Remove entries; return how many existed."""
        if not keys:
            return 0
        entry_keys = [self._entry_key(key) for key in keys]
        # RedisCluster.delete splits keys per slot itself.
        deleted = await self._call_or_miss(
            "cache.delete", lambda client: client.delete(*entry_keys)
        )
        return 0 if deleted is _MISSING else int(deleted)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The fresh values of ``keys`` that are cached (misses are absent from the result)."""
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise ValidationError("keys", "must be a list of keys, not one string")
        if not keys:
            return {}
        entry_keys = [self._entry_key(key) for key in keys]
        command = "mget_nonatomic" if self._cluster else "mget"
        raws = await self._call_or_miss(
            "cache.get_many", lambda client: getattr(client, command)(entry_keys)
        )
        if raws is _MISSING:
            self._stats.misses += len(keys)
            return {}
        found: dict[str, Any] = {}
        now = _now_ms()
        for key, raw in zip(keys, raws, strict=True):
            entry = self._decode(raw)
            if entry is not None and entry[0] > now:
                found[key] = entry[1]
        self._stats.hits += len(found)
        self._stats.misses += len(keys) - len(found)
        return found

    async def set_many(
        self, values: Mapping[str, Any], ttl: float | None = None, *, tags: Sequence[str] = ()
    ) -> bool:
        """Cache every ``key: value`` of ``values`` in one round trip (per cluster node)."""
        fresh_ms, px = self._ttls(ttl, None)
        tag_keys = self._tag_keys(tags)
        if not isinstance(values, Mapping):
            raise ValidationError("values", f"must be a dict, got {type(values).__name__}")
        encoded = [(self._entry_key(k), self._encode(v, fresh_ms)) for k, v in values.items()]
        if not encoded:
            return True

        def write(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            for tag_key in tag_keys:
                pipe.sadd(tag_key, *(entry_key for entry_key, _ in encoded))
                pipe.pexpire(tag_key, px, nx=True)
                pipe.pexpire(tag_key, px, gt=True)
            for entry_key, raw in encoded:
                pipe.set(entry_key, raw, px=px)
            return pipe.execute()

        if await self._call_or_miss("cache.set_many", write) is _MISSING:
            return False
        self._stats.sets += len(encoded)
        return True

    async def invalidate_tag(self, tag: str) -> int:
        """Delete every entry set with ``tag``; return how many existed."""
        (tag_key,) = self._tag_keys([tag])
        members = await self._call_or_miss(
            "cache.tag_members", lambda client: client.smembers(tag_key)
        )
        if members is _MISSING or not members:
            return 0
        names = sorted(members)
        deleted = 0
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]

            def drop(client: Any, chunk: list[bytes] = chunk) -> Any:
                return client.delete(*chunk)

            removed = await self._call_or_miss("cache.invalidate_tag", drop)
            if removed is _MISSING:
                return deleted
            deleted += int(removed)
        # SREM, not DEL: entries tagged while we were deleting stay reachable by the tag.
        await self._call_or_miss(
            "cache.invalidate_tag", lambda client: client.srem(tag_key, *names)
        )
        return deleted

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    # -- get_or_set ------------------------------------------------------------------------

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T] | T],
        ttl: float | None = None,
        *,
        tags: Sequence[str] = (),
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
    ) -> T:
        """The cached value of ``key``, or ``loader()``'s result, cached for ``ttl`` seconds.

        Concurrent callers in this process share one call; callers in other processes wait
        for the one holding the Redis lock (up to ``cache.lock_wait``). ``loader`` may be a
        plain or an async function.
        """
        function("loader", loader)
        flow = self._flow(key, ttl, tags, early_refresh, stale_ttl)
        entry_key = self._entry_key(key)
        shared = self._inflight.get(entry_key)
        if shared is not None:
            try:
                return cast(T, await asyncio.shield(shared))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
            # The caller we were waiting for was cancelled, not us: take over.
            return await self.get_or_set(
                key, loader, ttl, tags=tags, early_refresh=early_refresh, stale_ttl=stale_ttl
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[entry_key] = future
        try:
            value = await self._drive(flow, loader)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(value)
            return cast(T, value)
        finally:
            del self._inflight[entry_key]

    def get_or_set_sync(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: float | None = None,
        *,
        tags: Sequence[str] = (),
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
    ) -> T:
        """:meth:`get_or_set` for synchronous code (threads, sync frameworks), on the blocking
        client: the same lock, refresh and stale rules."""
        function("loader", loader)
        flow = self._flow(key, ttl, tags, early_refresh, stale_ttl)
        client = self._lua_sync.client
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(result) if error is None else flow.throw(error)
            except StopIteration as stop:
                return cast(T, stop.value)
            result, error = None, None
            try:
                if step is _LOAD:
                    result = loader()
                elif isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _Script):
                    with telemetry.operation(self._redis, "cache.get_or_set", "cache"):
                        result = self._lua_sync.run(step.script, step.keys, step.args)
                else:
                    with (
                        telemetry.operation(self._redis, "cache.get_or_set", "cache"),
                        self._redis.unavailable(),
                    ):
                        result = step(client)
            except BaseException as exc:  # thrown into the flow, which re-raises it
                error = exc

    async def _drive(self, flow: _Flow, loader: Callable[[], Any]) -> Any:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(result) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value
            result, error = None, None
            try:
                if step is _LOAD:
                    result = loader()
                    if inspect.isawaitable(result):
                        result = await result
                elif isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _Script):
                    with telemetry.operation(self._redis, "cache.get_or_set", "cache"):
                        result = await self._lua.run(step.script, step.keys, step.args)
                else:
                    with (
                        telemetry.operation(self._redis, "cache.get_or_set", "cache"),
                        self._redis.unavailable(),
                    ):
                        result = await step(self._client)
            except BaseException as exc:  # thrown into the flow, which re-raises it
                error = exc

    def _flow(
        self,
        key: str,
        ttl: float | None,
        tags: Sequence[str],
        early_refresh: float | None,
        stale_ttl: float | None,
    ) -> _Flow:
        """The get_or_set algorithm as a generator of steps, run by an async or a sync driver.

        It yields Redis steps (callables taking a client), ``_Script``, ``_LOAD`` and
        ``_Sleep``; the driver sends back results and throws back exceptions.
        """
        entry_key = self._entry_key(key)
        lock_key = self._keys.key("l", key)
        tag_keys = self._tag_keys(tags)
        fresh_ms, px = self._ttls(ttl, stale_ttl)
        early = _seconds("early_refresh", early_refresh, self._settings.early_refresh)
        plan = _Plan(entry_key, lock_key, tag_keys, fresh_ms, px, int((early or 0) * 1000))
        return self._steps(plan)

    def _steps(self, plan: _Plan) -> _Flow:
        entry_key, lock_key, early_ms = plan.entry_key, plan.lock_key, plan.early_ms
        token = secrets.token_hex(8)
        lock_ms = int(self._settings.lock_timeout * 1000)

        def take_lock(client: Any) -> Any:
            return client.set(lock_key, token, nx=True, px=lock_ms)

        def read(client: Any) -> Any:
            return client.get(entry_key)

        unlock = _Script(_UNLOCK, [lock_key], [token])
        found: tuple[int, Any] | None = None
        locked = False
        try:
            found = self._decode((yield read))
            remaining_ms = -1 if found is None else found[0] - _now_ms()
            if found is not None and remaining_ms > 0:
                if remaining_ms > early_ms or not (yield take_lock):
                    self._stats.hits += 1
                    return found[1]
                # Early refresh: this caller reloads; the current value stays served.
                self._stats.early_refreshes += 1
                locked = True
            else:
                self._stats.misses += 1
                locked, latest = yield from self._lock_or_value(read, take_lock, unlock)
                if latest is not None and latest[0] > _now_ms():
                    return latest[1]
                found = latest or found
        except BackendUnavailableError as exc:
            self._unavailable(exc, "cache.get_or_set")
            self._stats.loads += 1
            return (yield _LOAD)
        self._available()

        self._stats.loads += 1
        try:
            value = yield _LOAD
        except BaseException as exc:  # cancellation too: never leave the lock to time out
            if locked:
                yield from self._quietly(unlock)
            if found is not None and isinstance(exc, Exception):
                self._stats.stale_served += 1
                _log.warning("cache_serving_stale", error=type(exc).__name__)
                return found[1]
            raise
        raw = self._encode(value, plan.fresh_ms)
        yield from self._quietly(self._write_step(entry_key, raw, plan.px, plan.tag_keys))
        if locked:
            yield from self._quietly(unlock)
        self._stats.sets += 1
        return value

    def _lock_or_value(self, read: _Step, take_lock: _Step, unlock: _Script) -> _Flow:
        """Wait for the lock of a missing entry (polling, up to ``cache.lock_wait``) or for
        the value its holder stores: (whether this caller holds the lock now, the last entry
        read, decoded, or None)."""
        give_up = time.monotonic() + self._settings.lock_wait
        delay = _FIRST_POLL
        latest = None
        while not (yield take_lock):
            self._stats.lock_waits += 1
            yield _Sleep(delay)
            delay = min(delay * 2, _MAX_POLL)
            latest = self._decode((yield read)) or latest  # keep a stale one to serve
            if latest is not None and latest[0] > _now_ms():
                return False, latest
            if time.monotonic() >= give_up:
                _log.warning("cache_lock_wait_expired", lock_wait=self._settings.lock_wait)
                return False, latest
        # The holder before us may have stored the value and unlocked between our last read
        # and our taking the lock: read once more, or the loader runs twice.
        latest = self._decode((yield read)) or latest
        if latest is not None and latest[0] > _now_ms():
            yield from self._quietly(unlock)
            return False, latest
        return True, latest

    def _quietly(self, step: _Step | _Script) -> _Flow:
        """Run a Redis step whose failure must not lose a loaded value (strict re-raises)."""
        try:
            yield step
        except BackendUnavailableError as exc:
            self._unavailable(exc, "cache.get_or_set")

    # -- decorator -------------------------------------------------------------------------

    def cached(
        self, ttl: float | None = None, key: Callable[..., str] | None = None, tags: Tags = ()
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """:func:`cached` bound to this cache."""
        return cached(ttl=ttl, key=key, tags=tags, cache=self)


# -- the decorator ---------------------------------------------------------------------------


def _key_part(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not part of a default cache key")


def _default_key(name: str, skip_first: bool) -> Callable[..., str]:
    def build(*args: Any, **kwargs: Any) -> str:
        try:
            encoded = orjson.dumps(
                [args[1:] if skip_first else args, kwargs],
                default=_key_part,
                option=orjson.OPT_SORT_KEYS,
            )
        except TypeError as exc:
            raise ValidationError("key", f"{name}: {exc}; pass key=callable to @cached") from None
        return f"fn:{name}:{hashlib.blake2b(encoded, digest_size=16).hexdigest()}"

    return build


def _call_argument(
    field: str, build: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``build(*args, **kwargs)`` for a ``key``/``tags`` function given to @cached: one that
    does not take the decorated function's arguments, or fails, is the caller's input error."""
    try:
        return build(*args, **kwargs)
    except ValidationError:
        raise
    except Exception as exc:
        raise ValidationError(
            field, f"the {field} function failed on the call's arguments: {type(exc).__name__}"
        ) from exc


def cached(
    ttl: float | None = None,
    key: Callable[..., str] | None = None,
    tags: Tags = (),
    *,
    cache: Cache | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Cache a function's results through :meth:`Cache.get_or_set` (stampede-safe).

    ``key`` receives the call's arguments and returns the cache key; by default it is the
    function's qualified name plus a hash of its JSON-encoded arguments (``self``/``cls``
    skipped). ``tags`` is a list or a callable of the arguments. Works on sync and async
    functions and methods; without ``cache`` it uses the cache of the default store that it
    shares with standalone ``@rate_limit`` (configured from the environment on first use,
    closed by ``nexus_store.redis.close_default_store()``).

        @cached(ttl=30, tags=lambda user_id: [f"user:{user_id}"])
        async def profile(user_id: int) -> dict: ...
    """

    if key is not None and not callable(key):
        raise ValidationError("key", "must be a function of the call's arguments, or None")
    if not callable(tags) and (isinstance(tags, str | bytes) or not isinstance(tags, Sequence)):
        raise ValidationError("tags", "must be a list of tags or a function returning one")

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        name = f"{func.__module__}.{func.__qualname__}"
        params = list(inspect.signature(func).parameters)
        make_key = key or _default_key(name, bool(params) and params[0] in ("self", "cls"))

        def resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Cache, str, Any]:
            target = cache if cache is not None else default_store.get(Cache)
            chosen = _call_argument("tags", tags, args, kwargs) if callable(tags) else tags
            return target, _call_argument("key", make_key, args, kwargs), chosen

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                target, cache_key, chosen = resolve(args, kwargs)
                return await target.get_or_set(
                    cache_key, lambda: func(*args, **kwargs), ttl, tags=chosen
                )

            return cast(Callable[P, T], async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            target, cache_key, chosen = resolve(args, kwargs)
            return target.get_or_set_sync(
                cache_key, lambda: func(*args, **kwargs), ttl, tags=chosen
            )

        return sync_wrapper

    return decorate
