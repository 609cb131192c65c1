"""Exact scoring by the rules of the Numenta Anomaly Benchmark (NAB v1.1).

NAB rewards a detector for flagging each labelled anomaly window early and charges it for every flag outside
the windows. Scoring here follows NAB's own scorer rule for rule, so that published scoreboard figures can be
reproduced to rounding:

* the first ``min(floor(0.15·N), 750)`` rows of a file are probationary: neither rewarded nor charged,
  and a window whose rows all lie there is not scorable (missing it costs nothing);
* a window's value is set by its earliest detected row ``i``:
  ``tp · σ(−(last − i + 1)/width) / σ(−1)``, where ``σ(y) = 2/(1 + e^{5y}) − 1``; a scorable window with no
  detection costs ``−fn``;
* a detected row outside every window costs ``fp · σ((i − last_prev)/(width_prev − 1))`` after a window
  (σ is pinned to −1 once that relative position exceeds 3), and the full ``−fp`` before the first window;
* a row is detected when its anomaly score is ``>=`` the threshold, and one threshold serves a whole corpus;
* the normalised score is ``100·(S − S_null)/(S_perfect − S_null)`` with ``S_null = −fn·(scorable windows)``
  and ``S_perfect = tp·(all windows)``.

Scores line up with data by row position, never by timestamp: NAB files repeat timestamps (clock changes),
so nothing here sorts or de-duplicates rows. Window limits are timestamps, resolved to rows the way NAB's
sweeper walks a file: a window opens at the first row (after the previous window opened) carrying its start
timestamp and closes at the first row from there carrying its end timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray

PROBATION_FRACTION = 0.15
# NAB caps the probationary period at 15% of a 5000-row file.
PROBATION_CAP_ROWS = 750
# Past this relative distance from the previous window NAB charges a false positive in full.
FULL_FP_COST_POSITION = 3.0
# The threshold that flags nothing. NAB's sweep starts at 1.1, which silently assumes scores in [0, 1].
NO_DETECTION_THRESHOLD = math.inf


@dataclass(frozen=True, slots=True)
class CostProfile:
    """Weights of one NAB application profile (NAB's tnWeight never enters the score and is left out)."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: Mapping[str, CostProfile] = MappingProxyType(
    {
        "standard": CostProfile("standard", tp=1.0, fp=0.11, fn=1.0),
        "reward_low_FP_rate": CostProfile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
        "reward_low_FN_rate": CostProfile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
    }
)


def probation_rows(rows: int) -> int:
    """Length of NAB's probationary period; the float product mirrors NAB so the floor lands identically."""
    return min(math.floor(PROBATION_FRACTION * rows), PROBATION_CAP_ROWS)


@dataclass(frozen=True, slots=True)
class NabFile:
    """One data file as the scorer sees it: a row count, window row ranges and the probationary length.

    `windows` holds ``(first, last)`` row indices, inclusive, in file order and without overlap.
    """

    name: str
    rows: int
    windows: tuple[tuple[int, int], ...]
    probation: int

    def __post_init__(self) -> None:
        if self.rows < 0 or not 0 <= self.probation <= self.rows:
            raise ValueError(f"{self.name}: bad row count {self.rows} or probation {self.probation}")
        previous_last = -1
        for first, last in self.windows:
            if not previous_last < first <= last < self.rows:
                raise ValueError(
                    f"{self.name}: window rows {first}..{last} overlap, are unordered or out of range"
                )
            previous_last = last

    @property
    def scorable_windows(self) -> int:
        """Windows with at least one row past the probationary period; only these can be missed."""
        return sum(last >= self.probation for _, last in self.windows)


def _first_row_with(timestamps: NDArray[np.generic], value: object, start_row: int) -> int:
    matches = np.flatnonzero(timestamps[start_row:] == value)
    if matches.size == 0:
        raise ValueError(f"window limit {value!r} matches no row from row {start_row} on")
    return start_row + int(matches[0])


