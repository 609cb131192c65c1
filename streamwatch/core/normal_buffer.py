"""Recent data judged normal, per stream: what a retrain learns from and what canaries are cut from.

A sample is admitted only once every window that could cast doubt on it has been scored: it must lie
further than the margin from any window that exceeded its threshold and from any alert span (firing to
resolved). Data-quality gaps and excluded samples cut the data into segments, so a splice is never learned.

The new-normal rule lives here too. Samples inside an open alert wait in a quarantine. If the alert
resolves, the quarantine is dropped: the anomaly is never learned, however often it recurs. If it stays open
for `new_normal_after_windows` windows, the change has lasted: the quarantine replaces the stream's older
normal data, everything after it is admitted, and the stream asks for a retrain.

Memory is bounded: at most `capacity_samples` admitted and as many quarantined samples per stream.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.core.bootstrap import StreamSeries
from streamwatch.records import AlertEvent, FloatArray, WindowScore

Times = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BufferConfig:
    # Admitted samples kept per stream (the newest); twice the default bootstrap, so a retrain sees more
    # than the first model did.
    capacity_samples: int = 8192
    # Samples within this many window lengths of an exceeding window or an alert are not admitted: the
    # onset and the tail of an anomaly rarely cross the threshold themselves.
    margin_windows: float = 2.0
    # An alert open for this many windows is a new normal (the default matches the thresholds' own
    # relearn_after, so threshold and model accept a lasting change together).
    new_normal_after_windows: int = 360

    def __post_init__(self) -> None:
        if self.capacity_samples < 64:
            raise ValueError(f"capacity_samples must be >= 64, got {self.capacity_samples}")
        if not self.margin_windows >= 0:
            raise ValueError(f"margin_windows must be >= 0, got {self.margin_windows}")
        if self.new_normal_after_windows < 1:
            raise ValueError(f"new_normal_after_windows must be >= 1, got {self.new_normal_after_windows}")


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What the buffer needs to know of a stream's windows."""

    channels: tuple[str, ...]
    window_s: float  # duration of one window
    max_gap_s: float  # a larger step between samples starts a new segment


@dataclass(slots=True)
class _Chunk:
    timestamps: Times
    values: FloatArray
    starts_segment: bool


@dataclass(slots=True)
class _Store:
    """Contiguous chunks of samples, newest last, at most `capacity` samples."""

    capacity: int
    chunks: list[_Chunk] = field(default_factory=list)
    size: int = 0

    def append(self, timestamps: Times, values: FloatArray, starts_segment: bool) -> None:
        if len(timestamps) == 0:
            return
        self.chunks.append(_Chunk(timestamps, values, starts_segment or not self.chunks))
        self.size += len(timestamps)
        self._trim()
        if len(self.chunks) > 64:
            self._compact()

    def last_time(self) -> float | None:
        return float(self.chunks[-1].timestamps[-1]) if self.chunks else None

    def series(self, channels: tuple[str, ...]) -> StreamSeries:
        if not self.chunks:
            return StreamSeries(channels, np.empty(0), np.empty((0, len(channels)), dtype=np.float32))
        breaks: list[int] = []
        offset = 0
        for index, chunk in enumerate(self.chunks):
            if index and chunk.starts_segment:
                breaks.append(offset)
            offset += len(chunk.timestamps)
        return StreamSeries(
            channels,
            np.concatenate([chunk.timestamps for chunk in self.chunks]),
            np.concatenate([chunk.values for chunk in self.chunks]),
            tuple(breaks),
        )

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0

    def _trim(self) -> None:
        while self.size > self.capacity:
            excess = self.size - self.capacity
            first = self.chunks[0]
            if len(first.timestamps) <= excess:
                self.chunks.pop(0)
                self.size -= len(first.timestamps)
            else:
                self.chunks[0] = _Chunk(first.timestamps[excess:], first.values[excess:], True)
                self.size -= excess

    def _compact(self) -> None:
        """Merge chunks that continue each other, so the chunk count stays small."""
        runs: list[list[_Chunk]] = []
        for chunk in self.chunks:
            if chunk.starts_segment or not runs:
                runs.append([])
            runs[-1].append(chunk)
        self.chunks = [
            _Chunk(
                np.concatenate([chunk.timestamps for chunk in run]),
                np.concatenate([chunk.values for chunk in run]),
                True,
            )
            for run in runs
        ]


