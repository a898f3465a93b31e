"""Side-by-side benchmark harness: the SDK path and the raw-driver path, in one run.

A scenario module in ``bench/scenarios/`` exposes ``async def scenarios(env) -> list[Pair]``.
Each :class:`Pair` measures one capability twice, through nexus-store and through the bare
driver, alternating the two ``repeats`` times so that drift hits both alike. The report gives
median, min and max of each side and the ratio of medians (SDK / raw).

Timing lives here too: a measure built from :func:`median_seconds`, :func:`sync_rate` or
:func:`async_rate` is one burst, and a pair with ``bursts > 1`` alternates that many bursts
of each side per repeat and keeps each side's best, because the machine is shared and a burst
another process interrupted says nothing about either side.
"""

from __future__ import annotations

import asyncio
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Measure = Callable[[], Awaitable[float] | float]
Burst = Callable[[], Awaitable[float]]


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
    bursts: int = 1


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


async def median_seconds(call: Callable[[], object], calls: int) -> float:
    """Median wall time of ``calls`` sequential calls (sync or async)."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        outcome = call()
        if inspect.isawaitable(outcome):
            await outcome
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def sync_rate(check: Callable[[], object], calls: int) -> Burst:
    """A burst of ``calls`` sequential sync calls, in calls per second."""

    async def burst() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            check()
        return calls / (time.perf_counter() - started)

    return burst


def async_rate(check: Callable[[int], Awaitable[object]], calls: int, tasks: int) -> Burst:
    """A burst of ``calls`` spread over ``tasks`` concurrent tasks (``check(task)``), in calls
    per second."""
    per_task = calls // tasks

    async def worker(task: int) -> None:
        for _ in range(per_task):
            await check(task)

    async def burst() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(worker(task) for task in range(tasks)))
        return per_task * tasks / (time.perf_counter() - started)

    return burst


async def run_pair(pair: Pair, repeats: int) -> Result:
    result = Result(
        pair.name, pair.unit, [], [], pair.higher_is_better, pair.target, pair.raw_label
    )
    if pair.setup is not None:
        await pair.setup()
    best = max if pair.higher_is_better else min
    turns = 0
    try:
        for _ in range(repeats):
            runs: dict[str, list[float]] = {"sdk": [], "raw": []}
            for _ in range(pair.bursts):
                # Alternate which side goes first so warm-up and drift do not favour one.
                sides = [("sdk", pair.sdk), ("raw", pair.raw)]
                if turns % 2:
                    sides.reverse()
                turns += 1
                for side, measure in sides:
                    if measure is not None:
                        runs[side].append(await _call(measure))
            for side, values in runs.items():
                if values:
                    getattr(result, side).append(best(values))
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
