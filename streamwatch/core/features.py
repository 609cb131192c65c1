"""Per-window, per-channel evidence of anomaly, and its calibration against normal windows.

Reconstruction error alone has known blind spots (a flat or stuck channel *lowers* it, a level shift that
fills a whole window looks like a fine shape, a rate change hides in short windows, a mean over channels
hides one bad channel). So each window yields several kinds of evidence per channel, each calibrated on
held-out normal windows to a common scale (0 = typical, 1 = the 99.5th percentile of normal), and the window
score is the largest of them: the channel and kind that are most surprising decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamwatch.records import FloatArray

Side = Literal["high", "both"]

# Which way each kind of evidence can be anomalous, and the smallest spread (in normalised units) that its
# calibration may assume: without a floor a feature that never varied in training would turn float noise
# into an infinite score.
FEATURES: Mapping[str, tuple[Side, float]] = {
    "recon_mse": ("high", 0.02),  # shape/relations the autoencoder cannot reproduce
    "recon_peak": ("high", 1.0),  # a short spike drowns in a mean error but not in the largest one
    "level": ("both", 1.0),  # window mean against the level reference: shifts, drifts, dropouts
    "spread": ("both", 0.05),  # log of within-window standard deviation: bursts (high), flatlines (low)
    "roughness": ("both", 0.05),  # log mean absolute step: noise character, stuck sensors
    "stuck": ("high", 0.05),  # share of exactly repeated values: a frozen sensor
    "crossings": ("both", 0.03),  # share of mean crossings: rhythm and rate changes
}

CALIBRATION_QUANTILE = 0.995


def window_statistics(windows: FloatArray) -> dict[str, FloatArray]:
    """Reconstruction-free evidence for normalised windows (B, L, C) -> each (B, C)."""
    mean = windows.mean(axis=1)
    centred = windows - mean[:, None, :]
    std = np.sqrt(np.mean(centred * centred, axis=1))
    steps = np.abs(np.diff(windows, axis=1))
    signs = np.signbit(centred)
    return {
        "level": mean.astype(np.float32),
        "spread": np.log(std + 1e-3).astype(np.float32),
        "roughness": np.log(steps.mean(axis=1) + 1e-3).astype(np.float32),
        "stuck": (steps <= 1e-6).mean(axis=1).astype(np.float32),
        "crossings": (signs[:, 1:, :] != signs[:, :-1, :]).mean(axis=1).astype(np.float32),
    }


def reconstruction_evidence(centred: FloatArray, reconstructed: FloatArray) -> dict[str, FloatArray]:
    residual = centred - reconstructed
    return {
        "recon_mse": np.mean(residual * residual, axis=1).astype(np.float32),
        "recon_peak": np.max(np.abs(residual), axis=1).astype(np.float32),
    }


@dataclass(frozen=True, slots=True)
class FeatureCalibration:
    """Per feature and channel: typical value and the spread up to the calibration quantile on each side."""

    median: Mapping[str, npt.NDArray[np.float32]]
    upper: Mapping[str, npt.NDArray[np.float32]]
    lower: Mapping[str, npt.NDArray[np.float32]]

    @classmethod
    def fit(cls, evidence: Mapping[str, FloatArray]) -> FeatureCalibration:
        """Calibrate each kind of evidence, each shaped (B, C)."""
        median: dict[str, npt.NDArray[np.float32]] = {}
        upper: dict[str, npt.NDArray[np.float32]] = {}
        lower: dict[str, npt.NDArray[np.float32]] = {}
        for name, values in evidence.items():
            _, floor = FEATURES[name]
            mid = np.median(values, axis=0)
            high = np.quantile(values, CALIBRATION_QUANTILE, axis=0) - mid
            low = mid - np.quantile(values, 1.0 - CALIBRATION_QUANTILE, axis=0)
            median[name] = mid.astype(np.float32)
            upper[name] = np.maximum(high, floor).astype(np.float32)
            lower[name] = np.maximum(low, floor).astype(np.float32)
        return cls(median, upper, lower)

    def surprise(self, evidence: Mapping[str, FloatArray]) -> FloatArray:
        """(B, C) largest calibrated evidence per window and channel (0 = typical, 1 = rare in normal)."""
        result: FloatArray | None = None
        for name, values in evidence.items():
            scaled = self.surprise_of(name, values)
            result = scaled if result is None else np.maximum(result, scaled)
        if result is None:
            raise ValueError("no evidence to calibrate")
        return result

    def surprise_of(self, name: str, values: FloatArray) -> FloatArray:
        """Calibrated evidence of one kind, same shape as `values` (trailing axis = channels)."""
        side, _ = FEATURES[name]
        deviation: FloatArray = np.asarray(values - self.median[name], dtype=np.float32)
        scaled: FloatArray = np.maximum(deviation / self.upper[name], np.float32(0.0))
        if side == "both":
            scaled = np.maximum(scaled, -deviation / self.lower[name])
        return scaled

    def scale_of(self, name: str) -> list[tuple[float, float, float]]:
        """Per channel (median, 1 / upper, 1 / lower or 0 when one-sided) of one kind of evidence."""
        side, _ = FEATURES[name]
        return [
            (float(median), 1.0 / float(upper), 1.0 / float(lower) if side == "both" else 0.0)
            for median, upper, lower in zip(
                self.median[name], self.upper[name], self.lower[name], strict=True
            )
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            part: {name: values.tolist() for name, values in table.items()}
            for part, table in (("median", self.median), ("upper", self.upper), ("lower", self.lower))
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureCalibration:
        def table(part: str) -> dict[str, npt.NDArray[np.float32]]:
            return {name: np.asarray(values, dtype=np.float32) for name, values in data[part].items()}

        return cls(table("median"), table("upper"), table("lower"))
