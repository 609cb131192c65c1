"""Streams that are not scored yet: their samples wait here until the stream can start.

A stream waits for its group's first model (its first samples are then training data) or, when the group
already has a model, for enough samples to fit its own profile and threshold under it. Starting takes the
first `samples_needed` samples; whatever arrived after them stays here and is scored as soon as the stream
has started, so replaying a recording trains on its beginning and scores all the rest, as `detect` does.
What waits is bounded (`max_waiting`, oldest dropped beyond the part a start needs).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamwatch.core.bootstrap import StreamSeries
from streamwatch.records import FloatArray


class ChannelMismatchError(ValueError):
    """A stream whose channels differ from its group's (one model needs one input shape)."""


@dataclass(slots=True)
class _Waiting:
    channels: tuple[str, ...]
    timestamps: list[npt.NDArray[np.float64]] = field(default_factory=list)
    values: list[FloatArray] = field(default_factory=list)
    size: int = 0
    dropped: int = 0
    latest: float = -np.inf
    unordered: bool = False

    def add(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> None:
        self.timestamps.append(timestamps)
        self.values.append(values)
        self.size += len(timestamps)
        if len(timestamps):
            self.unordered = (
                self.unordered or timestamps[0] <= self.latest or bool(np.any(np.diff(timestamps) <= 0))
            )
            self.latest = max(self.latest, float(timestamps.max()))

    def prepend(self, timestamps: npt.NDArray[np.float64], values: FloatArray) -> None:
        self.timestamps.insert(0, timestamps)
        self.values.insert(0, values)
        self.size += len(timestamps)

    def joined(self) -> tuple[npt.NDArray[np.float64], FloatArray]:
        if len(self.timestamps) > 1:
            self.timestamps = [np.concatenate(self.timestamps)]
            self.values = [np.concatenate(self.values)]
        if self.unordered:
            # Samples within the allowed lateness arrived out of order: time order, one sample per instant.
            times, first = np.unique(self.timestamps[0], return_index=True)
            self.timestamps, self.values = [times], [self.values[0][first]]
            self.size = len(times)
            self.unordered = False
        return self.timestamps[0], self.values[0]

    def bound(self, keep_head: int, limit: int) -> None:
        """Drop the oldest samples after the first `keep_head` once more than `limit` wait."""
        if self.size <= limit:
            return
        timestamps, values = self.joined()
        excess = self.size - limit
        self.timestamps = [np.concatenate([timestamps[:keep_head], timestamps[keep_head + excess :]])]
        self.values = [np.concatenate([values[:keep_head], values[keep_head + excess :]])]
        self.size = limit
        self.dropped += excess

    def split(self, head: int) -> StreamSeries:
        """Remove and return the first `head` samples."""
        timestamps, values = self.joined()
        self.timestamps, self.values = [timestamps[head:]], [values[head:]]
        self.size = len(self.timestamps[0])
        return StreamSeries(self.channels, timestamps[:head], values[:head])


class Onboarding:
    def __init__(
        self, samples_needed: int, *, max_waiting: int | None = None, lateness_s: float = 0.0
    ) -> None:
        if samples_needed < 2:
            raise ValueError(f"samples_needed must be at least 2, got {samples_needed}")
        self.samples_needed = samples_needed
        self.max_waiting = max_waiting if max_waiting is not None else 64 * samples_needed
        if self.max_waiting < samples_needed:
            raise ValueError(f"max_waiting ({self.max_waiting}) must be at least samples_needed")
        self.lateness_s = lateness_s
        self._groups: dict[str, dict[str, _Waiting]] = defaultdict(dict)
        self._group_of: dict[str, str] = {}
        self._channels: dict[str, tuple[str, ...]] = {}

    def add(
        self,
        group: str,
        stream: str,
        channels: tuple[str, ...],
        timestamps: npt.NDArray[np.float64],
        values: FloatArray,
    ) -> list[tuple[int, str]]:
        """Keep the usable rows; the others come back as (row index, reason), to be dead-lettered just as
        the engine would have rejected them."""
        expected = self._channels.setdefault(group, channels)
        if channels != expected:
            raise ChannelMismatchError(
                f"stream {stream!r} has channels {list(channels)}, its group {group!r} has {list(expected)}"
            )
        waiting = self._entry(group, stream, channels)
        usable, rejected = self._usable(waiting, channels, timestamps, values)
        if rejected:
            timestamps, values = timestamps[usable], values[usable]
        waiting.add(timestamps, values)
        waiting.bound(self.samples_needed, self.max_waiting)
        return rejected

    def _usable(
        self,
        waiting: _Waiting,
        channels: tuple[str, ...],
        timestamps: npt.NDArray[np.float64],
        values: FloatArray,
    ) -> tuple[npt.NDArray[np.bool_], list[tuple[int, str]]]:
        finite_values = np.asarray(np.isfinite(values).all(axis=1), dtype=np.bool_)
        finite_times: npt.NDArray[np.bool_] = np.isfinite(timestamps)
        # Too late: before the newest sample so far by more than the allowed lateness (also within the block).
        newest = np.maximum.accumulate(np.concatenate([[waiting.latest], timestamps]))[:-1]
        in_time = timestamps >= newest - self.lateness_s
        usable = finite_values & finite_times & in_time
        if usable.all():
            return usable, []
        rejected = []
        for row in np.flatnonzero(~usable).tolist():
            if not finite_times[row]:
                reason = "non-finite timestamp"
            elif not finite_values[row]:
                bad = [
                    name
                    for name, value in zip(channels, values[row].tolist(), strict=True)
                    if not np.isfinite(value)
                ]
                reason = f"non-finite value in {', '.join(bad)}"
            else:
                behind = newest[row] - timestamps[row]
                reason = f"too late: {behind:.3f}s behind the newest sample (allowed {self.lateness_s:g}s)"
            rejected.append((row, reason))
        return usable, rejected

    def _entry(self, group: str, stream: str, channels: tuple[str, ...]) -> _Waiting:
        waiting = self._groups[group].get(stream)
        if waiting is None:
            waiting = self._groups[group][stream] = _Waiting(channels)
            self._group_of[stream] = group
        return waiting

    def channels_of(self, group: str) -> tuple[str, ...] | None:
        return self._channels.get(group)

    def is_waiting(self, stream: str) -> bool:
        return stream in self._group_of

    def dropped(self, stream: str) -> int:
        """Samples of `stream` dropped because too many waited."""
        group = self._group_of.get(stream)
        return 0 if group is None else self._groups[group][stream].dropped

    def groups(self) -> list[str]:
        return [group for group, streams in self._groups.items() if streams]

    def take_training_set(self, group: str) -> dict[str, StreamSeries] | None:
        """Once the group's fullest stream has `samples_needed` samples: the first samples of every stream
        with at least half of that (the others keep waiting and start under the model later)."""
        streams = self._groups.get(group, {})
        if not streams or max(item.size for item in streams.values()) < self.samples_needed:
            return None
        return self.take_startable(group)

    def take_startable(self, group: str) -> dict[str, StreamSeries]:
        """The first samples of every stream with enough of them to start; what came later stays here."""
        minimum = self.samples_needed // 2
        streams = self._groups.get(group, {})
        return {
            stream: item.split(self.samples_needed)
            for stream, item in streams.items()
            if item.size >= minimum
        }

    def give_back(self, group: str, series: dict[str, StreamSeries]) -> None:
        """Return taken samples (their start was abandoned) in front of what arrived meanwhile."""
        for stream, item in series.items():
            waiting = self._entry(group, stream, item.channels)
            timestamps, values = item.timestamps, item.values
            if waiting.size:
                # The same samples may have arrived again meanwhile (delivered anew after a rebalance).
                older = timestamps < waiting.joined()[0].min()
                timestamps, values = timestamps[older], values[older]
            waiting.prepend(timestamps, values)

    def take_stream(self, stream: str) -> StreamSeries | None:
        """Everything still waiting for one stream (it has just started: these samples are scored now)."""
        group = self._group_of.pop(stream, None)
        if group is None:
            return None
        waiting = self._groups[group].pop(stream)
        if waiting.size == 0:
            return None
        timestamps, values = waiting.joined()
        return StreamSeries(waiting.channels, timestamps, values)

    def drop(self, stream: str) -> None:
        group = self._group_of.pop(stream, None)
        if group is not None:
            self._groups[group].pop(stream, None)
