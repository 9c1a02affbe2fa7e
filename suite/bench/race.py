"""Side-by-side timing: every contender in the same process, in interleaved rounds, so machine noise
hits all of them alike; the figures that carry over are ratios of their medians."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def race(contenders: dict[str, Callable[[], object]], rounds: int, steps: int, warmup: int) -> dict[str, float]:
    """Median ms per call of each contender: `warmup` untimed calls each, then `rounds` rounds in which
    every contender makes `steps` timed calls in turn."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}
