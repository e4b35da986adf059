"""Timing: warm-up, calibration, repetitions, and the statistics reported.

A :class:`Timer` wraps one :class:`~benchmarks.common.Operation`. ``warm_up()`` calls it
once cold, then for ``Settings.warmup_s`` (at least once more), and from those calls
picks how many calls one repetition makes so that it lasts about ``Settings.target_s``.
``repetition()`` then times that many calls with :func:`time.perf_counter_ns`. The
runner interleaves the repetitions of all implementations of a case (A B C A B C ...) so
that a slow drift of the machine or the database touches every column alike.

Figures are per operation: the time of a repetition divided by the operations it did
(``calls * ops_per_call``). The reported figure is the median over repetitions,
with the minimum, maximum and interquartile range beside it.
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import asdict, dataclass

from benchmarks.common import Operation

__all__ = ["Settings", "Stats", "Timer"]


@dataclass(frozen=True)
class Settings:
    """How long to measure. ``quick()`` trades precision for a run well under a minute."""

    # Many short repetitions rather than a few long ones: on a busy machine a burst of
    # other work then spoils single repetitions of every column, not one column's figure.
    repeat: int = 15
    target_s: float = 0.1
    warmup_s: float = 0.1
    max_calls_per_rep: int = 200_000

    @classmethod
    def quick(cls) -> Settings:
        return cls(repeat=3, target_s=0.02, warmup_s=0.01)


@dataclass(frozen=True)
class Stats:
    """Per-operation figures in microseconds over ``reps`` repetitions."""

    median_us: float
    min_us: float
    max_us: float
    q1_us: float
    q3_us: float
    reps: int
    calls_per_rep: int
    ops_per_call: int

    @property
    def ops_per_s(self) -> float:
        return 1e6 / self.median_us if self.median_us > 0 else float("inf")

    @classmethod
    def of(cls, per_op_us: list[float], calls: int, ops_per_call: int) -> Stats:
        data = sorted(per_op_us)
        if len(data) >= 2:
            q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
        else:
            q1 = q3 = data[0]
        return cls(
            median_us=statistics.median(data),
            min_us=data[0],
            max_us=data[-1],
            q1_us=q1,
            q3_us=q3,
            reps=len(data),
            calls_per_rep=calls,
            ops_per_call=ops_per_call,
        )

    def as_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = asdict(self)
        d["ops_per_s"] = self.ops_per_s
        return d


class Timer:
    """Times one operation; see the module docstring for the procedure."""

    def __init__(self, op: Operation, settings: Settings) -> None:
        self.op = op
        self.settings = settings
        # A CPU-only operation (a permission decision) is a plain function, called
        # without a coroutine around it.
        self._sync = not inspect.iscoroutinefunction(op.fn)
        self.calls_per_rep = 1
        self.calls_done = 0
        self._per_op_us: list[float] = []

    async def warm_up(self) -> None:
        """One cold call, then calls for ``warmup_s`` (at least one) to calibrate on."""
        s = self.settings
        budget = self.op.max_calls
        cold = await self._run(1)
        if cold >= 3 * s.target_s * 1e9:
            # Even at a third of this, one call fills a repetition: nothing to calibrate.
            self.calls_done, self.calls_per_rep = 1, 1
            return
        calls, elapsed = 1, 0
        limit = int(s.warmup_s * 1e9)
        while True:
            elapsed += await self._run(1)
            calls += 1
            if elapsed >= limit or (budget is not None and calls >= max(2, budget // 10)):
                break
        per_call_s = elapsed / 1e9 / (calls - 1)
        self.calls_done = calls
        n = max(1, min(s.max_calls_per_rep, round(s.target_s / per_call_s)))
        if budget is not None:
            # e.g. the cache-miss case: never read an id twice.
            n = max(1, min(n, (budget - calls) // s.repeat))
        self.calls_per_rep = n

    async def _run(self, n: int) -> int:
        """Call the operation ``n`` times; return the nanoseconds it took."""
        fn = self.op.fn
        if self._sync:
            start = time.perf_counter_ns()
            for _ in range(n):
                fn()
            return time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        for _ in range(n):
            await fn()  # type: ignore[misc]
        return time.perf_counter_ns() - start

    async def repetition(self) -> None:
        n = self.calls_per_rep
        elapsed = await self._run(n)
        self.calls_done += n
        self._per_op_us.append(elapsed / 1e3 / (n * self.op.ops_per_call))

    def stats(self) -> Stats:
        return Stats.of(self._per_op_us, self.calls_per_rep, self.op.ops_per_call)
