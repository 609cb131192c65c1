from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.thresholds import (
    MIN_THRESHOLD,
    PotThresholdConfig,
    QuantileThresholdConfig,
    RobustZThresholdConfig,
    Threshold,
    ThresholdConfig,
    fit_generalized_pareto,
    restore_threshold,
    threshold_from_dict,
)

FloatArray = npt.NDArray[np.float64]


def exponential(seed: int, size: int, scale: float = 1.0) -> FloatArray:
    return np.random.default_rng(seed).exponential(scale, size)


def fitted(config: ThresholdConfig, scores: FloatArray) -> Threshold:
    threshold: Threshold = config.build()
    threshold.fit(scores)
    return threshold


def exceed_rate(threshold: Threshold, scores: FloatArray) -> float:
    return sum(threshold.observe(float(score)) for score in scores) / scores.size


# -- quantile --------------------------------------------------------------------------------------------
def test_quantile_value_is_margin_times_the_quantile_of_the_fit_scores() -> None:
    # Exp(1): the 0.99 quantile is ln 100 = 4.605; the sketch's 10% bins are interpolated, the sample has
    # a few % of noise at this size.
    threshold = fitted(QuantileThresholdConfig(q=0.99, margin=1.25), exponential(1, 5000))
    assert threshold.value == pytest.approx(1.25 * math.log(100), rel=0.06)


def test_quantile_false_exceed_rate_is_near_the_intended_level() -> None:
    # Intended: P(X > 1.25 ln 100) = 100**-1.25 = 0.0032. Learning only sub-threshold scores trims the
    # learned tail a little, which settles the threshold slightly lower (about 0.005 for these settings).
    threshold = fitted(QuantileThresholdConfig(q=0.99, margin=1.25), exponential(2, 5000))
    rate = exceed_rate(threshold, exponential(3, 20_000))
    assert 0.0016 < rate < 0.008


def test_quantile_forgets_an_old_level_within_a_few_horizons() -> None:
    # Scores drop 20x: the old mass has to decay below 1% and the grid has to slide down after it.
    threshold = fitted(QuantileThresholdConfig(q=0.99, horizon=500), exponential(4, 2000))
    for score in exponential(5, 5000, scale=0.05):
        threshold.observe(float(score))
    assert threshold.value == pytest.approx(1.25 * 0.05 * math.log(100), rel=0.1)


def test_quantile_follows_a_higher_level_once_it_relearns() -> None:
    threshold = fitted(QuantileThresholdConfig(q=0.99, horizon=500, relearn_after=10), exponential(6, 2000))
    shifted = exponential(7, 5000, scale=1000.0)
    for score in shifted:
        threshold.observe(float(score))
    assert threshold.value == pytest.approx(1.25 * 1000.0 * math.log(100), rel=0.2)


# -- robust z --------------------------------------------------------------------------------------------
def test_robust_z_value_is_median_plus_k_sigma() -> None:
    scores = np.random.default_rng(8).normal(10.0, 1.0, 5000)
    threshold = fitted(RobustZThresholdConfig(k=8.0), scores)
    assert threshold.value == pytest.approx(10.0 + 8.0, rel=0.02)


def test_robust_z_false_exceed_rate_is_near_the_gaussian_tail() -> None:
    rng = np.random.default_rng(9)
    threshold = fitted(RobustZThresholdConfig(k=3.0), rng.normal(10.0, 1.0, 5000))
    rate = exceed_rate(threshold, rng.normal(10.0, 1.0, 20_000))
    assert 0.0005 < rate < 0.003  # P(Z > 3) = 0.00135


def test_robust_z_tracks_a_slow_drift() -> None:
    rng = np.random.default_rng(10)
    threshold = fitted(RobustZThresholdConfig(k=4.0, half_life=500), rng.normal(10.0, 1.0, 2000))
    drift = np.linspace(10.0, 14.0, 20_000)
    for level, noise in zip(drift, rng.normal(0.0, 1.0, drift.size), strict=True):
        threshold.observe(float(level + noise))
    assert threshold.value == pytest.approx(14.0 + 4.0, abs=0.6)


# -- peaks over threshold --------------------------------------------------------------------------------
def gpd_sample(shape: float, scale: float, size: int, seed: int) -> FloatArray:
    uniform = np.random.default_rng(seed).uniform(size=size)
    if shape == 0.0:
        return -scale * np.log(uniform)
    return scale / shape * (uniform ** (-shape) - 1.0)


