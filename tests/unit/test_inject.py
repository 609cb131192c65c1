"""Anomaly injection: locality, magnitude, kind-specific shape, placement, and the file formats."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamwatch.generate import (
    DOMAINS,
    KINDS,
    Label,
    Series,
    inject,
    inject_many,
    max_injections,
    read_csv,
    read_labels,
    simulate,
    write_csv,
    write_labels,
)

START = 1_767_225_600.0
LENGTH_S = {"grid_frequency": 300, "voltage": 300, "ecg": 1500, "server": 90, "logs": 60}
SAMPLES = {"grid_frequency": 4000, "voltage": 4000, "ecg": 250 * 24, "server": 1440, "logs": 1440}


@functools.cache
def _base(domain: str) -> Series:
    return simulate(domain, n=SAMPLES[domain], start=START, rng=np.random.default_rng(42))


def _robust_sigma(column: npt.NDArray[Any]) -> float:
    """The larger of the MAD sigma and the central-98% sigma: a lower bound of inject's unit."""
    x = column.astype(np.float64)
    mad = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    q01, q99 = np.quantile(x, [0.01, 0.99])
    return max(mad, float(q99 - q01) / 4.6527)


def _span(series: Series, label: Label) -> tuple[int, int]:
    first, last = np.searchsorted(series.timestamps, [label.start, label.end])
    return int(first), int(last)


