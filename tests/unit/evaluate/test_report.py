from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamwatch.core.alerts import AlertConfig
from streamwatch.evaluate.datasets import Beat, LabelledSeries
from streamwatch.evaluate.metrics import AlertSpan
from streamwatch.evaluate.nab import scaled_sigmoid
from streamwatch.evaluate.report import (
    beat_verdicts,
    incident_figures,
    mitbih_figures,
    nab_figures,
    skab_figures,
    ucr_figures,
    ucr_location,
)
from streamwatch.evaluate.run import SeriesRun


def _series(
    rows: int, anomalies: tuple[tuple[int, int], ...], *, train: int = 10, **extra: object
) -> LabelledSeries:
    return LabelledSeries(
        name="s",
        channels=("x",),
        values=np.zeros((rows, 1), dtype=np.float32),
        interval_s=60.0,
        train_rows=train,
        anomalies=anomalies,
        **extra,  # type: ignore[arg-type]
    )


def _run(
    series: LabelledSeries, windows: list[tuple[int, int, float]], alerts: tuple[AlertSpan, ...] = ()
) -> SeriesRun:
    return SeriesRun(
        series=series,
        window_length=4,
        first_rows=np.asarray([first for first, _, _ in windows], dtype=np.int64),
        last_rows=np.asarray([last for _, last, _ in windows], dtype=np.int64),
        scores=np.asarray([score for _, _, score in windows], dtype=np.float64),
        thresholds=np.ones(len(windows)),
        alerts=alerts,
    )


def test_replaying_the_alert_rule_at_another_sensitivity() -> None:
    ratios = [0.5, 2.0, 3.0, 1.5, 0.2, 0.2, 0.2, 2.5, 2.6, 0.1]
    run = replace(
        _run(_series(20, ()), [(i, i + 3, ratio) for i, ratio in enumerate(ratios)]),
        alert_config=AlertConfig(for_windows=2, resolve_windows=2, cooldown_windows=0),
    )
    # At the stream's own threshold: fires on the second window in a row above 1 (window 2, last row 5),
    # resolves after two clear windows, reporting the anomaly over at the last window above (window 3, row
    # 6); fires again at window 8 (row 11) and is still firing at the end.
    assert run.replayed(1.0) == (AlertSpan(5, 6), AlertSpan(11, 19))
    # At 2.2 times it: window 2 alone is not enough; windows 7-8 fire it at row 11.
    assert run.replayed(2.2) == (AlertSpan(11, 19),)
    assert run.replayed(4.0) == ()
    assert run.fired_rows(run.replayed(2.2)).nonzero()[0].tolist() == [11]


def test_ucr_location_is_where_covering_windows_score_highest_and_top1_uses_the_tolerance() -> None:
    series = _series(2000, ((1500, 1510),))
    # Three overlapping windows score high; the rows all three cover (1420-1443) have the highest mean.
    hit = _run(series, [(100, 163, 1.0), (1380, 1443, 9.0), (1400, 1463, 9.0), (1420, 1483, 9.0)])
    miss = _run(series, [(100, 163, 9.0), (1380, 1443, 1.0)])
    assert 1420 <= ucr_location(hit) <= 1443
    assert ucr_location(miss) == 100
    assert ucr_figures([hit, miss]) == {"top1_accuracy": 0.5, "top1_hits": 1}


def test_ucr_location_prefers_the_row_under_most_high_windows() -> None:
    series = _series(300, ((0, 0),))
    # A spike at row 150 lifts every window covering it; neighbours are covered by fewer high windows.
    windows = [(first, first + 31, 5.0 if first <= 150 <= first + 31 else 1.0) for first in range(0, 268, 2)]
    assert abs(ucr_location(_run(series, windows)) - 150) <= 2