def window_rows(
    timestamps: ArrayLike, limits: Sequence[tuple[object, object]]
) -> tuple[tuple[int, int], ...]:
    """Row ranges of windows given by timestamp limits, resolved the way NAB's sweeper walks a file.

    A window opens at the first row after the previous window's opening row that carries its start
    timestamp and closes at the first row from there on that carries its end timestamp. Limits must match
    row timestamps exactly, as NAB's labeler demands. `timestamps` (datetime64 or numbers) are in file order.
    """
    stamps = np.asarray(timestamps)
    ranges: list[tuple[int, int]] = []
    search_from = 0
    for start, end in limits:
        first = _first_row_with(stamps, start, search_from)
        last = _first_row_with(stamps, end, first)
        ranges.append((first, last))
        search_from = first + 1
    return tuple(ranges)


def prepare_file(name: str, timestamps: ArrayLike, limits: Sequence[tuple[object, object]]) -> NabFile:
    """A `NabFile` from a file's row timestamps (in file order) and its windows' timestamp limits."""
    rows = int(np.asarray(timestamps).shape[0])
    return NabFile(name, rows, window_rows(timestamps, limits), probation_rows(rows))


# -- per-row weights ------------------------------------------------------------------------------------


def scaled_sigmoid(position: NDArray[np.float64]) -> NDArray[np.float64]:
    """NAB's ``2/(1 + e^{5y}) − 1``, pinned to −1 beyond ``y > 3`` exactly as NAB pins it."""
    with np.errstate(over="ignore"):
        curve = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position > FULL_FP_COST_POSITION, -1.0, curve)


# The weight of a hit on a window's first row, by which every hit is scaled so that it earns the full tp.
_EARLIEST_HIT_SIGMOID = float(scaled_sigmoid(np.array([-1.0]))[0])


@dataclass(frozen=True, slots=True)
class _RowLayout:
    """Profile-free per-row facts of a file; weights are per unit of tp (window rows) or fp (other rows)."""

    window: NDArray[np.intp]  # window index of each row, -1 outside every window
    scorable: NDArray[np.bool_]  # past the probationary period
    tp_unit: NDArray[np.float64]  # reward of a hit per unit tp; 0 outside windows
    fp_unit: NDArray[np.float64]  # (negative) charge of a detection per unit fp; 0 inside windows


def _window_index(file: NabFile) -> NDArray[np.intp]:
    window = np.full(file.rows, -1, dtype=np.intp)
    for k, (first, last) in enumerate(file.windows):
        window[first : last + 1] = k
    return window


def _hit_reward_units(file: NabFile, window: NDArray[np.intp]) -> NDArray[np.float64]:
    inside = window >= 0
    bounds = np.array(file.windows, dtype=np.int64).reshape(-1, 2)
    first, last = bounds[window[inside], 0], bounds[window[inside], 1]
    rows = np.flatnonzero(inside)
    # -1 on a window's first row, -1/width on its last: earlier hits sit further left on the sigmoid.
    position = -(last - rows + 1) / (last - first + 1)
    units = np.zeros(file.rows)
    units[inside] = scaled_sigmoid(position.astype(np.float64)) / _EARLIEST_HIT_SIGMOID
    return units


def _false_alarm_units(file: NabFile, window: NDArray[np.intp]) -> NDArray[np.float64]:
    outside = window < 0
    rows = np.flatnonzero(outside)
    bounds = np.array(file.windows, dtype=np.int64).reshape(-1, 2)
    # The previous window is the last one to close before the row; rows before any window pay in full.
    previous = np.searchsorted(bounds[:, 1], rows, side="left") - 1
    has_previous = previous >= 0
    prev_first = bounds[previous[has_previous], 0]
    prev_last = bounds[previous[has_previous], 1]
    span = (prev_last - prev_first).astype(np.float64)  # NAB divides by width - 1
    distance = (rows[has_previous] - prev_last).astype(np.float64)
    # A one-row window would divide by zero in NAB; its limit (infinitely far) is the full charge.
    position = np.divide(distance, span, out=np.full_like(distance, np.inf), where=span > 0)
    charge = np.full(rows.shape, -1.0)
    charge[has_previous] = scaled_sigmoid(position)
    units = np.zeros(file.rows)
    units[outside] = charge
    return units


