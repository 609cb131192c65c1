"""The canary tracker: hit rates per version, the floor, the usual rate, and when to roll back."""

from __future__ import annotations

import pytest

from streamwatch.core.canaries import CanaryConfig, CanaryTracker

CONFIG = CanaryConfig(memory=20, min_canaries=10, floor=0.4, relative_floor=0.7)


def _tracker() -> CanaryTracker:
    tracker = CanaryTracker(CONFIG)
    tracker.went_live("g", "conv@1", swapped=False)
    return tracker


def test_a_version_is_judged_only_after_enough_canaries() -> None:
    tracker = _tracker()
    tracker.record("g", "a", [False] * 9)
    assert not tracker.judged("g") and not tracker.below_floor("g")
    tracker.record("g", "a", [False])
    assert tracker.judged("g") and tracker.below_floor("g")


def test_the_floor_follows_the_groups_usual_rate() -> None:
    tracker = _tracker()
    assert tracker.floor_of("g") == pytest.approx(0.4)
    tracker.record("g", "a", [True] * 10)
    assert tracker.usual_rate("g") == pytest.approx(1.0)
    assert tracker.floor_of("g") == pytest.approx(0.7)
    # 60% would pass an absolute floor of 40% but is far below what this group's models usually see (and
    # over 20 canaries that is no accident).
    tracker.went_live("g", "conv@2", swapped=True)
    tracker.record("g", "a", [True] * 6 + [False] * 4)
    assert not tracker.below_floor("g"), "10 canaries cannot tell 60% from the usual rate"
    usual = tracker.usual_rate("g")
    tracker.record("g", "a", [True] * 6 + [False] * 4)
    assert tracker.below_floor("g")
    # A degraded version does not drag the usual rate down with it.
    assert tracker.usual_rate("g") == usual


def test_a_drop_right_after_a_swap_from_a_version_that_saw_is_rolled_back() -> None:
    tracker = _tracker()
    tracker.record("g", "a", [True] * 8 + [False] * 2)
    tracker.went_live("g", "conv@2", swapped=True)
    group = tracker.group("g")
    assert group is not None and group.previous_rate == pytest.approx(0.8)
    tracker.record("g", "a", [False] * 10)
    assert tracker.should_roll_back("g")
    # Without a swap (the first model, or a sensor change under the same model) there is nothing to undo.
    fresh = _tracker()
    fresh.record("g", "a", [False] * 10)
    assert fresh.below_floor("g") and not fresh.should_roll_back("g")


def test_the_rolled_back_version_is_not_rolled_back_again() -> None:
    tracker = _tracker()
    tracker.record("g", "a", [True] * 10)
    tracker.went_live("g", "conv@2", swapped=True)
    tracker.record("g", "a", [False] * 10)
    tracker.went_live("g", "conv@3", swapped=True)  # the rollback: its predecessor was the broken one
    tracker.record("g", "a", [False] * 10)
    assert tracker.below_floor("g") and not tracker.should_roll_back("g")


def test_per_stream_rates_are_kept() -> None:
    tracker = _tracker()
    tracker.record("g", "a", [True, True])
    tracker.record("g", "b", [False, True])
    group = tracker.group("g")
    assert group is not None
    assert group.stream_rate("a") == 1.0 and group.stream_rate("b") == 0.5
    assert group.rate == pytest.approx(0.75)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="memory"):
        CanaryConfig(memory=5, min_canaries=10)
    with pytest.raises(ValueError, match="floor"):
        CanaryConfig(floor=1.5)
