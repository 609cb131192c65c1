from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.evaluate.metrics import (
    AlertSpan,
    Counts,
    alert_rows,
    event_counts,
    point_adjusted,
    point_counts,
    top1_hit,
    total,
)


def _bools(text: str) -> np.ndarray:
    return np.asarray([char == "1" for char in text], dtype=np.bool_)


def test_point_counts_and_f1_hand_worked() -> None:
    predicted = _bools("0110011000")
    labels = _bools("0111000010")
    counts = point_counts(predicted, labels)
    assert counts == Counts(tp=2, fp=2, fn=2)
    assert counts.precision == 0.5 and counts.recall == 0.5 and counts.f1 == 0.5
    assert Counts().f1 == 0.0 and Counts(fp=3).precision == 0.0
    assert total([counts, Counts(tp=2)]) == Counts(tp=4, fp=2, fn=2)


def test_point_adjustment_credits_a_whole_segment_for_one_hit() -> None:
    labels = _bools("0111100111")
    predicted = _bools("1001000000")
    adjusted = point_adjusted(predicted, labels)
    # The first segment had a hit at row 3: all of rows 1-4 count; the second had none; row 0 stays an FP.
    assert adjusted.tolist() == _bools("1111100000").tolist()
    assert point_counts(adjusted, labels) == Counts(tp=4, fp=1, fn=3)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=50))
def test_point_adjustment_only_adds_predictions_inside_labels(pairs: list[tuple[bool, bool]]) -> None:
    predicted = np.asarray([p for p, _ in pairs], dtype=np.bool_)
    labels = np.asarray([label for _, label in pairs], dtype=np.bool_)
    adjusted = point_adjusted(predicted, labels)
    assert (adjusted >= predicted).all()
    assert (adjusted[~labels] == predicted[~labels]).all()
    assert point_counts(adjusted, labels).recall >= point_counts(predicted, labels).recall


def test_alert_rows_cover_fire_to_last() -> None:
    assert alert_rows([AlertSpan(2, 4), AlertSpan(8, 9)], 10).tolist() == _bools("0011100011").tolist()


def test_event_counts_hand_worked() -> None:
    labels = [(10, 20), (50, 60), (90, 95)]
    alerts = [
        AlertSpan(fired=15, last=30),  # inside the first label: delay 5
        AlertSpan(fired=63, last=70),  # 3 rows after the second ends: within tolerance 5, delay 13
        AlertSpan(fired=5, last=12),  # active into the first label before it began: found it too, delay 0
        AlertSpan(fired=200, last=210),  # matches nothing
    ]
    counts = event_counts(labels, alerts, tolerance=5)
    assert (counts.labels, counts.found, counts.alerts, counts.false_alarms) == (3, 2, 4, 1)
    assert counts.delays == (0, 13)
    assert counts.recall == 2 / 3 and counts.precision == 3 / 4
    assert abs(counts.f1 - 2 * (2 / 3) * (3 / 4) / (2 / 3 + 3 / 4)) < 1e-12
    # Beyond the tolerance the second alert is a false alarm and the label is missed.
    strict = event_counts(labels, alerts, tolerance=2)
    assert (strict.found, strict.false_alarms) == (1, 2)


def test_top1_hit_allows_the_tolerance_on_both_sides() -> None:
    assert top1_hit(100, (200, 300), 100)
    assert top1_hit(400, (200, 300), 100)
    assert not top1_hit(99, (200, 300), 100)
    assert not top1_hit(401, (200, 300), 100)
