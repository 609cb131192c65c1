"""Learned reconstructors behind the core's `Reconstructor` protocol, and their safetensors model store.

Kinds: "conv" (1-D convolutional autoencoder), "lstm" (LSTM autoencoder), "pca" (principal components, numpy
only). Importing this package does not import torch: the torch models load on first use, so code and tests
that only need PCA or the store of a PCA model run without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from streamwatch.core.reconstructor import FitReport, Reconstructor
from streamwatch.models.pca import PcaReconstructor
from streamwatch.models.store import FORMAT_VERSION, ModelFileError, load_model, save_model

if TYPE_CHECKING:
    from streamwatch.models.conv_ae import ConvAutoencoder
    from streamwatch.models.lstm_ae import LstmAutoencoder
    from streamwatch.models.runtime import TorchReconstructor, configure_torch
    from streamwatch.models.training import TrainingConfig

KINDS = ("conv", "lstm", "pca")

# Public names that need torch, and the module each lives in, imported when first asked for.
_TORCH_EXPORTS = {
    "ConvAutoencoder": "streamwatch.models.conv_ae",
    "LstmAutoencoder": "streamwatch.models.lstm_ae",
    "TorchReconstructor": "streamwatch.models.runtime",
    "configure_torch": "streamwatch.models.runtime",
    "TrainingConfig": "streamwatch.models.training",
}

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "ConvAutoencoder",
    "FitReport",
    "LstmAutoencoder",
    "ModelFileError",
    "PcaReconstructor",
    "Reconstructor",
    "TorchReconstructor",
    "TrainingConfig",
    "build_reconstructor",
    "configure_torch",
    "load_model",
    "load_reconstructor",
    "save_model",
]


def __getattr__(name: str) -> Any:
    module = _TORCH_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def build_reconstructor(kind: str, *, length: int, channels: int, **hyper: Any) -> Reconstructor:
    """A new, untrained reconstructor for windows (batch, length, channels).

    `hyper` holds the kind's own hyper-parameters (conv: width, latent_channels, kernel_size; lstm: hidden;
    pca: variance_kept, max_components, validation_fraction) and, for the torch kinds, any `TrainingConfig`
    field (max_epochs, batch_size, learning_rate, validation_fraction, patience, max_seconds, ...).
    Unknown names raise TypeError rather than being ignored.
    """
    if kind == "pca":
        return PcaReconstructor(length=length, channels=channels, **hyper)
    model_class = _torch_model_class(kind)
    defaults = model_class.default_training()
    training_names = {field.name for field in fields(defaults)}
    training = replace(defaults, **{name: value for name, value in hyper.items() if name in training_names})
    architecture = {name: value for name, value in hyper.items() if name not in training_names}
    return model_class(length=length, channels=channels, training=training, **architecture)


def load_reconstructor(
    kind: str, metadata: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]
) -> Reconstructor:
    """Rebuild a trained reconstructor from its `metadata()` and `tensors()`.

    Raises ValueError (or TypeError for unknown metadata keys) when they do not describe a valid model.
    """
    if kind == "pca":
        return PcaReconstructor.from_tensors(metadata, tensors)
    return _torch_model_class(kind).from_tensors(metadata, tensors)


def _torch_model_class(kind: str) -> type[TorchReconstructor]:
    if kind == "conv":
        from streamwatch.models.conv_ae import ConvAutoencoder

        return ConvAutoencoder
    if kind == "lstm":
        from streamwatch.models.lstm_ae import LstmAutoencoder

        return LstmAutoencoder
    raise ValueError(f"unknown reconstructor kind {kind!r}; expected one of {', '.join(KINDS)}")
