"""Event-level scoring of alerts against labelled anomaly spans.

An on-call engineer counts incidents, not points: a labelled anomaly is found when an alert overlaps it, and
an alert that overlaps no labelled anomaly is a false alarm. A window can only be judged after it closes,
so an alert may start up to `tolerance_s` after a label ends and still count as finding it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamwatch.records import AlertEvent


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float

    def overlaps(self, other: Span, tolerance_s: float = 0.0) -> bool:
        """Whether `other` overlaps this span extended by `tolerance_s` at its end."""
        return self.start <= other.end and other.start <= self.end + tolerance_s


@dataclass(frozen=True, slots=True)
class EventScore:
    labels: int
    found: int
    alerts: int
    false_alarms: int
    detection_delays_s: tuple[float, ...]

    @property
    def recall(self) -> float:
        return self.found / self.labels if self.labels else 1.0

    @property
    def precision(self) -> float:
        return (self.alerts - self.false_alarms) / self.alerts if self.alerts else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_delay_s(self) -> float:
        delays = self.detection_delays_s
        return sum(delays) / len(delays) if delays else 0.0


def alert_spans(events: Iterable[AlertEvent], *, end_of_data: float) -> list[tuple[Span, float]]:
    """Alert lifecycles as (span, first detection time); an alert still firing lasts to the end of data."""
    opened: dict[str, tuple[float, float]] = {}
    spans: list[tuple[Span, float]] = []
    for event in events:
        if event.status == "firing":
            opened.setdefault(event.alert_id, (event.window_start, event.detected_at))
        elif event.alert_id in opened:
            start, detected = opened.pop(event.alert_id)
            spans.append((Span(start, event.window_end), detected))
    spans.extend((Span(start, end_of_data), detected) for start, detected in opened.values())
    spans.sort(key=lambda item: item[0].start)
    return spans


def score_events(
    labels: Sequence[Span], alerts: Sequence[tuple[Span, float]], *, tolerance_s: float
) -> EventScore:
    found = 0
    delays: list[float] = []
    for label in labels:
        hits = [detected for span, detected in alerts if label.overlaps(span, tolerance_s)]
        if hits:
            found += 1
            delays.append(max(0.0, min(hits) - label.start))
    false_alarms = sum(
        1 for span, _ in alerts if not any(label.overlaps(span, tolerance_s) for label in labels)
    )
    return EventScore(len(labels), found, len(alerts), false_alarms, tuple(delays))