def _outside(n: int, spans: list[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    mask = np.ones(n, dtype=bool)
    for first, last in spans:
        mask[first : last + 1] = False
    return mask


def _applicable(domain: str, kind: str) -> bool:
    return kind != "correlation_break" or len(_base(domain).channels) > 1


CASES = [(domain, kind) for domain in DOMAINS for kind in KINDS if _applicable(domain, kind)]


# --------------------------------------------------------------------------------------------------------
# Locality and labels


@pytest.mark.parametrize(("domain", "kind"), CASES)
def test_only_the_labelled_span_changes(domain: str, kind: str) -> None:
    base = _base(domain)
    before = base.values.copy()
    at, length = SAMPLES[domain] // 2, LENGTH_S[domain]
    out, label = inject(base, kind, at=at, length=length, rng=np.random.default_rng(1), channels=[0])
    np.testing.assert_array_equal(base.values, before)  # input untouched
    assert out is not base and out.values is not base.values
    assert out.channels == base.channels
    np.testing.assert_array_equal(out.timestamps, base.timestamps)
    assert label.kind == kind
    assert label.channels == (base.channels[0],)
    assert label.severity == 1.0
    first, last = _span(out, label)
    assert first == at
    expected_last = at + length - 1
    if kind == "spike":
        assert at <= last <= at + 2
    else:
        assert last == expected_last
    assert label.start == base.timestamps[at]
    assert label.end == base.timestamps[last]
    outside = _outside(len(base), [(first, last)])
    np.testing.assert_array_equal(out.values[outside], before[outside])
    np.testing.assert_array_equal(out.values[:, 1:], before[:, 1:])  # other channels untouched
    assert not np.array_equal(out.values[first : last + 1, 0], before[first : last + 1, 0])


def test_dropout_defaults_to_every_channel_and_zeros_them() -> None:
    base = _base("voltage")
    out, label = inject(base, "dropout", at=100, length=50, rng=np.random.default_rng(0))
    assert label.channels == base.channels
    assert (out.values[100:150] == 0.0).all()
    assert (out.values[150:] == base.values[150:]).all()


def test_flatline_sticks_at_the_value_it_had() -> None:
    base = _base("grid_frequency")
    out, _ = inject(base, "flatline", at=1000, length=400, rng=np.random.default_rng(0))
    segment = out.values[1000:1400, 0]
    assert segment.std() == 0.0
    assert segment[0] == base.values[1000, 0]


@pytest.mark.parametrize("domain", DOMAINS)
def test_severity_one_is_clearly_anomalous(domain: str) -> None:
    base = _base(domain)
    at, length = 500, LENGTH_S[domain]
    sigma = _robust_sigma(base.values[:, 0])
    for kind, least in (("spike", 6.0), ("level_shift", 3.0), ("drift", 4.0)):
        out, _ = inject(base, kind, at=at, length=length, rng=np.random.default_rng(3), channels=[0])
        deviation = np.abs(out.values[:, 0].astype(np.float64) - base.values[:, 0]).max()
        # Counts round to whole lines, hence a little slack.
        assert deviation >= least * sigma - 0.5, kind


@pytest.mark.parametrize("domain", ["grid_frequency", "ecg", "server"])
@pytest.mark.parametrize("kind", ["spike", "level_shift", "drift", "variance_burst"])
def test_magnitude_grows_with_severity(domain: str, kind: str) -> None:
    base = _base(domain)

    def deviation(severity: float) -> float:
        out, _ = inject(
            base,
            kind,
            at=300,
            length=LENGTH_S[domain],
            rng=np.random.default_rng(7),
            severity=severity,
            channels=[0],
        )
        diff = out.values[:, 0].astype(np.float64) - base.values[:, 0]
        return float(np.sqrt(np.mean(diff**2)))

    small, medium, large = deviation(0.5), deviation(1.0), deviation(2.0)
    assert small < medium < large
    if kind != "variance_burst":
        assert large == pytest.approx(2.0 * medium, rel=0.05)


def test_variance_burst_multiplies_the_noise() -> None:
    base = _base("grid_frequency")
    out, _ = inject(base, "variance_burst", at=1000, length=1000, rng=np.random.default_rng(2))
    before = np.diff(base.values[1000:2000, 0].astype(np.float64)).std()
    after = np.diff(out.values[1000:2000, 0].astype(np.float64)).std()
    assert after > 3.0 * before


def test_correlation_break_decouples_one_phase_but_keeps_its_level_and_spread() -> None:
    base = _base("voltage")
    ratios = []
    for seed in range(5):
        out, label = inject(
            base, "correlation_break", at=1500, length=600, rng=np.random.default_rng(seed), channels=[0]
        )
        assert label.channels == ("v_a",)
        old = base.values[1500:2100].astype(np.float64)
        new = out.values[1500:2100].astype(np.float64)
        assert new[:, 0].mean() == pytest.approx(old[:, 0].mean(), abs=0.01)
        assert new[:, 0].std() == pytest.approx(old[:, 0].std(), rel=0.01)
        ratios.append((new[:, 0] - new[:, 1]).std() / (old[:, 0] - old[:, 1]).std())
    assert float(np.median(ratios)) > 1.5


def test_correlation_break_on_server_cpu_stops_following_requests() -> None:
    base = _base("server")
    out, _ = inject(base, "correlation_break", at=600, length=240, rng=np.random.default_rng(4), channels=[0])
    requests = base.values[600:840, 2]
    before = np.corrcoef(base.values[600:840, 0], requests)[0, 1]
    after = np.corrcoef(out.values[600:840, 0], requests)[0, 1]
    assert before > 0.6
    assert after < before - 0.3


def _beats(ecg: npt.NDArray[Any], threshold: float) -> int:
    above = ecg > threshold
    return int(np.count_nonzero(above[1:] & ~above[:-1]))


@pytest.mark.parametrize("seed", range(6))
def test_pattern_change_time_warps_a_periodic_signal(seed: int) -> None:
    base = _base("ecg")
    at, length = 2000, 2000  # 8 s, about nine beats
    out, _ = inject(base, "pattern_change", at=at, length=length, rng=np.random.default_rng(seed))
    threshold = 0.6 * float(np.quantile(base.values[:, 0], 0.995))
    old = base.values[at : at + length, 0]
    new = out.values[at : at + length, 0]
    ratio = _beats(new, threshold) / _beats(old, threshold)
    assert ratio >= 1.3 or ratio <= 0.75
    assert _beats(new, threshold) >= 4  # still a train of beats, only faster or slower
    assert not np.array_equal(np.sort(new), np.sort(old))  # resampled, not merely reordered
    assert float(np.median(new)) == pytest.approx(float(np.median(old)), abs=0.05)  # level kept
    assert float(new.max()) == pytest.approx(float(old.max()), rel=0.35)  # amplitude kept


@pytest.mark.parametrize("domain", ["grid_frequency", "voltage", "logs"])
def test_pattern_change_reshapes_an_aperiodic_signal_keeping_its_values(domain: str) -> None:
    base = _base(domain)
    out, _ = inject(
        base, "pattern_change", at=400, length=LENGTH_S[domain], rng=np.random.default_rng(0), channels=[0]
    )
    old = base.values[400 : 400 + LENGTH_S[domain], 0]
    new = out.values[400 : 400 + LENGTH_S[domain], 0]
    np.testing.assert_array_equal(np.sort(new), np.sort(old))  # same level and variance, exactly
    assert not np.array_equal(new, old)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32), channel=st.integers(0, 5))
def test_counts_stay_non_negative_integers(kind: str, seed: int, channel: int) -> None:
    base = _base("logs")
    out, _ = inject(
        base, kind, at=300, length=60, rng=np.random.default_rng(seed), channels=[channel], severity=2.0
    )
    values = out.values.astype(np.float64)
    assert values.min() >= 0.0
    np.testing.assert_array_equal(values, np.round(values))


