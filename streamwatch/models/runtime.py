"""Running torch autoencoders: process-wide torch settings, and the wrapper making a network a Reconstructor.

Both torch models share everything except their network: seeded construction, one training loop, chunked
inference without autograd, and the exchange of weights with the model store. That shared part lives here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from streamwatch.core.reconstructor import Batch, FitReport
from streamwatch.models.training import TrainingConfig, train_autoencoder

# Measured with bench command in the models report: on two shared cores one intra-op thread trains and scores
# these small networks faster than two (thread hand-off costs more than the tiny kernels gain).
DEFAULT_THREADS = 1

# Large enough that per-call overhead vanishes, small enough that activations of the widest network stay
# within a few hundred MiB.
INFERENCE_CHUNK = 4096

_configured = False


def configure_torch(threads: int | None = None) -> None:
    """Process-wide torch settings for training and scoring on CPU; call once at start-up."""
    global _configured
    # Denormal floats appear as weights and activations shrink during training; without flushing them to
    # zero the CPU takes a slow microcode path (measured 30-60x slower training of the conv autoencoder).
    torch.set_flush_denormal(True)
    torch.set_num_threads(DEFAULT_THREADS if threads is None else _positive_threads(threads))
    _configured = True


def ensure_torch_configured() -> None:
    """Apply the default settings unless the application already chose its own."""
    if not _configured:
        configure_torch()


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
        ensure_torch_configured()
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
        with torch.inference_mode():
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
