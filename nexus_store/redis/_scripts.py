"""Lua scripts shipped as ``.lua`` files next to the code that runs them."""

from __future__ import annotations

import functools
from importlib.resources import files

__all__ = ["lua"]


@functools.cache
def lua(name: str) -> str:
    """The source of ``nexus_store/redis/<name>.lua``."""
    return files("nexus_store.redis").joinpath(f"{name}.lua").read_text("utf-8")