def test_inject_rejects_bad_requests() -> None:
    grid, voltage = _base("grid_frequency"), _base("voltage")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        inject(grid, "meteor", at=0, length=10, rng=rng)
    with pytest.raises(ValueError, match="does not fit"):
        inject(grid, "spike", at=len(grid) - 5, length=10, rng=rng)
    with pytest.raises(ValueError, match="does not fit"):
        inject(grid, "spike", at=0, length=0, rng=rng)
    with pytest.raises(ValueError, match="two channels"):
        inject(grid, "correlation_break", at=0, length=10, rng=rng)
    with pytest.raises(ValueError, match="untouched"):
        inject(voltage, "correlation_break", at=0, length=10, rng=rng, channels=[0, 1, 2])
    with pytest.raises(ValueError, match="out of range"):
        inject(voltage, "spike", at=0, length=10, rng=rng, channels=[3])
    with pytest.raises(ValueError, match="distinct"):
        inject(voltage, "spike", at=0, length=10, rng=rng, channels=[1, 1])
    with pytest.raises(ValueError, match="severity"):
        inject(voltage, "spike", at=0, length=10, rng=rng, severity=0.0)


# --------------------------------------------------------------------------------------------------------
# inject_many


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    domain=st.sampled_from(["grid_frequency", "voltage"]),
    count=st.integers(0, 8),
    min_gap=st.integers(0, 200),
    shortest=st.integers(1, 60),
    extra=st.integers(0, 120),
    prefix=st.integers(0, 1500),
    suffix=st.integers(0, 300),
    seed=st.integers(0, 2**32),
)
def test_inject_many_keeps_gaps_and_the_protected_prefix(
    domain: str, count: int, min_gap: int, shortest: int, extra: int, prefix: int, suffix: int, seed: int
) -> None:
    base = _base(domain)
    lengths = (shortest, shortest + extra)
    fits = max_injections(
        len(base), min_gap=min_gap, length_range=lengths, protect_prefix=prefix, protect_suffix=suffix
    )
    assume(count <= fits)
    out, labels = inject_many(
        base,
        rng=np.random.default_rng(seed),
        count=count,
        min_gap=min_gap,
        length_range=lengths,
        protect_prefix=prefix,
        protect_suffix=suffix,
    )
    assert len(labels) == count
    spans = [_span(out, label) for label in labels]
    assert spans == sorted(spans)
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert first - last - 1 >= min_gap
    for (first, last), label in zip(spans, labels, strict=True):
        assert first >= prefix
        assert last <= len(base) - 1 - suffix
        assert last - first + 1 <= lengths[1]
        assert label.kind in KINDS
    assert all(label.kind != "correlation_break" for label in labels) or len(base.channels) > 1
    outside = _outside(len(base), spans)
    np.testing.assert_array_equal(out.values[outside], base.values[outside])


@settings(max_examples=30, deadline=None)
@given(
    min_gap=st.integers(0, 100),
    shortest=st.integers(1, 50),
    prefix=st.integers(0, 3000),
    seed=st.integers(0, 99),
)
def test_max_injections_is_exactly_what_fits(min_gap: int, shortest: int, prefix: int, seed: int) -> None:
    base = _base("grid_frequency")
    lengths = (shortest, shortest + 10)
    fits = max_injections(len(base), min_gap=min_gap, length_range=lengths, protect_prefix=prefix)
    if fits > 0:
        inject_many(
            base,
            rng=np.random.default_rng(seed),
            count=fits,
            min_gap=min_gap,
            length_range=lengths,
            protect_prefix=prefix,
        )
    with pytest.raises(ValueError, match="do not fit"):
        inject_many(
            base,
            rng=np.random.default_rng(seed),
            count=fits + 1,
            min_gap=min_gap,
            length_range=lengths,
            protect_prefix=prefix,
        )


def test_inject_many_deals_every_kind() -> None:
    base = _base("voltage")
    _, labels = inject_many(base, rng=np.random.default_rng(0), count=16, min_gap=20, length_range=(30, 60))
    kinds = [label.kind for label in labels]
    assert sorted(kinds) == sorted(KINDS * 2)


def test_inject_many_skips_correlation_break_on_one_channel() -> None:
    base = _base("grid_frequency")
    _, labels = inject_many(base, rng=np.random.default_rng(0), count=14, min_gap=20, length_range=(30, 60))
    assert "correlation_break" not in {label.kind for label in labels}
    with pytest.raises(ValueError, match="applies"):
        inject_many(
            base,
            rng=np.random.default_rng(0),
            kinds=["correlation_break"],
            count=1,
            min_gap=0,
            length_range=(5, 5),
        )


