"""NAB scoring: every rule pinned by a hand-worked case, the sweep checked against brute force, and (when the
NAB snapshot sits next to the repository) the layout and normalisation checked against NAB's own tables.

Hand-worked numbers use ``2/(1 + e^{5y}) − 1 = −tanh(5y/2)``: a hit ``k`` rows before the end of a window of
width ``w`` is worth ``tanh(2.5·k/w)/tanh(2.5)``, and a false positive at relative distance ``d`` past the
previous window costs ``fp·tanh(2.5·d)``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from streamwatch.evaluate.datasets import nab_file, read_nab
from streamwatch.evaluate.nab import (
    PROFILES,
    CostProfile,
    NabFile,
    nab_score,
    normalised,
    optimise_threshold,
    prepare_file,
    probation_rows,
    score_corpus,
    score_file,
    window_rows,
)

STANDARD = PROFILES["standard"]
# NAB v1.1 snapshot kept beside the repository (never inside it); its tests skip when it is absent.
NAB_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nab"


def _flags(rows: int, *flagged: int) -> NDArray[np.bool_]:
    flags = np.zeros(rows, dtype=np.bool_)
    flags[list(flagged)] = True
    return flags


def _file(rows: int, windows: Sequence[tuple[int, int]] = (), probation: int = 0) -> NabFile:
    return NabFile("f.csv", rows, tuple(windows), probation)


# -- probation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(0, 0), (19, 2), (20, 3), (100, 15), (4032, 604), (5000, 750), (5001, 750), (22695, 750)],
)
def test_probation_is_15_percent_floored_and_capped_at_750_rows(rows: int, expected: int) -> None:
    assert probation_rows(rows) == expected


def test_probationary_rows_are_neither_rewarded_nor_charged_nor_counted() -> None:
    file = _file(40, [(20, 29)], probation=6)
    quiet = score_file(file, _flags(40), STANDARD)
    flagged_early = score_file(file, _flags(40, 0, 3, 5), STANDARD)
    assert flagged_early == quiet
    assert quiet.score == -1.0
    assert (quiet.tp, quiet.fp, quiet.fn, quiet.tn) == (0, 0, 10, 24)
    assert quiet.rows == 40


def test_window_wholly_in_probation_is_not_scorable_yet_counts_for_perfect() -> None:
    file = _file(40, [(1, 4), (20, 29)], probation=6)
    assert file.scorable_windows == 1
    assert score_file(file, _flags(40), STANDARD).score == -1.0  # only the second window is missed
    # Flagging each window's first row is NAB's "perfect", but the first window's hit is probationary.
    raw = score_file(file, _flags(40, 1, 20), STANDARD).score
    assert raw == 1.0
    assert normalised(raw, [file], STANDARD) == pytest.approx(100 * (1 + 1) / (2 + 1))


def test_hit_on_first_row_after_probation_is_weighted_by_its_place_in_the_whole_window() -> None:
    file = _file(40, [(4, 8)], probation=6)  # width 5; rows 4 and 5 are probationary
    early = score_file(file, _flags(40, 5, 6), STANDARD)
    # Row 6 is 3 rows before the window's end: tanh(2.5·3/5)/tanh(2.5).
    assert early.score == pytest.approx(0.9174286804284078, abs=1e-15)
    assert early.tp == 1


def test_false_positive_after_a_probationary_window_is_weighted_from_that_window() -> None:
    file = _file(40, [(0, 2)], probation=6)  # width 3, ends at row 2
    # Row 10: (10 − 2)/(3 − 1) = 4 > 3, so the full charge; row 6 sits at 2.0, charged fp·tanh(5).
    assert score_file(file, _flags(40, 10), STANDARD).score == pytest.approx(-0.11, abs=1e-15)
    assert score_file(file, _flags(40, 6), STANDARD).score == pytest.approx(-0.11 * math.tanh(5.0), abs=1e-15)


# -- true positives -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (10, 1.0),  # the window's first row earns the full tp weight
        (15, 0.8597925669097837),  # tanh(2.5·5/10)/tanh(2.5)
        (19, 0.24824154977542992),  # last row: tanh(2.5·1/10)/tanh(2.5)
    ],
)
def test_hit_is_worth_the_scaled_sigmoid_of_its_position(row: int, expected: float) -> None:
    file = _file(40, [(10, 19)])
    result = score_file(file, _flags(40, row), STANDARD)
    assert result.score == pytest.approx(expected, abs=1e-15)
    assert (result.tp, result.fn, result.fp) == (1, 9, 0)


def test_only_the_earliest_hit_in_a_window_counts() -> None:
    file = _file(40, [(10, 19)])
    alone = score_file(file, _flags(40, 12), STANDARD)
    crowded = score_file(file, _flags(40, 12, 15, 19), STANDARD)
    assert alone.score == pytest.approx(0.9771068409226047, abs=1e-15)  # tanh(2.5·8/10)/tanh(2.5)
    assert crowded.score == alone.score
    assert crowded.tp == 3  # NAB's tables count rows, not windows


def test_missed_window_costs_fn_weight() -> None:
    file = _file(40, [(10, 19), (25, 29)])
    assert score_file(file, _flags(40), PROFILES["standard"]).score == -2.0
    assert score_file(file, _flags(40), PROFILES["reward_low_FN_rate"]).score == -4.0


# -- false positives ------------------------------------------------------------------------------------


def test_false_positive_before_the_first_window_costs_fp_in_full() -> None:
    file = _file(40, [(10, 14)])
    assert score_file(file, _flags(40, 3), STANDARD).score == pytest.approx(-1.11, abs=1e-15)
    two = score_file(file, _flags(40, 3, 4), PROFILES["reward_low_FP_rate"])
    assert two.score == pytest.approx(-1.44, abs=1e-15)
    assert (two.fp, two.tn) == (2, 33)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (15, -0.11 * math.tanh(2.5 * 1 / 4)),
        (16, -0.09331120039532642),  # (16 − 14)/(5 − 1) = 0.5: fp·tanh(1.25)
        (26, -0.10999993270151008),  # exactly 3.0: still on the curve, fp·tanh(7.5)
        (27, -0.11),  # beyond 3.0: NAB charges the full fp
    ],
)
def test_false_positive_after_a_window_is_weighted_by_distance_past_it(row: int, expected: float) -> None:
    file = _file(40, [(10, 14)])  # width 5, missed: -1 on top of the charge
    assert score_file(file, _flags(40, row), STANDARD).score == pytest.approx(expected - 1.0, abs=1e-15)


def test_false_positive_is_weighted_from_the_latest_window_that_closed_before_it() -> None:
    file = _file(60, [(10, 14), (20, 39)])
    # Row 18 is past the first window only: (18 − 14)/4 = 1.0, charged fp·tanh(2.5).
    missed_both = -2.0
    assert score_file(file, _flags(60, 18), STANDARD).score == pytest.approx(
        missed_both - 0.10852757279665734
    )
    # Row 41 is past the second (width 20): (41 − 39)/19, far gentler than the first window's scale.
    assert score_file(file, _flags(60, 41), STANDARD).score == pytest.approx(
        missed_both - 0.11 * math.tanh(2.5 * 2 / 19)
    )


def test_one_row_window_makes_later_false_positives_cost_in_full() -> None:
    # NAB would divide by zero here; the limit of its curve (infinitely far past the window) is -fp.
    file = _file(20, [(5, 5)])
    assert score_file(file, _flags(20, 7), STANDARD).score == pytest.approx(-1.11, abs=1e-15)


# -- alignment, detections and thresholds ---------------------------------------------------------------


def test_repeated_timestamps_are_kept_and_windows_resolve_to_rows() -> None:
    stamps = np.array([0, 1, 2, 2, 3, 4, 4, 5, 6, 7], dtype=np.float64)
    assert window_rows(stamps, [(2.0, 4.0)]) == ((2, 5),)
    file = prepare_file("f.csv", stamps, [(2.0, 4.0)])
    assert file.rows == 10
    # Row 3 is the second row stamped 2: three rows before the window's end, width 4.
    expected = math.tanh(2.5 * 3 / 4) / math.tanh(2.5)
    assert score_file(file, _flags(10, 3), STANDARD).score == pytest.approx(expected, abs=1e-15)
    # Row 6 repeats the end stamp but lies past the window's closing row: a false positive 1/3 past it.
    expected_fp = -1.0 - 0.11 * math.tanh(2.5 * 1 / 3)
    assert score_file(file, _flags(10, 6), STANDARD).score == pytest.approx(expected_fp, abs=1e-15)


def test_window_spans_rows_by_position_even_when_the_clock_steps_back() -> None:
    stamps = np.array([0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8], dtype=np.float64)
    # Opens at the first row stamped 2 and closes at the first row stamped 4 after it; row 4 (stamped 1)
    # lies inside by position. The second window's start is sought only after the first one opened.
    assert window_rows(stamps, [(2.0, 4.0), (6.0, 7.0)]) == ((2, 7), (9, 10))
    # A window's start stamp seen before the previous window opened does not open it (NAB walks in order).
    early_repeat = np.array([5, 0, 1, 2, 3, 4, 5, 6, 7], dtype=np.float64)
    assert window_rows(early_repeat, [(2.0, 3.0), (5.0, 6.0)]) == ((3, 4), (6, 7))


def test_window_limits_must_match_row_timestamps() -> None:
    stamps = np.arange(10, dtype=np.float64)
    with pytest.raises(ValueError, match="matches no row"):
        window_rows(stamps, [(2.5, 4.0)])
    with pytest.raises(ValueError, match="matches no row"):
        window_rows(stamps, [(4.0, 2.0)])


@pytest.mark.parametrize("windows", [[(5, 9), (9, 12)], [(5, 9), (2, 3)], [(5, 4)], [(5, 20)]])
def test_windows_must_be_ordered_disjoint_and_inside_the_file(windows: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match="window rows"):
        _file(20, windows)


def test_detection_is_score_at_or_above_threshold() -> None:
    file = _file(20, [(10, 14)])
    scores = np.zeros(20)
    scores[10] = 0.5
    at = score_corpus([file], [scores], STANDARD, threshold=0.5)
    above = score_corpus([file], [scores], STANDARD, threshold=float(np.nextafter(0.5, 1.0)))
    assert at[0].score == 1.0
    assert above[0].score == -1.0


def test_mismatched_lengths_and_nan_scores_are_rejected() -> None:
    file = _file(20, [(10, 14)])
    with pytest.raises(ValueError, match="detections"):
        score_file(file, np.zeros(19, dtype=np.bool_), STANDARD)
    with pytest.raises(ValueError, match="anomaly scores"):
        optimise_threshold([file], [np.zeros(21)], STANDARD)
    with pytest.raises(ValueError, match="NaN"):
        optimise_threshold([file], [np.full(20, np.nan)], STANDARD)
    with pytest.raises(ValueError, match="score arrays"):
        optimise_threshold([file, file], [np.zeros(20)], STANDARD)


# -- normalisation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_flagging_nothing_scores_0_and_each_window_start_scores_100(profile: CostProfile) -> None:
    files = [_file(50, [(10, 14), (30, 39)], probation=7), _file(30, [(20, 25)], probation=4), _file(25)]
    silent = [np.zeros(f.rows, dtype=np.bool_) for f in files]
    perfect = [_flags(50, 10, 30), _flags(30, 20), _flags(25)]
    silent_raw = sum(score_file(f, d, profile).score for f, d in zip(files, silent, strict=True))
    perfect_raw = sum(score_file(f, d, profile).score for f, d in zip(files, perfect, strict=True))
    assert silent_raw == -3 * profile.fn
    assert normalised(silent_raw, files, profile) == 0.0
    assert normalised(perfect_raw, files, profile) == pytest.approx(100.0, abs=1e-12)


def test_corpus_without_windows_has_no_scale() -> None:
    with pytest.raises(ValueError, match="without windows"):
        normalised(0.0, [_file(10)], STANDARD)


# -- threshold optimisation -----------------------------------------------------------------------------


def test_optimiser_finds_the_best_threshold_and_breaks_ties_upwards() -> None:
    file = _file(20, [(10, 14)])
    scores = np.zeros(20)
    scores[3] = 0.95  # a false positive above everything in the window
    scores[10] = 0.9  # the window's first row
    scores[11] = 0.8  # later in the window, so lowering the threshold to it changes nothing: a tie
    threshold, raw = optimise_threshold([file], [scores], STANDARD)
    assert threshold == 0.9
    assert raw == pytest.approx(1.0 - 0.11, abs=1e-15)


def test_optimiser_prefers_flagging_nothing_when_every_threshold_loses() -> None:
    file = _file(20, [(1, 3)], probation=5)  # the only window is probationary: every flag is a false positive
    scores = np.linspace(0.0, 1.0, 20)
    threshold, raw = optimise_threshold([file], [scores], STANDARD)
    assert threshold == math.inf
    assert raw == 0.0


def test_nab_score_reports_threshold_raw_normalised_and_per_file_rows() -> None:
    files = [_file(20, [(10, 14)]), _file(20)]
    scores = [np.where(np.arange(20) == 10, 0.9, 0.0), np.where(np.arange(20) == 5, 0.7, 0.0)]
    best = nab_score(files, scores, STANDARD)
    assert best.threshold == 0.9
    assert best.raw == 1.0
    assert best.normalised == 100.0
    fixed = nab_score(files, scores, STANDARD, threshold=0.7)
    assert fixed.raw == pytest.approx(1.0 - 0.11, abs=1e-15)
    assert [(r.name, r.tp, r.fp) for r in fixed.files] == [("f.csv", 1, 0), ("f.csv", 0, 1)]
    assert fixed.normalised == pytest.approx(100 * (0.89 + 1) / 2)


@st.composite
def _corpus(draw: st.DrawFn) -> tuple[list[NabFile], list[NDArray[np.float64]]]:
    files: list[NabFile] = []
    scores: list[NDArray[np.float64]] = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(2, 40))
        cuts = sorted(draw(st.sets(st.integers(0, rows - 1), max_size=6)))
        # Consecutive cut pairs become windows, ordered and disjoint; some shrink to a single row.
        pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
        windows = [(first, first if draw(st.booleans()) else last) for first, last in pairs]
        probation = draw(st.integers(0, rows))
        files.append(NabFile(f"f{len(files)}.csv", rows, tuple(windows), probation))
        # Few distinct values, so ties between rows (and between thresholds) are common.
        levels = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0])
        scores.append(np.array(draw(st.lists(levels, min_size=rows, max_size=rows))))
    return files, scores


@settings(max_examples=150, deadline=None)
@given(drawn=_corpus(), profile=st.sampled_from(list(PROFILES.values())))
def test_sweep_optimum_equals_brute_force_over_every_distinct_score(
    drawn: tuple[list[NabFile], list[NDArray[np.float64]]], profile: CostProfile
) -> None:
    files, scores = drawn
    threshold, raw = optimise_threshold(files, scores, profile)

    candidates = sorted({math.inf, *np.concatenate(scores).tolist()}, reverse=True)
    brute = {t: sum(s.score for s in score_corpus(files, scores, profile, t)) for t in candidates}
    best = max(brute.values())
    assert raw == pytest.approx(best, abs=1e-9)
    assert raw == sum(s.score for s in score_corpus(files, scores, profile, threshold))
    # NAB keeps the highest threshold among equals.
    assert threshold == max(t for t, value in brute.items() if value >= best - 1e-9)
    if any(f.windows for f in files):
        assert normalised(raw, files, profile) <= 100.0 + 1e-9


# -- against the NAB v1.1 snapshot ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def nab_root() -> Path:
    if not (NAB_ROOT / "labels" / "combined_windows.json").is_file():
        pytest.skip(f"NAB snapshot not found at {NAB_ROOT}")
    return NAB_ROOT


@pytest.fixture(scope="module")
def nab_corpus(nab_root: Path) -> dict[str, NabFile]:
    return {f.name: f for f in (nab_file(series) for series in read_nab(nab_root))}


def _table(nab_root: Path, detector: str, profile: str) -> list[dict[str, str]]:
    with (nab_root / "results" / detector / f"{detector}_{profile}_scores.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["File"]]


def test_profile_constants_match_nab_config(nab_root: Path) -> None:
    config = json.loads((nab_root / "config" / "profiles.json").read_text())
    assert set(config) == set(PROFILES)
    for name, profile in PROFILES.items():
        weights = config[name]["CostMatrix"]
        assert (profile.tp, profile.fp, profile.fn) == (
            weights["tpWeight"],
            weights["fpWeight"],
            weights["fnWeight"],
        )


def test_corpus_windows_and_probation_match_nab_tables(
    nab_root: Path, nab_corpus: dict[str, NabFile]
) -> None:
    assert len(nab_corpus) == 58
    assert sum(len(f.windows) for f in nab_corpus.values()) == 116
    assert sum(f.scorable_windows for f in nab_corpus.values()) == 116
    for detector in ("numenta", "ARTime"):
        for profile in PROFILES.values():
            for row in _table(nab_root, detector, profile.name):
                file = nab_corpus[row["File"]]
                in_windows = sum(
                    max(0, last + 1 - max(first, file.probation)) for first, last in file.windows
                )
                scorable = file.rows - file.probation
                assert int(row["TP"]) + int(row["FN"]) == in_windows, row
                assert int(row["TN"]) + int(row["FP"]) == scorable - in_windows, row
                if not file.windows:  # every flag before any window costs the full fp weight
                    assert float(row["Score"]) == pytest.approx(-profile.fp * int(row["FP"]), abs=1e-9)


def test_scoreboard_normalisation_is_reproduced(nab_root: Path, nab_corpus: dict[str, NabFile]) -> None:
    final = json.loads((nab_root / "results" / "final_results.json").read_text())
    files = list(nab_corpus.values())
    for detector in ("null", "numenta", "ARTime", "windowedGaussian"):
        for profile in PROFILES.values():
            raw = sum(float(row["Score"]) for row in _table(nab_root, detector, profile.name))
            assert normalised(raw, files, profile) == pytest.approx(final[detector][profile.name], abs=1e-6)
    # The null detector flags nothing: exactly NAB's baseline.
    for profile in PROFILES.values():
        silent = sum(score_file(f, np.zeros(f.rows, dtype=np.bool_), profile).score for f in files)
        assert silent == -profile.fn * 116
