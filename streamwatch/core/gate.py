"""The validation gate: a retrained model (the challenger) goes live only if it is at least as good as the
live one (the champion) on recent normal data neither was trained on.

Two tests, on the same held-back windows for both models:

(a) reconstruction: the challenger's reconstruction error, in each stream's own units (so two models with
    different normalisations compare fairly), may exceed the champion's by at most `max_error_ratio`
    (geometric mean over the group's streams);
(b) detection: anomalies injected by the generator into copies of those windows must be caught at least as
    often: the challenger is rejected when, on the same probes, it misses more than it newly catches by
    over `max_detection_drop` of the probes and by more than chance (a paired, McNemar-style test). Each
    model is judged with thresholds fitted, as live, on its own scores of the clean windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamwatch.core.bootstrap import GroupModel, StreamSeries
from streamwatch.core.detector import model_input
from streamwatch.core.probes import PROBE_KINDS, Probes, draw_probes
from streamwatch.core.profile import StreamProfile
from streamwatch.core.thresholds import ThresholdConfig
from streamwatch.records import FloatArray

# Held-back windows per stream the reconstruction test averages over (strided evenly when there are more).
_MAX_GATE_WINDOWS = 512


@dataclass(frozen=True, slots=True)
class GateConfig:
    max_error_ratio: float = 1.25
    max_detection_drop: float = 0.05
    probes_per_stream: int = 40
    severity: float = 1.0
    kinds: tuple[str, ...] = PROBE_KINDS

    def __post_init__(self) -> None:
        if not self.max_error_ratio >= 1.0:
            raise ValueError(f"max_error_ratio must be >= 1, got {self.max_error_ratio}")
        if not 0.0 <= self.max_detection_drop <= 1.0:
            raise ValueError(f"max_detection_drop must be in [0, 1], got {self.max_detection_drop}")
        if self.probes_per_stream < 1:
            raise ValueError(f"probes_per_stream must be >= 1, got {self.probes_per_stream}")


@dataclass(frozen=True, slots=True)
class Eyesight:
    """One model on the held-back data."""

    error: dict[str, float]  # per stream: mean squared reconstruction error in the stream's units
    detection: float  # share of probes caught
    false_alarms: float  # share of clean probe windows above the threshold
    caught: npt.NDArray[np.bool_]  # per probe, in one order for both models

    @property
    def finite(self) -> bool:
        return all(math.isfinite(value) for value in self.error.values()) and math.isfinite(self.detection)


@dataclass(frozen=True, slots=True)
class GateReport:
    accepted: bool
    reason: str
    champion: Eyesight
    challenger: Eyesight
    error_ratio: float
    probes: int

    def figures(self) -> dict[str, float]:
        return {
            "error_ratio": self.error_ratio,
            "champion_detection": self.champion.detection,
            "challenger_detection": self.challenger.detection,
            "champion_false_alarms": self.champion.false_alarms,
            "challenger_false_alarms": self.challenger.false_alarms,
            "probes": float(self.probes),
        }


def judge(
    champion: GroupModel,
    champion_profiles: Mapping[str, StreamProfile],
    challenger: GroupModel,
    held_back: Mapping[str, StreamSeries],
    *,
    config: GateConfig,
    threshold: ThresholdConfig,
    seed: int,
    new_normal: frozenset[str] = frozenset(),
) -> GateReport:
    """Compare the two models on `held_back` (raw recent normal data per stream).

    Streams in `new_normal` left the champion's normal for good: the champion's reconstruction of them is
    no benchmark, so test (a) skips them (test (b), with thresholds fitted on each model's own scores of
    the new data, still applies)."""
    length = champion.spec.length
    probes = {
        stream: draw_probes(
            series,
            length=length,
            count=config.probes_per_stream,
            rng=np.random.default_rng([seed, index]),
            kinds=config.kinds,
            severity=config.severity,
        )
        for index, (stream, series) in enumerate(sorted(held_back.items()))
    }
    old = _eyesight(champion, champion_profiles, held_back, probes, threshold)
    new = _eyesight(challenger, challenger.profiles, held_back, probes, threshold)
    count = sum(len(item) for item in probes.values())
    comparable = [stream for stream in old.error if stream not in new_normal]
    ratio = _error_ratio(
        {stream: old.error[stream] for stream in comparable},
        {stream: new.error[stream] for stream in comparable},
    )
    verdict = _verdict(old, new, ratio, config, champion.version)
    return GateReport(verdict is None, verdict or "accepted", old, new, ratio, count)


def _verdict(old: Eyesight, new: Eyesight, ratio: float, config: GateConfig, champion: str) -> str | None:
    if not new.finite:
        return "its scores or reconstructions of recent normal data are not finite"
    if not ratio <= config.max_error_ratio:
        return (
            f"it reconstructs recent normal data {ratio:.2f}x worse than {champion} "
            f"(at most {config.max_error_ratio:g}x allowed)"
        )
    # Paired on the same probes: only the probes one model caught and the other missed tell them apart.
    # A drop counts when it exceeds the allowance and also chance (about two standard deviations of the
    # discordant count), so that a handful of probes cannot reject an equally good model.
    lost = int(np.sum(old.caught & ~new.caught))
    won = int(np.sum(new.caught & ~old.caught))
    total = max(len(old.caught), 1)
    if lost - won > config.max_detection_drop * total and lost - won > 2.0 * math.sqrt(lost + won):
        return (
            f"it catches {new.detection:.0%} of injected anomalies, {champion} {old.detection:.0%} "
            f"(at most {config.max_detection_drop:.0%} less allowed)"
        )
    return None


def _error_ratio(old: Mapping[str, float], new: Mapping[str, float]) -> float:
    logs = []
    for stream, before in old.items():
        after = new[stream]
        if not math.isfinite(after):
            return math.inf
        # A champion that reconstructs perfectly (constant data) leaves nothing to beat.
        logs.append(math.log(max(after, 1e-12) / max(before, 1e-12)))
    return math.exp(sum(logs) / len(logs)) if logs else 1.0


def _eyesight(
    model: GroupModel,
    profiles: Mapping[str, StreamProfile],
    held_back: Mapping[str, StreamSeries],
    probes: Mapping[str, Probes],
    threshold: ThresholdConfig,
) -> Eyesight:
    errors: dict[str, float] = {}
    caught: list[npt.NDArray[np.bool_]] = []
    fired = total = 0
    for stream, series in held_back.items():
        profile = profiles[stream]
        starts, windows = _gate_windows(series, model.spec.length)
        normalised = profile.normalise_windows(starts, windows)
        errors[stream] = _raw_error(model, profile, normalised)
        drawn = probes[stream]
        if not len(drawn):
            continue
        # The level the probes are judged against: the median level of the clean held-back windows.
        reference = np.median(normalised.mean(axis=1), axis=0).astype(np.float32)
        normal_scores = _scores(model, normalised - reference)
        clean = _scores(model, profile.normalise_windows(drawn.starts, drawn.clean) - reference)
        anomalous = _scores(model, profile.normalise_windows(drawn.starts, drawn.injected) - reference)
        if not all(np.isfinite(scores).all() for scores in (normal_scores, clean, anomalous)):
            errors[stream] = math.inf  # a model that scores NaN sees nothing
            caught.append(np.zeros(len(drawn), dtype=bool))
            total += len(drawn)
            continue
        fitted = threshold.build()
        fitted.fit(normal_scores)
        caught.append((anomalous > fitted.value) & (clean <= fitted.value))
        fired += int(np.sum(clean > fitted.value))
        total += len(drawn)
    outcomes = np.concatenate([*caught, np.zeros(0, dtype=bool)])
    detection = float(outcomes.mean()) if total else 1.0
    return Eyesight(errors, detection, fired / total if total else 0.0, outcomes)


def _gate_windows(series: StreamSeries, length: int) -> tuple[npt.NDArray[np.float64], FloatArray]:
    """At most `_MAX_GATE_WINDOWS` windows within the segments of `series`, and their start times."""
    segments = series.bounds()
    available = sum(max(0, stop - start - length + 1) for start, stop in segments)
    stride = max(1, math.ceil(available / _MAX_GATE_WINDOWS))
    rows = np.concatenate(
        [np.arange(start, stop - length + 1, stride) for start, stop in segments if stop - start >= length]
        or [np.empty(0, dtype=np.int64)]
    ).astype(np.int64)
    windows = series.values[rows[:, None] + np.arange(length)[None, :]]
    return series.timestamps[rows], windows.astype(np.float32)


def _scores(model: GroupModel, normalised: FloatArray) -> npt.NDArray[np.float64]:
    if not len(normalised):
        return np.empty(0)
    return model.detector.score(normalised).score.astype(np.float64)


def _raw_error(model: GroupModel, profile: StreamProfile, normalised: FloatArray) -> float:
    """Mean squared reconstruction error in the stream's own units (the profile's scale undone)."""
    if not len(normalised):
        return 0.0
    inputs = model_input(normalised)
    rebuilt = model.detector.reconstructor.reconstruct(inputs)
    per_channel = np.mean((rebuilt.astype(np.float64) - inputs) ** 2, axis=(0, 1))
    return float(np.mean(per_channel * profile.scale.astype(np.float64) ** 2))