@dataclass(slots=True)
class _StreamBuffer:
    shape: StreamShape
    admitted: _Store
    quarantine: _Store
    pending_times: Times
    pending_values: FloatArray
    # Merged (low, high) event-time intervals no admitted sample may fall in.
    suspect: list[tuple[float, float]] = field(default_factory=list)
    horizon: float = -np.inf  # end of the latest scored window
    open_since: float | None = None  # start of the open alert's first window
    open_windows: int = 0
    new_normal: bool = False
    # Whether the last decided sample was admitted (otherwise the next admitted one starts a segment).
    continuing: bool = False
    fresh_samples: int = 0  # admitted since the last `mark_trained`
    asks_retrain: bool = False


class NormalBuffer:
    """Per stream: samples in, verdicts in, recent normal data out. Pure and deterministic."""

    def __init__(self, config: BufferConfig) -> None:
        self.config = config
        self._streams: dict[str, _StreamBuffer] = {}

    # -- feeding -----------------------------------------------------------------------------------------
    def add(self, stream: str, shape: StreamShape, timestamps: Times, values: FloatArray) -> None:
        """Samples of `stream`, in time order, waiting for the verdicts on the windows around them."""
        state = self._streams.get(stream)
        if state is None or state.shape != shape:
            state = self._new_stream(shape) if state is None else self._reshaped(state, shape)
            self._streams[stream] = state
        timestamps = np.asarray(timestamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float32)
        last = state.pending_times[-1] if len(state.pending_times) else -np.inf
        # Out-of-order and non-finite samples were rejected by the windows; they are not normal data either.
        later = timestamps > np.maximum.accumulate(np.r_[last, timestamps])[:-1]
        usable = later & np.isfinite(values).all(axis=1)
        if not usable.all():
            timestamps, values = timestamps[usable], values[usable]
        state.pending_times = np.concatenate([state.pending_times, timestamps])
        state.pending_values = np.concatenate([state.pending_values, values])
        excess = len(state.pending_times) - self.config.capacity_samples
        if excess > 0:  # verdicts stopped coming (a stalled stream): the oldest are not kept
            state.pending_times = state.pending_times[excess:]
            state.pending_values = state.pending_values[excess:]
            state.continuing = False

    def seed(self, stream: str, shape: StreamShape, timestamps: Times, values: FloatArray) -> None:
        """Admit data known to be normal (what the stream's first model was trained on); not fresh."""
        state = self._new_stream(shape)
        self._streams[stream] = state
        rows = np.asarray(values, dtype=np.float32)
        finite = np.asarray(np.isfinite(rows).all(axis=1), dtype=bool)
        _append_runs(state.admitted, np.asarray(timestamps, dtype=np.float64), rows, finite, shape)
        # Live data follows right after it.
        state.continuing = state.admitted.size > 0

    def judge(
        self,
        scores: Sequence[WindowScore],
        alerts: Sequence[AlertEvent],
        alert_windows: Sequence[int] | None = None,
    ) -> None:
        """Verdicts, in the order the engine produced them, and the alert events they led to
        (`alert_windows[i]`: the index of the verdict that produced `alerts[i]`; without it the events are
        taken to follow all verdicts). Decides every sample they settle."""
        after = len(scores) - 1
        at = list(alert_windows) if alert_windows is not None else [after] * len(alerts)
        events: dict[int, list[AlertEvent]] = {}
        for event, index in zip(alerts, at, strict=True):
            events.setdefault(min(index, after), []).append(event)
        touched: set[str] = set()
        for index, verdict in enumerate(scores):
            state = self._streams.get(verdict.stream)
            if state is None:
                continue
            touched.add(verdict.stream)
            state.horizon = max(state.horizon, verdict.end)
            if verdict.exceeds:
                self._suspect(state, verdict.start - self._margin(state), verdict.end + self._margin(state))
            if state.open_since is not None:
                state.open_windows += 1
            for event in events.get(index, ()):
                self._follow_alert(state, event)
        for event in events.get(-1, ()):  # events without any verdict in this call
            state = self._streams.get(event.stream)
            if state is not None:
                touched.add(event.stream)
                self._follow_alert(state, event)
        for stream in touched:
            state = self._streams[stream]
            if (
                state.open_since is not None
                and not state.new_normal
                and state.open_windows >= self.config.new_normal_after_windows
            ):
                self._accept_new_normal(state)
            self._decide(state)

    # -- reading -----------------------------------------------------------------------------------------
    def streams(self) -> list[str]:
        return list(self._streams)

    def series(self, stream: str) -> StreamSeries | None:
        state = self._streams.get(stream)
        return None if state is None else state.admitted.series(state.shape.channels)

    def size(self, stream: str) -> int:
        state = self._streams.get(stream)
        return 0 if state is None else state.admitted.size

    def fresh_samples(self, stream: str) -> int:
        state = self._streams.get(stream)
        return 0 if state is None else state.fresh_samples

    def asks_retrain(self, stream: str) -> bool:
        """Whether a new normal was accepted for `stream` since its last retrain."""
        state = self._streams.get(stream)
        return state is not None and state.asks_retrain

    def in_new_normal(self, stream: str) -> bool:
        state = self._streams.get(stream)
        return state is not None and state.new_normal

    def mark_trained(self, stream: str) -> None:
        """A retrain has taken the stream's data: count fresh data from now on."""
        state = self._streams.get(stream)
        if state is not None:
            state.fresh_samples = 0
            state.asks_retrain = False

    def drop(self, stream: str) -> None:
        self._streams.pop(stream, None)

    # -- state -------------------------------------------------------------------------------------------
    def snapshot(self, stream: str) -> dict[str, Any]:
        state = self._streams[stream]
        admitted = state.admitted.series(state.shape.channels)
        quarantine = state.quarantine.series(state.shape.channels)
        return {
            "shape": {
                "channels": list(state.shape.channels),
                "window_s": state.shape.window_s,
                "max_gap_s": state.shape.max_gap_s,
            },
            "admitted": _series_json(admitted),
            "quarantine": _series_json(quarantine),
            "pending": {"timestamps": _b64(state.pending_times), "values": _b64(state.pending_values)},
            "suspect": [list(interval) for interval in state.suspect],
            "horizon": None if not np.isfinite(state.horizon) else state.horizon,
            "open_since": state.open_since,
            "open_windows": state.open_windows,
            "new_normal": state.new_normal,
            "continuing": state.continuing,
            "fresh_samples": state.fresh_samples,
            "asks_retrain": state.asks_retrain,
        }

    def restore(self, stream: str, snapshot: Mapping[str, Any]) -> None:
        shape_json = snapshot["shape"]
        shape = StreamShape(
            tuple(shape_json["channels"]), float(shape_json["window_s"]), float(shape_json["max_gap_s"])
        )
        channels = len(shape.channels)
        state = self._new_stream(shape)
        _load_store(state.admitted, snapshot["admitted"], channels)
        _load_store(state.quarantine, snapshot["quarantine"], channels)
        state.pending_times = _unb64(snapshot["pending"]["timestamps"], np.float64, (-1,))
        state.pending_values = _unb64(snapshot["pending"]["values"], np.float32, (-1, channels))
        state.suspect = [(float(low), float(high)) for low, high in snapshot["suspect"]]
        horizon = snapshot["horizon"]
        state.horizon = -np.inf if horizon is None else float(horizon)
        open_since = snapshot["open_since"]
        state.open_since = None if open_since is None else float(open_since)
        state.open_windows = int(snapshot["open_windows"])
        state.new_normal = bool(snapshot["new_normal"])
        state.continuing = bool(snapshot["continuing"])
        state.fresh_samples = int(snapshot["fresh_samples"])
        state.asks_retrain = bool(snapshot["asks_retrain"])
        self._streams[stream] = state

    # -- internals ---------------------------------------------------------------------------------------
    def _new_stream(self, shape: StreamShape) -> _StreamBuffer:
        capacity = self.config.capacity_samples
        return _StreamBuffer(
            shape,
            _Store(capacity),
            _Store(capacity),
            np.empty(0, dtype=np.float64),
            np.empty((0, len(shape.channels)), dtype=np.float32),
        )

    def _reshaped(self, state: _StreamBuffer, shape: StreamShape) -> _StreamBuffer:
        if shape.channels != state.shape.channels:
            return self._new_stream(shape)  # other data altogether: what was kept no longer applies
        state.shape = shape
        return state

    def _margin(self, state: _StreamBuffer) -> float:
        return self.config.margin_windows * state.shape.window_s

    @staticmethod
    def _suspect(state: _StreamBuffer, low: float, high: float) -> None:
        if state.suspect and low <= state.suspect[-1][1]:
            last_low, last_high = state.suspect[-1]
            state.suspect[-1] = (min(last_low, low), max(last_high, high))
        else:
            state.suspect.append((low, high))

    def _follow_alert(self, state: _StreamBuffer, event: AlertEvent) -> None:
        if event.status == "firing" and state.open_since is None:
            state.open_since = event.window_start
            state.open_windows = 0
        elif event.status == "resolved" and state.open_since is not None:
            # Everything from the onset to the resolving window, with margins, was part of the episode.
            margin = self._margin(state)
            self._suspect(state, state.open_since - margin, state.horizon + margin)
            state.open_since = None
            state.open_windows = 0
            state.new_normal = False
            state.quarantine.clear()

    def _accept_new_normal(self, state: _StreamBuffer) -> None:
        """The change has lasted: what came since it began is the stream's normal from now on."""
        state.new_normal = True
        state.admitted.clear()
        state.fresh_samples = 0
        quarantined = state.quarantine.series(state.shape.channels)
        for start, stop in quarantined.bounds():
            state.admitted.append(quarantined.timestamps[start:stop], quarantined.values[start:stop], True)
            state.fresh_samples += stop - start
        state.quarantine.clear()
        state.continuing = state.admitted.size > 0
        state.asks_retrain = True

    def _decide(self, state: _StreamBuffer) -> None:
        margin = self._margin(state)
        settled_until = state.horizon - margin - state.shape.window_s
        count = int(np.searchsorted(state.pending_times, settled_until, side="right"))
        if count == 0:
            return
        times, values = state.pending_times[:count], state.pending_values[:count]
        state.pending_times = state.pending_times[count:]
        state.pending_values = state.pending_values[count:]
        if state.new_normal:
            onset = -np.inf if state.open_since is None else state.open_since
            self._admit_runs(state, times, values, times >= onset)
        else:
            normal = ~self._in_suspect(state, times)
            if state.open_since is not None:
                episode = times >= state.open_since - margin
                normal &= ~episode
                self._quarantine(state, times[times >= state.open_since], values[times >= state.open_since])
            self._admit_runs(state, times, values, normal)
        # Intervals wholly before everything still undecided can never matter again.
        state.suspect = [interval for interval in state.suspect if interval[1] >= settled_until]

    @staticmethod
    def _in_suspect(state: _StreamBuffer, times: Times) -> npt.NDArray[np.bool_]:
        inside = np.zeros(len(times), dtype=bool)
        for low, high in state.suspect:
            inside |= (times >= low) & (times <= high)
        return inside

    def _quarantine(self, state: _StreamBuffer, times: Times, values: FloatArray) -> None:
        _append_runs(state.quarantine, times, values, np.ones(len(times), dtype=bool), state.shape)

    def _admit_runs(
        self, state: _StreamBuffer, times: Times, values: FloatArray, normal: npt.NDArray[np.bool_]
    ) -> None:
        """Append the admitted samples as contiguous runs: an excluded sample or a gap ends a run."""
        state.fresh_samples += _append_runs(
            state.admitted, times, values, normal, state.shape, continues=state.continuing
        )
        if len(times):
            state.continuing = bool(normal[-1])


