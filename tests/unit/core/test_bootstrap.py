from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.bootstrap import (
    StreamSeries,
    TrainingPlan,
    WindowShape,
    segment_bounds,
    start_stream,
    train_group,
)
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.models.pca import PcaReconstructor

START = 1_767_225_600.0


def _pca(length: int, channels: int) -> Reconstructor:
    return PcaReconstructor(length=length, channels=channels)


def _series(rng: np.random.Generator, n: int, offset: float = 0.0) -> StreamSeries:
    t = np.arange(n, dtype=np.float64)
    values = (offset + np.sin(2 * np.pi * t / 25) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    return StreamSeries(("v",), START + t, values)


def test_every_stream_gets_enough_of_its_own_windows_to_fit_its_threshold() -> None:
    rng = np.random.default_rng(1)
    series = {f"s{i}": _series(rng, 1500) for i in range(60)}
    plan = TrainingPlan(max_calibration_windows=400, min_threshold_windows=100)
    model = train_group(series, version="pca@1", shape=WindowShape(length=32, hop=2), plan=plan, factory=_pca)
    # 60 streams share 400 calibration windows (about 7 each); thresholds still see about 100 windows each.
    assert all(len(scores) >= 90 for scores in model.initial_scores.values())
    assert all(np.isfinite(scores).all() for scores in model.initial_scores.values())


def test_a_stream_not_trained_on_starts_under_the_model_with_its_own_profile() -> None:
    rng = np.random.default_rng(2)
    model = train_group(
        {"s1": _series(rng, 3000)}, version="pca@1", shape=WindowShape(), plan=TrainingPlan(), factory=_pca
    )
    newcomer = _series(rng, 1000, offset=40.0)  # another level entirely: its own profile absorbs it
    start = start_stream(model, newcomer, TrainingPlan())
    assert abs(float(start.profile.to_json()["centre"][0]) - 40.0) < 1.0
    assert len(start.initial_scores) > 100
    # Normal windows of the newcomer look normal to the model: the median score is well below the floor.
    assert float(np.median(start.initial_scores)) < 1.5


def test_a_short_history_keeps_enough_held_out_windows_to_calibrate() -> None:
    # 150 rows (NAB's probationary period of a 1,000-row file) with 64-sample windows: a fifth held out would
    # be 30 rows, less than one window. Training gives up rows so calibration still sees unseen windows.
    rng = np.random.default_rng(3)
    model = train_group(
        {"s": _series(rng, 150)},
        version="pca@1",
        shape=WindowShape(length=64, hop=4),
        plan=TrainingPlan(),
        factory=_pca,
    )
    assert len(model.initial_scores["s"]) >= 4
    assert np.isfinite(model.initial_scores["s"]).all()


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 60),
    breaks=st.sets(st.integers(1, 59), max_size=6),
    begin=st.integers(-5, 60),
    end=st.integers(0, 60),
)
def test_row_ranges_keep_the_segments_that_fall_inside_them(
    size: int, breaks: set[int], begin: int, end: int
) -> None:
    cuts = tuple(sorted(row for row in breaks if row < size))
    series = StreamSeries(("v",), np.arange(size, dtype=np.float64), np.zeros((size, 1), np.float32), cuts)
    part = series.rows(begin, end)
    first = max(0, begin)
    expected = [(a - first, b - first) for a, b in segment_bounds(cuts, first, max(first, min(end, size)))]
    assert part.bounds() == expected
    assert len(part.timestamps) == max(0, min(end, size) - first)
