"""How a rate-limit decorator's ``key`` callable receives the decorated function's arguments.

The rule (also in ``docs/ratelimit.md``):

- A key callable whose parameters are all named (``lambda user_id: ...``,
  ``lambda self, request: ...``) is called **by name**: each of its parameters receives the
  function's argument of that name, however the caller passed it (by position, by keyword or
  left to its default). It may take fewer parameters than the function, in any order; a name
  the function does not have is refused at decoration time.
- A key callable that takes ``*args`` or ``**kwargs``, or whose signature cannot be read
  (a builtin such as ``str``), is called exactly like the function: ``key(*args, **kwargs)``.

The argument positions are worked out once, at decoration time; a call only indexes them.
Whatever the key callable raises becomes a :class:`ValidationError` naming ``key``, chained
from what it raised, and so does a key that is not a string. The web integrations' key
callables (which take the request) follow the same rule, through :func:`guarded_key`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nexus_store.errors import ValidationError

__all__ = ["CallKey", "call_key", "guarded_key"]

CallKey = Callable[[tuple[Any, ...], dict[str, Any]], object]
_MISSING: Any = inspect.Parameter.empty
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _guarded(key: Callable[..., object], extract: CallKey) -> CallKey:
    def guarded(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        try:
            return extract(args, kwargs)
        except ValidationError:
            raise
        except Exception as exc:
            name = getattr(key, "__qualname__", type(key).__name__)
            raise ValidationError(
                "key", f"the key callable {name} raised {type(exc).__name__}: {exc}"
            ) from exc

    return guarded


def call_key(func: Callable[..., Any], key: Callable[..., object]) -> CallKey:
    """A function of a call's ``(args, kwargs)`` that returns ``key``'s answer for it."""
    key_signature = _signature(key)
    func_signature = _signature(func)
    if (
        key_signature is None
        or func_signature is None
        or any(param.kind not in _NAMED for param in key_signature.parameters.values())
    ):
        return _guarded(key, lambda args, kwargs: key(*args, **kwargs))

    # name -> (position in the function's positional arguments or None, default)
    sources: list[tuple[str, int | None, Any]] = []
    func_params = list(func_signature.parameters.values())
    for name in key_signature.parameters:
        found = func_signature.parameters.get(name)
        if found is None or found.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise ValidationError(
                "key",
                f"the key callable takes {name!r}, but {func.__qualname__} has no parameter "
                "of that name; name the key's parameters after the function's",
            )
        keyword_only = found.kind == inspect.Parameter.KEYWORD_ONLY
        position = None if keyword_only else func_params.index(found)
        sources.append((name, position, found.default))

    def extract(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        chosen: dict[str, Any] = {}
        for name, position, default in sources:
            if position is not None and position < len(args):
                chosen[name] = args[position]
            elif name in kwargs:
                chosen[name] = kwargs[name]
            elif default is not _MISSING:
                chosen[name] = default
            else:
                raise ValidationError("key", f"the call passes no argument {name!r} to the key")
        return key(**chosen)

    return _guarded(key, extract)


def guarded_key(key: Callable[..., object]) -> Callable[..., object]:
    """``key``, called with the arguments given, under the same rule for what it raises."""
    guarded = _guarded(key, lambda args, kwargs: key(*args, **kwargs))
    return lambda *args, **kwargs: guarded(args, kwargs)