def _append_runs(
    store: _Store,
    times: Times,
    values: FloatArray,
    keep: npt.NDArray[np.bool_],
    shape: StreamShape,
    *,
    continues: bool = True,
) -> int:
    """Append the runs of kept samples; a run starts a segment after a dropped sample or a gap, and the
    first run also when it does not continue what the store holds. Returns the samples appended."""
    if not keep.any():
        return 0
    gaps = _run_starts(times, shape.max_gap_s)
    begins = keep & (np.r_[True, ~keep[:-1]] | gaps)
    ends = keep & np.r_[~keep[1:] | gaps[1:], True]
    last = store.last_time()
    appended = 0
    for start, stop in zip(np.flatnonzero(begins), np.flatnonzero(ends) + 1, strict=True):
        joins = start == 0 and continues and last is not None and times[0] - last <= shape.max_gap_s
        store.append(times[start:stop], values[start:stop], not joins)
        appended += int(stop - start)
    return appended


def _run_starts(times: Times, max_gap_s: float) -> npt.NDArray[np.bool_]:
    """Where a gap larger than `max_gap_s` precedes a sample (never the first)."""
    starts = np.zeros(len(times), dtype=bool)
    if len(times) > 1:
        starts[1:] = np.diff(times) > max_gap_s
    return starts


def _b64(array: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: str, dtype: type[np.generic], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape).copy()


def _series_json(series: StreamSeries) -> dict[str, Any]:
    return {
        "timestamps": _b64(series.timestamps.astype(np.float64)),
        "values": _b64(series.values.astype(np.float32)),
        "breaks": list(series.breaks),
    }


def _load_store(store: _Store, data: Mapping[str, Any], channels: int) -> None:
    times = _unb64(data["timestamps"], np.float64, (-1,))
    values = _unb64(data["values"], np.float32, (-1, channels))
    cuts = [0, *[int(row) for row in data["breaks"]], len(times)]
    for start, stop in itertools.pairwise(cuts):
        store.append(times[start:stop], values[start:stop], True)
