"""Row- and event-level detection metrics shared by every corpus.

Predictions and labels are boolean arrays over rows. Point-wise counts are pooled over all files of a corpus
(as the SKAB leaderboard does) rather than averaged per file, so a file with one long anomaly weighs what its
rows weigh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamwatch.evaluate.events import Span, score_events

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Counts:
    """Confusion counts; precision/recall/F1 of the positive class (0 when undefined, like scikit-learn)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def total(counts: Iterable[Counts]) -> Counts:
    result = Counts()
    for item in counts:
        result = result + item
    return result


def point_counts(predicted: BoolArray, labels: BoolArray) -> Counts:
    if predicted.shape != labels.shape:
        raise ValueError(f"predictions {predicted.shape} and labels {labels.shape} differ in shape")
    return Counts(
        tp=int(np.count_nonzero(predicted & labels)),
        fp=int(np.count_nonzero(predicted & ~labels)),
        fn=int(np.count_nonzero(~predicted & labels)),
    )


def point_adjusted(predicted: BoolArray, labels: BoolArray) -> BoolArray:
    """Point adjustment (Xu et al. 2018): a labelled segment with any predicted row counts as wholly found.

    Widely reported, and generous (one lucky row finds a long segment), so reported beside, never instead of,
    the event and point-wise figures.
    """
    adjusted = predicted.copy()
    padded = np.concatenate([[False], labels, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        if predicted[first:end].any():
            adjusted[first:end] = True
    return adjusted


@dataclass(frozen=True, slots=True)
class AlertSpan:
    """An alert in rows: it fired at row `fired` (when it became known) and was active until `last`."""

    fired: int
    last: int


def alert_rows(alerts: Sequence[AlertSpan], rows: int) -> BoolArray:
    """Rows during which an alert was active: what an on-call engineer saw, row by row."""
    active = np.zeros(rows, dtype=np.bool_)
    for alert in alerts:
        active[alert.fired : alert.last + 1] = True
    return active


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Labelled anomalies found, alerts raised, alerts that matched nothing, and detection delays (rows)."""

    labels: int = 0
    found: int = 0
    alerts: int = 0
    false_alarms: int = 0
    delays: tuple[int, ...] = ()

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(
            self.labels + other.labels,
            self.found + other.found,
            self.alerts + other.alerts,
            self.false_alarms + other.false_alarms,
            self.delays + other.delays,
        )

    @property
    def recall(self) -> float:
        return self.found / self.labels if self.labels else 0.0

    @property
    def precision(self) -> float:
        return (self.alerts - self.false_alarms) / self.alerts if self.alerts else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def event_counts(
    labels: Sequence[tuple[int, int]], alerts: Sequence[AlertSpan], *, tolerance: int
) -> EventCounts:
    """Match alerts to labelled spans (inclusive rows) with the matching rule of `events.score_events`, in
    rows: an alert finds a label when it is active at some row of the label or fires within `tolerance`
    rows after it ends (a window is judged only once it closes). The delay is from the label's first row to
    the first alert that found it (0 when it fired earlier)."""
    matched = score_events(
        [Span(first, last) for first, last in labels],
        [(Span(alert.fired, alert.last), float(alert.fired)) for alert in alerts],
        tolerance_s=tolerance,
    )
    delays = tuple(int(delay) for delay in matched.detection_delays_s)
    return EventCounts(matched.labels, matched.found, matched.alerts, matched.false_alarms, delays)


def top1_hit(location: int, span: tuple[int, int], tolerance: int) -> bool:
    """UCR's top-1 rule: the single most anomalous location lies within the labelled span, give or take
    `tolerance` rows (Wu & Keogh; the KDD Cup 2021 allowed 100 points)."""
    first, last = span
    return first - tolerance <= location <= last + tolerance
