"""A linear reconstructor: principal components of flattened windows (numpy only, no torch).

PCA is the baseline the autoencoders must beat and the model the core's tests can use without torch. It keeps
the fewest components that explain `variance_kept` of the variance (at most `max_components`) and
reconstructs a window by projecting it onto them and back. Fitting is deterministic (no random init).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from streamwatch.core.reconstructor import Batch, FitReport


def split_holdout(windows: Batch, fraction: float) -> tuple[Batch, Batch]:
    """Training part and the held-back last `fraction` of windows (the most recent, if they are in order).

    Shared by every model so that validation losses mean the same thing. With too few windows to hold any
    back, the validation part is the training part itself.
    """
    if len(windows) == 0:
        raise ValueError("cannot fit on zero windows")
    held_back = min(round(len(windows) * fraction), len(windows) - 1)
    if held_back <= 0:
        return windows, windows
    return windows[:-held_back], windows[-held_back:]


def principal_axes(
    centred: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Energy (squared singular value) of each principal axis, largest first, and the axes as rows.

    With more windows than features (the usual case) the eigen-decomposition of the small scatter matrix
    gives the same axes as an SVD of the data at a fraction of the cost (measured 8500x64: 5 ms against
    60-300 ms); otherwise the thin SVD of the data is the cheaper one.
    """
    rows, features = centred.shape
    if rows >= features:
        energy, vectors = np.linalg.eigh(centred.T @ centred)
        # eigh sorts ascending; tiny negative eigenvalues are rounding of zero.
        return np.clip(energy[::-1], 0.0, None), np.ascontiguousarray(vectors[:, ::-1].T)
    _, singular_values, axes = np.linalg.svd(centred, full_matrices=False)
    return singular_values**2, axes


class PcaReconstructor:
    """Project onto the leading principal components of normal windows and back."""

    kind = "pca"

    def __init__(
        self,
        *,
        length: int,
        channels: int,
        variance_kept: float = 0.98,
        max_components: int = 32,
        validation_fraction: float = 0.15,
        components: int = 1,
    ) -> None:
        if length < 1 or channels < 1:
            raise ValueError(f"window shape must be positive, got length={length} channels={channels}")
        if not 0.0 < variance_kept <= 1.0:
            raise ValueError(f"variance_kept must be in (0, 1], got {variance_kept}")
        if max_components < 1 or components < 1:
            raise ValueError("max_components and components must be >= 1")
        self.length = length
        self.channels = channels
        self.variance_kept = variance_kept
        self.max_components = max_components
        self.validation_fraction = validation_fraction
        features = length * channels
        # `components` is how many rows the basis has; `fit` chooses it, loading passes it back in. Until
        # fitted, mean and basis are zero, so every reconstruction is zero.
        self._mean = np.zeros(features, dtype=np.float32)
        self._components = np.zeros((min(components, features), features), dtype=np.float32)

    def fit(self, windows: Batch, *, seed: int, progress: bool = False) -> FitReport:
        # `seed` and `progress` are part of the protocol; an SVD needs neither randomness nor a progress bar.
        started = time.perf_counter()
        flat = self._flattened(windows)
        if not np.isfinite(flat).all():
            raise ValueError("training windows contain NaN or infinite values")
        train, validation = split_holdout(flat, self.validation_fraction)
        mean = train.mean(axis=0, dtype=np.float64)
        energy, axes = principal_axes(train - mean)
        kept = self._components_to_keep(energy)
        self._mean = mean.astype(np.float32)
        self._components = np.ascontiguousarray(axes[:kept], dtype=np.float32)
        explained = float(energy[:kept].sum() / energy.sum()) if energy.sum() > 0 else 1.0
        return FitReport(
            epochs=1,
            train_loss=self._mean_squared_error(train),
            validation_loss=self._mean_squared_error(validation),
            seconds=time.perf_counter() - started,
            extra={"components": float(kept), "explained_variance": explained},
        )

    def reconstruct(self, windows: Batch) -> Batch:
        flat = self._flattened(windows)
        return self._reconstruct_flat(flat).reshape(flat.shape[0], self.length, self.channels)

    def tensors(self) -> dict[str, npt.NDArray[np.float32]]:
        return {"mean": self._mean.copy(), "components": self._components.copy()}

    def metadata(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "channels": self.channels,
            "variance_kept": self.variance_kept,
            "max_components": self.max_components,
            "validation_fraction": self.validation_fraction,
            "components": int(self._components.shape[0]),
        }

    @classmethod
    def from_tensors(cls, metadata: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Self:
        """Rebuild from `metadata()` and `tensors()`; ValueError when they do not fit together."""
        model = cls(**metadata)
        expected = model.tensors()
        if set(tensors) != set(expected):
            raise ValueError(f"PCA tensors must be {sorted(expected)}, got {sorted(tensors)}")
        for name, value in tensors.items():
            if value.dtype != np.float32 or value.shape != expected[name].shape:
                raise ValueError(
                    f"tensor {name!r} is {value.dtype}{list(value.shape)}, "
                    f"expected float32{list(expected[name].shape)}"
                )
        model._mean = np.array(tensors["mean"], dtype=np.float32)
        model._components = np.array(tensors["components"], dtype=np.float32)
        return model

    def _components_to_keep(self, energy: npt.NDArray[np.float64]) -> int:
        total = energy.sum()
        if total <= 0:
            return 1
        cumulative = np.cumsum(energy) / total
        needed = int(np.searchsorted(cumulative, self.variance_kept)) + 1
        return max(1, min(needed, self.max_components, len(energy)))

    def _reconstruct_flat(self, flat: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        centred = flat - self._mean
        return ((centred @ self._components.T) @ self._components + self._mean).astype(np.float32, copy=False)

    def _mean_squared_error(self, flat: npt.NDArray[np.float32]) -> float:
        residual = self._reconstruct_flat(flat) - flat
        return float(np.mean(np.square(residual, dtype=np.float64)))

    def _flattened(self, windows: Batch) -> npt.NDArray[np.float32]:
        batch = np.asarray(windows, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != (self.length, self.channels):
            raise ValueError(
                f"pca model expects windows shaped (batch, {self.length}, {self.channels}), got {batch.shape}"
            )
        return batch.reshape(batch.shape[0], self.length * self.channels)
