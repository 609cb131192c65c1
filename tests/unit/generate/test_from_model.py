"""Anomalies drawn from a trained model: what changes and what must not, determinism, the CLI, and that the
detector finds them more often the more severe they are."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from streamwatch.cli import main
from streamwatch.codecs import read_csv as read_csv_frame
from streamwatch.config import DetectorConfig, StreamwatchConfig, TrainingConfig
from streamwatch.core.profile import fit_profile
from streamwatch.evaluate.model_generated import (
    TrainedSeries,
    generate_after_prefix,
    score_generated,
    train_on_simulated,
)
from streamwatch.generate.from_model import (
    autoencoder_of,
    generate_from_model,
    weight_noise_scale,
)
from streamwatch.generate.inject import KINDS, MODEL_KINDS, Label, read_labels, write_csv
from streamwatch.generate.simulate import Series, simulate
from streamwatch.models.group_store import save_group_model

# A couple of epochs give a model with a real latent code in about a second: enough for everything but
# detection quality.
TINY = StreamwatchConfig(detector=DetectorConfig(training=TrainingConfig(max_epochs=2)))
QUICK = StreamwatchConfig(detector=DetectorConfig(training=TrainingConfig(max_epochs=15)))


@pytest.fixture(scope="module")
def voltage() -> TrainedSeries:
    return train_on_simulated("voltage", samples=3000, seed=11, config=TINY)


@pytest.fixture(scope="module")
def server() -> TrainedSeries:
    # Two days at one sample a minute: a daily season and a count channel (requests) in the profile.
    return train_on_simulated("server", samples=2880, seed=12, config=TINY)


def _generate(
    trained: TrainedSeries,
    *,
    kinds: tuple[str, ...] | list[str] = MODEL_KINDS,
    severity: float = 1.0,
    seed: int = 0,
    count: int = 4,
) -> tuple[Series, list[Label]]:
    return generate_after_prefix(trained, kinds=kinds, severity=severity, seed=seed, count=count)


def _span(series: Series, label: Label) -> tuple[int, int]:
    """[start, stop) sample indices of a label."""
    first, last = np.searchsorted(series.timestamps, [label.start, label.end])
    return int(first), int(last) + 1


def _rms(values: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(np.square(values.astype(np.float64)))))


# --------------------------------------------------------------------------------------------------------
# What changes, and what does not


def test_severity_zero_leaves_the_series_unchanged_but_labels_where_anomalies_would_be(
    voltage: TrainedSeries,
) -> None:
    out, labels = _generate(voltage, severity=0.0)
    np.testing.assert_array_equal(out.values, voltage.base.values)
    np.testing.assert_array_equal(out.timestamps, voltage.base.timestamps)
    assert len(labels) == 4
    assert all(label.severity == 0.0 and label.channels == voltage.base.channels for label in labels)


def test_only_the_labelled_segments_change_and_each_keeps_its_mean(voltage: TrainedSeries) -> None:
    out, labels = _generate(voltage, count=6)
    changed = out.values.astype(np.float64) - voltage.base.values
    untouched = np.ones(len(out), dtype=bool)
    for label in labels:
        start, stop = _span(out, label)
        untouched[start:stop] = False
        segment = changed[start:stop]
        assert _rms(segment) > 0.0, label
        # The model judges shape only, so the generator moves shape only: the segment's level stays.
        assert np.all(np.abs(segment.mean(axis=0)) <= 0.02 * _rms(segment)), label
    np.testing.assert_array_equal(changed[untouched], 0.0)


def test_the_splice_fades_in_and_out_without_a_step(voltage: TrainedSeries) -> None:
    out, labels = _generate(voltage, count=6)
    changed = np.abs(out.values.astype(np.float64) - voltage.base.values)
    for label in labels:
        start, stop = _span(out, label)
        peak = changed[start:stop].max()
        assert changed[start].max() <= 0.02 * peak, label
        assert changed[stop - 1].max() <= 0.02 * peak, label


def test_segments_are_whole_windows_on_the_hop_grid_after_the_normal_prefix(voltage: TrainedSeries) -> None:
    out, labels = _generate(voltage, count=6)
    window, hop = voltage.model.spec.length, voltage.model.spec.hop
    spans = [_span(out, label) for label in labels]
    assert spans == sorted(spans)
    for start, stop in spans:
        assert start >= voltage.cut
        assert (stop - start) % window == 0
        assert start % hop == 0
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert start - stop >= window  # no detector window sees two anomalies


def test_severity_scales_the_size_of_the_change(voltage: TrainedSeries) -> None:
    sizes = []
    for severity in (0.5, 1.0, 2.0):
        out, labels = _generate(voltage, severity=severity, seed=3)
        segments = [_span(out, label) for label in labels]
        change = np.concatenate(
            [out.values[a:b].astype(np.float64) - voltage.base.values[a:b] for a, b in segments]
        )
        sizes.append(_rms(change))
    assert sizes[0] < sizes[1] < sizes[2]
    assert 1.5 <= sizes[1] / sizes[0] <= 2.5
    assert 1.5 <= sizes[2] / sizes[1] <= 2.5


def test_generation_is_deterministic_given_the_seed(voltage: TrainedSeries) -> None:
    first, first_labels = _generate(voltage, seed=7)
    again, again_labels = _generate(voltage, seed=7)
    other, _ = _generate(voltage, seed=8)
    np.testing.assert_array_equal(first.values, again.values)
    assert first_labels == again_labels
    assert not np.array_equal(first.values, other.values)


def test_the_given_model_is_never_modified(voltage: TrainedSeries) -> None:
    before = autoencoder_of(voltage.model).tensors()
    _generate(voltage, kinds=["encoder_weights"], severity=2.0)
    after = autoencoder_of(voltage.model).tensors()
    assert before.keys() == after.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_model_and_classic_kinds_mix(voltage: TrainedSeries) -> None:
    out, labels = _generate(voltage, kinds=["latent_offset", "level_shift"], count=4)
    assert Counter(label.kind for label in labels) == {"latent_offset": 2, "level_shift": 2}
    for label in labels:
        start, stop = _span(out, label)
        assert not np.array_equal(out.values[start:stop], voltage.base.values[start:stop]), label
    shifted = [label for label in labels if label.kind == "level_shift"]
    assert all(len(label.channels) == 1 for label in shifted)  # as classic injection labels it


def test_counts_stay_non_negative_integers(server: TrainedSeries) -> None:
    out, labels = _generate(server, count=4)
    base = server.base.values
    counts = np.all((base >= 0) & (base == np.round(base)), axis=0)
    assert counts.any()  # requests
    for label in labels:
        start, stop = _span(out, label)
        segment = out.values[start:stop][:, counts]
        assert np.all(segment >= 0) and np.array_equal(segment, np.round(segment)), label
    assert np.all(out.values[:, np.all(base >= 0, axis=0)] >= 0)


def test_denormalise_inverts_the_profile(server: TrainedSeries) -> None:
    base = server.base
    profile = fit_profile(base.channels, base.timestamps, base.values)
    assert profile.counts is not None and profile.seasonality is not None  # both non-linear parts in play
    normalised = profile.normalise(base.timestamps, base.values).astype(np.float64)
    back = profile.denormalise(base.timestamps, normalised)
    np.testing.assert_allclose(back, base.values, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(back[:, profile.counts], base.values[:, profile.counts])


def test_weight_noise_scale_finds_the_scale_that_moves_the_codes_as_asked() -> None:
    latent = np.zeros(8, dtype=np.float32)

    def superlinear(amount: float) -> npt.NDArray[np.float32]:
        return np.full(8, amount**3, dtype=np.float32)

    scale = weight_noise_scale(superlinear, latent, 0.5)
    assert abs(scale**3 / 0.5 - 1.0) <= 0.05

    def saturating(amount: float) -> npt.NDArray[np.float32]:
        return np.full(8, 0.1 * np.tanh(amount), dtype=np.float32)

    # Asked for more than the network can give: the most it can, not an endless search.
    assert 0.1 * np.tanh(weight_noise_scale(saturating, latent, 1.0)) >= 0.099


# --------------------------------------------------------------------------------------------------------
# Refusals


def test_a_pca_model_is_refused_with_the_fix() -> None:
    pca = StreamwatchConfig(detector=DetectorConfig(model="pca"))
    trained = train_on_simulated("voltage", samples=2000, seed=1, config=pca)
    with pytest.raises(ValueError, match="train a conv or lstm model"):
        _generate(trained)


def test_bad_requests_are_refused(voltage: TrainedSeries) -> None:
    with pytest.raises(ValueError, match="unknown anomaly kind 'wobble'"):
        _generate(voltage, kinds=["wobble"])
    with pytest.raises(ValueError, match="severity"):
        _generate(voltage, severity=-1.0)
    with pytest.raises(ValueError, match="anomalies of at least one window"):
        _generate(voltage, count=40)
    grid = simulate("grid_frequency", n=3000, start=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="channels"):
        generate_from_model(
            voltage.model,
            grid,
            stream="grid",
            rng=np.random.default_rng(0),
            count=2,
            severity=1.0,
            normal_fraction=0.3,
        )


# --------------------------------------------------------------------------------------------------------
# Labels and the command line


def test_labels_use_the_labels_json_of_generate(voltage: TrainedSeries, tmp_path: Path) -> None:
    from streamwatch.generate.inject import write_labels

    _, labels = _generate(voltage, severity=0.5)
    path = tmp_path / "labels.json"
    write_labels(path, labels)
    written = json.loads(path.read_text())["labels"]
    assert [item["kind"] for item in written] == [label.kind for label in labels]
    assert all(item["severity"] == 0.5 and item["kind"] in MODEL_KINDS for item in written)
    assert all(set(item) == {"start", "end", "kind", "channels", "severity"} for item in written)


def test_labels_of_model_kinds_read_back(voltage: TrainedSeries, tmp_path: Path) -> None:
    from streamwatch.generate.inject import write_labels

    _, labels = _generate(voltage)
    write_labels(tmp_path / "labels.json", labels)
    assert read_labels(tmp_path / "labels.json") == labels


def test_cli_generates_from_a_saved_model_into_a_base_csv(voltage: TrainedSeries, tmp_path: Path) -> None:
    save_group_model(tmp_path / "model", voltage.model)
    # Named after the stream the model was trained on, so its profile normalises the base.
    write_csv(tmp_path / "voltage.csv", voltage.base)
    model, base, out_csv = str(tmp_path / "model"), str(tmp_path / "voltage.csv"), str(tmp_path / "o.csv")
    args = ["generate", "--from-model", model, "--base", base, "--kinds", "latent_noise,spike"]
    assert main([*args, "--anomalies", "4", "--seed", "2", "--out", out_csv]) == 0
    out = read_csv_frame(tmp_path / "o.csv", stream="o")
    labels = json.loads((tmp_path / "o.labels.json").read_text())["labels"]
    assert Counter(item["kind"] for item in labels) == {"latent_noise": 2, "spike": 2}
    assert out.channels == voltage.base.channels
    np.testing.assert_array_equal(out.values[: voltage.cut], voltage.base.values[: voltage.cut])
    assert not np.array_equal(out.values, voltage.base.values)


def test_cli_without_a_model_keeps_simulating_and_injecting_classic_kinds(tmp_path: Path) -> None:
    args = ["generate", "--domain", "voltage", "--samples", "3000", "--anomalies", "3", "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "v.csv")]) == 0
    labels = read_labels(tmp_path / "v.labels.json")
    assert len(labels) == 3 and all(label.kind in KINDS for label in labels)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --domain"),
        (["--base", "b.csv", "--samples", "100"], "leave out --samples with --base"),
        (["--base", "b.csv", "--domain", "voltage"], "leave out --domain with --base"),
    ],
)
def test_cli_refuses_options_that_do_not_combine(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", *extra, "--out", str(tmp_path / "x.csv")]) == 2
    assert message in capsys.readouterr().err


def test_cli_names_the_fix_for_a_pca_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pca = StreamwatchConfig(detector=DetectorConfig(model="pca"))
    trained = train_on_simulated("voltage", samples=2000, seed=1, config=pca)
    save_group_model(tmp_path / "pca", trained.model)
    args = ["generate", "--from-model", str(tmp_path / "pca"), "--domain", "voltage", "--samples", "2000"]
    assert main([*args, "--out", str(tmp_path / "x.csv")]) == 1
    assert "train a conv or lstm model" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# Detection


@pytest.mark.slow
def test_detection_rate_rises_with_severity() -> None:
    trained = train_on_simulated("voltage", samples=9000, seed=5, config=QUICK)
    recall: dict[float, float] = {}
    false_alarms: dict[float, int] = {}
    for severity in (0.0, 0.25, 0.5, 1.0, 2.0):
        scores = [
            score_generated(trained, QUICK, kinds=MODEL_KINDS, severity=severity, seed=seed).score
            for seed in (0, 1, 2)
        ]
        recall[severity] = sum(item.found for item in scores) / sum(item.labels for item in scores)
        false_alarms[severity] = sum(item.false_alarms for item in scores)
    severities = sorted(recall)
    for lower, higher in itertools.pairwise(severities):
        assert recall[higher] >= recall[lower] - 0.1, recall  # monotone up to a miss or two
    assert recall[0.0] <= 0.2, recall  # chance: an alert that happens to overlap a (no-op) label
    assert recall[1.0] >= 0.8, recall
    assert recall[2.0] >= 0.95, recall
    assert max(false_alarms.values()) <= 3, false_alarms
