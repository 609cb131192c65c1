"""The one training loop for the torch autoencoders: Adam on mean squared reconstruction error.

Early stopping watches the error on held-back normal windows (the last part of what `fit` is given, so the
held-back windows are the most recent ones) and the weights of the best epoch are restored at the end.
Runs are deterministic for a given seed: weights are initialised by the caller from the seed, batches are
shuffled by a generator seeded here, and torch is asked for deterministic kernels while training.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Never

import torch
from torch import nn
from tqdm import tqdm

from streamwatch import cancel
from streamwatch.core.reconstructor import Batch, FitReport
from streamwatch.models.pca import split_holdout

# Windows per forward pass when no gradient is needed: large enough that per-call overhead vanishes, small
# enough that the activations of the widest network stay within a few hundred MiB.
INFERENCE_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """How long and how fast to train; the defaults suit the small autoencoders on normalised windows."""

    max_epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 2e-3
    validation_fraction: float = 0.15
    patience: int = 5
    max_seconds: float = 600.0
    # An epoch counts as better only if it lowers the validation loss by this share; smaller gains are noise
    # and would keep a converged run going until max_epochs.
    min_relative_improvement: float = 1e-4

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be >= 1")
        if not (self.learning_rate > 0 and self.max_seconds > 0):
            raise ValueError("learning_rate and max_seconds must be positive")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.min_relative_improvement < 1.0:
            raise ValueError("min_relative_improvement must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class EpochStats:
    """One finished epoch, as passed to an `on_epoch` observer (epoch 0 is the untrained network)."""

    epoch: int
    train_loss: float
    validation_loss: float


@dataclass(frozen=True, slots=True)
class _BestEpoch:
    stats: EpochStats
    weights: dict[str, torch.Tensor]


def train_autoencoder(
    net: nn.Module,
    windows: Batch,
    *,
    config: TrainingConfig,
    seed: int,
    progress: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitReport:
    """Train `net` to reproduce `windows` (batch, length, channels); leaves it holding its best weights."""
    train_part, validation_part = split_holdout(windows, config.validation_fraction)
    train = torch.from_numpy(train_part)
    validation = torch.from_numpy(validation_part)
    shuffler = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    started = clock()
    best = _BestEpoch(EpochStats(0, mean_loss(net, train), mean_loss(net, validation)), _copy_weights(net))
    last = best.stats
    timed_out = False
    with _deterministic_algorithms(), _progress_bar(config.max_epochs, enabled=progress) as bar:
        for epoch in range(1, config.max_epochs + 1):
            train_loss = _train_one_epoch(net, train, optimizer, config.batch_size, shuffler)
            last = EpochStats(epoch, train_loss, mean_loss(net, validation))
            if on_epoch is not None:
                on_epoch(last)
            bar.update(1)
            bar.set_postfix(loss=f"{last.train_loss:.4g}", val_loss=f"{last.validation_loss:.4g}")
            if _improves(last.validation_loss, best.stats.validation_loss, config.min_relative_improvement):
                best = _BestEpoch(last, _copy_weights(net))
            elif epoch - best.stats.epoch >= config.patience:
                break
            if clock() - started >= config.max_seconds:
                timed_out = True
                break
    net.load_state_dict(best.weights)
    net.eval()
    return FitReport(
        epochs=last.epoch,
        train_loss=best.stats.train_loss,
        validation_loss=best.stats.validation_loss,
        seconds=clock() - started,
        extra={
            "best_epoch": float(best.stats.epoch),
            "stopped_early": float(last.epoch < config.max_epochs and not timed_out),
            "timed_out": float(timed_out),
            "train_windows": float(len(train)),
            "validation_windows": float(len(validation)),
        },
    )


def mean_loss(net: nn.Module, windows: torch.Tensor) -> float:
    """Mean squared reconstruction error over all windows, in chunks and without autograd."""
    net.eval()
    total = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, len(windows), INFERENCE_CHUNK):
            chunk = windows[start : start + INFERENCE_CHUNK]
            total += torch.sum((net(chunk) - chunk) ** 2, dtype=torch.float64)
    return float(total) / max(windows.numel(), 1)


def _train_one_epoch(
    net: nn.Module,
    train: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    shuffler: torch.Generator,
) -> float:
    net.train()
    order = torch.randperm(len(train), generator=shuffler)
    # Accumulated as a tensor so the loop never waits on `.item()` per batch.
    total = torch.zeros(())
    for start in range(0, len(train), batch_size):
        cancel.check()  # a stopping daemon does not wait for the epoch (or leave torch mid-kernel)
        batch = train[order[start : start + batch_size]]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(net(batch), batch)
        torch.autograd.backward(loss)
        optimizer.step()
        total += loss.detach() * len(batch)
    return float(total) / len(train)


def _improves(candidate: float, best: float, min_relative_improvement: float) -> bool:
    if not math.isfinite(candidate):
        return False
    return not math.isfinite(best) or candidate < best * (1.0 - min_relative_improvement)


def _copy_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


@contextmanager
def _deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels while training, then whatever the process had before."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def _progress_bar(epochs: int, *, enabled: bool) -> tqdm[Never]:
    # sys.stderr is looked up per call, not bound at import, so redirected or captured stderr is honoured.
    return tqdm(
        total=epochs, desc="training", unit="epoch", file=sys.stderr, disable=not enabled, leave=False
    )
