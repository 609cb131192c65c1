"""Running torch autoencoders: process-wide torch settings, and the wrapper making a network a Reconstructor.

Both torch models share everything except their network: seeded construction, one training loop, chunked
inference without autograd, and the exchange of weights with the model store. That shared part lives here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamwatch.core.reconstructor import Batch, FitReport
from streamwatch.models.training import INFERENCE_CHUNK, TrainingConfig, train_autoencoder

# Measured on two shared cores: one intra-op thread trains the conv autoencoder as fast as two when the
# machine is quiet, and 20-25x faster when other processes compete for the cores (two threads then wait on
# each other at every small kernel); two threads score at most about 1.5x faster, and 25x slower under load.
DEFAULT_THREADS = 1

# Whether the application called configure_torch, and whether model calls should flush denormals.
_configured = False
_flush_denormal = True

# The smallest float32 magnitude is about 1.4e-45; anything below 1.2e-38 is denormal.
_DENORMAL = 1e-42


def configure_torch(threads: int | None = None, *, flush_denormal: bool = True) -> None:
    """Torch settings for training and scoring on CPU; call once at start-up.

    `threads` is process-wide (torch's intra-op pool). Denormal flushing is applied around every model call
    (`denormals_flushed`) rather than left on for the whole process: the flag is CPU state shared with numpy
    and all other code, where it silently changes float semantics (hypothesis refuses to run under it).
    """
    global _configured, _flush_denormal
    chosen_threads = DEFAULT_THREADS if threads is None else _positive_threads(threads)
    torch.set_num_threads(chosen_threads)
    _flush_denormal = flush_denormal
    _configured = True


def _apply_default_threads() -> None:
    """Give models the measured thread default when the application never called configure_torch."""
    global _configured
    if not _configured:
        torch.set_num_threads(DEFAULT_THREADS)
        _configured = True


def denormals_are_flushed() -> bool:
    """Whether this thread currently flushes denormal floats to zero (a denormal does not survive)."""
    return torch.tensor(_DENORMAL, dtype=torch.float32).item() == 0.0


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormal floats to zero inside the block, then restore the thread's previous behaviour.

    Denormals appear as weights and activations shrink during training; without flushing them to zero the
    CPU takes a slow microcode path (30-60x slower training was seen with an earlier conv autoencoder on
    this kind of machine; the current networks showed no difference over 150 epochs, so this is insurance
    that costs two flag switches per call). Nested blocks and a flag someone else set are left alone.
    """
    if not _flush_denormal or denormals_are_flushed():
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _positive_threads(threads: int) -> int:
    if threads < 1:
        raise ValueError(f"torch threads must be >= 1, got {threads}")
    return threads


class AutoencoderNet(nn.Module, abc.ABC):
    """A network mapping windows (batch, length, channels) to the same shape through an explicit latent."""

    @abc.abstractmethod
    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (batch, length, channels) -> latent (batch, ...)."""

    @abc.abstractmethod
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (batch, ...) -> windows (batch, length, channels)."""

    @abc.abstractmethod
    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters that produce the latent, for callers that perturb the encoder."""

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(windows))


class TorchReconstructor(abc.ABC):
    """A Reconstructor backed by an `AutoencoderNet`; subclasses only say how to build their network."""

    kind: str

    def __init__(self, *, length: int, channels: int, training: TrainingConfig | None = None) -> None:
        if length < 1 or channels < 1:
            raise ValueError(f"window shape must be positive, got length={length} channels={channels}")
        self.length = length
        self.channels = channels
        self.training = training if training is not None else self.default_training()
        _apply_default_threads()
        self._net = self._seeded_net(seed=0)

    @classmethod
    def default_training(cls) -> TrainingConfig:
        """The training settings this kind of network starts from when the caller overrides none or some."""
        return TrainingConfig()

    @abc.abstractmethod
    def _new_net(self) -> AutoencoderNet:
        """A freshly initialised network for this model's shape and hyper-parameters."""

    @abc.abstractmethod
    def architecture(self) -> dict[str, Any]:
        """The network hyper-parameters (JSON-serialisable) that `_new_net` uses, besides the window shape."""

    @property
    def net(self) -> AutoencoderNet:
        """The underlying network, for callers that need more than the hooks below."""
        return self._net

    def fit(self, windows: Batch, *, seed: int, progress: bool = False) -> FitReport:
        batch = self._checked(windows)
        if not np.isfinite(batch).all():
            raise ValueError("training windows contain NaN or infinite values")
        self._net = self._seeded_net(seed)
        with denormals_flushed():
            return train_autoencoder(self._net, batch, config=self.training, seed=seed, progress=progress)

    def reconstruct(self, windows: Batch) -> Batch:
        return self._run_chunked(self._net, self._checked(windows))

    def encode(self, windows: Batch) -> npt.NDArray[np.float32]:
        """Windows (batch, length, channels) -> latent codes (batch, ...)."""
        return self._run_chunked(self._net.encode, self._checked(windows))

    def decode(self, latent: npt.NDArray[np.float32]) -> Batch:
        """Latent codes as returned by `encode` -> windows (batch, length, channels)."""
        return self._run_chunked(self._net.decode, np.asarray(latent, dtype=np.float32))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self._net.encoder_parameters()

    def tensors(self) -> dict[str, npt.NDArray[np.float32]]:
        return {
            name: value.detach().cpu().numpy().astype(np.float32, copy=True)
            for name, value in self._net.state_dict().items()
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "channels": self.channels,
            **self.architecture(),
            "training": asdict(self.training),
        }

    @classmethod
    def from_tensors(cls, metadata: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Self:
        """Rebuild from `metadata()` and `tensors()`; ValueError when they do not fit together."""
        settings = {key: value for key, value in metadata.items() if key != "training"}
        model = cls(**settings, training=TrainingConfig(**metadata.get("training", {})))
        model.load_tensors(tensors)
        return model

    def load_tensors(self, tensors: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the weights; the names, shapes and dtype must be exactly this network's."""
        expected = self._net.state_dict()
        _check_same_tensors({name: tuple(value.shape) for name, value in expected.items()}, tensors)
        self._net.load_state_dict(
            {name: torch.from_numpy(np.array(value)) for name, value in tensors.items()}
        )
        self._net.eval()

    def _seeded_net(self, seed: int) -> AutoencoderNet:
        # Weight initialisation draws from torch's global generator; forking it keeps the caller's random
        # state untouched while making the initial weights a function of the seed alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._new_net()
        return net.eval()

    def _checked(self, windows: Batch) -> Batch:
        batch = np.ascontiguousarray(windows, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != (self.length, self.channels):
            raise ValueError(
                f"{self.kind} model expects windows shaped (batch, {self.length}, {self.channels}), "
                f"got {batch.shape}"
            )
        return batch

    @staticmethod
    def _run_chunked(
        step: Callable[[torch.Tensor], torch.Tensor], inputs: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Apply `step` in chunks with autograd off; numpy float32 in and out."""
        outputs: list[npt.NDArray[np.float32]] = []
        with torch.inference_mode(), denormals_flushed():
            if len(inputs) == 0:
                # Some layers (LSTM) refuse an empty batch; one dummy row yields the output's trailing shape.
                dummy = torch.zeros((1, *inputs.shape[1:]), dtype=torch.float32)
                return step(dummy)[:0].numpy()
            for start in range(0, len(inputs), INFERENCE_CHUNK):
                chunk = torch.from_numpy(inputs[start : start + INFERENCE_CHUNK])
                outputs.append(step(chunk).contiguous().numpy())
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


def _check_same_tensors(
    expected_shapes: Mapping[str, tuple[int, ...]], tensors: Mapping[str, npt.NDArray[Any]]
) -> None:
    missing = sorted(set(expected_shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected_shapes))
    if missing or unexpected:
        raise ValueError(f"tensor names do not match the model: missing {missing}, unexpected {unexpected}")
    for name, shape in expected_shapes.items():
        value = tensors[name]
        if value.dtype != np.float32:
            raise ValueError(f"tensor {name!r} has dtype {value.dtype}, expected float32")
        if tuple(value.shape) != shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(value.shape)}, the model needs {shape}")
