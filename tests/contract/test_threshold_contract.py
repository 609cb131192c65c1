"""The contract every threshold kind honours (River-style: one suite, parametrised over all kinds).

A new kind joins by adding its default config to KINDS; nothing else here may need to change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from streamwatch.core.thresholds import (
    PotThresholdConfig,
    QuantileThresholdConfig,
    RobustZThresholdConfig,
    Threshold,
    ThresholdConfig,
    restore_threshold,
    threshold_from_dict,
)

FloatArray = npt.NDArray[np.float64]
Sampler = Callable[[np.random.Generator, int], FloatArray]

KINDS: dict[str, ThresholdConfig] = {
    "quantile": QuantileThresholdConfig(),
    "robust_z": RobustZThresholdConfig(),
    "pot": PotThresholdConfig(),
}

# Score shapes a detector produces (skewed, non-negative), at unrelated scales: thresholds must be scale free.
DISTRIBUTIONS: dict[str, Sampler] = {
    "exponential": lambda rng, size: rng.exponential(1.0, size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 0.5, size),
    "half_normal_milli": lambda rng, size: np.abs(rng.normal(0.0, 1e-3, size)),
    "gamma_kilo": lambda rng, size: rng.gamma(4.0, 250.0, size),
}

FIT_SIZE = 2000
FRESH_SIZE = 20_000

every_kind = pytest.mark.parametrize("config", KINDS.values(), ids=KINDS.keys())
every_distribution = pytest.mark.parametrize("sample", DISTRIBUTIONS.values(), ids=DISTRIBUTIONS.keys())


def calibrated(config: ThresholdConfig, scores: FloatArray) -> Threshold:
    threshold: Threshold = config.build()
    threshold.fit(scores)
    return threshold


def assert_valid_value(threshold: Threshold) -> None:
    assert isinstance(threshold.value, float)
    assert math.isfinite(threshold.value) and threshold.value > 0.0


def mixed_stream(rng: np.random.Generator, sample: Sampler, size: int) -> FloatArray:
    """Normal scores with isolated spikes and a long plateau: learning, exclusion and relearning all run."""
    scores = sample(rng, size)
    median = float(np.median(scores))
    spikes = rng.uniform(size=size) < 0.01
    scores[spikes] *= 30.0
    plateau = slice(size // 2, size // 2 + 500)
    scores[plateau] = 40.0 * median + sample(rng, 500)
    return scores


@every_kind
@every_distribution
def test_fit_gives_a_finite_positive_value(config: ThresholdConfig, sample: Sampler) -> None:
    threshold = calibrated(config, sample(np.random.default_rng(1), FIT_SIZE))
    assert_valid_value(threshold)


@every_kind
@pytest.mark.parametrize(
    "scores",
    [np.zeros(20), np.full(20, 2.5), np.array([0.7]), np.random.default_rng(2).exponential(1.0, 20)],
    ids=["constant_zero", "constant", "single", "twenty"],
)
def test_fit_on_constant_and_small_inputs(config: ThresholdConfig, scores: FloatArray) -> None:
    threshold = calibrated(config, scores)
    assert_valid_value(threshold)
    assert threshold.value >= float(scores.max())  # the calibration data itself is normal
    for score in scores:
        threshold.observe(float(score))
        assert_valid_value(threshold)
    assert_valid_value(restore_threshold(json.loads(json.dumps(threshold.snapshot()))))


@every_kind
def test_identical_inputs_give_identical_behaviour(config: ThresholdConfig) -> None:
    rng = np.random.default_rng(3)
    fit_scores = DISTRIBUTIONS["lognormal"](rng, FIT_SIZE)
    stream = mixed_stream(rng, DISTRIBUTIONS["lognormal"], 3000)
    first, second = calibrated(config, fit_scores), calibrated(config, fit_scores.copy())
    for score in stream:
        assert first.observe(float(score)) == second.observe(float(score))
        assert first.value == second.value
    assert first.snapshot() == second.snapshot()


@every_kind
@every_distribution
def test_snapshot_json_round_trip_continues_identically(config: ThresholdConfig, sample: Sampler) -> None:
    rng = np.random.default_rng(4)
    original = calibrated(config, sample(rng, FIT_SIZE))
    stream = mixed_stream(rng, sample, 4000)
    for score in stream[:2000]:
        original.observe(float(score))
    snapshot = json.loads(json.dumps(original.snapshot()))
    restored = restore_threshold(snapshot)
    assert type(restored) is type(original)
    assert restored.value == original.value
    for score in stream[2000:]:
        assert restored.observe(float(score)) == original.observe(float(score))
        assert restored.value == original.value
    assert restored.snapshot() == original.snapshot()


@every_kind
@every_distribution
def test_snapshot_stays_under_one_kibibyte(config: ThresholdConfig, sample: Sampler) -> None:
    rng = np.random.default_rng(5)
    threshold = calibrated(config, sample(rng, FIT_SIZE))
    sizes = []
    for chunk in np.split(mixed_stream(rng, sample, 6000), 6):
        for score in chunk:
            threshold.observe(float(score))
        sizes.append(len(json.dumps(threshold.snapshot()).encode()))
    assert max(sizes) < 1024


@every_kind
@every_distribution
def test_an_anomaly_twenty_times_the_normal_median_exceeds(config: ThresholdConfig, sample: Sampler) -> None:
    scores = sample(np.random.default_rng(6), FIT_SIZE)
    threshold = calibrated(config, scores)
    assert threshold.observe(20.0 * float(np.median(scores)))


@every_kind
@every_distribution
def test_false_exceed_rate_on_fresh_normal_scores_is_below_one_percent(
    config: ThresholdConfig, sample: Sampler
) -> None:
    rng = np.random.default_rng(7)
    threshold = calibrated(config, sample(rng, FIT_SIZE))
    fresh = sample(rng, FRESH_SIZE)
    exceeded = sum(threshold.observe(float(score)) for score in fresh)
    assert exceeded / FRESH_SIZE < 0.01
    assert_valid_value(threshold)


@every_kind
def test_config_survives_its_dict_form(config: ThresholdConfig) -> None:
    assert threshold_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    snapshot = json.loads(json.dumps(calibrated(config, np.ones(5)).snapshot()))
    assert snapshot["kind"] == config.kind
    assert threshold_from_dict({"kind": snapshot["kind"], **snapshot["config"]}) == config