@pytest.mark.parametrize("shape", [-0.3, 0.0, 0.2, 0.4])
def test_pwm_fit_recovers_generalised_pareto_parameters(shape: float) -> None:
    estimated_shape, estimated_scale = fit_generalized_pareto(gpd_sample(shape, 2.0, 20_000, seed=11))
    assert estimated_shape == pytest.approx(shape, abs=0.04)
    assert estimated_scale == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(
    "excesses",
    [
        np.full(20, 0.7),  # no spread: the shape estimate runs off to -infinity
        gpd_sample(0.9, 1.0, 5000, seed=12),  # shape outside the stable band
    ],
)
def test_pwm_fit_falls_back_to_the_exponential_tail(excesses: FloatArray) -> None:
    shape, scale = fit_generalized_pareto(excesses)
    assert shape == 0.0
    assert scale == pytest.approx(float(np.mean(excesses)))


@pytest.mark.parametrize("excesses", [[1.0, 2.0], [0.0, 0.0, 0.0], [1.0, -1.0, 2.0], [1.0, math.inf, 2.0]])
def test_pwm_fit_rejects_unusable_input(excesses: list[float]) -> None:
    with pytest.raises(ValueError, match="excesses"):
        fit_generalized_pareto(excesses)


def test_pot_value_matches_the_spot_formula_on_exponential_scores() -> None:
    # Exp(1) excesses over t are Exp(1), so z = t + ln(N_t / (risk n)) = q98 + ln(0.02 / 1e-4) = 9.21.
    threshold = fitted(PotThresholdConfig(), exponential(13, 5000))
    assert 7.5 < threshold.value < 11.5


def test_pot_false_exceed_rate_is_low() -> None:
    # 64 peaks give a noisy tail (shape s.e. ~0.15), so the realised rate scatters around a few x risk.
    threshold = fitted(PotThresholdConfig(), exponential(14, 5000))
    assert exceed_rate(threshold, exponential(15, 20_000)) < 1e-3


def test_pot_keeps_at_most_max_peaks_but_counts_every_learned_score() -> None:
    threshold = fitted(PotThresholdConfig(max_peaks=16), exponential(16, 1000))
    fit_peaks = threshold.snapshot()["state"]["n_peaks"]
    stream = exponential(17, 500) * 3.0  # some of these exceed and must not be counted
    verdicts = [threshold.observe(float(score)) for score in stream]
    state = threshold.snapshot()["state"]
    learned = [score for score, exceeded in zip(stream, verdicts, strict=True) if not exceeded]
    assert any(verdicts)
    assert len(state["peaks_in_spreads"]) == 16
    assert state["n"] == 1000 + len(learned)
    assert state["n_peaks"] == fit_peaks + sum(score > state["t"] for score in learned)


def test_pot_with_too_few_peaks_uses_three_robust_spreads_above_t() -> None:
    scores = exponential(18, 20)
    threshold = fitted(PotThresholdConfig(margin=1.1), scores)
    base = float(np.quantile(scores, 0.98))
    spread = 1.4826 * float(np.median(np.abs(scores - np.median(scores))))
    assert threshold.value == pytest.approx(1.1 * (base + 3.0 * spread), rel=1e-12)


# -- the shared learning rule ----------------------------------------------------------------------------
LEARNING_CONFIGS: dict[str, ThresholdConfig] = {
    "quantile": QuantileThresholdConfig(q=0.99, horizon=1000, relearn_after=30),
    "robust_z": RobustZThresholdConfig(half_life=100, relearn_after=30),
    "pot": PotThresholdConfig(relearn_after=30),
}
learning_kinds = pytest.mark.parametrize("config", LEARNING_CONFIGS.values(), ids=LEARNING_CONFIGS.keys())


@learning_kinds
def test_exceeding_scores_are_judged_on_the_old_value_and_not_learned(config: ThresholdConfig) -> None:
    threshold = fitted(config, exponential(19, 2000))
    before = threshold.value
    assert threshold.observe(before * 1.000001)
    assert threshold.observe(before * 100.0)
    assert threshold.value == before
    assert not threshold.observe(before)  # equal is not above
    assert threshold.observe(threshold.value * 1.01)


@learning_kinds
def test_a_lasting_level_shift_is_relearned_after_relearn_after_exceeding_scores(
    config: ThresholdConfig,
) -> None:
    threshold = fitted(config, exponential(20, 2000))
    before = threshold.value
    shifted = 50.0 + exponential(21, 20_000)
    verdicts = []
    for index, score in enumerate(shifted):
        verdicts.append(threshold.observe(float(score)))
        if index < 30:
            assert threshold.value == before, "learned an exceeding score before relearn_after"
        if index == 30:
            assert threshold.value != before, "did not learn the 31st consecutive exceeding score"
    assert all(verdicts[:31])
    assert sum(verdicts[-2000:]) < 20  # the new level is normal now


