"""The models package beyond the shared contract: training loop, hooks, factory, PCA, torch runtime."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.reconstructor import Batch
from streamwatch.models import (
    ConvAutoencoder,
    LstmAutoencoder,
    PcaReconstructor,
    TrainingConfig,
    build_reconstructor,
    configure_torch,
    load_reconstructor,
    runtime,
)
from streamwatch.models.pca import split_holdout
from streamwatch.models.training import EpochStats, mean_loss, train_autoencoder


def sine_windows(rng: np.random.Generator, count: int, length: int, channels: int = 1) -> Batch:
    time = np.arange(length)[None, :, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, (count, 1, channels))
    noise = 0.1 * rng.standard_normal((count, length, channels))
    return (np.sin(2.0 * np.pi * time / 16.0 + phase) + noise).astype(np.float32)


@pytest.fixture
def windows() -> Batch:
    return sine_windows(np.random.default_rng(0), 120, 32)


# --- training loop ---------------------------------------------------------------------------------------


def test_early_stopping_restores_the_best_epoch(windows: Batch) -> None:
    # A large step makes validation loss bounce, so the last epoch is not the best one.
    config = TrainingConfig(
        max_epochs=40, patience=3, learning_rate=0.05, batch_size=16, min_relative_improvement=0.0
    )
    model = ConvAutoencoder(length=32, channels=1, training=config)
    history: list[EpochStats] = []
    report = train_autoencoder(model.net, windows, config=config, seed=0, on_epoch=history.append)

    losses = [stats.validation_loss for stats in history]
    best_epoch = int(np.argmin(losses)) + 1
    assert report.extra["best_epoch"] == best_epoch
    assert report.extra["stopped_early"] == 1.0
    assert report.epochs == best_epoch + config.patience < config.max_epochs
    assert report.validation_loss == min(losses)
    assert losses[-1] > min(losses)
    # The network now holds the best epoch's weights, not the last epoch's.
    _, validation = split_holdout(windows, config.validation_fraction)
    assert mean_loss(model.net, torch.from_numpy(validation)) == pytest.approx(min(losses), rel=1e-6)


def test_untrained_network_is_kept_when_training_only_makes_it_worse(windows: Batch) -> None:
    # An absurd step size wrecks the network in the first epoch; epoch 0 (the initial weights) stays best.
    config = TrainingConfig(max_epochs=10, patience=2, learning_rate=50.0, batch_size=16)
    model = ConvAutoencoder(length=32, channels=1, training=config)
    initial = model.tensors()
    report = train_autoencoder(model.net, windows, config=config, seed=0)
    assert report.extra["best_epoch"] == 0.0
    assert report.epochs == config.patience
    for name, value in model.tensors().items():
        np.testing.assert_array_equal(value, initial[name])


def test_time_budget_stops_training() -> None:
    ticks = itertools.count(step=10.0)
    config = TrainingConfig(max_epochs=50, max_seconds=25.0)
    model = ConvAutoencoder(length=16, channels=1, training=config)
    net_windows = sine_windows(np.random.default_rng(1), 40, 16)
    report = train_autoencoder(
        model.net, net_windows, config=config, seed=0, clock=lambda: float(next(ticks))
    )
    # The clock advances 10 s per reading: start, then one reading after each epoch.
    assert report.epochs == 3
    assert report.extra["timed_out"] == 1.0
    assert report.extra["stopped_early"] == 0.0


def test_training_keeps_the_callers_torch_state(windows: Batch) -> None:
    rng_state = torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    model = build_reconstructor("conv", length=32, channels=1, max_epochs=2)
    model.fit(windows, seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_different_seeds_give_different_models(windows: Batch) -> None:
    first = build_reconstructor("conv", length=32, channels=1, max_epochs=2)
    second = build_reconstructor("conv", length=32, channels=1, max_epochs=2)
    first.fit(windows, seed=1)
    second.fit(windows, seed=2)
    assert not np.array_equal(first.reconstruct(windows), second.reconstruct(windows))


def test_fit_rejects_non_finite_windows(windows: Batch) -> None:
    broken = windows.copy()
    broken[3, 5, 0] = np.nan
    for kind in ("conv", "lstm", "pca"):
        with pytest.raises(ValueError, match="NaN or infinite"):
            build_reconstructor(kind, length=32, channels=1).fit(broken, seed=0)


def test_progress_bar_is_off_by_default(windows: Batch, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_reconstructor("conv", length=32, channels=1, max_epochs=2)
    model.fit(windows, seed=0)
    assert capsys.readouterr().err == ""
    model.fit(windows, seed=0, progress=True)
    shown = capsys.readouterr()
    assert "training" in shown.err
    assert "val_loss" in shown.err
    assert shown.out == ""


@pytest.mark.parametrize(
    "bad",
    [
        {"max_epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"validation_fraction": 1.0},
        {"max_seconds": -1.0},
        {"min_relative_improvement": 1.5},
    ],
)
def test_training_config_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each field has its own message
        TrainingConfig(**bad)  # type: ignore[arg-type]


@given(count=st.integers(1, 500), fraction=st.floats(0.0, 0.95))
def test_holdout_is_the_tail_and_never_empty(count: int, fraction: float) -> None:
    windows = np.arange(count, dtype=np.float32).reshape(count, 1, 1)
    train, validation = split_holdout(windows, fraction)
    assert len(train) >= 1
    assert len(validation) >= 1
    if len(train) + len(validation) == count:
        np.testing.assert_array_equal(np.concatenate([train, validation]), windows)
    else:  # nothing could be held back: validation is the training set itself
        assert train is validation is windows


# --- hooks for anomaly generation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "length", "channels", "latent_shape"),
    [
        ("conv", 64, 1, (8, 2)),
        ("conv", 50, 3, (7, 3)),
        ("conv", 16, 8, (2, 8)),
        ("lstm", 64, 1, (32,)),
        ("lstm", 20, 4, (32,)),
    ],
)
def test_encode_and_decode_shapes(
    kind: str, length: int, channels: int, latent_shape: tuple[int, ...]
) -> None:
    model = build_reconstructor(kind, length=length, channels=channels, max_epochs=1)
    assert isinstance(model, ConvAutoencoder | LstmAutoencoder)
    batch = sine_windows(np.random.default_rng(2), 5, length, channels)
    model.fit(batch, seed=0)
    latent = model.encode(batch)
    assert latent.shape == (5, *latent_shape)
    assert latent.dtype == np.float32
    decoded = model.decode(latent)
    assert decoded.shape == batch.shape
    np.testing.assert_allclose(decoded, model.reconstruct(batch), rtol=1e-5, atol=1e-6)
    assert model.encode(batch[:0]).shape == (0, *latent_shape)


@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_perturbing_encoder_parameters_changes_the_latent(kind: str) -> None:
    model = build_reconstructor(kind, length=32, channels=2)
    assert isinstance(model, ConvAutoencoder | LstmAutoencoder)
    batch = sine_windows(np.random.default_rng(3), 4, 32, 2)
    before = model.encode(batch)
    parameters = model.encoder_parameters()
    assert parameters
    assert all(isinstance(parameter, torch.nn.Parameter) for parameter in parameters)
    all_parameters = {id(parameter) for parameter in model.net.parameters()}
    assert {id(parameter) for parameter in parameters} < all_parameters
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(0.5)
    assert not np.allclose(model.encode(batch), before)


# --- factory --------------------------------------------------------------------------------------------


def test_factory_builds_each_kind_and_routes_hyper_parameters() -> None:
    conv = build_reconstructor("conv", length=40, channels=2, width=8, max_epochs=7)
    assert isinstance(conv, ConvAutoencoder)
    assert conv.width == 8
    assert conv.training.max_epochs == 7
    lstm = build_reconstructor("lstm", length=40, channels=2, hidden=16)
    assert isinstance(lstm, LstmAutoencoder)
    assert lstm.training.learning_rate == LstmAutoencoder.default_training().learning_rate
    pca = build_reconstructor("pca", length=40, channels=2, max_components=3)
    assert isinstance(pca, PcaReconstructor)
    assert pca.max_components == 3


def test_factory_rejects_unknown_kinds_and_names() -> None:
    with pytest.raises(ValueError, match="unknown reconstructor kind"):
        build_reconstructor("transformer", length=32, channels=1)
    with pytest.raises(TypeError):
        build_reconstructor("conv", length=32, channels=1, widht=8)
    with pytest.raises(TypeError):
        build_reconstructor("pca", length=32, channels=1, max_epochs=3)
    with pytest.raises(ValueError, match="kernel_size"):
        build_reconstructor("conv", length=32, channels=1, kernel_size=4)


def test_load_reconstructor_rejects_tensors_of_another_shape() -> None:
    model = build_reconstructor("conv", length=32, channels=2)
    tensors = model.tensors()
    rebuilt = load_reconstructor("conv", model.metadata(), tensors)
    batch = sine_windows(np.random.default_rng(4), 3, 32, 2)
    np.testing.assert_array_equal(rebuilt.reconstruct(batch), model.reconstruct(batch))
    name = next(iter(tensors))
    tensors[name] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=f"tensor '{name}' has shape"):
        load_reconstructor("conv", model.metadata(), tensors)
    with pytest.raises(ValueError, match="tensor names"):
        load_reconstructor("conv", model.metadata(), {})


# --- PCA ------------------------------------------------------------------------------------------------


def test_pca_keeps_the_components_that_explain_the_variance() -> None:
    rng = np.random.default_rng(5)
    # A sine at random phase is a combination of two fixed shapes (sin and cos): rank 2 plus small noise.
    batch = sine_windows(rng, 400, 64)
    model = PcaReconstructor(length=64, channels=1, variance_kept=0.9)
    report = model.fit(batch, seed=0)
    assert report.extra["components"] == 2.0
    assert report.extra["explained_variance"] >= 0.9
    capped = PcaReconstructor(length=64, channels=1, variance_kept=1.0, max_components=5)
    assert capped.fit(batch, seed=0).extra["components"] == 5.0


def test_pca_is_deterministic_and_ignores_the_seed() -> None:
    batch = sine_windows(np.random.default_rng(6), 100, 32, 2)
    first = PcaReconstructor(length=32, channels=2)
    second = PcaReconstructor(length=32, channels=2)
    first.fit(batch, seed=1)
    second.fit(batch, seed=2)
    np.testing.assert_array_equal(first.reconstruct(batch), second.reconstruct(batch))


@settings(max_examples=25, deadline=None)
@given(windows=st.integers(1, 60), features=st.integers(1, 80))
def test_pca_reconstructs_training_data_exactly_with_all_components(windows: int, features: int) -> None:
    batch = np.random.default_rng(windows * 100 + features).standard_normal((windows, features, 1))
    model = PcaReconstructor(
        length=features, channels=1, variance_kept=1.0, max_components=features, validation_fraction=0.0
    )
    model.fit(batch.astype(np.float32), seed=0)
    np.testing.assert_allclose(model.reconstruct(batch.astype(np.float32)), batch, atol=1e-4)


def test_pca_and_the_package_import_without_torch() -> None:
    probe = (
        "import sys, numpy as np\n"
        "import streamwatch.models as models\n"
        "model = models.build_reconstructor('pca', length=8, channels=1)\n"
        "model.fit(np.zeros((4, 8, 1), dtype=np.float32), seed=0)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# --- runtime --------------------------------------------------------------------------------------------


def test_configure_torch_sets_threads_and_rejects_nonsense() -> None:
    previous = torch.get_num_threads()
    try:
        configure_torch(2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads"):
            configure_torch(0)
        assert torch.get_num_threads() == 2
    finally:
        configure_torch(previous)


def test_denormals_are_flushed_only_inside_model_calls(windows: Batch) -> None:
    model = build_reconstructor("conv", length=32, channels=1, max_epochs=1)
    configure_torch(torch.get_num_threads())
    assert not runtime.denormals_are_flushed()
    model.fit(windows, seed=0)
    model.reconstruct(windows)
    # The flag is CPU state shared with numpy and every later test: it must not leak out of model calls.
    assert not runtime.denormals_are_flushed()
    with runtime.denormals_flushed():
        assert runtime.denormals_are_flushed()
        with runtime.denormals_flushed():
            assert runtime.denormals_are_flushed()
        assert runtime.denormals_are_flushed()  # the inner block does not switch off the outer one
    assert not runtime.denormals_are_flushed()


def test_flushing_can_be_turned_off_and_a_global_choice_is_kept() -> None:
    threads = torch.get_num_threads()
    try:
        configure_torch(threads, flush_denormal=False)
        with runtime.denormals_flushed():
            assert not runtime.denormals_are_flushed()
        configure_torch(threads)
        torch.set_flush_denormal(True)
        with runtime.denormals_flushed():
            pass
        assert runtime.denormals_are_flushed()  # someone else's process-wide choice survives our calls
    finally:
        torch.set_flush_denormal(False)
        configure_torch(threads)


def test_chunked_inference_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_reconstructor("conv", length=24, channels=2)
    batch = sine_windows(np.random.default_rng(7), 10, 24, 2)
    whole = model.reconstruct(batch)
    monkeypatch.setattr(runtime, "INFERENCE_CHUNK", 3)
    np.testing.assert_allclose(model.reconstruct(batch), whole, rtol=1e-5, atol=1e-6)