def test_skab_f1_counts_alert_rows_over_whole_files() -> None:
    labels = np.zeros(20, dtype=np.bool_)
    labels[10:15] = True
    series = _series(20, ((10, 14),), point_labels=labels)
    # Active rows 12..16: 3 true positives (12-14), 2 false (15-16), 2 missed (10-11).
    run = _run(series, [], alerts=(AlertSpan(12, 16),))
    figures = skab_figures([run])
    assert figures["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 2))
    assert figures["far"] == pytest.approx(2 / 15)
    assert figures["mar"] == pytest.approx(2 / 5)


def test_beats_are_judged_by_windows_centred_near_them() -> None:
    series = _series(2000, ())
    # Centres 200 (exceeds), 700 (does not), 1000 (exceeds).
    run = _run(series, [(150, 250, 3.0), (650, 750, 0.5), (950, 1050, 2.0)])
    verdicts = beat_verdicts(run, np.asarray([120, 200, 290, 300, 700, 1090], dtype=np.int64))
    assert verdicts.tolist() == [True, True, True, False, False, True]


def test_mitbih_f1_over_scored_beats_only() -> None:
    beats = (Beat(50, "V"), Beat(500, "N"), Beat(900, "V"), Beat(1300, "N"), Beat(1700, "V"), Beat(1750, "+"))
    series = _series(2000, (), train=100, beats=beats)
    # Flags the V at 900 and the N at 1300; misses the V at 1700. The V at 50 is in training; "+" is no beat.
    run = _run(series, [(850, 950, 2.0), (1250, 1350, 2.0), (1650, 1750, 0.1)])
    figures = mitbih_figures([run])
    assert figures["beats"] == 4
    assert figures["veb_precision"] == 0.5 and figures["veb_recall"] == 0.5 and figures["veb_f1"] == 0.5


def test_incident_figures_hand_worked() -> None:
    series = _series(1450, ((100, 120), (600, 640)), train=10)  # 60-s rows: 1,440 scored rows = 1 day
    run = _run(series, [], alerts=(AlertSpan(110, 130), AlertSpan(900, 905)))
    figures = incident_figures([run])
    assert figures["labelled_events"] == 2 and figures["alerts"] == 2 and figures["false_alarms"] == 1
    assert figures["event_recall"] == 0.5 and figures["event_precision"] == 0.5
    assert figures["mean_time_to_detect_s"] == 600.0  # 10 rows of 60 s
    assert figures["false_alarms_per_day"] == pytest.approx(1.0)
    # Point-adjusted: the first label (21 rows) wholly found; 10 active rows after it and 6 later are FPs.
    assert figures["pa_f1"] == pytest.approx(2 * 21 / (2 * 21 + 16 + 41))


def test_a_corpus_without_a_clock_reports_delays_in_rows_only() -> None:
    series = _series(100, ((40, 50),), clocked=False)
    figures = incident_figures([_run(series, [], alerts=(AlertSpan(45, 60), AlertSpan(80, 85)))])
    assert figures["mean_rows_to_detect"] == 5.0
    assert figures["mean_time_to_detect_s"] is None and figures["false_alarms_per_day"] is None


def test_nab_figures_score_the_rows_where_alerts_fired() -> None:
    series = _series(1000, ((500, 599),), train=150)
    # Windows close every 10 rows; those closing at 500-520 are far above threshold, the rest well below.
    windows = [(last - 63, last, 5.0 if 500 <= last <= 520 else 0.2) for last in range(160, 1000, 10)]
    run = _run(series, windows)
    figures = nab_figures([replace(run, alerts=run.replayed(1.0))])
    # The alert fires on the second window in a row above threshold, at row 510: a hit 90 rows before the
    # end of a 100-row window, and nothing else is detected. Null scores -1 (one missed window), perfect +1.
    weight = float(
        scaled_sigmoid(np.asarray([-(599 - 510 + 1) / 100]))[0] / scaled_sigmoid(np.asarray([-1.0]))[0]
    )
    assert figures["nab_standard_alerts"] == pytest.approx(100 * (weight + 1) / 2)
    # Every threshold multiple from above 0.2 to below 5 replays the same single alert; the tie goes to the
    # highest multiple on the quarter-octave grid below 5.
    assert figures["nab_standard"] == pytest.approx(figures["nab_standard_alerts"])
    assert figures["nab_standard_threshold"] == 2 ** (9 / 4)
