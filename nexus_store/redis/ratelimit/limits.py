"""Typed rate limits: one :class:`RateLimitItem` per ``amount/window``, grouped in
:class:`RateLimits` (what one decorator or one ``hit`` enforces together).

    limits = parse_limits("10/second;1000/hour")
    limits.items[0].amount          # 10
    limits.items[1].window_seconds  # 3600.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_store.errors import ValidationError

__all__ = ["RateLimitItem", "RateLimits"]


@dataclass(frozen=True, slots=True)
class RateLimitItem:
    """``amount`` units per ``window_ms`` milliseconds; ``text`` is its canonical spelling."""

    amount: int
    window_ms: int
    text: str

    @property
    def window_seconds(self) -> float:
        return self.window_ms / 1000.0

    @property
    def field(self) -> str:
        """Name of this limit's state inside a key's Redis hash (``"10/1000"``)."""
        return f"{self.amount}/{self.window_ms}"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits one check evaluates atomically, with their script arguments precomputed.

    Build it with :func:`nexus_store.redis.ratelimit.parse.parse_limits`, once, outside the
    hot path.
    """

    items: tuple[RateLimitItem, ...]
    script_args: tuple[str | int, ...] = field(init=False, repr=False)
    smallest_amount: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        args: list[str | int] = []
        for item in self.items:
            # The scripts count time in microseconds.
            args += [item.field, item.amount, item.window_ms * 1000]
        object.__setattr__(self, "script_args", tuple(args))
        object.__setattr__(self, "smallest_amount", min(item.amount for item in self.items))

    @property
    def text(self) -> str:
        return ";".join(item.text for item in self.items)

    def check_cost(self, cost: object, *, least: int = 1) -> None:
        """Refuse a ``cost`` that is not an integer from ``least`` to the smallest limit."""
        if type(cost) is not int or cost < least:
            raise ValidationError("cost", f"must be an integer of at least {least}, not {cost!r}")
        if cost > self.smallest_amount:
            raise ValidationError(
                "cost", f"{cost} exceeds the smallest limit of {self.text!r}; it could never pass"
            )

    def __str__(self) -> str:
        return self.text