def test_inject_many_rejects_bad_settings() -> None:
    base = _base("grid_frequency")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="length_range"):
        inject_many(base, rng=rng, count=1, min_gap=0, length_range=(10, 5))
    with pytest.raises(ValueError, match="non-negative"):
        inject_many(base, rng=rng, count=1, min_gap=-1, length_range=(5, 10))
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        inject_many(base, rng=rng, kinds=["meteor"], count=1, min_gap=0, length_range=(5, 10))


# --------------------------------------------------------------------------------------------------------
# Files


def test_labels_round_trip_through_json(tmp_path: Path) -> None:
    base = _base("voltage")
    _, labels = inject_many(base, rng=np.random.default_rng(5), count=8, min_gap=50, length_range=(20, 80))
    path = tmp_path / "labels.json"
    write_labels(path, labels)
    body = json.loads(path.read_text(encoding="utf-8"))
    assert set(body) == {"labels"}
    assert body["labels"][0]["start"].endswith("Z")
    back = read_labels(path)
    assert len(back) == len(labels)
    for original, restored in zip(labels, back, strict=True):
        assert restored.kind == original.kind
        assert restored.channels == original.channels
        assert restored.severity == original.severity
        assert restored.start == pytest.approx(original.start, abs=1e-3)
        assert restored.end == pytest.approx(original.end, abs=1e-3)
        assert Label.from_json(original.to_json()) == restored


@pytest.mark.parametrize(
    "broken",
    [
        {
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-01T00:01:00Z",
            "kind": "meteor",
            "channels": [],
            "severity": 1,
        },
        {
            "start": "2026-01-01T00:02:00Z",
            "end": "2026-01-01T00:01:00Z",
            "kind": "spike",
            "channels": [],
            "severity": 1,
        },
        {
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-01T00:01:00Z",
            "kind": "spike",
            "channels": "x",
            "severity": 1,
        },
        {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:01:00Z", "kind": "spike", "channels": []},
        {"start": 5.0, "end": "2026-01-01T00:01:00Z", "kind": "spike", "channels": [], "severity": 1},
        {"start": "yesterday", "end": "2026-01-01T00:01:00Z", "kind": "spike", "channels": [], "severity": 1},
    ],
)
def test_malformed_labels_are_rejected(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case fails for its own reason
        Label.from_json(broken)


def test_read_labels_rejects_a_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('[{"start": "2026-01-01T00:00:00Z"}]', encoding="utf-8")
    with pytest.raises(ValueError, match="labels"):
        read_labels(path)


@pytest.mark.parametrize("domain", DOMAINS)
def test_csv_round_trip_keeps_every_value(domain: str, tmp_path: Path) -> None:
    base = _base(domain)
    path = tmp_path / f"{domain}.csv"
    write_csv(path, base)
    header, first = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header == ",".join(("timestamp", *base.channels))
    assert first.startswith("2026-01-01T00:00:00.000Z,")
    back = read_csv(path)
    assert back.channels == base.channels
    np.testing.assert_array_equal(back.values, base.values)
    np.testing.assert_allclose(back.timestamps, base.timestamps, rtol=0, atol=1e-3)
    assert back.rate_hz == pytest.approx(base.rate_hz, rel=1e-6)


def test_csv_keeps_millihertz_precision(tmp_path: Path) -> None:
    values = np.array([[50.0123], [49.9871], [230.1234]], dtype=np.float32)
    series = Series(START + np.arange(3.0), ("frequency_hz",), values, 1.0)
    path = tmp_path / "precise.csv"
    write_csv(path, series)
    text = path.read_text(encoding="utf-8")
    assert ",50.0123\n" in text
    assert ",49.9871\n" in text
    assert ",230.1234\n" in text


def test_read_csv_rejects_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,x\n2026-01-01T00:00:00.000Z,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        read_csv(path)
    path.write_text("timestamp,x\n2026-01-01T00:00:00.000Z,1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="fields"):
        read_csv(path)
    path.write_text("timestamp,x\n2026-01-01T00:00:00.000Z,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="rate"):
        read_csv(path)
    assert read_csv(path, rate_hz=2.0).rate_hz == 2.0


def test_write_csv_refuses_names_that_would_break_the_format(tmp_path: Path) -> None:
    series = Series(np.arange(2.0), ("a,b",), np.zeros((2, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match="CSV"):
        write_csv(tmp_path / "x.csv", series)
