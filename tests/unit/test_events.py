from __future__ import annotations

from streamwatch.evaluate.events import Span, alert_spans, score_events
from streamwatch.records import AlertEvent


def _event(alert_id: str, status: str, start: float, end: float, detected: float) -> AlertEvent:
    return AlertEvent(alert_id, "s", status, "warning", start, end, 2.0, 1.0, "pca@1", {}, detected)  # type: ignore[arg-type]


def test_alert_spans_pair_firing_with_resolved_and_keep_open_ones() -> None:
    events = [
        _event("a", "firing", 10, 12, 12),
        _event("a", "firing", 10, 14, 14),  # severity update: same alert
        _event("a", "resolved", 10, 20, 25),
        _event("b", "firing", 50, 52, 52),
    ]
    spans = alert_spans(events, end_of_data=100)
    assert spans == [(Span(10, 20), 12), (Span(50, 100), 52)]


def test_score_events_hand_worked() -> None:
    labels = [Span(0, 10), Span(100, 110), Span(200, 210)]
    alerts = [(Span(5, 15), 6.0), (Span(112, 120), 113.0), (Span(300, 310), 301.0)]
    score = score_events(labels, alerts, tolerance_s=5)
    # label 1 found (overlap), label 2 found within tolerance, label 3 missed; alert 3 is a false alarm.
    assert (score.found, score.alerts, score.false_alarms) == (2, 3, 1)
    assert score.recall == 2 / 3 and score.precision == 2 / 3
    assert abs(score.f1 - 2 / 3) < 1e-12
    assert score.detection_delays_s == (6.0, 13.0)
    strict = score_events(labels, alerts, tolerance_s=0)
    assert strict.found == 1 and strict.false_alarms == 2


def test_no_alerts_and_no_labels_is_perfect() -> None:
    score = score_events([], [], tolerance_s=1)
    assert score.f1 == 1.0 and score.precision == 1.0 and score.recall == 1.0
