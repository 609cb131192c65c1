"""A per-stream level reference that follows slow change, so the level is judged against recent normal.

A model trained on a day of data has seen one day's level; the next days drift a little (weekends, growth,
seasons the training data was too short to show). Judging each window's mean against a reference that
moves slowly towards windows judged normal keeps those slow changes from paging anyone, while a step or a
fast drift still stands out: the reference only learns from windows that did not exceed the threshold, and
its memory (`LEVEL_MEMORY_WINDOWS` hops) is long against the time it takes to alert.
"""

from __future__ import annotations

import numpy as np

from streamwatch.records import FloatArray

LEVEL_MEMORY_WINDOWS = 64


def step_weight(hop: int, stride: int = 0) -> float:
    """Weight of one update when windows are `stride` samples apart (default: one hop)."""
    hops = (stride or hop) / hop
    return float(1.0 - (1.0 - 1.0 / LEVEL_MEMORY_WINDOWS) ** hops)


def follow(means: FloatArray, start: FloatArray, weight: float) -> tuple[FloatArray, FloatArray]:
    """The reference in force before each of `means` (N, C), every window learned; and the final one."""
    references = np.empty_like(means)
    current = start.astype(np.float32).copy()
    for index, mean in enumerate(means):
        references[index] = current
        current += weight * (mean - current)
    return references, current
