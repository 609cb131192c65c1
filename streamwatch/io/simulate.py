"""The built-in simulated source: several domains, normal history first, then live data with anomalies.

Event time runs `speed` times faster than the wall clock once live; before that each stream replays
`history_samples` of anomaly-free data as fast as the daemon takes it, which is what the daemon bootstraps
its models on. The wall clock is injected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamwatch.config import SimulateSourceConfig
from streamwatch.generate.inject import Label
from streamwatch.generate.simulate import SimulatedStream, resolve_rate
from streamwatch.records import FloatArray

# Upper bound on samples handed out per stream per poll, so one fast stream (ECG) cannot starve the rest
# and every batch stays a bounded amount of work.
_MAX_SAMPLES_PER_POLL = 20_000


@dataclass(frozen=True, slots=True)
class Chunk:
    stream: str
    group: str
    channels: tuple[str, ...]
    timestamps: npt.NDArray[np.float64]
    values: FloatArray
    labels: tuple[Label, ...]


class _Feed:
    """One simulated stream and how far it has got."""

    def __init__(self, stream: SimulatedStream, group: str, interval_s: float, start: float) -> None:
        self.stream = stream
        self.group = group
        self.interval_s = interval_s
        self.next_ts = start


class SimulatedSource:
    def __init__(self, config: SimulateSourceConfig, *, wall_start: float) -> None:
        self._speed = config.speed
        self._wall_start = wall_start
        self._feeds: dict[str, _Feed] = {}
        seeds = np.random.SeedSequence(config.seed).spawn(len(config.streams))
        for item, seed in zip(config.streams, seeds, strict=True):
            interval = 1.0 / resolve_rate(item.domain, item.rate_hz)
            history_s = config.history_samples * interval
            stream = SimulatedStream(
                item.id,
                item.domain,
                start=wall_start - history_s,
                rng=np.random.default_rng(seed),
                rate_hz=item.rate_hz,
                anomaly_rate_per_hour=item.anomalies_per_hour,
                anomaly_free_s=history_s,
            )
            self._feeds[item.id] = _Feed(stream, item.group or item.domain, interval, wall_start - history_s)

    def event_now(self, wall_now: float) -> float:
        return self._wall_start + (wall_now - self._wall_start) * self._speed

    def poll(self, wall_now: float) -> list[Chunk]:
        """Whatever each stream has produced by now in event time (bounded per stream)."""
        horizon = self.event_now(wall_now)
        chunks: list[Chunk] = []
        for name, feed in self._feeds.items():
            due = int((horizon - feed.next_ts) / feed.interval_s) + 1
            if due <= 0:
                continue
            series, labels = feed.stream.next_chunk(min(due, _MAX_SAMPLES_PER_POLL))
            feed.next_ts = float(series.timestamps[-1]) + feed.interval_s
            chunks.append(
                Chunk(name, feed.group, series.channels, series.timestamps, series.values, tuple(labels))
            )
        return chunks

    def caught_up(self, wall_now: float) -> bool:
        horizon = self.event_now(wall_now)
        return all(feed.next_ts > horizon for feed in self._feeds.values())
