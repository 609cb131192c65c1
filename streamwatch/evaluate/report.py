"""Turn the runs over one corpus into its figures: the corpus's headline metric, as its benchmark defines it,
plus the same incident-level figures for every corpus (event precision/recall/F1, point-adjusted F1, time to
detect, false alarms per day), all from streamwatch's own alert decisions unless a key says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamwatch.evaluate import nab
from streamwatch.evaluate.datasets import (
    ABNORMAL_BEATS,
    MITBIH_BEAT_HALF_WIDTH,
    NORMAL_BEATS,
    UCR_TOLERANCE,
    VEB_BEATS,
    nab_file,
)
from streamwatch.evaluate.metrics import (
    Counts,
    EventCounts,
    alert_rows,
    event_counts,
    point_adjusted,
    point_counts,
    top1_hit,
    total,
)
from streamwatch.evaluate.run import SeriesRun

DAY_S = 86_400.0


def score(dataset: str, runs: Sequence[SeriesRun]) -> dict[str, Any]:
    specific = {"nab": nab_figures, "ucr": ucr_figures, "skab": skab_figures, "mitbih": mitbih_figures}
    return {**specific[dataset](runs), **incident_figures(runs)}


def scored_events(run: SeriesRun) -> EventCounts:
    """The run's alerts matched to the labelled events of its scored part (labels are cut at the first scored
    row; an alert may follow its event by one window)."""
    start = run.series.train_rows
    labels = [(max(first, start), last) for first, last in run.series.anomalies if last >= start]
    return event_counts(labels, run.alerts, tolerance=run.window_length)


def file_figures(dataset: str, run: SeriesRun) -> dict[str, Any]:
    """One series' own figures, to see which files a detector handles and which it does not: its events and
    false alarms, and its part of the corpus's headline metric where that has a per-file meaning."""
    series = run.series
    events = scored_events(run)
    figures: dict[str, Any] = {
        "file": series.name,
        "rows": series.rows,
        "window": run.window_length,
        "labelled_events": events.labels,
        "found": events.found,
        "alerts": events.alerts,
        "false_alarms": events.false_alarms,
    }
    if dataset == "nab":
        scored = nab.score_file(nab_file(series), run.fired_rows(), nab.PROFILES["standard"])
        figures["nab_standard_raw_as_fired"] = scored.score
    elif dataset == "ucr" and len(run.scores):
        figures["top1_location"] = ucr_location(run)
        figures["top1_hit"] = top1_hit(figures["top1_location"], series.anomalies[0], UCR_TOLERANCE)
    elif dataset == "skab":
        figures["f1"] = point_counts(alert_rows(run.alerts, series.rows), series.labels()).f1
    elif dataset == "mitbih":
        figures["veb_f1"] = mitbih_figures([run])["veb_f1"]
    return figures


def incident_figures(runs: Sequence[SeriesRun]) -> dict[str, Any]:
    """What an on-call engineer experiences, pooled over the corpus (scored rows only). Times need a clock:
    a corpus without one (UCR) reports delays in rows only."""
    events = EventCounts()
    clocked_false_alarms = 0
    delays_s: list[float] = []
    all_delays: list[int] = []
    adjusted = Counts()
    scored_days = 0.0
    for run in runs:
        series = run.series
        start = series.train_rows
        found = scored_events(run)
        events = events + found
        all_delays.extend(found.delays)
        if series.clocked:
            delays_s.extend(delay * series.interval_s for delay in found.delays)
            clocked_false_alarms += found.false_alarms
            scored_days += (series.rows - start) * series.interval_s / DAY_S
        active = alert_rows(run.alerts, series.rows)[start:]
        truth = series.labels()[start:]
        adjusted = adjusted + point_counts(point_adjusted(active, truth), truth)
    return {
        "event_precision": events.precision,
        "event_recall": events.recall,
        "event_f1": events.f1,
        "labelled_events": events.labels,
        "alerts": events.alerts,
        "false_alarms": events.false_alarms,
        "pa_f1": adjusted.f1,
        "mean_time_to_detect_s": float(np.mean(delays_s)) if delays_s else None,
        "mean_rows_to_detect": float(np.mean(all_delays)) if all_delays else None,
        "false_alarms_per_day": clocked_false_alarms / scored_days if scored_days > 0 else None,
    }


# -- NAB -----------------------------------------------------------------------------------------------------


# Threshold multipliers NAB's optimisation chooses from: quarter octaves from a quarter to 64 times each
# stream's own threshold.
NAB_MULTIPLIERS = tuple(2.0 ** (step / 4) for step in range(-8, 25))
NAB_PROFILES = {
    "nab_standard": nab.PROFILES["standard"],
    "nab_low_fp": nab.PROFILES["reward_low_FP_rate"],
    "nab_low_fn": nab.PROFILES["reward_low_FN_rate"],
}


