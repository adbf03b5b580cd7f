"""Wall-clock timing helpers shared by the model benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List


def timings(fn: Callable[[], Any], repeats: int, warmup: int = 1,
            sync: Callable[[], None] = lambda: None) -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``sync`` waits for asynchronous work (``torch.cuda.synchronize`` on a GPU)
    before a clock is read.
    """
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - start)
    return out


def ms_stats(values: List[float]) -> Dict[str, float]:
    """Median and 90th percentile of durations in seconds, as milliseconds."""
    ordered = sorted(values)
    return {'median_ms': 1000 * statistics.median(ordered),
            'p90_ms': 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}
