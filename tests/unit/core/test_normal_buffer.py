"""The recent-normal buffer: what is admitted, what is cut out, the new-normal rule, bounds and state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.alerts import alert_id_for
from streamwatch.core.normal_buffer import BufferConfig, NormalBuffer, StreamShape
from streamwatch.records import AlertEvent, AlertStatus, WindowScore

SHAPE = StreamShape(("x",), window_s=8.0, max_gap_s=5.0)
STREAM = "s"


def _samples(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.arange(start, stop, dtype=np.float64)
    return times, np.sin(times / 3.0).astype(np.float32)[:, None]


def _verdicts(start: int, stop: int, *, exceeding: set[int] = frozenset()) -> list[WindowScore]:  # type: ignore[assignment]
    """Windows of 8 s ending at each second in [start, stop); those ending in `exceeding` exceed."""
    return [
        WindowScore(
            STREAM, end, end - 8.0, float(end), 5.0 if end in exceeding else 0.5, 1.0, {"x": 0.5}, "m@1"
        )
        for end in range(start, stop)
    ]


def _alert(status: AlertStatus, start: float, end: float) -> AlertEvent:
    return AlertEvent(
        alert_id_for(STREAM, start), STREAM, status, "warning", start, end, 5.0, 1.0, "m@1", {"x": 1.0}, end
    )


def _fed(buffer: NormalBuffer, start: int, stop: int, **kwargs: set[int]) -> None:
    buffer.add(STREAM, SHAPE, *_samples(start, stop))
    buffer.judge(_verdicts(start, stop, **kwargs), [])


def test_samples_are_admitted_once_every_window_around_them_is_judged() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=1.0))
    _fed(buffer, 0, 100)
    series = buffer.series(STREAM)
    assert series is not None
    # Horizon 99, margin 8 s and a window of 8 s: samples up to 83 are settled.
    assert series.timestamps[0] == 0 and series.timestamps[-1] == 83
    assert series.breaks == ()
    assert buffer.fresh_samples(STREAM) == 84


def test_an_exceeding_window_cuts_its_span_and_margins_out() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=1.0))
    _fed(buffer, 0, 200, exceeding={100})
    series = buffer.series(STREAM)
    assert series is not None
    times = series.timestamps
    # The window [92, 100] with 8 s on both sides: 84..108 are out.
    assert not np.any((times >= 84) & (times <= 108))
    assert 83 in times and 109 in times
    assert len(series.breaks) == 1 and times[series.breaks[0]] == 109


def test_an_alert_span_is_never_admitted_and_its_quarantine_is_dropped_when_it_resolves() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=1.0, new_normal_after_windows=1000))
    buffer.add(STREAM, SHAPE, *_samples(0, 300))
    buffer.judge(_verdicts(0, 120, exceeding={100, 101}), [_alert("firing", 93.0, 101.0)])
    # Quiet windows, but the alert stays open until it resolves at 160.
    buffer.judge(_verdicts(120, 160), [])
    # Resolved by the first of these windows: the margin runs from there, not from the last one.
    buffer.judge(_verdicts(160, 300), [_alert("resolved", 93.0, 160.0)], [0])
    series = buffer.series(STREAM)
    assert series is not None
    times = series.timestamps
    assert not np.any((times >= 85) & (times <= 167))
    assert times.max() > 167
    assert not buffer.in_new_normal(STREAM)


def test_a_change_that_lasts_becomes_the_new_normal() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=1.0, new_normal_after_windows=50))
    buffer.add(STREAM, SHAPE, *_samples(0, 400))
    buffer.judge(_verdicts(0, 100), [])
    before = buffer.series(STREAM)
    assert before is not None and len(before.timestamps) > 0
    buffer.judge(_verdicts(100, 102, exceeding={100, 101}), [_alert("firing", 93.0, 101.0)])
    assert not buffer.asks_retrain(STREAM)
    buffer.judge(_verdicts(102, 400, exceeding=set(range(102, 400))), [])
    assert buffer.in_new_normal(STREAM) and buffer.asks_retrain(STREAM)
    after = buffer.series(STREAM)
    assert after is not None
    # Only data since the change began is normal now; everything after it is admitted.
    assert after.timestamps[0] >= 93
    assert after.timestamps[-1] == 383
    buffer.mark_trained(STREAM)
    assert not buffer.asks_retrain(STREAM) and buffer.fresh_samples(STREAM) == 0


def test_gaps_start_new_segments() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=0.0))
    times = np.r_[np.arange(0, 50), np.arange(70, 120)].astype(np.float64)
    buffer.add(STREAM, SHAPE, times, np.zeros((len(times), 1), dtype=np.float32))
    buffer.judge(_verdicts(0, 130), [])
    series = buffer.series(STREAM)
    assert series is not None
    assert series.breaks == (50,)
    assert series.bounds() == [(0, 50), (50, 100)]


def test_unusable_samples_are_not_admitted() -> None:
    buffer = NormalBuffer(BufferConfig(margin_windows=0.0))
    times = np.asarray([0.0, 1.0, 1.0, 0.5, 2.0, 3.0])
    values = np.asarray([[0.0], [1.0], [9.0], [9.0], [np.nan], [3.0]], dtype=np.float32)
    buffer.add(STREAM, SHAPE, times, values)
    buffer.judge(_verdicts(10, 30), [])
    series = buffer.series(STREAM)
    assert series is not None
    assert series.timestamps.tolist() == [0.0, 1.0, 3.0]
    assert series.values[:, 0].tolist() == [0.0, 1.0, 3.0]


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(64, 300),
    chunks=st.lists(st.integers(1, 120), min_size=1, max_size=12),
    exceed_every=st.integers(5, 400),
)
def test_the_buffer_stays_bounded_ordered_and_its_snapshot_round_trips(
    capacity: int, chunks: list[int], exceed_every: int
) -> None:
    config = BufferConfig(capacity_samples=capacity, margin_windows=0.5)
    buffer = NormalBuffer(config)
    start = 0
    for size in chunks:
        stop = start + size
        buffer.add(STREAM, SHAPE, *_samples(start, stop))
        exceeding = {end for end in range(start, stop) if end % exceed_every == 0}
        buffer.judge(_verdicts(start, stop, exceeding=exceeding), [])
        series = buffer.series(STREAM)
        assert series is not None
        assert len(series.timestamps) <= capacity
        assert np.all(np.diff(series.timestamps) > 0)
        assert all(0 < row < len(series.timestamps) for row in series.breaks)
        start = stop
    twin = NormalBuffer(config)
    twin.restore(STREAM, buffer.snapshot(STREAM))
    for item in (buffer, twin):
        item.add(STREAM, SHAPE, *_samples(start, start + 50))
        item.judge(_verdicts(start, start + 50), [])
    ours, theirs = buffer.series(STREAM), twin.series(STREAM)
    assert ours is not None and theirs is not None
    assert np.array_equal(ours.timestamps, theirs.timestamps)
    assert np.array_equal(ours.values, theirs.values)
    assert ours.breaks == theirs.breaks
    assert buffer.snapshot(STREAM) == twin.snapshot(STREAM)


def test_seeded_data_is_normal_but_not_fresh() -> None:
    buffer = NormalBuffer(BufferConfig())
    buffer.seed(STREAM, SHAPE, *_samples(0, 100))
    assert buffer.size(STREAM) == 100 and buffer.fresh_samples(STREAM) == 0


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity_samples"):
        BufferConfig(capacity_samples=10)
    with pytest.raises(ValueError, match="new_normal_after_windows"):
        BufferConfig(new_normal_after_windows=0)
