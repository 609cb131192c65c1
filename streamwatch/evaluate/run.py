"""Run the offline path (the daemon's engine) over a labelled series and express what it said in rows.

Training uses only the rows the corpus sets aside for it (NAB's probationary period, UCR's training prefix,
SKAB's first 400 rows, MIT-BIH's first five minutes), and scoring starts right after them, so every verdict is
one the live daemon could have given at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamwatch.codecs import CsvFrame
from streamwatch.config import StreamwatchConfig
from streamwatch.core.alerts import AlertConfig, AlertMachine
from streamwatch.evaluate.datasets import LabelledSeries
from streamwatch.evaluate.events import alert_spans
from streamwatch.evaluate.metrics import AlertSpan
from streamwatch.offline import DetectResult, Split, run_engine, run_with_retraining, train_on_prefix
from streamwatch.records import AlertEvent, WindowScore

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class SeriesRun:
    """Every scored window (first and last row, score, the threshold it met) and every alert, in rows."""

    series: LabelledSeries
    window_length: int
    first_rows: IntArray
    last_rows: IntArray
    scores: F64
    thresholds: F64
    alerts: tuple[AlertSpan, ...]
    alert_config: AlertConfig = field(default_factory=AlertConfig)

    @property
    def exceeds(self) -> npt.NDArray[np.bool_]:
        exceeds: npt.NDArray[np.bool_] = self.scores > self.thresholds
        return exceeds

    def ratios(self) -> F64:
        """Score over the threshold it met: 1 is the stream's own alerting line, comparable across files."""
        ratios: F64 = self.scores / np.maximum(self.thresholds, 1e-12)
        return ratios

    def replayed(self, multiplier: float) -> tuple[AlertSpan, ...]:
        """The alerts streamwatch's alert rule raises on this run's window scores when every threshold is
        `multiplier` times what it was: the rule replayed exactly, at another sensitivity (the engine's own
        adaptation, which learned from the original verdicts, is kept as it was)."""
        machine = AlertMachine(self.series.name, self.alert_config)
        times = self.series.timestamps
        events: list[AlertEvent] = []
        for index, (first, last, ratio) in enumerate(
            zip(self.first_rows.tolist(), self.last_rows.tolist(), self.ratios().tolist(), strict=True)
        ):
            end = float(times[last])
            verdict = WindowScore(
                self.series.name, index, float(times[first]), end, ratio, multiplier, {}, ""
            )
            events.extend(machine.step(verdict, end))
        return alert_spans_in_rows(events, self.series)

    def fired_rows(self, alerts: tuple[AlertSpan, ...] | None = None) -> npt.NDArray[np.bool_]:
        """The rows at which an alert fired (the moment someone is paged): this run's alerts by default."""
        fired = np.zeros(self.series.rows, dtype=np.bool_)
        fired[[alert.fired for alert in (self.alerts if alerts is None else alerts)]] = True
        return fired


def run_series(
    series: LabelledSeries, config: StreamwatchConfig, *, progress: bool = False, retrain: bool = False
) -> SeriesRun:
    if series.train_rows < 2 or series.train_rows >= series.rows:
        raise ValueError(
            f"{series.name}: {series.train_rows} training rows of {series.rows} leave nothing to do"
        )
    timestamps = series.timestamps
    frame = CsvFrame(series.name, timestamps, series.channels, series.values)
    model, cut = train_on_prefix(
        frame, Split(until=float(timestamps[series.train_rows - 1])), config, progress=progress
    )
    run = run_with_retraining if retrain else run_engine
    return series_run(series, run(frame, cut, model, config), config.alerts.build())


def series_run(series: LabelledSeries, result: DetectResult, alert_config: AlertConfig) -> SeriesRun:
    to_row = _RowClock(series)
    scores = result.scores
    return SeriesRun(
        series=series,
        window_length=result.model.spec.length,
        first_rows=to_row.of([item.start for item in scores]),
        last_rows=to_row.of([item.end for item in scores]),
        scores=np.asarray([item.score for item in scores], dtype=np.float64),
        thresholds=np.asarray([item.threshold for item in scores], dtype=np.float64),
        alerts=alert_spans_in_rows(result.anomaly_alerts, series),
        alert_config=alert_config,
    )


@dataclass(frozen=True, slots=True)
class _RowClock:
    series: LabelledSeries

    def of(self, moments: list[float]) -> IntArray:
        offsets = (np.asarray(moments, dtype=np.float64) - self.series.start_s) / self.series.interval_s
        return np.rint(offsets).astype(np.int64)


def alert_spans_in_rows(events: list[AlertEvent], series: LabelledSeries) -> tuple[AlertSpan, ...]:
    """Alert lifecycles (`events.alert_spans`) as row spans: from the row at which it fired (offline, an
    alert is detected at its window's end) to the last row it reported as anomalous (its resolving event's
    window end); an alert still firing at the end lasts to the last row."""
    lifecycles = alert_spans(events, end_of_data=float(series.timestamps[-1]))
    to_row = _RowClock(series)
    fired = to_row.of([detected for _, detected in lifecycles])
    last = to_row.of([span.end for span, _ in lifecycles])
    return tuple(AlertSpan(int(first), int(end)) for first, end in zip(fired, last, strict=True))
