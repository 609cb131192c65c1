"""From a group's normal data to a live model: profiles, window shape, training, calibration.

Pure orchestration: the reconstructor is built by an injected factory (torch lives in `streamwatch.models`),
so the same decisions are taken offline (`detect`) and in the daemon.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.core.detector import WindowDetector, model_input
from streamwatch.core.level import follow, step_weight
from streamwatch.core.profile import StreamProfile, cross_fitted, dominant_period, fit_profile
from streamwatch.core.reconstructor import FitReport, Reconstructor
from streamwatch.core.windows import WindowSpec
from streamwatch.records import FloatArray

ReconstructorFactory = Callable[[int, int], Reconstructor]

# Bounds for the automatic window length: long enough to hold two cycles of a clear rhythm (a heartbeat, a
# machine cycle), short enough to alert quickly and keep the model small.
MIN_AUTO_LENGTH = 32
MAX_AUTO_LENGTH = 512
DEFAULT_LENGTH = 64
# A rhythm counts when its autocorrelation peak reaches this height and one cycle lasts at most this long:
# windows are for fast cycles (heartbeats, rotations, pump strokes); daily and weekly cycles are removed by
# the stream profile's seasonality instead, so they never stretch a window to hours.
_RHYTHM_MIN_HEIGHT = 0.25
_RHYTHM_MAX_CYCLE_S = 60.0
# Held-out windows needed to calibrate at all.
_MIN_HELD_OUT = 4


@dataclass(frozen=True, slots=True)
class WindowShape:
    """Requested window length/hop; None means: choose from the training data."""

    length: int | None = None
    hop: int | None = None
    lateness_s: float = 0.0
    max_gap_intervals: float = 10.0


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    seed: int = 0
    held_out_share: float = 0.2
    max_train_windows: int = 8000
    max_calibration_windows: int = 4000
    # Each stream's threshold is fitted on at least this many of its own held-out windows (when it has
    # them), however many streams share the calibration budget above.
    min_threshold_windows: int = 256
    progress: bool = False


@dataclass(frozen=True, slots=True)
class StreamSeries:
    """One stream's normal training data, in time order.

    `breaks` are the row indices where a new contiguous segment starts (recent normal data has holes where
    alerts and gaps were cut out): no window spans a break, so a splice is never learned as normal.
    """

    channels: tuple[str, ...]
    timestamps: npt.NDArray[np.float64]
    values: FloatArray
    breaks: tuple[int, ...] = ()

    def bounds(self) -> list[tuple[int, int]]:
        """The contiguous segments, as (start, stop) row pairs."""
        return segment_bounds(self.breaks, 0, len(self.timestamps))

    def rows(self, begin: int, end: int | None = None) -> StreamSeries:
        """Rows [begin, end) (negative begin counts as 0), with the breaks that fall inside them."""
        begin = max(0, begin)
        end = len(self.timestamps) if end is None else end
        inside = tuple(row - begin for row in self.breaks if begin < row < end)
        return StreamSeries(self.channels, self.timestamps[begin:end], self.values[begin:end], inside)


def segment_bounds(breaks: tuple[int, ...], begin: int, end: int) -> list[tuple[int, int]]:
    """The contiguous segments within rows [begin, end) of data that breaks at `breaks`."""
    cuts = [begin] + [row for row in breaks if begin < row < end] + [end]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What one stream needs to be scored by its group's model: its profile, the model's scores of its recent
    normal windows (its threshold is fitted on them) and where its level reference stands."""

    profile: StreamProfile
    initial_scores: FloatArray
    level: FloatArray


