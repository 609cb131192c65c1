from __future__ import annotations

import numpy as np

from streamwatch.core.profile import (
    DAY_S,
    StreamProfile,
    cross_fitted,
    dominant_period,
    fit_profile,
    robust_scale,
    sampling_interval,
)


def test_sampling_interval_ignores_gaps_and_duplicates() -> None:
    times = np.array([0, 1, 2, 2, 3, 50, 51, 52], dtype=np.float64)
    assert sampling_interval(times) == 1.0


def test_dominant_period_finds_rhythm_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(4000)
    periodic = (np.sin(2 * np.pi * t / 37) + 0.2 * rng.normal(size=t.size)).astype(np.float32)[:, None]
    lag, height = dominant_period(periodic)
    assert abs(lag - 37) <= 1 and height > 0.5
    _, noise_height = dominant_period(rng.normal(size=(4000, 1)).astype(np.float32))
    assert noise_height < 0.2


def test_robust_scale_survives_outliers_and_constant_channels() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, size=(5000, 3)).astype(np.float32)
    values[:, 1] = 0.0
    values[::50, 1] = 0.5  # mostly one value: MAD is zero, std is not
    values[:, 2] = 5.5  # constant
    values[0, 0] = 1e6  # one wild outlier
    scale = robust_scale(values)
    assert 1.8 < scale[0] < 2.2
    assert 0.05 < scale[1] < 0.1
    assert scale[2] == 1.0


def test_counts_are_stabilised_so_rate_does_not_change_the_noise() -> None:
    rng = np.random.default_rng(1)
    times = np.arange(20_000, dtype=np.float64) * 60
    rare = rng.poisson(0.02, 20_000)
    busy = rng.poisson(400, 20_000)
    values = np.stack([rare, busy, rng.normal(size=20_000)], axis=1).astype(np.float32)
    profile = fit_profile(("critical", "info", "x"), times, values)
    assert profile.counts is not None
    assert profile.counts.tolist() == [True, True, False]
    normalised = profile.normalise(times, values)
    assert 0.8 < np.std(normalised[:, 1]) < 1.2  # Poisson noise at rate 400 is one unit after Anscombe
    assert np.max(normalised[:, 0]) < 2.0  # one rare line is not a many-sigma event
    again = StreamProfile.from_json(profile.to_json())
    assert np.array_equal(again.normalise(times, values), normalised)


def test_daily_seasonality_is_removed_when_it_matters() -> None:
    rng = np.random.default_rng(0)
    times = np.arange(0, 4 * DAY_S, 60.0)
    daily = 20 * np.sin(2 * np.pi * times / DAY_S)
    values = (50 + daily + rng.normal(0, 1, times.size)).astype(np.float32)[:, None]
    profile = fit_profile(("cpu",), times, values)
    assert profile.seasonality is not None and profile.seasonality.period_s == DAY_S
    normalised = profile.normalise(times, values)
    assert np.std(normalised) < 2.0  # only the noise is left, in robust units
    flat = fit_profile(("cpu",), times, (50 + rng.normal(0, 1, times.size)).astype(np.float32)[:, None])
    assert flat.seasonality is None


def test_profile_json_round_trip_and_window_normalisation_agree() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(0, 3 * DAY_S, 300.0)
    values = np.stack([np.sin(2 * np.pi * times / DAY_S) * 5, rng.normal(size=times.size)], axis=1).astype(
        np.float32
    )
    profile = fit_profile(("a", "b"), times, values)
    again = StreamProfile.from_json(profile.to_json())
    assert np.allclose(again.normalise(times, values), profile.normalise(times, values))
    windows = np.stack([values[i : i + 10] for i in range(0, 100, 10)])
    starts = times[0:100:10]
    by_window = profile.normalise_windows(starts, windows)
    direct = profile.normalise(times[:100], values[:100]).reshape(10, 10, 2)
    assert np.allclose(by_window, direct, atol=1e-5)


def test_cross_fitting_shows_the_residuals_new_days_will_have() -> None:
    rng = np.random.default_rng(4)
    times = np.arange(0, 1.8 * DAY_S, 60.0)
    daily = 20 * np.sin(2 * np.pi * times / DAY_S) + 5 * np.sin(6 * np.pi * times / DAY_S)
    values = (50 + daily + rng.normal(0, 3, times.size)).astype(np.float32)[:, None]
    profile = fit_profile(("cpu",), times, values)
    assert profile.seasonality is not None
    in_sample = profile.normalise(times, values)
    honest = cross_fitted(profile, times, values)
    assert np.std(honest) > np.std(in_sample)
    flat = fit_profile(("x",), times, rng.normal(size=(times.size, 1)).astype(np.float32))
    assert np.array_equal(cross_fitted(flat, times, values), flat.normalise(times, values))


def test_denormalise_inverts_normalise_with_counts_and_seasons() -> None:
    rng = np.random.default_rng(4)
    times = np.arange(0, 3 * DAY_S, 300.0)
    level = 30 + 20 * np.sin(2 * np.pi * times / DAY_S)
    values = np.stack([rng.poisson(level), level + rng.normal(0, 1, times.size)], axis=1).astype(np.float32)
    profile = fit_profile(("requests", "latency"), times, values)
    assert profile.counts is not None and profile.counts.tolist() == [True, False]
    back = profile.denormalise(times, profile.normalise(times, values).astype(np.float64))
    assert np.array_equal(back[:, 0], values[:, 0])  # counts come back as the same integers
    assert np.allclose(back[:, 1], values[:, 1], atol=1e-3)
