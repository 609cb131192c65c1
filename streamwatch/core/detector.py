"""Scoring orchestration: a reconstructor plus calibrated window statistics -> one score per window.

The autoencoder sees each window with its own mean removed, so it judges shape and the relation between
channels; level, spread, roughness, stuck values and rhythm are judged by calibrated statistics beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamwatch.core.features import (
    FeatureCalibration,
    reconstruction_evidence,
    window_statistics,
)
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.records import FloatArray

# Normalised values beyond this are clipped before the model: the window is anomalous either way, and
# unbounded inputs would only risk float overflow inside the network.
_INPUT_LIMIT = 1e4


@dataclass(frozen=True, slots=True)
class DetectorOutput:
    score: FloatArray  # (B,)
    per_channel: FloatArray  # (B, C)


def _clipped(windows: FloatArray) -> FloatArray:
    clipped: FloatArray = np.clip(windows, -_INPUT_LIMIT, _INPUT_LIMIT).astype(np.float32)
    return clipped


def _centred(clipped: FloatArray) -> FloatArray:
    centred: FloatArray = clipped - clipped.mean(axis=1, keepdims=True, dtype=np.float32)
    return centred


def model_input(windows: FloatArray) -> FloatArray:
    """Normalised windows -> what the reconstructor sees: clipped, each window's own mean removed."""
    return _centred(_clipped(windows))


def evidence(reconstructor: Reconstructor, windows: FloatArray) -> dict[str, FloatArray]:
    """Every kind of evidence for normalised windows (B, L, C), each shaped (B, C)."""
    clipped = _clipped(windows)
    centred = _centred(clipped)  # clipped once: this runs for every scored batch
    found = window_statistics(clipped)
    found.update(reconstruction_evidence(centred, reconstructor.reconstruct(centred)))
    return found


class WindowDetector:
    """A trained reconstructor with the calibration that turns its evidence into scores."""

    def __init__(self, reconstructor: Reconstructor, calibration: FeatureCalibration, version: str) -> None:
        self.reconstructor = reconstructor
        self.calibration = calibration
        self.version = version

    @classmethod
    def calibrate(
        cls,
        reconstructor: Reconstructor,
        *,
        statistics_windows: FloatArray,
        held_out_windows: FloatArray,
        version: str,
    ) -> WindowDetector:
        """Calibrate statistics on all normal windows, reconstruction error on windows the model never saw."""
        stats = window_statistics(_clipped(statistics_windows))
        held_out = evidence(reconstructor, held_out_windows)
        stats["recon_mse"] = held_out["recon_mse"]
        stats["recon_peak"] = held_out["recon_peak"]
        return cls(reconstructor, FeatureCalibration.fit(stats), version)

    def score(self, windows: FloatArray) -> DetectorOutput:
        """Normalised windows (B, L, C), already relative to their level references -> window scores (B,)
        and per-channel scores (B, C)."""
        per_channel = self.calibration.surprise(evidence(self.reconstructor, windows))
        return DetectorOutput(per_channel.max(axis=1).astype(np.float32), per_channel)

    def score_parts(self, windows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The batched part of scoring: per-channel surprise of every kind but level (B, C), and each
        window's mean level (B, C). The level is judged window by window against a reference that moves
        with each verdict (see `level_scale`), which cannot be batched."""
        found = evidence(self.reconstructor, windows)
        means = found.pop("level")
        return self.calibration.surprise(found), means

    def level_scale(self) -> list[tuple[float, float, float]]:
        """Per channel (median, 1 / upper, 1 / lower) of the level evidence, for scoring one window at a time
        in plain floats: surprise = max(0, (d - median) / upper, (median - d) / lower), the lower side only
        where the feature is two-sided (else its factor is 0)."""
        return self.calibration.scale_of("level")

    def metadata(self) -> dict[str, Any]:
        return {"version": self.version, "calibration": self.calibration.to_json()}

    @staticmethod
    def calibration_from(metadata: Mapping[str, Any]) -> FeatureCalibration:
        return FeatureCalibration.from_json(metadata["calibration"])