@dataclass(slots=True)
class GroupModel:
    """Everything a stream group needs to be scored: window spec, stream profiles, detector."""

    version: str
    spec: WindowSpec
    channels: tuple[str, ...]
    profiles: dict[str, StreamProfile]
    detector: WindowDetector
    fit_report: FitReport
    initial_scores: dict[str, FloatArray] = field(default_factory=dict)
    # Where each stream's level reference stands at the end of training (normalised units, per channel).
    level_references: dict[str, FloatArray] = field(default_factory=dict)
    # Per stream, the event time of the last sample trained on: a daemon that meets those samples again
    # (redelivered after a rebalance) warms its windows up with them instead of scoring them.
    trained_until: dict[str, float] = field(default_factory=dict)

    def start_of(self, stream: str) -> StreamStart | None:
        """The start of a stream the model was trained on (None for any other stream)."""
        if stream not in self.profiles:
            return None
        return StreamStart(self.profiles[stream], self.initial_scores[stream], self.level_references[stream])

    def metadata(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "spec": {
                "length": self.spec.length,
                "hop": self.spec.hop,
                "lateness_s": self.spec.lateness_s,
                "max_gap_s": self.spec.max_gap_s,
            },
            "channels": list(self.channels),
            "profiles": {stream: profile.to_json() for stream, profile in self.profiles.items()},
            "detector": self.detector.metadata(),
            "fit": {
                "epochs": self.fit_report.epochs,
                "train_loss": self.fit_report.train_loss,
                "validation_loss": self.fit_report.validation_loss,
                "seconds": self.fit_report.seconds,
            },
        }


