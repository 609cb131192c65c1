from __future__ import annotations

import numpy as np

from streamwatch.core.features import FEATURES, FeatureCalibration, window_statistics


def _normal(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.normal(size=(count, 64, 2)).astype(np.float32)


def test_statistics_have_one_value_per_window_and_channel() -> None:
    stats = window_statistics(_normal(np.random.default_rng(0), 10))
    assert set(stats) == {"level", "spread", "roughness", "stuck", "crossings"}
    assert all(value.shape == (10, 2) for value in stats.values())


def test_calibration_puts_normal_near_zero_and_each_anomaly_high() -> None:
    rng = np.random.default_rng(1)
    calibration = FeatureCalibration.fit(window_statistics(_normal(rng, 2000)))
    fresh = calibration.surprise(window_statistics(_normal(rng, 2000)))
    assert np.quantile(fresh, 0.5) < 0.6
    assert np.mean(fresh > 1.5) < 0.01

    anomalies = _normal(rng, 5)
    anomalies[0, :, 0] += 4.0  # level shift
    anomalies[1, :, 0] *= 5.0  # variance burst
    anomalies[2, :, 0] = 0.3  # flatline: only the low side of spread/roughness sees it
    anomalies[3, :, 0] = np.sin(np.arange(64) / 20.0)  # smooth: crossings and roughness drop
    anomalies[4, :, 1] = np.repeat(rng.normal(size=8), 8)  # stuck in steps
    surprise = calibration.surprise(window_statistics(anomalies))
    assert (surprise[:4, 0] > 3.0).all()
    assert surprise[4, 1] > 3.0


def test_calibration_floors_prevent_infinite_scores() -> None:
    constant = np.zeros((100, 32, 1), dtype=np.float32)
    calibration = FeatureCalibration.fit(window_statistics(constant))
    for name in calibration.upper:
        assert (calibration.upper[name] >= FEATURES[name][1]).all()
    surprise = calibration.surprise(window_statistics(constant + 1e-7))
    assert np.isfinite(surprise).all() and surprise.max() < 1.0


def test_calibration_json_round_trip() -> None:
    stats = window_statistics(_normal(np.random.default_rng(2), 300))
    calibration = FeatureCalibration.fit(stats)
    again = FeatureCalibration.from_json(calibration.to_json())
    assert np.array_equal(again.surprise(stats), calibration.surprise(stats))
