"""Labelled anomaly injection, plus the file formats that carry series and labels to other tools.

Every magnitude is measured in the channel's own robust scale, so severity 1.0 means "clearly anomalous to a
human" whether the channel is a 50 Hz grid frequency, an ECG in millivolts or a per-minute error count.
Spikes, shifts and drifts scale linearly with severity; bursts, time warps and imposed rhythms grow with it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from streamwatch.records import iso_utc, parse_iso_utc

if TYPE_CHECKING:
    from streamwatch.generate.simulate import Series

F64 = npt.NDArray[np.float64]
PathLike = str | os.PathLike[str]

KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "drift",
    "variance_burst",
    "flatline",
    "dropout",
    "pattern_change",
    "correlation_break",
)

# Anomalies drawn from a trained autoencoder (streamwatch.generate.from_model); labels may carry these too.
MODEL_KINDS: tuple[str, ...] = ("encoder_weights", "latent_noise", "latent_offset")

# Magnitude ranges at severity 1.0, in robust scales of the channel.
_SPIKE_SCALES = (6.0, 10.0)
_SHIFT_SCALES = (3.0, 5.0)
_DRIFT_SCALES = (4.0, 6.0)
_NOISE_FACTORS = (3.0, 5.0)
# Time-warp factors at severity 1.0: the rhythm runs this much faster (or 1/x slower).
_WARP_FACTORS = (1.5, 2.0)
_MAX_SPIKE_SAMPLES = 3
# Envelope autocorrelation needed to call a stretch periodic: ECG reaches 0.6-0.9, aperiodic noise <0.45.
_PERIODIC_ACF = 0.5
# Gaussian constants: MAD -> sigma, and the width of the central 98% in sigmas.
_MAD_TO_SIGMA = 1.4826
_Q01_Q99_IN_SIGMAS = 4.6527


@dataclass(frozen=True, slots=True)
class Label:
    """One injected anomaly: the span it covers (first and last affected sample, inclusive, epoch seconds)."""

    start: float
    end: float
    kind: str
    channels: tuple[str, ...]
    severity: float

    def to_json(self) -> dict[str, Any]:
        return {
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "kind": self.kind,
            "channels": list(self.channels),
            "severity": float(self.severity),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Label:
        """Inverse of `to_json`; raises ValueError on anything malformed."""
        try:
            start, end = _parse_time(data["start"]), _parse_time(data["end"])
            kind, channels, severity = data["kind"], data["channels"], data["severity"]
        except KeyError as missing:
            raise ValueError(f"label lacks field {missing}") from None
        if kind not in KINDS and kind not in MODEL_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}")
        if not isinstance(channels, list) or not all(isinstance(name, str) for name in channels):
            raise ValueError("label channels must be a list of names")
        if isinstance(severity, bool) or not isinstance(severity, int | float) or not math.isfinite(severity):
            raise ValueError(f"label severity must be a finite number, got {severity!r}")
        if end < start:
            raise ValueError("label ends before it starts")
        return cls(start=start, end=end, kind=kind, channels=tuple(channels), severity=float(severity))


def inject(
    series: Series,
    kind: str,
    *,
    at: int,
    length: int,
    rng: np.random.Generator,
    severity: float = 1.0,
    channels: Sequence[int] | None = None,
) -> tuple[Series, Label]:
    """Return a copy of `series` with one anomaly of `kind` over samples [at, at+length), and its label.

    Spikes cover only 1-3 samples at `at`; the label always spans exactly the samples that changed (or could
    have: a flatline's first sample keeps its value by definition). `channels` are column indices; by default
    dropout hits every channel and every other kind one channel chosen by `rng`. Flatline, dropout and
    correlation_break have no size to scale, so their severity is only recorded.
    """
    _check_kind(kind, series.values.shape[1])
    _check_span(at, length, series.values.shape[0])
    _check_severity(severity)
    reference = series.values.astype(np.float64)
    work = reference.copy()
    label = _apply(
        series, work, reference, _channel_scales(reference), kind, at, length, channels, rng, severity
    )
    return replace(series, values=work.astype(np.float32)), label


def inject_many(
    series: Series,
    *,
    rng: np.random.Generator,
    kinds: Sequence[str] = KINDS,
    count: int,
    min_gap: int,
    length_range: tuple[int, int],
    severity: float = 1.0,
    protect_prefix: int = 0,
    protect_suffix: int = 0,
) -> tuple[Series, list[Label]]:
    """Inject `count` non-overlapping anomalies, at least `min_gap` samples apart, sorted by time.

    No anomaly touches the first `protect_prefix` samples (the training part) or the last `protect_suffix`.
    Kinds are dealt evenly (each appears count // len(kinds) or one more times) in random order;
    correlation_break is skipped on single-channel series. Raises ValueError when the anomalies cannot fit.
    """
    n_samples, n_channels = series.values.shape
    usable = _usable_kinds(kinds, n_channels)
    _check_severity(severity)
    spans = _plan_spans(rng, n_samples, count, min_gap, length_range, protect_prefix, protect_suffix)
    kinds_in_time = _deal_kinds(usable, len(spans), rng)
    reference = series.values.astype(np.float64)
    scales = _channel_scales(reference)
    work = reference.copy()
    labels = [
        _apply(series, work, reference, scales, kind, at, length, None, rng, severity)
        for kind, (at, length) in zip(kinds_in_time, spans, strict=True)
    ]
    return replace(series, values=work.astype(np.float32)), labels


def max_injections(
    n_samples: int,
    *,
    min_gap: int,
    length_range: tuple[int, int],
    protect_prefix: int = 0,
    protect_suffix: int = 0,
) -> int:
    """The largest `count` that `inject_many` can always place with these settings."""
    shortest = length_range[0]
    available = n_samples - protect_prefix - protect_suffix
    if shortest < 1 or available < shortest:
        return 0
    return 1 + (available - shortest) // (shortest + min_gap)


def write_labels(path: PathLike, labels: Sequence[Label]) -> None:
    body = {"labels": [label.to_json() for label in sorted(labels, key=lambda label: label.start)]}
    Path(path).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def read_labels(path: PathLike) -> list[Label]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise ValueError(f"{path}: expected an object with a 'labels' list")
    items: list[Any] = data["labels"]
    if not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path}: every label must be an object")
    return [Label.from_json(item) for item in items]


def write_csv(path: PathLike, series: Series) -> None:
    """`timestamp,<channel>,...` rows with ISO-8601 UTC millisecond timestamps.

    Values use the shortest text that reads back to the identical float32 (at most 9 significant digits),
    so 50.0123 Hz stays 50.0123 rather than being rounded away.
    """
    for name in series.channels:
        if any(char in name for char in ',"\r\n'):
            raise ValueError(f"channel name {name!r} cannot be written to CSV")
    stamps = [iso_utc(ts) for ts in series.timestamps.tolist()]
    cells: list[list[str]] = series.values.astype(str).tolist()
    lines = [",".join(("timestamp", *series.channels))]
    lines.extend(f"{stamp},{','.join(row)}" for stamp, row in zip(stamps, cells, strict=True))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_csv(path: PathLike, *, rate_hz: float | None = None) -> Series:
    """Read what `write_csv` wrote. The rate is inferred from the timestamps unless given."""
    # Imported here because simulate imports this module while it loads.
    from streamwatch.generate.simulate import Series

    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split(",")
    if header[0] != "timestamp" or len(header) < 2:
        raise ValueError(f"{path}: header must be 'timestamp,<channel>,...'")
    rows = [line.split(",") for line in lines[1:]]
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"{path}: every row needs {len(header)} fields")
    timestamps = np.array([parse_iso_utc(row[0]) for row in rows], dtype=np.float64)
    cells = np.array([row[1:] for row in rows], dtype=str).reshape(len(rows), len(header) - 1)
    values = cells.astype(np.float32)
    rate = rate_hz if rate_hz is not None else _infer_rate(timestamps, path)
    return Series(timestamps=timestamps, channels=tuple(header[1:]), values=values, rate_hz=rate)


# --------------------------------------------------------------------------------------------------------
# Planning


def _usable_kinds(kinds: Sequence[str], n_channels: int) -> list[str]:
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}")
    usable = [kind for kind in dict.fromkeys(kinds) if kind != "correlation_break" or n_channels >= 2]
    if not usable:
        raise ValueError("none of the requested anomaly kinds applies to this series")
    return usable


def _deal_kinds(kinds: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` kinds, as evenly split as possible, in random order."""
    dealt = [kinds[i] for i in rng.permutation(len(kinds))]
    repeated = [dealt[i % len(dealt)] for i in range(count)]
    return [repeated[i] for i in rng.permutation(count)]


def _plan_spans(
    rng: np.random.Generator,
    n_samples: int,
    count: int,
    min_gap: int,
    length_range: tuple[int, int],
    protect_prefix: int,
    protect_suffix: int,
) -> list[tuple[int, int]]:
    """(start, length) pairs, sorted, separated by >= min_gap, inside the unprotected middle."""
    shortest, longest = length_range
    if shortest < 1 or longest < shortest:
        raise ValueError(f"length_range must satisfy 1 <= low <= high, got {length_range}")
    if count < 0 or min_gap < 0 or protect_prefix < 0 or protect_suffix < 0:
        raise ValueError("count, min_gap and the protected lengths must be non-negative")
    if count == 0:
        return []
    fits = max_injections(
        n_samples,
        min_gap=min_gap,
        length_range=length_range,
        protect_prefix=protect_prefix,
        protect_suffix=protect_suffix,
    )
    if count > fits:
        raise ValueError(f"{count} anomalies do not fit; at most {fits} with these gaps and lengths")
    available = n_samples - protect_prefix - protect_suffix
    lengths = rng.integers(shortest, longest + 1, size=count)
    lengths = _shrink_to_fit(lengths, shortest, available - (count - 1) * min_gap)
    slack = available - int(lengths.sum()) - (count - 1) * min_gap
    # Sorted uniform cut points spread the slack randomly before, between and after the anomalies.
    cuts = np.sort(rng.integers(0, slack + 1, size=count))
    preceding = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    starts = protect_prefix + cuts + preceding + np.arange(count) * min_gap
    return [(int(start), int(length)) for start, length in zip(starts, lengths, strict=True)]


def _shrink_to_fit(lengths: npt.NDArray[np.int64], shortest: int, budget: int) -> npt.NDArray[np.int64]:
    excess = int(lengths.sum()) - budget
    shrunk = lengths.copy()
    for i in range(shrunk.size):
        if excess <= 0:
            break
        cut = min(excess, int(shrunk[i]) - shortest)
        shrunk[i] -= cut
        excess -= cut
    return shrunk


# --------------------------------------------------------------------------------------------------------
# Scales


@dataclass(frozen=True, slots=True)
class _ColumnScale:
    spread: float  # robust sigma of the values: the unit of spikes, shifts and drifts
    noise: float  # robust sigma of the sample-to-sample jitter: the unit of variance bursts
    nonnegative: bool  # a physical floor at zero that injected values must respect
    counts: bool  # non-negative integers (log lines, requests) stay integers


def _channel_scales(values: F64) -> list[_ColumnScale]:
    median = np.median(values, axis=0)
    mad_sigma = _MAD_TO_SIGMA * np.median(np.abs(values - median), axis=0)
    # Spiky signals (ECG) have a tiny MAD because most samples sit on the baseline; the central 98% sees
    # the R waves and keeps "6 scales" above the heartbeat itself.
    q01, q99 = np.quantile(values, [0.01, 0.99], axis=0)
    tail_sigma = (q99 - q01) / _Q01_Q99_IN_SIGMAS
    jitter = _jitter_sigma(values)
    nonnegative: npt.NDArray[np.bool_] = np.all(values >= 0.0, axis=0)
    counts: npt.NDArray[np.bool_] = nonnegative & np.all(values == np.round(values), axis=0)
    # A constant channel still needs a unit: one count, or a millionth of its level.
    floor = np.where(counts, 1.0, 1e-6 * np.maximum(np.abs(median), 1.0))
    spread = np.maximum.reduce([mad_sigma, tail_sigma, jitter, floor])
    # Smooth channels have almost no jitter; a quarter of the spread keeps a burst visible on them.
    noise = np.maximum(jitter, spread / 4.0)
    return [
        _ColumnScale(float(s), float(j), bool(p), bool(c))
        for s, j, p, c in zip(spread, noise, nonnegative, counts, strict=True)
    ]


def _jitter_sigma(values: F64) -> F64:
    if values.shape[0] < 2:
        return np.zeros(values.shape[1])
    steps = np.diff(values, axis=0)
    centred = np.abs(steps - np.median(steps, axis=0))
    # A difference of two independent samples has sqrt(2) times their sigma.
    result: F64 = _MAD_TO_SIGMA * np.median(centred, axis=0) / math.sqrt(2.0)
    return result


# --------------------------------------------------------------------------------------------------------
# Applying one anomaly


class _Shaper(Protocol):
    def __call__(
        self, column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
    ) -> F64: ...


def _apply(
    series: Series,
    work: F64,
    reference: F64,
    scales: list[_ColumnScale],
    kind: str,
    at: int,
    length: int,
    channels: Sequence[int] | None,
    rng: np.random.Generator,
    severity: float,
) -> Label:
    """Rewrite work[at:stop, chosen] in place from the clean `reference`; return the label."""
    chosen = _choose_channels(kind, channels, work.shape[1], rng)
    stop = at + min(length, int(rng.integers(1, _MAX_SPIKE_SAMPLES + 1))) if kind == "spike" else at + length
    shaper = _SHAPERS[kind]
    for channel in chosen:
        scale = scales[channel]
        segment = shaper(reference[:, channel], at, stop, scale, rng, severity)
        work[at:stop, channel] = _respect_domain(segment, scale)
    return Label(
        start=float(series.timestamps[at]),
        end=float(series.timestamps[stop - 1]),
        kind=kind,
        channels=tuple(series.channels[channel] for channel in chosen),
        severity=float(severity),
    )


def _choose_channels(
    kind: str, channels: Sequence[int] | None, n_channels: int, rng: np.random.Generator
) -> list[int]:
    if channels is None:
        if kind == "dropout":
            return list(range(n_channels))
        return [int(rng.integers(n_channels))]
    chosen = [int(channel) for channel in channels]
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError("channels must be a non-empty list of distinct column indices")
    if any(channel < 0 or channel >= n_channels for channel in chosen):
        raise ValueError(f"channel index out of range for {n_channels} channels: {chosen}")
    if kind == "correlation_break" and len(chosen) == n_channels:
        raise ValueError("correlation_break needs at least one channel left untouched to decouple from")
    return chosen


def _respect_domain(segment: F64, scale: _ColumnScale) -> F64:
    if scale.nonnegative:
        segment = np.maximum(segment, 0.0)
    if scale.counts:
        segment = np.round(segment)
    return segment


def _sign_away_from_floor(
    base: F64, magnitude: F64 | float, scale: _ColumnScale, rng: np.random.Generator
) -> float:
    """Random direction, except that a push below a physical zero floor turns upwards instead."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if sign < 0 and scale.nonnegative and bool(np.any(base - magnitude < 0.0)):
        return 1.0
    return sign


def _spike(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    base = column[at:stop]
    magnitude = float(rng.uniform(*_SPIKE_SCALES)) * severity * scale.spread
    return base + _sign_away_from_floor(base, magnitude, scale, rng) * magnitude


def _level_shift(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    base = column[at:stop]
    magnitude = float(rng.uniform(*_SHIFT_SCALES)) * severity * scale.spread
    return base + _sign_away_from_floor(base, magnitude, scale, rng) * magnitude


def _drift(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    base = column[at:stop]
    length = stop - at
    ramp = float(rng.uniform(*_DRIFT_SCALES)) * severity * scale.spread * np.arange(1, length + 1) / length
    return base + _sign_away_from_floor(base, ramp, scale, rng) * ramp


def _variance_burst(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    factor = 1.0 + (float(rng.uniform(*_NOISE_FACTORS)) - 1.0) * severity
    # Independent noise of this sigma on top of the existing jitter makes the total `factor` times larger.
    extra_sigma = scale.noise * math.sqrt(factor * factor - 1.0)
    return column[at:stop] + rng.normal(0.0, extra_sigma, stop - at)


def _flatline(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    return np.full(stop - at, column[at])


def _dropout(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    return np.zeros(stop - at)


def _pattern_change(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    if _is_periodic(column, at, stop):
        return _time_warp(column, at, stop, rng, severity)
    return _impose_rhythm(column[at:stop], rng, severity)


def _is_periodic(column: F64, at: int, stop: int) -> bool:
    """Whether the signal around the segment repeats with at least two cycles inside the segment.

    Judged on the envelope of the sample-to-sample changes rather than on the raw values: the envelope
    ignores baseline wander and trends, and its broad peaks tolerate the beat-to-beat jitter of a heart
    rhythm, which smears the raw autocorrelation of sharp QRS complexes.
    """
    length = stop - at
    longest = length // 2
    if longest < 4:
        return False
    around = column[max(0, at - 2 * length) : min(column.size, stop + 2 * length)]
    envelope = np.abs(np.diff(around))
    width = max(1, length // 40)
    envelope = np.convolve(envelope, np.ones(width) / width, mode="same")
    centred = envelope - envelope.mean()
    power = float(centred @ centred)
    if power <= 0.0:
        return False
    spectrum = np.fft.rfft(centred, 2 * centred.size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: longest + 1] / power
    below = np.flatnonzero(acf < 0.0)
    if below.size == 0 or below[0] >= longest:
        return False  # still correlated at half the segment: a trend, not a rhythm
    return bool(acf[below[0] : longest + 1].max() >= _PERIODIC_ACF)


def _time_warp(column: F64, at: int, stop: int, rng: np.random.Generator, severity: float) -> F64:
    """Resample the segment from a faster- or slower-running stretch of the same signal, same level."""
    length = stop - at
    change = float(rng.uniform(*_WARP_FACTORS)) - 1.0
    faster = rng.random() < 2.0 / 3.0
    factor = 1.0 + change * severity if faster else 1.0 / (1.0 + change * severity)
    # A short series cannot supply a long fast stretch; run as fast as it allows.
    factor = min(factor, (column.size - 1) / max(length - 1, 1))
    source_start = min(float(at), column.size - 1 - (length - 1) * factor)
    positions = source_start + np.arange(length) * factor
    warped: F64 = np.interp(positions, np.arange(column.size, dtype=np.float64), column)
    return warped + float(np.median(column[at:stop]) - np.median(warped))


def _impose_rhythm(segment: F64, rng: np.random.Generator, severity: float) -> F64:
    """Reorder the segment's own values into a few rise-and-fall cycles.

    Keeps the exact multiset of values (so level and variance do not move) while the shape changes in a way
    that stays visible on noise-dominated channels, where shuffled blocks would look like more of the same.
    """
    length = segment.size
    if length < 8:
        return segment[::-1].copy()
    cycles = int(np.clip(round(float(rng.uniform(2.0, 3.0)) * severity), 2, length // 4))
    ordered = np.sort(segment)
    waves = []
    for cycle in range(cycles):
        # Every cycle takes every cycles-th sorted value, so each one sweeps the full range.
        share = ordered[cycle::cycles]
        waves.append(np.concatenate((share[0::2], share[1::2][::-1])))
    rhythm: F64 = np.roll(np.concatenate(waves), int(rng.integers(length)))
    return rhythm


def _correlation_break(
    column: F64, at: int, stop: int, scale: _ColumnScale, rng: np.random.Generator, severity: float
) -> F64:
    """Replace the segment with the channel's own history from elsewhere, matched in mean and std."""
    length = stop - at
    target = column[at:stop]
    source_start = _distant_start(column.size, at, length, rng)
    source = target[::-1] if source_start is None else column[source_start : source_start + length]
    source_std, target_std = float(source.std()), float(target.std())
    gain = target_std / source_std if source_std > 0.0 else 0.0
    return (source - float(source.mean())) * gain + float(target.mean())


def _distant_start(n_samples: int, at: int, length: int, rng: np.random.Generator) -> int | None:
    """A source start at least one segment away from [at, at+length) (two if possible), or None."""
    for clearance in (2 * length, length):
        before = max(0, at - clearance + 1)  # starts 0..at-clearance
        after_first = at + clearance
        after = max(0, n_samples - length - after_first + 1)  # starts at+clearance..n-length
        if before + after == 0:
            continue
        pick = int(rng.integers(before + after))
        return pick if pick < before else after_first + pick - before
    return None


_SHAPERS: dict[str, _Shaper] = {
    "spike": _spike,
    "level_shift": _level_shift,
    "drift": _drift,
    "variance_burst": _variance_burst,
    "flatline": _flatline,
    "dropout": _dropout,
    "pattern_change": _pattern_change,
    "correlation_break": _correlation_break,
}


# --------------------------------------------------------------------------------------------------------
# Checks and small helpers


def _check_kind(kind: str, n_channels: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "correlation_break" and n_channels < 2:
        raise ValueError("correlation_break needs a series with at least two channels")


def _check_span(at: int, length: int, n_samples: int) -> None:
    if length < 1 or at < 0 or at + length > n_samples:
        raise ValueError(f"span [{at}, {at + length}) does not fit a series of {n_samples} samples")


def _check_severity(severity: float) -> None:
    if not math.isfinite(severity) or severity <= 0.0:
        raise ValueError(f"severity must be a positive finite number, got {severity}")


def _parse_time(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError(f"label time must be an ISO-8601 string, got {value!r}")
    return parse_iso_utc(value)


def _infer_rate(timestamps: F64, path: PathLike) -> float:
    if timestamps.size < 2 or timestamps[-1] <= timestamps[0]:
        raise ValueError(f"{path}: need two increasing timestamps to infer the rate; pass rate_hz")
    # End-to-end rather than one step: timestamps carry only milliseconds.
    return float((timestamps.size - 1) / (timestamps[-1] - timestamps[0]))
