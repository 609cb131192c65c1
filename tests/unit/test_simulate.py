"""Normal-data simulation: shapes, realism per domain, determinism, and the endless chunked stream."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.generate import DOMAINS, KINDS, Label, Series, SimulatedStream, simulate
from streamwatch.generate.simulate import _ar1

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86_400

EXPECTED: dict[str, tuple[tuple[str, ...], float]] = {
    "grid_frequency": (("frequency_hz",), 1.0),
    "voltage": (("v_a", "v_b", "v_c"), 1.0),
    "ecg": (("ecg_mv",), 250.0),
    "server": (("cpu_pct", "latency_ms", "requests"), 1.0 / 60.0),
    "logs": (("debug", "info", "warn", "error", "critical", "total"), 1.0 / 60.0),
}
SHORT = {"grid_frequency": 5000, "voltage": 5000, "ecg": 250 * 20, "server": 3000, "logs": 3000}


def _series(domain: str, n: int, seed: int = 0, rate_hz: float | None = None) -> Series:
    return simulate(domain, n=n, start=START, rng=np.random.default_rng(seed), rate_hz=rate_hz)


def _hours(series: Series) -> npt.NDArray[np.float64]:
    return np.mod(series.timestamps, DAY) / 3600.0


def _corr(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


# --------------------------------------------------------------------------------------------------------
# Common contract


def test_domains_are_the_documented_ones() -> None:
    assert DOMAINS == ("grid_frequency", "voltage", "ecg", "server", "logs")


@pytest.mark.parametrize("domain", DOMAINS)
def test_shape_rate_channels_and_timestamps(domain: str) -> None:
    n = SHORT[domain]
    series = _series(domain, n)
    channels, rate = EXPECTED[domain]
    assert series.channels == channels
    assert series.rate_hz == pytest.approx(rate)
    assert series.values.shape == (n, len(channels))
    assert series.values.dtype == np.float32
    assert series.timestamps.dtype == np.float64
    assert len(series) == n
    assert series.timestamps[0] == START
    np.testing.assert_allclose(np.diff(series.timestamps), 1.0 / rate, rtol=1e-9, atol=1e-6)
    assert np.isfinite(series.values).all()


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_data_other_seed_different(domain: str) -> None:
    first, again, other = (
        _series(domain, 500, seed=3),
        _series(domain, 500, seed=3),
        _series(domain, 500, seed=4),
    )
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.timestamps, again.timestamps)
    assert not np.array_equal(first.values, other.values)


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_longer_run_starts_with_the_shorter_one(domain: str) -> None:
    short, long = _series(domain, 700, seed=9), _series(domain, 2 * SHORT[domain], seed=9)
    np.testing.assert_array_equal(long.values[:700], short.values)


def test_zero_samples_give_an_empty_series() -> None:
    series = _series("voltage", 0)
    assert series.values.shape == (0, 3)
    assert series.timestamps.shape == (0,)


def test_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        _series("weather", 10)
    with pytest.raises(ValueError, match="rate"):
        _series("ecg", 10, rate_hz=500.0)
    with pytest.raises(ValueError, match="rate"):
        _series("grid_frequency", 10, rate_hz=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        _series("logs", -1)


def test_series_validates_its_shape() -> None:
    with pytest.raises(ValueError, match="shaped"):
        Series(np.arange(3.0), ("a",), np.zeros((4, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match="distinct"):
        Series(np.arange(3.0), ("a", "a"), np.zeros((3, 2), np.float32), 1.0)
    with pytest.raises(ValueError, match="rate_hz"):
        Series(np.arange(3.0), ("a",), np.zeros((3, 1), np.float32), -1.0)


@settings(max_examples=40, deadline=None)
@given(
    phi=st.one_of(st.floats(0.0, 0.99999), st.floats(0.0, 1e-3)),
    n=st.integers(0, 3000),
    previous=st.floats(-5.0, 5.0),
    seed=st.integers(0, 2**32),
)
def test_vectorised_ar1_matches_the_recursion(phi: float, n: int, previous: float, seed: int) -> None:
    innovations = np.random.default_rng(seed).normal(size=n)
    expected = np.empty(n)
    state = previous
    for i in range(n):
        state = phi * state + innovations[i]
        expected[i] = state
    np.testing.assert_allclose(_ar1(innovations, phi, previous), expected, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------------------
# Realism per domain


def test_grid_frequency_wanders_slowly_around_50_hz_with_noise() -> None:
    f = _series("grid_frequency", DAY // 2).values[:, 0].astype(np.float64)
    assert f.min() > 49.8
    assert f.max() < 50.2
    assert abs(f.mean() - 50.0) < 0.02
    assert 0.01 < f.std() < 0.06
    assert _corr(f[:-1], f[1:]) > 0.95  # autocorrelated, not white
    steps = np.diff(f)
    assert 0.0005 < steps.std() < 0.01  # measurement noise and load jitter, not a clean curve


def test_grid_frequency_follows_rate_override() -> None:
    fast = _series("grid_frequency", 6000, rate_hz=10.0)
    assert fast.rate_hz == 10.0
    assert fast.timestamps[-1] - fast.timestamps[0] == pytest.approx(599.9)
    assert fast.values.min() > 49.8
    assert fast.values.max() < 50.2


def test_voltage_phases_track_each_other_and_sag_in_the_evening() -> None:
    series = _series("voltage", DAY)
    v = series.values.astype(np.float64)
    assert v.min() > 215.0
    assert v.max() < 245.0
    assert 225.0 < v.mean() < 235.0
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert _corr(v[:, a], v[:, b]) > 0.9
    hours = _hours(series)
    evening = v[(hours >= 18.5) & (hours < 20.5)].mean()
    night = v[(hours >= 2.0) & (hours < 5.0)].mean()
    assert night - evening > 1.0
    # Each phase keeps its own small noise: the phases are correlated, not copies.
    assert np.abs(v[:, 0] - v[:, 1]).max() > 0.1


def _r_peaks(ecg: npt.NDArray[np.float64], rate: float) -> npt.NDArray[np.intp]:
    """Indices of R peaks: the largest sample of each stretch above 60% of the robust maximum."""
    threshold = 0.6 * float(np.quantile(ecg, 0.995))
    above = ecg > threshold
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    falls = np.flatnonzero(~above[1:] & above[:-1]) + 1
    falls = falls[falls > rises[0]] if rises.size else falls
    pairs = zip(rises, falls, strict=False)
    return np.array([start + int(np.argmax(ecg[start:stop])) for start, stop in pairs], dtype=np.intp)


@pytest.mark.parametrize("rate", [100.0, 250.0, 360.0])
def test_ecg_has_beats_at_a_resting_rate_with_variability(rate: float) -> None:
    series = _series("ecg", int(rate * 120), rate_hz=rate)
    ecg = series.values[:, 0].astype(np.float64)
    assert ecg.min() > -1.0
    assert ecg.max() < 2.5
    peaks = _r_peaks(ecg, rate)
    rr = np.diff(peaks) / rate
    heart_rate = 60.0 / rr.mean()
    assert 50.0 < heart_rate < 95.0
    assert rr.std() > 0.01  # heart-rate variability
    assert rr.std() / rr.mean() < 0.2  # but still a sinus rhythm
    assert 0.7 < float(np.median(ecg[peaks])) < 1.6  # R waves around a millivolt


def test_ecg_baseline_breathes() -> None:
    series = _series("ecg", 250 * 120)
    ecg = series.values[:, 0].astype(np.float64)
    # One-second medians follow the baseline (beats are brief); they must move, slowly.
    seconds = np.median(ecg.reshape(-1, 250), axis=1)
    assert 0.02 < seconds.std() < 0.3


def test_server_load_drives_cpu_and_latency_with_daily_and_weekly_cycles() -> None:
    series = _series("server", 7 * 1440)
    cpu, latency, requests = (series.values[:, i].astype(np.float64) for i in range(3))
    assert cpu.min() >= 0.0
    assert cpu.max() <= 100.0
    assert latency.min() > 0.0
    assert requests.min() >= 0.0
    np.testing.assert_array_equal(requests, np.round(requests))
    assert _corr(requests, cpu) > 0.8
    assert _corr(requests, latency) > 0.5
    # Latency bends upwards with load: steeper between median and busy than between quiet and median.
    order = np.argsort(requests)
    quiet, median, busy = (order[int(q * order.size)] for q in (0.1, 0.5, 0.97))
    window = np.abs(requests[:, None] - requests[[quiet, median, busy]][None, :]) < 0.05 * requests[median]
    lat = [float(latency[window[:, i]].mean()) for i in range(3)]
    req = [float(requests[window[:, i]].mean()) for i in range(3)]
    assert (lat[2] - lat[1]) / (req[2] - req[1]) > (lat[1] - lat[0]) / (req[1] - req[0])
    hours = _hours(series)
    assert requests[(hours >= 13) & (hours < 17)].mean() > 2.0 * requests[(hours >= 2) & (hours < 5)].mean()
    weekday = np.mod(np.floor(series.timestamps / DAY) + 3, 7)
    assert requests[weekday >= 5].mean() < 0.9 * requests[weekday < 5].mean()


def test_logs_are_counts_that_add_up_with_rare_errors() -> None:
    series = _series("logs", 2 * 1440)
    counts = series.values.astype(np.float64)
    assert counts.min() >= 0.0
    np.testing.assert_array_equal(counts, np.round(counts))
    np.testing.assert_array_equal(counts[:, 5], counts[:, :5].sum(axis=1))
    means = dict(zip(series.channels, counts.mean(axis=0), strict=True))
    assert means["critical"] < means["error"] < means["warn"] < means["info"]
    assert means["error"] < 0.01 * means["total"]
    hours = _hours(series)
    total = counts[:, 5]
    assert total[(hours >= 13) & (hours < 17)].mean() > 1.5 * total[(hours >= 2) & (hours < 5)].mean()
    # Overdispersed like real counters: variance well above the Poisson mean even within an hour.
    hour_blocks = counts[:1440, 0].reshape(24, 60)
    assert float(np.median(hour_blocks.var(axis=1) / hour_blocks.mean(axis=1))) > 1.2


# --------------------------------------------------------------------------------------------------------
# SimulatedStream


def _drain(stream: SimulatedStream, sizes: list[int]) -> tuple[Series, list[Label]]:
    parts = [stream.next_chunk(size) for size in sizes]
    values = np.concatenate([part.values for part, _ in parts])
    stamps = np.concatenate([part.timestamps for part, _ in parts])
    labels = [label for _, chunk_labels in parts for label in chunk_labels]
    return Series(stamps, stream.channels, values, stream.rate_hz), labels


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), domain=st.sampled_from(DOMAINS))
def test_chunks_of_any_size_equal_one_simulation(sizes: list[int], domain: str) -> None:
    stream = SimulatedStream("s", domain, start=START, rng=np.random.default_rng(11))
    chunked, labels = _drain(stream, sizes)
    whole = simulate(domain, n=sum(sizes), start=START, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(chunked.values, whole.values)
    np.testing.assert_array_equal(chunked.timestamps, whole.timestamps)
    assert labels == []


def test_stream_timestamps_continue_across_chunks_and_blocks() -> None:
    stream = SimulatedStream("s", "grid_frequency", start=START, rng=np.random.default_rng(1))
    series, _ = _drain(stream, [1000, 3000, 1, 5000])
    np.testing.assert_allclose(np.diff(series.timestamps), 1.0, rtol=0, atol=1e-6)
    # Values continue too: no jump at the internal block boundary (3600) beyond normal steps.
    steps = np.abs(np.diff(series.values[:, 0].astype(np.float64)))
    assert steps[3599] < 6.0 * np.quantile(steps, 0.99)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("position", [0, 777, 20_000])
def test_snapshot_restore_continues_identically(domain: str, position: int) -> None:
    stream = SimulatedStream(
        "s", domain, start=START, rng=np.random.default_rng(5), anomaly_rate_per_hour=60.0
    )
    stream.next_chunk(position)
    snapshot = json.loads(json.dumps(stream.snapshot()))
    assert len(json.dumps(snapshot)) < 4000  # compact: state, not buffered data
    restored = SimulatedStream.restore(snapshot)
    for size in (1, 500, 2000):
        (expected, expected_labels), (actual, actual_labels) = (
            stream.next_chunk(size),
            restored.next_chunk(size),
        )
        np.testing.assert_array_equal(actual.values, expected.values)
        np.testing.assert_array_equal(actual.timestamps, expected.timestamps)
        assert actual_labels == expected_labels
    assert restored.snapshot() == stream.snapshot()


def test_restore_rejects_a_foreign_snapshot() -> None:
    snapshot = SimulatedStream("s", "logs", start=START, rng=np.random.default_rng(0)).snapshot()
    with pytest.raises(ValueError, match="version"):
        SimulatedStream.restore({**snapshot, "version": 99})


def test_anomalous_stream_differs_from_clean_only_inside_its_labels() -> None:
    n = 6 * 3600
    stream = SimulatedStream(
        "grid", "grid_frequency", start=START, rng=np.random.default_rng(21), anomaly_rate_per_hour=3.0
    )
    noisy, labels = _drain(stream, [1234, 4000, n - 5234])
    clean = simulate("grid_frequency", n=n, start=START, rng=np.random.default_rng(21))
    assert len(labels) >= 6
    assert {label.kind for label in labels} >= {"spike", "level_shift", "dropout"}
    inside = np.zeros(n, dtype=bool)
    for label in labels:
        first, last = np.searchsorted(noisy.timestamps, [label.start, label.end])
        inside[first : last + 1] = True
        assert label.channels == ("frequency_hz",)
        assert label.kind in KINDS
    np.testing.assert_array_equal(noisy.values[~inside], clean.values[~inside])
    assert not np.array_equal(noisy.values[inside], clean.values[inside])


def test_stream_labels_arrive_with_the_chunk_they_start_in() -> None:
    stream = SimulatedStream(
        "s", "voltage", start=START, rng=np.random.default_rng(8), anomaly_rate_per_hour=4.0
    )
    seen = 0
    for _ in range(40):
        chunk, labels = stream.next_chunk(600)
        for label in labels:
            assert chunk.timestamps[0] <= label.start <= chunk.timestamps[-1]
        seen += len(labels)
    assert seen >= 5


def test_anomaly_free_warm_up_is_respected() -> None:
    stream = SimulatedStream(
        "s",
        "server",
        start=START,
        rng=np.random.default_rng(2),
        anomaly_rate_per_hour=2.0,
        anomaly_free_s=2 * DAY,
    )
    _, labels = stream.next_chunk(4 * 1440)
    assert labels
    assert min(label.start for label in labels) >= START + 2 * DAY


def test_stream_rejects_bad_settings() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="anomaly_rate"):
        SimulatedStream("s", "ecg", start=START, rng=rng, anomaly_rate_per_hour=-1.0)
    with pytest.raises(ValueError, match="anomaly_free_s"):
        SimulatedStream("s", "ecg", start=START, rng=rng, anomaly_free_s=float("nan"))
    with pytest.raises(ValueError, match="non-negative"):
        SimulatedStream("s", "ecg", start=START, rng=rng).next_chunk(-5)
