from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.level import LEVEL_MEMORY_WINDOWS, follow, step_weight


def test_reference_before_each_window_and_final() -> None:
    means = np.array([[1.0], [1.0], [1.0]], dtype=np.float32)
    refs, final = follow(means, np.zeros(1, dtype=np.float32), 0.5)
    assert refs[:, 0].tolist() == [0.0, 0.5, 0.75]
    assert final.tolist() == [0.875]


def test_memory_is_about_level_memory_windows() -> None:
    means = np.ones((LEVEL_MEMORY_WINDOWS, 1), dtype=np.float32)
    _, final = follow(means, np.zeros(1, dtype=np.float32), step_weight(hop=4))
    assert 0.6 < final[0] < 0.65  # 1 - 1/e after one memory's worth of windows


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 16), st.integers(1, 8))
def test_strided_weight_equals_that_many_single_hops(hop: int, hops: int) -> None:
    single = step_weight(hop)
    strided = step_weight(hop, stride=hop * hops)
    remaining = 1.0
    for _ in range(hops):
        remaining *= 1.0 - single
    assert abs(strided - (1.0 - remaining)) < 1e-9