def _layout(file: NabFile) -> _RowLayout:
    window = _window_index(file)
    return _RowLayout(
        window=window,
        scorable=np.arange(file.rows) >= file.probation,
        tp_unit=_hit_reward_units(file, window),
        fp_unit=_false_alarm_units(file, window),
    )


# -- scoring one file at a fixed threshold ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileScore:
    """One file's raw NAB score and row counts, as in NAB's per-file tables (counts skip probation rows)."""

    name: str
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    rows: int


def _earliest_hit_rewards(layout: _RowLayout, hits: NDArray[np.bool_]) -> tuple[float, int]:
    """Sum of per-unit rewards of each window's earliest hit, and how many windows were hit."""
    hit_rows = np.flatnonzero(hits)
    _, first_of_window = np.unique(layout.window[hit_rows], return_index=True)
    earliest = hit_rows[first_of_window]
    return float(layout.tp_unit[earliest].sum()), int(earliest.size)


def score_file(file: NabFile, detections: ArrayLike, profile: CostProfile) -> FileScore:
    """Raw NAB score of one file given which rows were flagged."""
    detected = np.asarray(detections, dtype=np.bool_)
    if detected.shape != (file.rows,):
        raise ValueError(f"{file.name}: {detected.shape} detections for {file.rows} rows")
    layout = _layout(file)
    inside = layout.window >= 0
    counted = detected & layout.scorable
    hits, false_alarms = counted & inside, counted & ~inside
    reward_units, windows_hit = _earliest_hit_rewards(layout, hits)
    score = (
        profile.tp * reward_units
        + profile.fp * float(layout.fp_unit[false_alarms].sum())
        - profile.fn * (file.scorable_windows - windows_hit)
    )
    quiet = layout.scorable & ~detected
    return FileScore(
        name=file.name,
        score=score,
        tp=int(hits.sum()),
        tn=int((quiet & ~inside).sum()),
        fp=int(false_alarms.sum()),
        fn=int((quiet & inside).sum()),
        rows=file.rows,
    )


def score_corpus(
    files: Sequence[NabFile], scores_per_file: Sequence[ArrayLike], profile: CostProfile, threshold: float
) -> tuple[FileScore, ...]:
    """Every file scored with rows flagged where their anomaly score is ``>= threshold``."""
    _check_pairing(files, scores_per_file)
    return tuple(
        score_file(file, _as_scores(file, scores) >= threshold, profile)
        for file, scores in zip(files, scores_per_file, strict=True)
    )


# -- the corpus-wide threshold sweep --------------------------------------------------------------------


def _check_pairing(files: Sequence[NabFile], scores_per_file: Sequence[ArrayLike]) -> None:
    if len(files) != len(scores_per_file):
        raise ValueError(f"{len(files)} files but {len(scores_per_file)} score arrays")


def _as_scores(file: NabFile, scores: ArrayLike) -> NDArray[np.float64]:
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (file.rows,):
        raise ValueError(f"{file.name}: {values.shape} anomaly scores for {file.rows} rows")
    if np.isnan(values).any():
        raise ValueError(f"{file.name}: NaN anomaly scores cannot be thresholded")
    return values


@dataclass(frozen=True, slots=True)
class _Steps:
    """Where the corpus score changes as the threshold falls: at `at`, it moves by `delta`."""

    at: NDArray[np.float64]
    delta: NDArray[np.float64]


