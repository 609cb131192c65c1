"""Per-stream sliding windows in event time.

A `Windower` takes the samples of one stream, reorders those that arrive late within an allowed lateness,
rejects what it cannot use (too late, wrong channels, non-finite) with a reason, resets on gaps (reported as a
data-quality event, never as an anomaly) and cuts windows of `length` samples every `hop` samples.

Samples are released once the stream's watermark (largest event time seen minus the lateness) passes them;
with zero lateness every in-order sample is released at once, so windows close with no added delay.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.records import DataQualityEvent, FloatArray, SourcePosition, Window, iso_utc


class RejectedSampleError(ValueError):
    """A sample the windower cannot use; the reason says why (it goes to the dead-letter sink)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How one stream group is cut into windows."""

    length: int
    hop: int
    lateness_s: float = 0.0
    max_gap_s: float = math.inf

    def __post_init__(self) -> None:
        if self.length < 4:
            raise ValueError(f"window length must be >= 4 samples, got {self.length}")
        if not 1 <= self.hop <= self.length:
            raise ValueError(f"window hop must be between 1 and length ({self.length}), got {self.hop}")
        if self.lateness_s < 0:
            raise ValueError(f"lateness must be >= 0 seconds, got {self.lateness_s}")
        if self.max_gap_s <= 0:
            raise ValueError(f"max gap must be > 0 seconds, got {self.max_gap_s}")


@dataclass(frozen=True, slots=True)
class WindowerOutput:
    windows: list[Window]
    quality: list[DataQualityEvent]


class Windower:
    """Sliding windows over one stream. Not thread-safe: one owner per stream."""

    def __init__(self, stream: str, channels: Sequence[str], spec: WindowSpec) -> None:
        self.stream = stream
        self.channels = tuple(channels)
        self.spec = spec
        width = len(self.channels)
        # Ring of the last `length` released samples; `_filled` counts the valid ones since the last reset.
        self._values = np.zeros((spec.length, width), dtype=np.float32)
        self._times = np.zeros(spec.length, dtype=np.float64)
        self._head = 0
        self._filled = 0
        self._since_window = 0
        self._seq = 0
        self._last_released = -math.inf
        self._max_seen = -math.inf
        # Samples held for reordering, sorted by time: (ts, values, source).
        self._pending: list[tuple[float, tuple[float, ...], SourcePosition | None]] = []

    # -- input -------------------------------------------------------------------------------------------
    def push(
        self, ts: float, values: Mapping[str, float], source: SourcePosition | None = None
    ) -> WindowerOutput:
        """Add one sample; returns the windows it closed. Raises RejectedSample for unusable samples."""
        row = self._row(values)
        if not math.isfinite(ts):
            raise RejectedSampleError("timestamp is not finite")
        if ts <= self._last_released:
            raise RejectedSampleError(
                f"late by {self._last_released - ts:.3f}s beyond the allowed lateness of "
                f"{self.spec.lateness_s:g}s (stream already at {iso_utc(self._last_released)})"
            )
        if self.spec.lateness_s == 0.0 and not self._pending:
            return self._release(ts, row, source)
        bisect.insort(self._pending, (ts, row, source), key=lambda item: item[0])
        self._max_seen = max(self._max_seen, ts)
        return self._drain(self._max_seen - self.spec.lateness_s)

    def push_array(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> WindowerOutput:
        """Bulk path for in-order data (files, simulator chunks): same result as pushing row by row,
        vectorised so that a million samples cost milliseconds rather than seconds."""
        if values.ndim != 2 or values.shape[1] != len(self.channels) or len(values) != len(timestamps):
            raise RejectedSampleError(
                f"wrong shape: expected ({len(timestamps)}, {len(self.channels)}) values, got {values.shape}"
            )
        if len(timestamps) == 0:
            return WindowerOutput([], [])
        if not np.all(np.isfinite(values)):
            raise RejectedSampleError("non-finite values in bulk input")
        if self._pending or timestamps[0] <= self._last_released or np.any(np.diff(timestamps) <= 0):
            return self._push_rows(timestamps, values)
        windows: list[Window] = []
        quality: list[DataQualityEvent] = []
        steps = np.diff(np.concatenate([[self._last_released], timestamps]))
        breaks = np.flatnonzero(steps > self.spec.max_gap_s)
        bounds = [0, *[int(b) for b in breaks if b > 0], len(timestamps)]
        for begin, end in itertools.pairwise(bounds):
            if steps[begin] > self.spec.max_gap_s and self._filled > 0:
                quality.append(self._gap_event(float(timestamps[begin])))
            windows.extend(self._segment(timestamps[begin:end], values[begin:end]))
        return WindowerOutput(windows, quality)

    def _push_rows(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> WindowerOutput:
        windows: list[Window] = []
        quality: list[DataQualityEvent] = []
        for ts, row in zip(timestamps, values, strict=True):
            if float(ts) <= self._last_released:
                raise RejectedSampleError(f"bulk input is not in time order at {iso_utc(float(ts))}")
            out = self._release(float(ts), row, None)
            windows.extend(out.windows)
            quality.extend(out.quality)
        return WindowerOutput(windows, quality)

    def _segment(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> list[Window]:
        """Windows closed by a gap-free run of in-order samples."""
        length, hop = self.spec.length, self.spec.hop
        order = np.roll(np.arange(length), -self._head)[length - self._filled :]
        full_values = np.concatenate([self._values[order], values])
        full_times = np.concatenate([self._times[order], timestamps])
        count = len(timestamps)
        # Samples to consume before the next window closes (see _release for the rule row by row).
        first = max(length - self._filled, hop - self._since_window if self._seq > 0 else 1, 1)
        consumed = np.arange(first, count + 1, hop)
        windows = []
        for taken in consumed:
            end = self._filled + int(taken)
            windows.append(
                Window(
                    self.stream,
                    self._seq,
                    float(full_times[end - length]),
                    float(full_times[end - 1]),
                    self.channels,
                    full_values[end - length : end],
                )
            )
            self._seq += 1
        self._since_window = count - int(consumed[-1]) if len(consumed) else self._since_window + count
        tail = min(len(full_values), length)
        self._values[:tail] = full_values[-tail:]
        self._times[:tail] = full_times[-tail:]
        self._head = tail % length
        self._filled = tail
        self._last_released = float(timestamps[-1])
        self._max_seen = max(self._max_seen, self._last_released)
        return windows

    def flush(self) -> WindowerOutput:
        """Release everything held for reordering (end of input or shutdown)."""
        return self._drain(math.inf)

    # -- internals ---------------------------------------------------------------------------------------
    def _row(self, values: Mapping[str, float]) -> tuple[float, ...]:
        if len(values) != len(self.channels):
            raise RejectedSampleError(
                f"wrong shape: expected channels {list(self.channels)}, got {sorted(values)}"
            )
        try:
            row = tuple(float(values[name]) for name in self.channels)
        except KeyError as missing:
            raise RejectedSampleError(
                f"wrong shape: missing channel {missing}; expected {list(self.channels)}"
            ) from None
        for name, value in zip(self.channels, row, strict=True):
            if not math.isfinite(value):
                raise RejectedSampleError(f"channel {name!r} is not finite ({value})")
        return row

    def _drain(self, watermark: float) -> WindowerOutput:
        windows: list[Window] = []
        quality: list[DataQualityEvent] = []
        while self._pending and self._pending[0][0] <= watermark:
            ts, row, source = self._pending.pop(0)
            out = self._release(ts, row, source)
            windows.extend(out.windows)
            quality.extend(out.quality)
        return WindowerOutput(windows, quality)

    def _release(
        self, ts: float, row: tuple[float, ...] | np.ndarray, source: SourcePosition | None
    ) -> WindowerOutput:
        quality: list[DataQualityEvent] = []
        if ts - self._last_released > self.spec.max_gap_s and self._filled > 0:
            quality.append(self._gap_event(ts))
        length = self.spec.length
        self._values[self._head] = row
        self._times[self._head] = ts
        self._head = (self._head + 1) % length
        self._filled = min(self._filled + 1, length)
        self._since_window += 1
        self._last_released = ts
        self._max_seen = max(self._max_seen, ts)
        if self._filled == length and (self._since_window >= self.spec.hop or self._seq == 0):
            self._since_window = 0
            return WindowerOutput([self._cut(source)], quality)
        return WindowerOutput([], quality)

    def _gap_event(self, ts: float) -> DataQualityEvent:
        """Report a gap and restart the window: no window may mix data from both sides of it."""
        event = DataQualityEvent(
            self.stream,
            "gap",
            self._last_released,
            ts,
            f"no data for {ts - self._last_released:.1f}s (max gap {self.spec.max_gap_s:g}s); "
            "window restarted",
        )
        self._filled = 0
        self._since_window = 0
        return event

    def _cut(self, source: SourcePosition | None) -> Window:
        order = np.roll(np.arange(self.spec.length), -self._head)
        data = self._values[order]
        times = self._times[order]
        window = Window(
            self.stream, self._seq, float(times[0]), float(times[-1]), self.channels, data, source
        )
        self._seq += 1
        return window

    # -- state -------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The window tail and counters; restoring it continues exactly where this left off."""
        order = np.roll(np.arange(self.spec.length), -self._head)[self.spec.length - self._filled :]
        return {
            "channels": list(self.channels),
            # The window tail as little-endian binary in base64: exact, and a third of the size of JSON
            # numbers (it is most of a stream's state, written with every batch that touches the stream).
            "times": _pack(self._times[order].astype("<f8")),
            "values": _pack(self._values[order].astype("<f4")),
            "since_window": self._since_window,
            "seq": self._seq,
            "last_released": self._last_released if math.isfinite(self._last_released) else None,
            "pending": [[ts, list(row)] for ts, row, _ in self._pending],
        }

    @classmethod
    def restore(cls, stream: str, spec: WindowSpec, snapshot: Mapping[str, Any]) -> Windower:
        windower = cls(stream, snapshot["channels"], spec)
        times = _unpack(snapshot["times"], "<f8").astype(np.float64)
        values = (
            _unpack(snapshot["values"], "<f4").astype(np.float32).reshape(len(times), len(windower.channels))
        )
        filled = len(times)
        windower._times[:filled] = times
        windower._values[:filled] = values
        windower._head = filled % spec.length
        windower._filled = filled
        windower._since_window = int(snapshot["since_window"])
        windower._seq = int(snapshot["seq"])
        last = snapshot["last_released"]
        windower._last_released = -math.inf if last is None else float(last)
        windower._max_seen = windower._last_released
        for ts, row in snapshot["pending"]:
            windower._pending.append((float(ts), tuple(float(v) for v in row), None))
            windower._max_seen = max(windower._max_seen, float(ts))
        return windower


def _pack(array: npt.NDArray[Any]) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def _unpack(text: str, dtype: str) -> npt.NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)