def choose_window(shape: WindowShape, interval_s: float, normalised: FloatArray) -> WindowSpec:
    """Window length from the data's rhythm unless given; hop a sixteenth of it unless given."""
    length = shape.length
    if length is None:
        lag, height = dominant_period(normalised, max_lag=MAX_AUTO_LENGTH)
        if height >= _RHYTHM_MIN_HEIGHT and 0 < lag * interval_s <= _RHYTHM_MAX_CYCLE_S:
            length = int(np.clip(8 * int(np.ceil(2 * lag / 8)), MIN_AUTO_LENGTH, MAX_AUTO_LENGTH))
        else:
            length = DEFAULT_LENGTH
    hop = shape.hop if shape.hop is not None else max(1, length // 16)
    return WindowSpec(
        length=length,
        hop=min(hop, length),
        lateness_s=shape.lateness_s,
        max_gap_s=shape.max_gap_intervals * interval_s,
    )


def sliding(values: FloatArray, length: int, stride: int) -> FloatArray:
    """(N, C) -> (W, length, C) windows every `stride` samples (a copy, safe to modify)."""
    if len(values) < length:
        return np.empty((0, length, values.shape[1]), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # (W, C, length)
    return np.ascontiguousarray(view[::stride].transpose(0, 2, 1), dtype=np.float32)


def sliding_segments(
    values: FloatArray, segments: list[tuple[int, int]], length: int, stride: int
) -> FloatArray:
    """`sliding` within each (start, stop) segment of `values`, concatenated: no window crosses a segment."""
    parts = [sliding(values[start:stop], length, stride) for start, stop in segments]
    if not parts:
        return np.empty((0, length, values.shape[1]), dtype=np.float32)
    return np.concatenate(parts)


def train_group(
    series: Mapping[str, StreamSeries],
    *,
    version: str,
    shape: WindowShape,
    plan: TrainingPlan,
    factory: ReconstructorFactory,
    spec: WindowSpec | None = None,
) -> GroupModel:
    """Fit profiles per stream, pick the window (or keep `spec`: a retrained model must fit the windows
    already being cut live), train one reconstructor for the group, calibrate."""
    if not series:
        raise ValueError("no training data")
    channel_sets = {item.channels for item in series.values()}
    if len(channel_sets) != 1:
        raise ValueError(
            f"a stream group needs the same channels in every stream, got {sorted(channel_sets)}"
        )
    channels = next(iter(channel_sets))
    profiles = {
        stream: fit_profile(item.channels, item.timestamps, item.values) for stream, item in series.items()
    }
    normalised = {
        stream: cross_fitted(profiles[stream], item.timestamps, item.values)
        for stream, item in series.items()
    }
    first = next(iter(series))
    if spec is None:
        spec = choose_window(shape, profiles[first].interval_s, normalised[first])
    breaks = {stream: item.breaks for stream, item in series.items()}
    split = _split_windows(normalised, breaks, spec, plan)
    train_windows = np.concatenate(split.train)
    held_out = np.concatenate(split.held)
    if len(train_windows) < 8 or len(held_out) < _MIN_HELD_OUT:
        raise ValueError(
            f"not enough training data for windows of {spec.length} samples: "
            f"{len(train_windows)} training and {len(held_out)} held-out windows (need 8 and 4)"
        )
    reconstructor = factory(spec.length, len(channels))
    report = reconstructor.fit(model_input(train_windows), seed=plan.seed, progress=plan.progress)
    detector = WindowDetector.calibrate(
        reconstructor,
        statistics_windows=np.concatenate([train_windows, held_out]),
        held_out_windows=held_out,
        version=version,
    )
    initial = {stream: detector.score(windows).score for stream, windows in split.threshold_by_stream.items()}
    until = {stream: float(item.timestamps[-1]) for stream, item in series.items() if len(item.timestamps)}
    return GroupModel(version, spec, channels, profiles, detector, report, initial, split.references, until)


def start_stream(model: GroupModel, series: StreamSeries, plan: TrainingPlan) -> StreamStart:
    """Bring a stream the model was not trained on under it: fit its own profile, then let the model score its
    normal windows (all unseen, so all of them calibrate its threshold), following its level as live."""
    if series.channels != model.channels:
        raise ValueError(f"stream channels {series.channels} differ from the group's {model.channels}")
    profile = fit_profile(series.channels, series.timestamps, series.values)
    normalised = cross_fitted(profile, series.timestamps, series.values)
    length = model.spec.length
    segments = series.bounds()
    available = sum(max(0, stop - start - length + 1) for start, stop in segments)
    if available < 4:
        raise ValueError(
            f"need at least {length + 3} contiguous samples to start a stream, got {len(normalised)}"
        )
    stride = max(1, int(np.ceil(available / plan.max_calibration_windows)))
    windows = sliding_segments(normalised, segments, length, stride)
    start = np.zeros(len(model.channels), dtype=np.float32)
    references, level = follow(windows.mean(axis=1), start, step_weight(model.spec.hop, stride))
    scores = model.detector.score(windows - references[:, None, :]).score
    return StreamStart(profile, scores, level)


@dataclass(slots=True)
class _Split:
    train: list[FloatArray]
    held: list[FloatArray]
    threshold_by_stream: dict[str, FloatArray]
    references: dict[str, FloatArray]


def _split_windows(
    normalised: Mapping[str, FloatArray],
    breaks: Mapping[str, tuple[int, ...]],
    spec: WindowSpec,
    plan: TrainingPlan,
) -> _Split:
    """Per stream: the earlier part trains, the later part (in time) is held out for calibration.

    Every window is made relative to the stream's level reference as it would have stood then (following
    the windows in time order), so the level evidence is calibrated exactly as it is judged live. No window
    spans one of a stream's `breaks`.
    """
    length = spec.length
    total = sum(max(0, len(values) - length + 1) for values in normalised.values())
    train_stride = max(1, int(np.ceil(total * (1 - plan.held_out_share) / plan.max_train_windows)))
    held_stride = max(1, int(np.ceil(total * plan.held_out_share / plan.max_calibration_windows)))
    split = _Split([], [], {}, {})
    for stream, values in normalised.items():
        cuts = breaks.get(stream, ())

        # A short history still gets a few held-out windows: calibration matters more than the last windows
        # of training.
        cut = min(int(len(values) * (1 - plan.held_out_share)), len(values) - length - _MIN_HELD_OUT + 1)
        train = sliding_segments(values, segment_bounds(cuts, 0, cut), length, train_stride)
        # The held-out part starts right after the training part so every held-out window is unseen.
        held_segments = segment_bounds(cuts, cut, len(values))
        held = sliding_segments(values, held_segments, length, held_stride)
        start = np.zeros(values.shape[1], dtype=np.float32)
        train_refs, after_train = follow(train.mean(axis=1), start, step_weight(spec.hop, train_stride))
        held_refs, final = follow(held.mean(axis=1), after_train, step_weight(spec.hop, held_stride))
        split.train.append(train - train_refs[:, None, :])
        held_relative = held - held_refs[:, None, :]
        split.held.append(held_relative)
        split.threshold_by_stream[stream] = held_relative
        split.references[stream] = final
        # Many streams share the calibration budget: give each threshold enough of its own windows.
        held_available = max(0, len(values) - cut - length + 1)
        dense = max(1, held_available // plan.min_threshold_windows)
        if dense < held_stride:
            windows = sliding_segments(values, held_segments, length, dense)
            refs, _ = follow(windows.mean(axis=1), after_train, step_weight(spec.hop, dense))
            split.threshold_by_stream[stream] = windows - refs[:, None, :]
    return split