def nab_figures(runs: Sequence[SeriesRun]) -> dict[str, Any]:
    """NAB scored two ways, both from the rows where alerts fired. With NAB's threshold optimisation: one
    threshold for the whole corpus and each profile, chosen as NAB chooses it, here as a multiple of every
    stream's own threshold with the alert rule replayed at each (how the scoreboard entries were made). And
    as streamwatch alerted, with no tuning at all (what a user gets)."""
    files = [nab_file(run.series) for run in runs]
    as_fired = [run.fired_rows() for run in runs]
    replays = {
        multiplier: [run.fired_rows(run.replayed(multiplier)) for run in runs]
        for multiplier in NAB_MULTIPLIERS
    }
    figures: dict[str, Any] = {}
    for key, profile in NAB_PROFILES.items():
        scored = {m: nab.nab_score(files, fired, profile, threshold=0.5) for m, fired in replays.items()}
        # Ties go to the higher threshold, as NAB's optimiser breaks them.
        best = max(scored, key=lambda m: (scored[m].raw, m))
        figures[key] = scored[best].normalised
        figures[f"{key}_threshold"] = best
        figures[f"{key}_alerts"] = nab.nab_score(files, as_fired, profile, threshold=0.5).normalised
    return figures


# -- UCR -----------------------------------------------------------------------------------------------------


def ucr_location(run: SeriesRun) -> int:
    """The single most anomalous row: the row under the most window score (the sum over covering windows).

    A long window scores high wherever inside it the anomaly lies; the windows around an anomaly all cover
    it, so their sum peaks on the anomaly itself rather than at some window's middle (which can be half a
    window away). Windows are evenly spaced, so every scored row is covered by about as many windows.
    """
    totals = np.zeros(run.series.rows + 1)
    np.add.at(totals, run.first_rows, run.scores)
    np.add.at(totals, run.last_rows + 1, -run.scores)
    return int(np.argmax(np.cumsum(totals)[:-1]))


def ucr_figures(runs: Sequence[SeriesRun]) -> dict[str, Any]:
    hits = [
        top1_hit(ucr_location(run), run.series.anomalies[0], UCR_TOLERANCE) for run in runs if len(run.scores)
    ]
    return {"top1_accuracy": sum(hits) / len(runs) if runs else 0.0, "top1_hits": sum(hits)}


# -- SKAB ----------------------------------------------------------------------------------------------------


def skab_figures(runs: Sequence[SeriesRun]) -> dict[str, Any]:
    """Point-wise binary F1 pooled over all experiments, every row counted (the training rows too, predicted
    normal), as the SKAB leaderboard computes it; FAR and MAR as SKAB reports them beside it."""
    counts = Counts()
    negatives = 0
    for run in runs:
        truth = run.series.labels()
        counts = counts + point_counts(alert_rows(run.alerts, run.series.rows), truth)
        negatives += int(np.count_nonzero(~truth))
    return {
        "f1": counts.f1,
        "precision": counts.precision,
        "recall": counts.recall,
        "far": counts.fp / negatives if negatives else 0.0,
        "mar": counts.fn / (counts.tp + counts.fn) if counts.tp + counts.fn else 0.0,
    }


# -- MIT-BIH -------------------------------------------------------------------------------------------------


def beat_verdicts(
    run: SeriesRun, rows: np.ndarray[Any, np.dtype[np.int64]]
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A beat is flagged when a window centred within half a beat of it exceeded the threshold: the windows
    around one beat judge it, not those that merely include it at an edge."""
    centres = (run.first_rows + run.last_rows) // 2
    order = np.argsort(centres, kind="stable")
    centres, exceeds = centres[order], run.exceeds[order]
    flagged_before = np.concatenate([[0], np.cumsum(exceeds)])
    low = np.searchsorted(centres, rows - MITBIH_BEAT_HALF_WIDTH, side="left")
    high = np.searchsorted(centres, rows + MITBIH_BEAT_HALF_WIDTH, side="right")
    verdicts: np.ndarray[Any, np.dtype[np.bool_]] = flagged_before[high] > flagged_before[low]
    return verdicts


def mitbih_figures(runs: Sequence[SeriesRun]) -> dict[str, Any]:
    """Beat-level F1 over the scored part of every record: ventricular ectopic beats (V, E) against all other
    beats (`veb_f1`), and every abnormal class against normal beats (`abnormal_f1`)."""
    veb: list[Counts] = []
    abnormal: list[Counts] = []
    beats = 0
    for run in runs:
        scored = [beat for beat in run.series.beats if beat.row >= run.series.train_rows]
        kept = [beat for beat in scored if _is_beat(beat.symbol)]
        flagged = beat_verdicts(run, np.asarray([beat.row for beat in kept], dtype=np.int64))
        veb.append(
            point_counts(flagged, np.asarray([beat.symbol in VEB_BEATS for beat in kept], dtype=np.bool_))
        )
        abnormal.append(
            point_counts(
                flagged, np.asarray([beat.symbol not in NORMAL_BEATS for beat in kept], dtype=np.bool_)
            )
        )
        beats += len(kept)
    veb_total, abnormal_total = total(veb), total(abnormal)
    return {
        "veb_f1": veb_total.f1,
        "veb_precision": veb_total.precision,
        "veb_recall": veb_total.recall,
        "abnormal_f1": abnormal_total.f1,
        "beats": beats,
    }


def _is_beat(symbol: str) -> bool:
    return symbol in NORMAL_BEATS or symbol in ABNORMAL_BEATS