def _window_steps(
    scores: NDArray[np.float64], rewards: NDArray[np.float64], miss_value: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Steps of one window's value as the threshold falls, from its scorable rows' scores and rewards.

    The earliest detected row only changes when the threshold reaches a score above every earlier score
    (a running maximum from the window's start); that row's reward replaces the next record's (or the miss).
    """
    earlier_max = np.concatenate(([-np.inf], np.maximum.accumulate(scores)[:-1]))
    records = scores > earlier_max
    values = rewards[records]
    replaced = np.append(values[1:], miss_value)
    return scores[records], values - replaced


def _file_steps(file: NabFile, scores: NDArray[np.float64], profile: CostProfile) -> _Steps:
    layout = _layout(file)
    alarm_rows = layout.scorable & (layout.window < 0)
    at = [scores[alarm_rows]]
    delta = [profile.fp * layout.fp_unit[alarm_rows]]
    for first, last in file.windows:
        if last < file.probation:
            continue
        rows = slice(max(first, file.probation), last + 1)
        window_at, window_delta = _window_steps(scores[rows], profile.tp * layout.tp_unit[rows], -profile.fn)
        at.append(window_at)
        delta.append(window_delta)
    return _Steps(np.concatenate(at), np.concatenate(delta))


def _best_threshold(steps: _Steps, candidates: NDArray[np.float64], silent_score: float) -> float:
    """Highest threshold of top score among "detect nothing" and every candidate (NAB breaks ties upward)."""
    order = np.argsort(steps.at, kind="stable")
    at, delta = steps.at[order], steps.delta[order]
    # gained_from[k]: total change from all steps at index k or above (steps at scores >= at[k]).
    gained_from = np.append(np.cumsum(delta[::-1])[::-1], 0.0)
    descending = np.sort(candidates)[::-1]
    totals = silent_score + gained_from[np.searchsorted(at, descending, side="left")]
    thresholds = np.concatenate(([NO_DETECTION_THRESHOLD], descending))
    return float(thresholds[int(np.argmax(np.concatenate(([silent_score], totals))))])


def optimise_threshold(
    files: Sequence[NabFile], scores_per_file: Sequence[ArrayLike], profile: CostProfile
) -> tuple[float, float]:
    """The corpus threshold of best raw score, and that score, by one sorted sweep over every distinct score.

    Ties go to the highest threshold, as in NAB; ``inf`` means flagging nothing beats every threshold.
    The returned score is recomputed with `score_file`, so it equals scoring the corpus at that threshold.
    """
    _check_pairing(files, scores_per_file)
    values = [_as_scores(file, scores) for file, scores in zip(files, scores_per_file, strict=True)]
    per_file = [_file_steps(file, v, profile) for file, v in zip(files, values, strict=True)]
    steps = _Steps(
        np.concatenate([*(s.at for s in per_file), np.empty(0)]),
        np.concatenate([*(s.delta for s in per_file), np.empty(0)]),
    )
    # Only scores of scorable rows can change what counts; a probationary score would merely tie.
    scorable = [v[file.probation :] for file, v in zip(files, values, strict=True)]
    candidates = np.unique(np.concatenate([*scorable, np.empty(0)]))
    silent = -profile.fn * sum(file.scorable_windows for file in files)
    threshold = _best_threshold(steps, candidates, silent)
    raw = sum(s.score for s in score_corpus(files, values, profile, threshold))
    return threshold, raw


# -- normalisation and the one-call entry point -----------------------------------------------------------


def normalised(raw: float, files: Sequence[NabFile], profile: CostProfile) -> float:
    """NAB's 0 (flag nothing) to 100 (flag each window's first row, nothing else) scale for a raw score."""
    null = -profile.fn * sum(file.scorable_windows for file in files)
    perfect = profile.tp * sum(len(file.windows) for file in files)
    if perfect == null:
        raise ValueError("a corpus without windows has no NAB scale")
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True, slots=True)
class NabResult:
    normalised: float
    threshold: float
    raw: float
    files: tuple[FileScore, ...]


def nab_score(
    files: Sequence[NabFile],
    scores_per_file: Sequence[ArrayLike],
    profile: CostProfile,
    threshold: float | None = None,
) -> NabResult:
    """Score a corpus at `threshold`, or at the optimised threshold when none is given."""
    if threshold is None:
        threshold, _ = optimise_threshold(files, scores_per_file, profile)
    per_file = score_corpus(files, scores_per_file, profile, threshold)
    raw = sum(s.score for s in per_file)
    return NabResult(normalised(raw, files, profile), threshold, raw, per_file)
