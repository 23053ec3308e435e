"""The one record every benchmark prints."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Result:
    """A figure, its baseline from the same run, and the goal for their ratio.

    ``higher_is_better`` says which way the figure points (rates: yes; seconds or
    bytes: no); ``ratio`` is always "how many times better than the baseline".
    """

    name: str
    unit: str
    figure: float
    baseline: float
    goal_ratio: float | None = None
    higher_is_better: bool = True
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.figure / self.baseline
        return self.baseline / self.figure

    @property
    def met(self) -> bool | None:
        return None if self.goal_ratio is None else self.ratio >= self.goal_ratio

    def as_dict(self) -> dict:
        return {
            "benchmark": self.name,
            "unit": self.unit,
            "figure": round(self.figure, 3),
            "baseline": round(self.baseline, 3),
            "ratio": round(self.ratio, 2),
            "goal_ratio": self.goal_ratio,
            "met": self.met,
            **self.details,
        }


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_seconds(function: Callable[[], object], repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
