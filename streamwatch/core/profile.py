"""What a stream's normal looks like before any model sees it: sampling, seasonality, robust scale.

Fitted once per stream on its training data and then frozen (until a retrain), so that the detector sees
values on a comparable scale across streams and a daily cycle does not hide a slow shift inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.records import FloatArray

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S

# What `stabilise_counts` makes of a zero count.
_ANSCOMBE_FLOOR = 2.0 * math.sqrt(0.375)

# A season must explain at least this share of a channel's variance to be worth removing; below that the
# profile would mostly add its own estimation noise.
_MIN_SEASONAL_SHARE = 0.2


def sampling_interval(timestamps: npt.NDArray[np.float64]) -> float:
    """Median spacing of the timestamps in seconds (robust to the odd gap or duplicate)."""
    if len(timestamps) < 2:
        raise ValueError("need at least two samples to measure the sampling interval")
    steps = np.diff(timestamps)
    steps = steps[steps > 0]
    if len(steps) == 0:
        raise ValueError("timestamps do not advance")
    return float(np.median(steps))


def dominant_period(values: FloatArray, *, min_lag: int = 4, max_lag: int = 512) -> tuple[int, float]:
    """The lag (in samples) of the strongest autocorrelation peak of the first channel, and its height
    (0 when there is none).

    Looks at the level and at the envelope of its changes (absolute first differences, lightly smoothed)
    and keeps the clearer peak: a spiky rhythm with beat-to-beat variability (an ECG) or slow wander under
    it shows far better in the envelope, a smooth cycle in the level. FFT-based, so cheap on long prefixes.
    """
    series = values[:, 0].astype(np.float64) if values.ndim == 2 else values.astype(np.float64)
    envelope = np.convolve(np.abs(np.diff(series)), np.ones(3) / 3.0, mode="same")
    best = (0, 0.0)
    for candidate in (series, envelope):
        found = _acf_peak(candidate, min_lag=min_lag, max_lag=min(max_lag, len(candidate) // 3))
        if found[1] > best[1]:
            best = found
    return best


def _acf_peak(series: npt.NDArray[np.float64], *, min_lag: int, max_lag: int) -> tuple[int, float]:
    if max_lag <= min_lag:
        return 0, 0.0
    centred = series - series.mean()
    size = 1 << math.ceil(math.log2(2 * len(centred)))
    spectrum = np.fft.rfft(centred, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 1]
    if acf[0] <= 0:
        return 0, 0.0
    acf = acf / acf[0]
    best_lag, best_height = 0, 0.0
    # A peak: higher than its neighbours and reached after the ACF first dipped towards zero, which skips
    # the trivially high correlation of neighbouring samples in smooth signals.
    dipped = False
    for lag in range(1, max_lag):
        if acf[lag] < 0.1:
            dipped = True
        if not dipped or lag < min_lag:
            continue
        if acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1] and acf[lag] > best_height:
            best_lag, best_height = lag, float(acf[lag])
    return best_lag, best_height


@dataclass(frozen=True, slots=True)
class Seasonality:
    """A per-phase median profile over a calendar period, one column per channel."""

    period_s: float
    bins: int
    profile: npt.NDArray[np.float32]  # (bins, channels)

    def at(self, timestamps: npt.NDArray[np.float64]) -> FloatArray:
        index = (np.mod(timestamps, self.period_s) / self.period_s * self.bins).astype(np.int64) % self.bins
        return self.profile[index]

    def to_json(self) -> dict[str, Any]:
        return {"period_s": self.period_s, "bins": self.bins, "profile": self.profile.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Seasonality:
        return cls(float(data["period_s"]), int(data["bins"]), np.asarray(data["profile"], dtype=np.float32))


def fit_seasonality(
    timestamps: npt.NDArray[np.float64], values: FloatArray, *, interval_s: float
) -> Seasonality | None:
    """A daily (or weekly) profile when the training data covers the period and the season matters.

    One day is enough for a daily profile (operators often have just a day of clean history; the profile
    is then smoothed more, so that it holds the cycle and not that day's noise); a weekly one needs two
    weeks.
    """
    span = float(timestamps[-1] - timestamps[0]) if len(timestamps) else 0.0
    # A weekly profile from a single week would hold that week's days, noise and all: it needs two.
    for period, needed in ((WEEK_S, 2 * WEEK_S), (DAY_S, DAY_S)):
        if span < needed - interval_s or interval_s > period / 48:
            continue
        season = season_for(period, timestamps, values, interval_s=interval_s)
        residual = values - season.at(timestamps)
        total = np.var(values, axis=0)
        explained = 1.0 - np.var(residual, axis=0) / np.where(total > 0, total, 1.0)
        if float(np.max(explained)) >= _MIN_SEASONAL_SHARE:
            return season
    return None


def season_for(
    period: float, timestamps: npt.NDArray[np.float64], values: FloatArray, *, interval_s: float
) -> Seasonality:
    """The median profile over `period`, whatever part of it the data covers (gaps take the nearest bin)."""
    span = float(timestamps[-1] - timestamps[0]) if len(timestamps) else 0.0
    # One bin per sample up to 5-minute resolution; finer bins only add noise to the profile.
    bins = int(min(period / interval_s, period / 300.0))
    index = (np.mod(timestamps, period) / period * bins).astype(np.int64) % bins
    profile = np.zeros((bins, values.shape[1]), dtype=np.float32)
    for b in range(bins):
        members = values[index == b]
        if len(members):
            profile[b] = np.median(members, axis=0)
    profile = _fill_and_smooth(profile, index, bins, passes=1 if span >= 2 * period else 3)
    centred = profile - np.median(profile, axis=0)
    return Seasonality(period, bins, centred.astype(np.float32))


def cross_fitted(
    profile: StreamProfile, timestamps: npt.NDArray[np.float64], values: FloatArray
) -> FloatArray:
    """Training data normalised as new data will be: each half with a season fitted on the other half.

    A profile fitted on a day or two follows that data's own noise, so in-sample residuals are smaller than
    the residuals of the days to come, and evidence calibrated on them (the level above all) would make an
    ordinary evening look anomalous. Two-fold cross-fitting gives calibration honest residuals.
    """
    if profile.seasonality is None or len(timestamps) < 4:
        return profile.normalise(timestamps, values)
    stabilised = profile.stabilised(values)
    half = len(timestamps) // 2
    adjusted = np.empty_like(stabilised)
    for fit, apply in ((slice(half, None), slice(0, half)), (slice(0, half), slice(half, None))):
        season = season_for(
            profile.seasonality.period_s, timestamps[fit], stabilised[fit], interval_s=profile.interval_s
        )
        adjusted[apply] = stabilised[apply] - season.at(timestamps[apply])
    return ((adjusted - profile.centre) / profile.scale).astype(np.float32)


def _fill_and_smooth(
    profile: FloatArray, index: npt.NDArray[np.int64], bins: int, *, passes: int
) -> FloatArray:
    seen = np.zeros(bins, dtype=bool)
    seen[np.unique(index)] = True
    if not seen.all():
        filled_from = np.flatnonzero(seen)
        for b in np.flatnonzero(~seen):
            nearest = filled_from[np.argmin(np.abs(filled_from - b))]
            profile[b] = profile[nearest]
    # Circular moving average over 3 bins, `passes` times: the median per bin is noisy, the cycle smooth.
    for _ in range(passes):
        profile = (np.roll(profile, 1, axis=0) + profile + np.roll(profile, -1, axis=0)) / 3.0
    return profile.astype(np.float32)


def is_count(values: FloatArray) -> npt.NDArray[np.bool_]:
    """Per channel: are all values non-negative integers (log-level counts, requests per minute)?"""
    return np.asarray(np.all((values >= 0) & (values == np.round(values)), axis=0))


def stabilise_counts(values: FloatArray, counts: npt.NDArray[np.bool_]) -> FloatArray:
    """Anscombe's transform on count channels: Poisson noise becomes about one unit at any rate, so a quiet
    night and a busy afternoon are judged alike and a rare level's single line is no many-sigma event."""
    if not counts.any():
        return values
    return np.where(counts, 2.0 * np.sqrt(np.maximum(values, 0.0) + 0.375), values).astype(np.float32)


def unstabilise_counts(
    values: npt.NDArray[np.float64], counts: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Inverse of `stabilise_counts`: count channels back to non-negative integers (values below the
    transform's floor, which no count reaches, become 0)."""
    if not counts.any():
        return values
    restored = np.round((np.maximum(values, _ANSCOMBE_FLOOR) / 2.0) ** 2 - 0.375)
    raw: npt.NDArray[np.float64] = np.where(counts, np.maximum(restored, 0.0), values)
    return raw


@dataclass(frozen=True, slots=True)
class StreamProfile:
    """Count stabilisation, seasonal adjustment, then robust scaling, per channel; frozen after fit."""

    channels: tuple[str, ...]
    interval_s: float
    centre: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    seasonality: Seasonality | None = None
    counts: npt.NDArray[np.bool_] | None = None

    def normalise(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> FloatArray:
        """(N, C) raw values at the given times -> (N, C) seasonally adjusted, robustly scaled."""
        adjusted = self.stabilised(values)
        if self.seasonality is not None:
            adjusted = adjusted - self.seasonality.at(timestamps)
        return ((adjusted - self.centre) / self.scale).astype(np.float32)

    def normalise_windows(self, starts: npt.NDArray[np.float64], windows: FloatArray) -> FloatArray:
        """(B, L, C) windows starting at `starts`, sampled every `interval_s` -> normalised copies."""
        adjusted = self.stabilised(windows)
        if self.seasonality is not None:
            length = windows.shape[1]
            times = starts[:, None] + np.arange(length)[None, :] * self.interval_s
            adjusted = adjusted - self.seasonality.at(times.reshape(-1)).reshape(windows.shape)
        return ((adjusted - self.centre) / self.scale).astype(np.float32)

    def denormalise(
        self, timestamps: npt.NDArray[np.float64], normalised: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Inverse of `normalise`: (N, C) normalised values at the given times -> raw units."""
        adjusted = normalised * self.scale.astype(np.float64) + self.centre.astype(np.float64)
        if self.seasonality is not None:
            adjusted = adjusted + self.seasonality.at(timestamps).astype(np.float64)
        return adjusted if self.counts is None else unstabilise_counts(adjusted, self.counts)

    def stabilised(self, values: FloatArray) -> FloatArray:
        return values if self.counts is None else stabilise_counts(values, self.counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "interval_s": self.interval_s,
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "seasonality": None if self.seasonality is None else self.seasonality.to_json(),
            "counts": None if self.counts is None else self.counts.tolist(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamProfile:
        season = data.get("seasonality")
        return cls(
            tuple(data["channels"]),
            float(data["interval_s"]),
            np.asarray(data["centre"], dtype=np.float32),
            np.asarray(data["scale"], dtype=np.float32),
            None if season is None else Seasonality.from_json(season),
            None if data.get("counts") is None else np.asarray(data["counts"], dtype=bool),
        )


def fit_profile(
    channels: tuple[str, ...], timestamps: npt.NDArray[np.float64], values: FloatArray
) -> StreamProfile:
    """Fit count stabilisation, seasonality (if any) and per-channel robust centre/scale on normal data."""
    interval = sampling_interval(timestamps)
    counts = is_count(values)
    stabilised = stabilise_counts(values, counts)
    season = fit_seasonality(timestamps, stabilised, interval_s=interval)
    adjusted = stabilised - season.at(timestamps) if season is not None else stabilised
    centre = np.median(adjusted, axis=0)
    # Stabilised counts have Poisson noise of about one unit: never assume less.
    scale = np.where(counts, np.maximum(robust_scale(adjusted), 1.0), robust_scale(adjusted))
    return StreamProfile(
        channels,
        interval,
        centre.astype(np.float32),
        scale.astype(np.float32),
        season,
        counts if counts.any() else None,
    )


def robust_scale(values: FloatArray) -> npt.NDArray[np.float32]:
    """Per-channel spread that one outlier cannot inflate and a mostly-constant channel cannot zero.

    MAD first; for channels where most values are equal the MAD is 0, so fall back to the standard
    deviation, then to 1. A floor relative to the level keeps a near-constant channel from turning float
    noise into huge normalised values.
    """
    centre = np.median(values, axis=0)
    mad = 1.4826 * np.median(np.abs(values - centre), axis=0)
    std = np.std(values, axis=0)
    scale = np.where(mad > 0, mad, std)
    floor = np.maximum(1e-6 * np.abs(centre), 1e-9)
    scale = np.where(scale > floor, scale, np.where(std > floor, std, 1.0))
    return scale.astype(np.float32)