@learning_kinds
def test_a_normal_score_resets_the_exceeding_streak(config: ThresholdConfig) -> None:
    threshold = fitted(config, exponential(22, 2000))
    normal = exponential(23, 40)
    for round_ in range(40):
        for _ in range(29):
            assert threshold.observe(500.0)
        threshold.observe(float(normal[round_]))
    assert threshold.value < 100.0


@learning_kinds
def test_refit_resets_the_streak(config: ThresholdConfig) -> None:
    threshold = fitted(config, exponential(24, 2000))
    for _ in range(25):
        threshold.observe(1e4)
    threshold.fit(exponential(25, 2000))
    before = threshold.value
    for _ in range(10):
        threshold.observe(1e4)
    assert threshold.value == before  # 25 + 10 > 30 would have relearned without the reset


# -- degenerate and invalid input ------------------------------------------------------------------------
ALL_KINDS: dict[str, Callable[[], ThresholdConfig]] = {
    "quantile": QuantileThresholdConfig,
    "robust_z": RobustZThresholdConfig,
    "pot": PotThresholdConfig,
}
every_kind = pytest.mark.parametrize("make", ALL_KINDS.values(), ids=ALL_KINDS.keys())


@every_kind
@pytest.mark.parametrize("level", [0.0, 1e-9, 3.0, 1e6])
def test_constant_scores_give_a_threshold_just_above_them(
    make: Callable[[], ThresholdConfig], level: float
) -> None:
    threshold = fitted(make(), np.full(50, level))
    assert math.isfinite(threshold.value) and threshold.value >= MIN_THRESHOLD
    assert threshold.value > level
    assert not any(threshold.observe(level) for _ in range(200))
    assert threshold.observe(2.0 * level + 1e-6)


@every_kind
def test_a_single_score_is_enough_to_fit(make: Callable[[], ThresholdConfig]) -> None:
    threshold = fitted(make(), np.array([0.4]))
    assert 0.4 < threshold.value < math.inf
    assert threshold.observe(40.0)


@every_kind
@pytest.mark.parametrize("bad", [[], [1.0, -0.5], [1.0, math.nan], [math.inf]])
def test_fit_rejects_unusable_scores(make: Callable[[], ThresholdConfig], bad: list[float]) -> None:
    with pytest.raises(ValueError, match="fit"):
        make().build().fit(np.asarray(bad, dtype=np.float64))


@every_kind
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_observe_rejects_invalid_scores(make: Callable[[], ThresholdConfig], bad: float) -> None:
    threshold = fitted(make(), exponential(26, 100))
    with pytest.raises(ValueError, match="score"):
        threshold.observe(bad)


@every_kind
def test_an_uncalibrated_threshold_refuses_to_judge(make: Callable[[], ThresholdConfig]) -> None:
    threshold = make().build()
    with pytest.raises(RuntimeError, match="fit"):
        _ = threshold.value
    with pytest.raises(RuntimeError, match="fit"):
        threshold.observe(1.0)
    with pytest.raises(RuntimeError, match="fit"):
        threshold.snapshot()


