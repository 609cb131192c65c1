from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.windows import RejectedSampleError, Windower, WindowSpec


def _windows(windower: Windower, times: list[float]) -> list[tuple[float, float]]:
    found = []
    for ts in times:
        for window in windower.push(ts, {"x": ts}).windows:
            found.append((window.start, window.end))
    for window in windower.flush().windows:
        found.append((window.start, window.end))
    return found


def test_cuts_windows_of_length_every_hop() -> None:
    windower = Windower("s", ("x",), WindowSpec(length=4, hop=2))
    spans = _windows(windower, [float(t) for t in range(10)])
    assert spans == [(0, 3), (2, 5), (4, 7), (6, 9)]


def test_window_data_is_in_time_order_and_a_copy() -> None:
    windower = Windower("s", ("x",), WindowSpec(length=4, hop=1))
    windows = [w for t in range(7) for w in windower.push(float(t), {"x": float(t)}).windows]
    assert [w.data[:, 0].tolist() for w in windows] == [
        [0, 1, 2, 3],
        [1, 2, 3, 4],
        [2, 3, 4, 5],
        [3, 4, 5, 6],
    ]
    assert [w.seq for w in windows] == [0, 1, 2, 3]


def test_reorders_within_lateness_and_rejects_later() -> None:
    windower = Windower("s", ("x",), WindowSpec(length=4, hop=1, lateness_s=2.0))
    order = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0, 8.0, 9.0]
    spans = _windows(windower, order)
    assert spans[0] == (0.0, 3.0)
    assert all(b - a == 3.0 for a, b in spans)
    with pytest.raises(RejectedSampleError, match="late by"):
        windower.push(1.5, {"x": 0.0})


def test_rejects_wrong_shape_and_non_finite() -> None:
    windower = Windower("s", ("a", "b"), WindowSpec(length=4, hop=1))
    with pytest.raises(RejectedSampleError, match="wrong shape"):
        windower.push(0.0, {"a": 1.0})
    with pytest.raises(RejectedSampleError, match="wrong shape"):
        windower.push(0.0, {"a": 1.0, "c": 2.0})
    with pytest.raises(RejectedSampleError, match="not finite"):
        windower.push(0.0, {"a": 1.0, "b": math.nan})
    # Nothing was consumed by the rejected samples.
    assert windower.push(0.0, {"a": 1.0, "b": 2.0}).windows == []


def test_gap_resets_window_and_reports_quality_event() -> None:
    windower = Windower("s", ("x",), WindowSpec(length=4, hop=1, max_gap_s=5.0))
    outputs = [windower.push(float(t), {"x": 0.0}) for t in (0, 1, 2, 3, 4, 20, 21, 22, 23)]
    gaps = [q for out in outputs for q in out.quality]
    assert len(gaps) == 1 and gaps[0].kind == "gap" and gaps[0].start == 4.0 and gaps[0].end == 20.0
    # After the gap no window mixes samples from both sides.
    spans = [(w.start, w.end) for out in outputs for w in out.windows]
    assert spans == [(0, 3), (1, 4), (20, 23)]


def test_push_array_matches_push() -> None:
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.5, 1.5, 200))
    values = rng.normal(size=(200, 2)).astype(np.float32)
    spec = WindowSpec(length=16, hop=5)
    one = Windower("s", ("a", "b"), spec)
    bulk = Windower("s", ("a", "b"), spec)
    single = [
        w
        for t, v in zip(times, values, strict=True)
        for w in one.push(float(t), {"a": v[0], "b": v[1]}).windows
    ]
    many = bulk.push_array(times, values).windows
    assert [(w.start, w.end, w.seq) for w in single] == [(w.start, w.end, w.seq) for w in many]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(single, many, strict=True))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=5, max_size=80, unique=True),
    st.integers(0, 79),
    st.integers(4, 9),
    st.integers(1, 4),
)
def test_snapshot_restore_continues_identically(raw: list[float], cut: int, length: int, hop: int) -> None:
    times = sorted(raw)
    cut = min(cut, len(times))
    spec = WindowSpec(length=length, hop=hop, lateness_s=3.0, max_gap_s=50.0)
    whole = Windower("s", ("x",), spec)
    reference = _windows(whole, times)
    first = Windower("s", ("x",), spec)
    before = [(w.start, w.end) for t in times[:cut] for w in first.push(t, {"x": t}).windows]
    restored = Windower.restore("s", spec, first.snapshot())
    after = _windows(restored, times[cut:])
    assert before + after == reference


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.1, 30.0), min_size=1, max_size=120),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
    st.integers(4, 12),
    st.integers(1, 12),
)
def test_bulk_chunks_equal_row_by_row_with_gaps(
    steps: list[float], chunk_sizes: list[int], length: int, hop: int
) -> None:
    hop = min(hop, length)
    times = np.cumsum(steps)
    values = np.arange(len(times), dtype=np.float32)[:, None]
    spec = WindowSpec(length=length, hop=hop, max_gap_s=10.0)
    rows = Windower("s", ("x",), spec)
    expected = [rows.push(float(t), {"x": float(v[0])}) for t, v in zip(times, values, strict=True)]
    bulk = Windower("s", ("x",), spec)
    got_windows, got_quality, begin = [], [], 0
    sizes = iter(chunk_sizes * 200)
    while begin < len(times):
        end = begin + next(sizes)
        out = bulk.push_array(times[begin:end], values[begin:end])
        got_windows.extend(out.windows)
        got_quality.extend(out.quality)
        begin = end
    want_windows = [w for out in expected for w in out.windows]
    assert [(w.seq, w.start, w.end) for w in got_windows] == [(w.seq, w.start, w.end) for w in want_windows]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(got_windows, want_windows, strict=True))
    assert got_quality == [q for out in expected for q in out.quality]
    assert bulk.snapshot() == rows.snapshot()
