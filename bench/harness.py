"""Side-by-side benchmark harness: the SDK path and the raw-driver path, in one run.

A scenario module in ``bench/scenarios/`` exposes ``async def scenarios(env) -> list[Pair]``.
Each :class:`Pair` measures one capability twice, through nexus-store and through the bare
driver, alternating the two ``repeats`` times so that drift hits both alike. The report gives
median, min and max of each side and the ratio of medians (SDK / raw).
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Measure = Callable[[], Awaitable[float] | float]


@dataclass
class Pair:
    """One capability measured through the SDK and through the raw driver.

    ``sdk`` and ``raw`` each run the workload once and return the measured value in ``unit``
    (``ops/s``, ``us/op``...). ``raw`` may be None for report-only figures.
    """

    name: str
    unit: str
    sdk: Measure
    raw: Measure | None = None
    higher_is_better: bool = True
    target: str = ""
    setup: Callable[[], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    raw_label: str = "raw driver"


@dataclass
class Result:
    name: str
    unit: str
    sdk: list[float]
    raw: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    target: str = ""
    raw_label: str = "raw driver"

    @staticmethod
    def _summary(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    @property
    def ratio(self) -> float | None:
        if not self.raw:
            return None
        raw = statistics.median(self.raw)
        return statistics.median(self.sdk) / raw if raw else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "target": self.target,
            "raw_label": self.raw_label,
            "sdk": self._summary(self.sdk),
            "raw": self._summary(self.raw),
            "ratio_sdk_over_raw": self.ratio,
            "runs": {"sdk": self.sdk, "raw": self.raw},
        }


async def _call(measure: Measure) -> float:
    value = measure()
    if inspect.isawaitable(value):
        value = await value
    return float(value)


async def run_pair(pair: Pair, repeats: int) -> Result:
    result = Result(
        pair.name, pair.unit, [], [], pair.higher_is_better, pair.target, pair.raw_label
    )
    if pair.setup is not None:
        await pair.setup()
    try:
        for index in range(repeats):
            # Alternate which side goes first so warm-up and drift do not favour one.
            sides = [("sdk", pair.sdk), ("raw", pair.raw)]
            if index % 2:
                sides.reverse()
            for side, measure in sides:
                if measure is not None:
                    getattr(result, side).append(await _call(measure))
    finally:
        if pair.teardown is not None:
            await pair.teardown()
    return result


def render_table(results: list[Result]) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape("nexus-store benchmarks (median [min-max])"))
    for column in ("scenario", "unit", "nexus-store", "raw", "ratio", "target"):
        table.add_column(column)

    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        return escape(f"{statistics.median(values):,.1f} [{min(values):,.1f}-{max(values):,.1f}]")

    for result in results:
        ratio = result.ratio
        table.add_row(
            result.name,
            result.unit,
            fmt(result.sdk),
            fmt(result.raw) + (escape(f" ({result.raw_label})") if result.raw else ""),
            f"{ratio:.2f}x" if ratio is not None else "-",
            result.target,
        )
    console = Console(width=200, record=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get()
