"""The contract every reconstructor kind must keep, run on each of them (conv, lstm, pca).

Shape in == shape out for any window shape, finite output, determinism for a seed, an exact save/load round
trip, and the point of it all: windows with an injected anomaly reconstruct worse than fresh normal ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamwatch.core.reconstructor import Batch, Reconstructor
from streamwatch.models import build_reconstructor, load_model, save_model

KINDS = ("conv", "lstm", "pca")

# Small, fast training for the torch kinds (PCA has no training settings); the LSTM gets a larger step to
# leave its initial plateau on the few windows used here.
FAST_TRAINING: dict[str, dict[str, Any]] = {
    "conv": {"max_epochs": 30, "patience": 4, "learning_rate": 5e-3},
    "lstm": {"max_epochs": 30, "patience": 4, "learning_rate": 1e-2},
    "pca": {},
}

PERIOD = 16.0
NOISE = 0.15
ANOMALY_LENGTH = 32
# Anomalous windows must reconstruct at least this many times worse than fresh normal windows, on average.
# Measured ratios are 4x (flatline of one channel in three) to 180x (level shift); 3x holds for every seed
# tried and leaves room for other platforms.
MIN_ERROR_RATIO = 3.0

Injector = Callable[[np.random.Generator, Batch], Batch]


def build(kind: str, length: int, channels: int, **training: Any) -> Reconstructor:
    """A model of `kind` with fast training settings, `training` overriding them for the torch kinds."""
    settings = {**FAST_TRAINING[kind], **training} if FAST_TRAINING[kind] else {}
    return build_reconstructor(kind, length=length, channels=channels, **settings)


def noisy_sine(rng: np.random.Generator, count: int, length: int, channels: int) -> Batch:
    """A rhythm at random phase; with several channels, the same rhythm shifted and scaled per channel."""
    time = np.arange(length, dtype=np.float64)[None, :, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, (count, 1, 1))
    lag = np.linspace(0.0, 1.0, channels)[None, None, :]
    amplitude = np.linspace(1.4, 0.8, channels)[None, None, :]
    clean = amplitude * np.sin(2.0 * np.pi * time / PERIOD + phase + lag)
    return (clean + NOISE * rng.standard_normal((count, length, channels))).astype(np.float32)


def mean_squared_error(model: Reconstructor, windows: Batch) -> float:
    return float(np.mean((model.reconstruct(windows) - windows) ** 2))


def _one_channel_per_window(rng: np.random.Generator, windows: Batch) -> Iterator[tuple[int, int]]:
    for index, channel in enumerate(rng.integers(0, windows.shape[2], len(windows))):
        yield index, int(channel)


def inject_spike(rng: np.random.Generator, windows: Batch) -> Batch:
    hit = windows.copy()
    length = windows.shape[1]
    for index, channel in _one_channel_per_window(rng, windows):
        hit[index, rng.integers(length // 4, 3 * length // 4), channel] += rng.choice([-5.0, 5.0])
    return hit


def inject_level_shift(rng: np.random.Generator, windows: Batch) -> Batch:
    hit = windows.copy()
    half = windows.shape[1] // 2
    for index, channel in _one_channel_per_window(rng, windows):
        hit[index, half:, channel] += 2.5
    return hit


def inject_random_walk(rng: np.random.Generator, windows: Batch) -> Batch:
    """The second half of one channel wanders off as a random walk instead of keeping its rhythm."""
    hit = windows.copy()
    half = windows.shape[1] // 2
    for index, channel in _one_channel_per_window(rng, windows):
        steps = rng.normal(0.0, 0.3, windows.shape[1] - half)
        hit[index, half:, channel] = hit[index, half - 1, channel] + np.cumsum(steps)
    return hit


def inject_flatline(rng: np.random.Generator, windows: Batch) -> Batch:
    """The second half of one channel freezes at its mean: the rhythm (not just the noise) disappears."""
    hit = windows.copy()
    half = windows.shape[1] // 2
    for index, channel in _one_channel_per_window(rng, windows):
        hit[index, half:, channel] = hit[index, half:, channel].mean()
    return hit


def invert_one_channel(rng: np.random.Generator, windows: Batch) -> Batch:
    """One channel flips sign: each channel alone still looks normal, their relation does not."""
    hit = windows.copy()
    for index, channel in _one_channel_per_window(rng, windows):
        hit[index, :, channel] = -hit[index, :, channel]
    return hit


INJECTORS: dict[str, Injector] = {
    "spike": inject_spike,
    "level_shift": inject_level_shift,
    "random_walk": inject_random_walk,
    "flatline": inject_flatline,
}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(
    scope="module",
    params=[(kind, channels) for kind in KINDS for channels in (1, 3)],
    ids=lambda param: f"{param[0]}-{param[1]}ch",
)
def trained(request: pytest.FixtureRequest) -> tuple[Reconstructor, Batch]:
    """A model trained on normal windows, and fresh windows of the same process it has never seen."""
    kind, channels = request.param
    rng = np.random.default_rng(7)
    model = build(kind, ANOMALY_LENGTH, channels)
    model.fit(noisy_sine(rng, 600, ANOMALY_LENGTH, channels), seed=3)
    return model, noisy_sine(rng, 200, ANOMALY_LENGTH, channels)


@pytest.mark.parametrize("length", [16, 50, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape_and_is_finite(kind: str, length: int, channels: int) -> None:
    rng = np.random.default_rng(length * 10 + channels)
    model = build(kind, length, channels, max_epochs=1)
    model.fit(noisy_sine(rng, 40, length, channels), seed=0)
    for count in (0, 1, 7):
        windows = noisy_sine(rng, count, length, channels)
        reconstructed = model.reconstruct(windows)
        assert reconstructed.shape == windows.shape
        assert reconstructed.dtype == np.float32
        assert np.isfinite(reconstructed).all()


def test_wrong_window_shape_is_rejected(kind: str) -> None:
    model = build(kind, 32, 2, max_epochs=1)
    with pytest.raises(ValueError, match="expects windows shaped"):
        model.reconstruct(np.zeros((4, 32, 3), dtype=np.float32))


def test_kind_and_metadata_are_json_ready(kind: str) -> None:
    model = build(kind, 32, 2, max_epochs=1)
    assert model.kind == kind
    assert isinstance(model, Reconstructor)
    metadata = model.metadata()
    assert metadata["length"] == 32
    assert metadata["channels"] == 2
    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata
    assert all(value.dtype == np.float32 for value in model.tensors().values())


def test_same_seed_gives_identical_reconstructions(kind: str) -> None:
    rng = np.random.default_rng(11)
    train = noisy_sine(rng, 200, 32, 2)
    probe = noisy_sine(rng, 50, 32, 2)
    first = build(kind, 32, 2, max_epochs=3)
    second = build(kind, 32, 2, max_epochs=3)
    first_report = first.fit(train, seed=5)
    second_report = second.fit(train, seed=5)
    np.testing.assert_array_equal(first.reconstruct(probe), second.reconstruct(probe))
    assert first_report.validation_loss == second_report.validation_loss
    # Refitting the same object must not depend on what it learned before.
    first.fit(noisy_sine(rng, 200, 32, 2), seed=9)
    first.fit(train, seed=5)
    np.testing.assert_array_equal(first.reconstruct(probe), second.reconstruct(probe))


def test_save_and_load_reproduce_reconstructions_exactly(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    model = build(kind, 50, 3, max_epochs=2)
    model.fit(noisy_sine(rng, 120, 50, 3), seed=1)
    save_model(tmp_path / "model", model, extra_metadata={"stream": "pump-7", "version": 3})
    loaded, extra = load_model(tmp_path / "model")
    probe = noisy_sine(rng, 30, 50, 3)
    assert loaded.kind == kind
    assert extra == {"stream": "pump-7", "version": 3}
    assert loaded.metadata() == model.metadata()
    np.testing.assert_array_equal(loaded.reconstruct(probe), model.reconstruct(probe))


@pytest.mark.parametrize("anomaly", sorted(INJECTORS))
def test_anomalies_reconstruct_worse_than_normal_windows(
    trained: tuple[Reconstructor, Batch], anomaly: str
) -> None:
    model, fresh = trained
    rng = np.random.default_rng(sorted(INJECTORS).index(anomaly))
    normal_error = mean_squared_error(model, fresh)
    anomalous_error = mean_squared_error(model, INJECTORS[anomaly](rng, fresh))
    # Normal windows come back within a few times the noise variance, so the model learned the rhythm (an
    # identity map would pass this too, but fails the ratio below).
    assert normal_error < 4 * NOISE**2
    assert anomalous_error > MIN_ERROR_RATIO * normal_error, (anomaly, anomalous_error, normal_error)


def test_broken_relation_between_channels_reconstructs_worse(trained: tuple[Reconstructor, Batch]) -> None:
    model, fresh = trained
    if fresh.shape[2] == 1:
        pytest.skip("a relation between channels needs more than one channel")
    normal_error = mean_squared_error(model, fresh)
    anomalous_error = mean_squared_error(model, invert_one_channel(np.random.default_rng(0), fresh))
    assert anomalous_error > MIN_ERROR_RATIO * normal_error, (anomalous_error, normal_error)
