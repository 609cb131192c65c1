"""The one pipeline: samples -> windows -> batched scoring -> thresholds -> alert lifecycle.

Used unchanged by the offline `detect` path and by the daemon. It owns per-stream state and nothing that
does I/O: sources feed it samples, sinks receive what `process` returns, and the clock is injected (None
means event time, which makes offline runs reproducible).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.core.alerts import AlertConfig, AlertMachine
from streamwatch.core.bootstrap import GroupModel, StreamStart
from streamwatch.core.level import step_weight
from streamwatch.core.profile import StreamProfile
from streamwatch.core.thresholds import Threshold, ThresholdConfig, restore_threshold
from streamwatch.core.windows import RejectedSampleError, Windower
from streamwatch.records import (
    AlertEvent,
    DataQualityEvent,
    FloatArray,
    Sample,
    SourcePosition,
    Window,
    WindowScore,
)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A sample the engine could not use, with the reason (for the dead-letter sink)."""

    sample: Sample
    reason: str
    source: SourcePosition | None = None


@dataclass(slots=True)
class EngineOutput:
    scores: list[WindowScore] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    quality: list[DataQualityEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    unrouted: list[Sample] = field(default_factory=list)
    # For each alert event, the index in `scores` of the window that produced it.
    alert_windows: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _StreamState:
    group: str
    profile: StreamProfile
    windower: Windower
    threshold: Threshold
    alerts: AlertMachine
    level: list[float]  # the stream's level reference (see core.level), per channel
    level_weight: float


class Engine:
    def __init__(
        self, *, threshold: ThresholdConfig, alerts: AlertConfig, clock: Clock | None = None
    ) -> None:
        self._threshold_config = threshold
        self._alert_config = alerts
        self._clock = clock
        self._models: dict[str, GroupModel] = {}
        self._level_scales: dict[str, list[tuple[float, float, float]]] = {}
        self._streams: dict[str, _StreamState] = {}

    # -- models ------------------------------------------------------------------------------------------
    def install(self, group: str, model: GroupModel) -> None:
        """Make `model` live for its group and start (or re-start) every stream it was trained on."""
        self.register(group, model)
        for stream in model.profiles:
            start = model.start_of(stream)
            assert start is not None
            self.start_stream(stream, group, start)

    def register(self, group: str, model: GroupModel) -> None:
        """Make `model` the group's live model without starting any stream (a daemon owning only some of the
        group's streams starts those it owns)."""
        self._models[group] = model
        self._level_scales[group] = model.detector.level_scale()

    def start_stream(self, stream: str, group: str, start: StreamStart) -> None:
        """Score `stream` with the group's registered model from now on; an existing stream keeps its windows
        and alert state.

        The threshold is fitted anew on the model's own scores of the stream's normal windows, because a new
        model version scores on its own scale (a swap must cause neither a burst of alerts nor a blind spell).
        """
        model = self._models[group]
        threshold = self._threshold_config.build()
        threshold.fit(start.initial_scores)
        level = [float(value) for value in start.level]
        weight = step_weight(model.spec.hop)
        state = self._streams.get(stream)
        if state is None:
            self._streams[stream] = _StreamState(
                group,
                start.profile,
                Windower(stream, model.channels, model.spec),
                threshold,
                AlertMachine(stream, self._alert_config),
                level,
                weight,
            )
        else:
            state.group, state.profile, state.threshold = group, start.profile, threshold
            state.level, state.level_weight = level, weight

    def drop(self, stream: str) -> None:
        """Forget a stream (its partition moved to another daemon, which restores it from the changelog)."""
        self._streams.pop(stream, None)

    def reconfigure(self, *, threshold: ThresholdConfig, alerts: AlertConfig) -> None:
        """Apply new threshold and alert settings to every stream, keeping what each has learned (a live
        reload): the threshold's learned state under the new parameters, the alert machine's open alert under
        the new rules. All or nothing: a stream that cannot take them raises ValueError and nothing changes.

        The threshold kind cannot change: another kind has no learned state to carry over, and calibrating it
        afresh needs each stream's normal scores, which only a restart (or a retrain) provides."""
        if threshold.kind != self._threshold_config.kind:
            raise ValueError(
                f"threshold.kind cannot change while running ({self._threshold_config.kind} -> "
                f"{threshold.kind}): restart the daemon to apply it"
            )
        parameters = {key: value for key, value in threshold.to_dict().items() if key != "kind"}
        renewed: dict[str, tuple[Threshold, AlertMachine]] = {}
        for stream, state in self._streams.items():
            snapshot = state.threshold.snapshot()
            # A shorter relearn_after than the run of exceeding scores so far: the run is already long enough.
            streak = min(int(snapshot.get("streak", 0)), threshold.relearn_after + 1)
            carried = {**snapshot, "config": parameters, "streak": streak}
            try:
                machine = AlertMachine.restore(stream, alerts, state.alerts.snapshot())
                renewed[stream] = (restore_threshold(carried), machine)
            except ValueError as error:
                raise ValueError(f"stream {stream} cannot take the new settings: {error}") from None
        for stream, (new_threshold, machine) in renewed.items():
            state = self._streams[stream]
            state.threshold, state.alerts = new_threshold, machine
        self._threshold_config, self._alert_config = threshold, alerts

    def open_alerts(self, streams: Iterable[str], now: float) -> list[AlertEvent]:
        """The firing alerts of these streams (see AlertMachine.open_alert)."""
        found = []
        for stream in streams:
            state = self._streams.get(stream)
            model = None if state is None else self._models.get(state.group)
            if state is not None and model is not None:
                alert = state.alerts.open_alert(model.version, now)
                if alert is not None:
                    found.append(alert)
        return found

    def streams(self) -> list[str]:
        return list(self._streams)

    def has_stream(self, stream: str) -> bool:
        return stream in self._streams

    def streams_of(self, group: str) -> list[str]:
        return [stream for stream, state in self._streams.items() if state.group == group]

    def group_of(self, stream: str) -> str:
        return self._streams[stream].group

    def channels_of(self, stream: str) -> tuple[str, ...]:
        return self._streams[stream].windower.channels

    def profile_of(self, stream: str) -> StreamProfile:
        return self._streams[stream].profile

    def model(self, group: str) -> GroupModel | None:
        return self._models.get(group)

    def warm_up(self, stream: str, timestamps: npt.NDArray[np.float64], values: FloatArray) -> None:
        """Fill a stream's window with recent history without scoring it, so scoring starts at once."""
        state = self._streams[stream]
        tail = state.windower.spec.length - 1
        state.windower.push_array(timestamps[-tail:], values[-tail:])

    # -- the pipeline ------------------------------------------------------------------------------------
    def process(self, samples: Iterable[Sample], source: SourcePosition | None = None) -> EngineOutput:
        """Feed samples (any streams, any order within the allowed lateness); score what closed."""
        out = EngineOutput()
        windows: list[Window] = []
        self._push_samples(samples, source, windows, out)
        self._score(windows, out)
        return out

    def _push_samples(
        self,
        samples: Iterable[Sample],
        source: SourcePosition | None,
        windows: list[Window],
        out: EngineOutput,
    ) -> None:
        for sample in samples:
            state = self._streams.get(sample.stream)
            if state is None:
                out.unrouted.append(sample)
                continue
            try:
                produced = state.windower.push(sample.ts, sample.values, source)
            except RejectedSampleError as rejected:
                out.rejected.append(Rejection(sample, rejected.reason, source))
                continue
            windows.extend(produced.windows)
            out.quality.extend(produced.quality)

    def process_arrays(
        self, chunks: Iterable[tuple[str, npt.NDArray[np.float64], FloatArray]]
    ) -> EngineOutput:
        """Bulk path for in-order data of many streams (files, simulator, benchmarks): one scoring pass for
        all windows the chunks close; identical results to `process`."""
        return self.process_blocks((stream, times, values, None) for stream, times, values in chunks)

    def process_blocks(
        self,
        blocks: Iterable[
            tuple[str, npt.NDArray[np.float64], FloatArray, Sequence[SourcePosition | None] | None]
        ],
    ) -> EngineOutput:
        """`process_arrays` with, optionally, where each row came from: a rejected row is reported with its
        own source so that the record it came from can be dead-lettered."""
        out = EngineOutput()
        windows: list[Window] = []
        for stream, timestamps, values, sources in blocks:
            state = self._streams[stream]
            try:
                produced = state.windower.push_array(timestamps, values)
            except RejectedSampleError:
                # Something in the block is unusable: go row by row so only the bad samples are rejected,
                # each with its own reason, and the rest is scored as usual.
                self._push_rows(stream, state.windower.channels, timestamps, values, sources, windows, out)
                continue
            windows.extend(produced.windows)
            out.quality.extend(produced.quality)
        self._score(windows, out)
        return out

    def _push_rows(
        self,
        stream: str,
        channels: tuple[str, ...],
        timestamps: npt.NDArray[np.float64],
        values: FloatArray,
        sources: Sequence[SourcePosition | None] | None,
        windows: list[Window],
        out: EngineOutput,
    ) -> None:
        for index, (ts, row) in enumerate(zip(timestamps, values, strict=True)):
            sample = Sample(stream, float(ts), dict(zip(channels, (float(v) for v in row), strict=True)))
            self._push_samples([sample], None if sources is None else sources[index], windows, out)

    def process_array(
        self, stream: str, timestamps: npt.NDArray[np.float64], values: FloatArray
    ) -> EngineOutput:
        """Bulk path for one stream's in-order data."""
        return self.process_arrays([(stream, timestamps, values)])

    def flush(self) -> EngineOutput:
        """Release samples held for reordering and score them (end of input, shutdown)."""
        out = EngineOutput()
        windows: list[Window] = []
        for state in self._streams.values():
            produced = state.windower.flush()
            windows.extend(produced.windows)
            out.quality.extend(produced.quality)
        self._score(windows, out)
        return out

    def _score(self, windows: list[Window], out: EngineOutput) -> None:
        """Score closed windows: the heavy part batched per group, then each window in order per stream
        (level against the moving reference, threshold, alert machine)."""
        if not windows:
            return
        by_group: dict[str, list[int]] = defaultdict(list)
        for index, window in enumerate(windows):
            by_group[self._streams[window.stream].group].append(index)
        channels_of: list[list[float]] = [[]] * len(windows)
        means_of: list[list[float]] = [[]] * len(windows)
        for group, indices in by_group.items():
            others, means = self._models[group].detector.score_parts(
                self._normalised_batch([windows[i] for i in indices])
            )
            for index, other_row, mean_row in zip(indices, others.tolist(), means.tolist(), strict=True):
                channels_of[index] = other_row
                means_of[index] = mean_row
        for index, window in enumerate(windows):
            state = self._streams[window.stream]
            model = self._models[state.group]
            mean, level = means_of[index], state.level
            per_channel = _channel_scores(channels_of[index], mean, level, self._level_scales[state.group])
            score = max(per_channel)
            threshold_before = state.threshold.value
            if not state.threshold.observe(score):
                weight = state.level_weight
                state.level = [ref + weight * (m - ref) for m, ref in zip(mean, level, strict=True)]
            verdict = WindowScore(
                window.stream,
                window.seq,
                window.start,
                window.end,
                score,
                threshold_before,
                dict(zip(model.channels, per_channel, strict=True)),
                model.version,
                window.source,
            )
            out.scores.append(verdict)
            now = self._clock() if self._clock is not None else window.end
            events = state.alerts.step(verdict, now)
            out.alerts.extend(events)
            out.alert_windows.extend([len(out.scores) - 1] * len(events))

    def probe(
        self, stream: str, starts: npt.NDArray[np.float64], windows: FloatArray
    ) -> tuple[npt.NDArray[np.float64], float]:
        """Score raw windows (B, L, C) of `stream` on the side, as its live state would score them now; the
        stream's state is left exactly as it was (canaries are never learned from). Returns the scores and
        the stream's current threshold."""
        state = self._streams[stream]
        detector = self._models[state.group].detector
        others, means = detector.score_parts(state.profile.normalise_windows(starts, windows))
        scales = self._level_scales[state.group]
        scores = [
            max(_channel_scores(other_row, mean_row, state.level, scales))
            for other_row, mean_row in zip(others.tolist(), means.tolist(), strict=True)
        ]
        return np.asarray(scores, dtype=np.float64), state.threshold.value

    def _normalised_batch(self, windows: list[Window]) -> FloatArray:
        batch = np.stack([window.data for window in windows])
        by_stream: dict[str, list[int]] = defaultdict(list)
        for index, window in enumerate(windows):
            by_stream[window.stream].append(index)
        for stream, indices in by_stream.items():
            starts = np.asarray([windows[i].start for i in indices], dtype=np.float64)
            batch[indices] = self._streams[stream].profile.normalise_windows(starts, batch[indices])
        return batch

    # -- state -------------------------------------------------------------------------------------------
    def snapshot(self, stream: str) -> dict[str, Any]:
        """One stream's state (window tail, threshold, alert machine): what the changelog stores."""
        state = self._streams[stream]
        return {
            "group": state.group,
            "model_version": self._models[state.group].version,
            "windower": state.windower.snapshot(),
            "threshold": state.threshold.snapshot(),
            "alerts": state.alerts.snapshot(),
            "level": list(state.level),
        }

    def restore(self, stream: str, snapshot: Mapping[str, Any], profile: StreamProfile | None = None) -> None:
        """Continue a stream from a snapshot; its group's model must be registered first. The profile is the
        given one, else the stream's current one, else the one the model was trained with."""
        group = snapshot["group"]
        model = self._models[group]
        if profile is None:
            state = self._streams.get(stream)
            profile = model.profiles[stream] if state is None else state.profile
        self._streams[stream] = _StreamState(
            group,
            profile,
            Windower.restore(stream, model.spec, snapshot["windower"]),
            restore_threshold(snapshot["threshold"]),
            AlertMachine.restore(stream, self._alert_config, snapshot["alerts"]),
            [float(value) for value in snapshot["level"]],
            step_weight(model.spec.hop),
        )


def _channel_scores(
    others: list[float], means: list[float], level: list[float], scales: list[tuple[float, float, float]]
) -> list[float]:
    """Per channel: the largest of the batched evidence and the level's surprise against the reference.
    Plain floats: for a handful of channels this is several times faster than numpy per window."""
    return [
        max(other, (deviation := m - ref - median) * to_upper, -deviation * to_lower)
        for other, m, ref, (median, to_upper, to_lower) in zip(others, means, level, scales, strict=True)
    ]
