"""The daemon loop on the built-in simulated source: bootstrap each stream group, then score forever.

Kafka and other sources plug into the same shape later: poll a batch, feed the engine, hand what it returns
to the sinks. Stopping is cooperative (a threading.Event set by the signal handlers), so a batch in flight
always finishes and the sinks are flushed.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamwatch.config import SimulatedStreamConfig, StreamwatchConfig
from streamwatch.core.bootstrap import StreamSeries, train_group
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.io.simulate import Chunk, SimulatedSource
from streamwatch.io.sinks import DeadLetterFile, Sink
from streamwatch.offline import reconstructor_factory
from streamwatch.records import FloatArray, iso_utc

log = logging.getLogger("streamwatch.daemon")


@dataclass(slots=True)
class _Backlog:
    """Samples of one stream waiting for its group's first model."""

    channels: tuple[str, ...]
    timestamps: list[npt.NDArray[np.float64]] = field(default_factory=list)
    values: list[FloatArray] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.timestamps)

    def series(self) -> StreamSeries:
        return StreamSeries(self.channels, np.concatenate(self.timestamps), np.concatenate(self.values))


@dataclass(slots=True)
class DaemonStats:
    samples: int = 0
    windows: int = 0
    alerts: int = 0
    rejected: int = 0
    models: dict[str, str] = field(default_factory=dict)


class Daemon:
    def __init__(
        self,
        config: StreamwatchConfig,
        *,
        sinks: Sequence[Sink],
        dead_letter: DeadLetterFile,
        clock: Callable[[], float],
        progress: bool = False,
    ) -> None:
        self._config = config
        self._sinks = sinks
        self._dead_letter = dead_letter
        self._clock = clock
        self._progress = progress
        self._engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build(), clock=clock)
        self._backlog: dict[str, dict[str, _Backlog]] = defaultdict(dict)
        self.stats = DaemonStats()

    def run(self, stop: threading.Event) -> None:
        source_config = self._config.source
        if source_config.kind != "simulate":
            raise ValueError(
                f"the daemon's {source_config.kind!r} source arrives with Kafka support; use simulate"
            )
        source = SimulatedSource(source_config, wall_start=self._clock())
        log.info(
            "started: %d simulated streams at %gx speed", len(source_config.streams), source_config.speed
        )
        try:
            while not stop.is_set():
                self._handle(source.poll(self._clock()))
                if source.caught_up(self._clock()):
                    stop.wait(source_config.poll_interval_s)
        finally:
            self._emit(self._engine.flush())
            for sink in self._sinks:
                sink.close()
            self._dead_letter.close()
            log.info(
                "stopped: %d samples, %d windows scored, %d alert events, %d dead letters",
                self.stats.samples,
                self.stats.windows,
                self.stats.alerts,
                self.stats.rejected,
            )

    def _handle(self, chunks: list[Chunk]) -> None:
        """One poll: streams with a live model are scored together in one pass; the rest bootstrap."""
        ready: list[tuple[str, npt.NDArray[np.float64], FloatArray]] = []
        for chunk in chunks:
            self.stats.samples += len(chunk.timestamps)
            for label in chunk.labels:
                log.info(
                    "simulator injected %s into %s from %s to %s",
                    label.kind,
                    chunk.stream,
                    iso_utc(label.start),
                    iso_utc(label.end),
                )
            if self._engine.model(chunk.group) is None:
                self._collect(chunk)
            else:
                ready.append((chunk.stream, chunk.timestamps, chunk.values))
        if ready:
            self._emit(self._engine.process_arrays(ready))

    def _collect(self, chunk: Chunk) -> None:
        group = self._backlog[chunk.group]
        backlog = group.setdefault(chunk.stream, _Backlog(chunk.channels))
        backlog.timestamps.append(chunk.timestamps)
        backlog.values.append(chunk.values)
        members = [item.id for item in self._simulated_members(chunk.group)]
        needed = self._config.detector.training.bootstrap_samples
        if all(stream in group and group[stream].size >= needed for stream in members):
            self._bootstrap(chunk.group)

    def _simulated_members(self, group: str) -> list[SimulatedStreamConfig]:
        source = self._config.source
        if source.kind != "simulate":
            return []
        return [item for item in source.streams if (item.group or item.domain) == group]

    def _bootstrap(self, group: str) -> None:
        backlog = self._backlog.pop(group)
        series = {stream: item.series() for stream, item in backlog.items()}
        detector = self._config.detector
        log.info("training %s model for group %s on %d streams", detector.model, group, len(series))
        model = train_group(
            series,
            version=f"{detector.model}@1",
            shape=detector.window.shape(),
            plan=detector.training.plan(progress=self._progress),
            factory=reconstructor_factory(detector),
        )
        self._engine.install(group, model)
        for stream, item in series.items():
            self._engine.warm_up(stream, item.timestamps, item.values)
        self.stats.models[group] = model.version
        log.info(
            "group %s live with %s: window %d, hop %d, %d epochs in %.1fs",
            group,
            model.version,
            model.spec.length,
            model.spec.hop,
            model.fit_report.epochs,
            model.fit_report.seconds,
        )

    def _emit(self, out: EngineOutput) -> None:
        self.stats.windows += len(out.scores)
        self.stats.alerts += len(out.alerts)
        for rejection in out.rejected:
            self.stats.rejected += 1
            raw = repr(dict(rejection.sample.values)).encode()
            self._dead_letter.put(raw, rejection.reason, rejection.source)
        if out.alerts or out.quality:
            for sink in self._sinks:
                sink.emit(out.alerts, out.quality)