# -- configuration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "changes", "field"),
    [
        ("quantile", {"q": 1.0}, "q"),
        ("quantile", {"q": 0.3}, "q"),
        ("quantile", {"q": "high"}, "q"),
        ("quantile", {"margin": 0.9}, "margin"),
        ("quantile", {"horizon": 5}, "horizon"),
        ("quantile", {"horizon": 5000.0}, "horizon"),
        ("quantile", {"horizon": 500}, "horizon"),  # fewer than 1/(1-q) remembered scores
        ("quantile", {"floor": -1.0}, "floor"),
        ("quantile", {"floor": math.inf}, "floor"),
        ("quantile", {"relearn_after": 0}, "relearn_after"),
        ("quantile", {"relearn_after": True}, "relearn_after"),
        ("robust_z", {"k": 0.0}, "k"),
        ("robust_z", {"k": math.nan}, "k"),
        ("robust_z", {"half_life": 0}, "half_life"),
        ("pot", {"risk": 0.0}, "risk"),
        ("pot", {"risk": 0.05}, "risk"),  # not below the tail share 1 - init_quantile
        ("pot", {"init_quantile": 1.0}, "init_quantile"),
        ("pot", {"margin": 0.5}, "margin"),
        ("pot", {"max_peaks": 2}, "max_peaks"),
        ("pot", {"max_peaks": 65}, "max_peaks"),
    ],
)
def test_config_errors_name_the_field_and_the_valid_range(
    kind: str, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be .*(\[|\(|>=)") as caught:
        ALL_KINDS[kind](**changes)
    assert field in str(caught.value)


@every_kind
def test_config_dict_round_trip(make: Callable[[], ThresholdConfig]) -> None:
    config = make()
    assert threshold_from_dict(config.to_dict()) == config
    assert threshold_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_threshold_from_dict_builds_each_kind_with_overrides() -> None:
    assert threshold_from_dict({"kind": "quantile", "q": 0.99}) == QuantileThresholdConfig(q=0.99)
    assert threshold_from_dict({"kind": "robust_z", "k": 5}) == RobustZThresholdConfig(k=5)
    assert threshold_from_dict({"kind": "pot", "risk": 1e-3}) == PotThresholdConfig(risk=1e-3)


@pytest.mark.parametrize(
    ("d", "pattern"),
    [
        ({"q": 0.99}, "kind"),
        ({"kind": "median"}, "median"),
        ({"kind": "pot", "rsik": 1e-3, "quantile": 0.9}, "quantile, rsik"),
        ({"kind": "robust_z", "q": 0.9}, "unknown key.*: q;"),
        ({"kind": "pot", "risk": -1.0}, "risk"),
    ],
)
def test_threshold_from_dict_errors_name_the_problem(d: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        threshold_from_dict(d)


@pytest.mark.parametrize(
    "snapshot",
    [
        {"kind": "median", "config": {}, "state": {}},
        {"kind": "quantile", "config": {}},
        {"kind": "quantile", "config": {}, "streak": 0, "state": {"top": 0}},
        {
            "kind": "quantile",
            "config": {},
            "streak": 0,
            "state": {"top": 0, "pending": 0, "counts": [0] * 48},
        },
        {"kind": "robust_z", "config": {}, "streak": 0, "state": {"median": 1.0, "mad": 0.0}},
        {"kind": "robust_z", "config": {}, "streak": -1, "state": {"median": 1.0, "mad": 1.0}},
        {
            "kind": "pot",
            "config": {},
            "streak": 0,
            "state": {"t": 1.0, "spread": 1.0, "n": 10, "n_peaks": 1, "peaks_in_spreads": [0.5, 0.4]},
        },
    ],
)
def test_restore_rejects_malformed_snapshots(snapshot: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"snapshot|kind"):
        restore_threshold(snapshot)


# -- snapshot property, every kind -----------------------------------------------------------------------
# Small horizons and peak buffers so that short examples reach decay blocks, grid shifts and relearning.
SNAPSHOT_CONFIGS: list[ThresholdConfig] = [
    QuantileThresholdConfig(),
    QuantileThresholdConfig(q=0.9, horizon=20, relearn_after=3),
    QuantileThresholdConfig(q=0.9, horizon=200, relearn_after=3),  # decays every 3 learned scores
    RobustZThresholdConfig(),
    RobustZThresholdConfig(k=2.0, half_life=5, relearn_after=3),
    PotThresholdConfig(),
    PotThresholdConfig(risk=0.01, init_quantile=0.8, max_peaks=5, relearn_after=3),
]
scores = st.one_of(
    st.floats(0.0, 10.0),
    st.floats(0.0, 1e6),
    st.sampled_from([0.0, 1.0, 1e-300]),
)


@settings(max_examples=120, deadline=None)
@given(
    config=st.sampled_from(SNAPSHOT_CONFIGS),
    fit_scores=st.lists(scores, min_size=1, max_size=60),
    stream=st.lists(scores, max_size=150),
    data=st.data(),
)
def test_snapshot_restore_at_any_point_behaves_identically(
    config: ThresholdConfig, fit_scores: list[float], stream: list[float], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(stream)), label="split")
    original = fitted(config, np.asarray(fit_scores))
    for score in stream[:split]:
        original.observe(score)
    snapshot = json.loads(json.dumps(original.snapshot()))
    restored = restore_threshold(snapshot)
    assert restored.snapshot() == snapshot
    assert restored.value == original.value
    for score in stream[split:]:
        assert restored.observe(score) == original.observe(score)
        assert restored.value == original.value
        assert math.isfinite(restored.value) and restored.value > 0.0
    assert restored.snapshot() == original.snapshot()


@pytest.mark.parametrize("config", SNAPSHOT_CONFIGS, ids=lambda config: f"{config.kind}")
def test_snapshot_restore_on_a_realistic_stream_at_many_points(config: ThresholdConfig) -> None:
    rng = np.random.default_rng(27)
    fit_scores = rng.exponential(1.0, 300)
    stream = rng.exponential(1.0, 240) * np.where(rng.uniform(size=240) < 0.05, 30.0, 1.0)
    reference = fitted(config, fit_scores)
    expected = [(reference.observe(float(score)), reference.value) for score in stream]
    for split in range(0, stream.size, 7):
        before = fitted(config, fit_scores)
        for score in stream[:split]:
            before.observe(float(score))
        restored = restore_threshold(json.loads(json.dumps(before.snapshot())))
        assert [(restored.observe(float(score)), restored.value) for score in stream[split:]] == expected[
            split:
        ]
