from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.onboarding import ChannelMismatchError, Onboarding

CHANNELS = ("a", "b")


def _rows(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(start, start + n, dtype=np.float64)
    return ts, np.stack([ts, -ts], axis=1).astype(np.float32)


def test_training_waits_for_the_fullest_stream_and_takes_the_first_samples() -> None:
    onboarding = Onboarding(100)
    onboarding.add("g", "s1", CHANNELS, *_rows(0, 99))
    onboarding.add("g", "s2", CHANNELS, *_rows(0, 40))
    assert onboarding.take_training_set("g") is None
    onboarding.add("g", "s1", CHANNELS, *_rows(99, 60))
    onboarding.add("g", "s3", CHANNELS, *_rows(0, 50))
    taken = onboarding.take_training_set("g")
    assert taken is not None
    assert sorted(taken) == ["s1", "s3"]  # s2 has fewer than half of what is needed
    assert taken["s1"].timestamps.tolist() == list(range(100))
    assert taken["s3"].timestamps.tolist() == list(range(50))
    # What came after the first 100 samples stays, to be scored once s1 has started.
    rest = onboarding.take_stream("s1")
    assert rest is not None and rest.timestamps.tolist() == list(range(100, 159))
    assert onboarding.is_waiting("s2") and not onboarding.is_waiting("s1")


def test_channels_must_match_the_group() -> None:
    onboarding = Onboarding(10)
    onboarding.add("g", "s1", CHANNELS, *_rows(0, 3))
    ts, values = _rows(0, 3)
    with pytest.raises(ChannelMismatchError, match="s2"):
        onboarding.add("g", "s2", ("a", "c"), ts, values)
    assert onboarding.channels_of("g") == CHANNELS


def test_give_back_puts_taken_samples_in_front_of_newer_ones() -> None:
    onboarding = Onboarding(10)
    onboarding.add("g", "s", CHANNELS, *_rows(0, 15))
    taken = onboarding.take_startable("g")
    onboarding.add("g", "s", CHANNELS, *_rows(15, 5))
    onboarding.give_back("g", taken)
    everything = onboarding.take_stream("s")
    assert everything is not None and everything.timestamps.tolist() == list(range(20))


def test_waiting_is_bounded_keeping_the_training_prefix() -> None:
    onboarding = Onboarding(10, max_waiting=30)
    for start in range(0, 100, 10):
        onboarding.add("g", "s", CHANNELS, *_rows(start, 10))
    assert onboarding.dropped("s") == 70
    waiting = onboarding.take_stream("s")
    assert waiting is not None
    assert waiting.timestamps.tolist() == list(range(10)) + list(range(80, 100))


def test_drop_forgets_a_stream() -> None:
    onboarding = Onboarding(10)
    onboarding.add("g", "s", CHANNELS, *_rows(0, 3))
    onboarding.drop("s")
    assert not onboarding.is_waiting("s") and onboarding.groups() == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.integers(2, 60))
def test_no_sample_is_lost_or_reordered_without_the_bound(chunks: list[int], needed: int) -> None:
    onboarding = Onboarding(needed, max_waiting=10_000)
    start = 0
    for size in chunks:
        onboarding.add("g", "s", CHANNELS, *_rows(start, size))
        start += size
    taken = onboarding.take_startable("g")
    rest = onboarding.take_stream("s")
    seen = [] if "s" not in taken else taken["s"].timestamps.tolist()
    seen += [] if rest is None else rest.timestamps.tolist()
    assert seen == list(range(start))


def test_unusable_samples_are_refused_with_reasons_like_the_engine_would() -> None:
    onboarding = Onboarding(10, lateness_s=2.0)
    onboarding.add("g", "s", CHANNELS, *_rows(100, 5))
    ts = np.array([105.0, 101.5, 103.5, np.nan, 106.0])
    values = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [np.inf, 1]], dtype=np.float32)
    rejected = onboarding.add("g", "s", CHANNELS, ts, values)
    assert [row for row, _ in rejected] == [1, 3, 4]
    reasons = dict(rejected)
    assert reasons[1].startswith("too late: 3.500s behind")
    assert reasons[3] == "non-finite timestamp"
    assert reasons[4] == "non-finite value in a"
    # 103.5 arrived late but within the allowed lateness: kept, in time order.
    waiting = onboarding.take_stream("s")
    assert waiting is not None
    assert waiting.timestamps.tolist() == [100.0, 101.0, 102.0, 103.0, 103.5, 104.0, 105.0]


def test_giving_back_skips_samples_that_arrived_again() -> None:
    onboarding = Onboarding(10)
    onboarding.add("g", "s", CHANNELS, *_rows(0, 15))
    taken = onboarding.take_training_set("g")
    assert taken is not None
    onboarding.drop("s")  # a rebalance: the partition is delivered again from the start
    onboarding.add("g", "s", CHANNELS, *_rows(0, 15))
    onboarding.give_back("g", taken)
    everything = onboarding.take_stream("s")
    assert everything is not None and everything.timestamps.tolist() == list(range(15))
