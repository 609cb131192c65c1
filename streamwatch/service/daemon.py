"""The daemon loop on the built-in simulated source: bootstrap each stream group, then score forever.

Kafka and other sources plug into the same shape later: poll a batch, feed the engine, hand what it returns
to the sinks. Stopping is cooperative (a threading.Event set by the signal handlers), so a batch in flight
always finishes and the sinks are flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from streamwatch.config import SimulatedStreamConfig, StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel, StreamSeries, start_stream, train_group
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.io.simulate import Chunk, SimulatedSource
from streamwatch.io.sinks import AlertStateSink, DeadLetterFile, Sink
from streamwatch.models.registry import ModelRegistry
from streamwatch.offline import configured_lifecycle, reconstructor_factory
from streamwatch.records import AlertEvent, FloatArray, iso_utc
from streamwatch.service.background import Background
from streamwatch.service.health import Readiness
from streamwatch.service.metrics import DaemonMetrics, HealthReporter, LifecycleCollector
from streamwatch.service.outputs import log_events
from streamwatch.service.reload import Reloader
from streamwatch.service.retrainer import Retrainer
from streamwatch.service.systemd import SystemdNotifier

log = logging.getLogger("streamwatch.daemon")

# How often (wall seconds) the registry is read for a live version changed from outside.
_REGISTRY_POLL_S = 5.0


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
        metrics: CollectorRegistry | None = None,
        notifier: SystemdNotifier | None = None,
        readiness: Readiness | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        self._config = config
        self._sinks = list(sinks)
        self._dead_letter = dead_letter
        self._clock = clock
        self._progress = progress
        self._engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build(), clock=clock)
        self._backlog: dict[str, dict[str, _Backlog]] = defaultdict(dict)
        self.registry = ModelRegistry(config.detector.model_dir, keep=config.retraining.keep_versions)
        self.lifecycle = configured_lifecycle(self._engine, config, self.registry, clock=clock)
        self._background = Background("streamwatch-retrain")
        self._retrainer = Retrainer(self.lifecycle, config, self._background)
        self._registry_checked_at = -_REGISTRY_POLL_S
        self._notifier = notifier or SystemdNotifier({})
        self.readiness = readiness or Readiness()
        self.readiness.sinks = lambda: self._sinks
        self._reloader = reloader
        self.metrics: DaemonMetrics | None = None
        if metrics is not None:
            metrics.register(LifecycleCollector(self.lifecycle))
            self.metrics = DaemonMetrics(metrics, self._engine, ready=lambda: self.readiness.check().ready)
        self._health = HealthReporter(self.lifecycle, self._sinks)
        self._groups: set[str] = set()
        self.stats = DaemonStats()

    def run(self, stop: threading.Event) -> None:
        source_config = self._config.source
        if source_config.kind != "simulate":
            raise ValueError(
                f"the daemon's {source_config.kind!r} source arrives with Kafka support; use simulate"
            )
        source = SimulatedSource(source_config, wall_start=self._clock())
        # Stream state starts afresh here: alerts a receiver holds from the last run are not spoken for.
        for sink in self._sinks:
            if isinstance(sink, AlertStateSink):
                sink.release_all()
        log.info(
            "started: %d simulated streams at %gx speed", len(source_config.streams), source_config.speed
        )
        self._notifier.ready(f"scoring {len(source_config.streams)} simulated streams")
        try:
            while not stop.is_set():
                self._handle(source.poll(self._clock()))
                self._turn()
                if source.caught_up(self._clock()):
                    stop.wait(source_config.poll_interval_s)
        finally:
            self._notifier.stopping()
            self.readiness.stopping()
            self._background.stop()
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

    def _turn(self) -> None:
        """Between two polls: tell systemd and /readyz the loop is alive; take a reload asked for."""
        self._notifier.watchdog(time.monotonic())
        waiting = [group for group in self._groups if self._engine.model(group) is None]
        self.readiness.loop(waiting)
        if self._reloader is not None:
            self._config = self._reloader.take(self._config, self._engine, self._use_sinks, self._clock())

    def _use_sinks(self, sinks: Sequence[Sink]) -> None:
        self._sinks = list(sinks)
        self._health = HealthReporter(self.lifecycle, self._sinks)

    def _handle(self, chunks: list[Chunk]) -> None:
        """One poll: streams with a live model are scored together in one pass; the rest bootstrap."""
        ready: list[tuple[str, npt.NDArray[np.float64], FloatArray]] = []
        for chunk in chunks:
            self._groups.add(chunk.group)
            self.stats.samples += len(chunk.timestamps)
            if self.metrics is not None:
                self.metrics.samples.inc(len(chunk.timestamps))
            for label in chunk.labels:
                log.info(
                    "simulator injected %s into %s from %s to %s",
                    label.kind,
                    chunk.stream,
                    iso_utc(label.start),
                    iso_utc(label.end),
                    extra={"stream": chunk.stream},
                )
            if self._engine.model(chunk.group) is None:
                self._collect(chunk)
            else:
                ready.append((chunk.stream, chunk.timestamps, chunk.values))
        if ready:
            started = time.perf_counter()
            out = self._engine.process_arrays(ready)
            health = self.lifecycle.observe(ready, out)
            self._emit(out, health)
            if self.metrics is not None:
                self.metrics.batch(out, out.alerts + health, time.perf_counter() - started)
        self._retrainer.step()
        self._follow_registry()
        self._health.step(self._clock())
        for group, stats in self.lifecycle.stats.items():
            self.stats.models[group] = stats.version

    def _follow_registry(self) -> None:
        """Adopt a live version changed from outside (`streamwatch models rollback`)."""
        now = self._clock()
        if now - self._registry_checked_at < _REGISTRY_POLL_S:
            return
        self._registry_checked_at = now
        for group in self.registry.groups():
            model = self._engine.model(group)
            live = self.registry.live_version(group)
            # A retrain in flight is dropped when it finishes: the live model is no longer its champion.
            if model is None or live is None or live == model.version:
                continue
            try:
                replacement = self.registry.load(group, live)
            except ValueError as error:
                log.error("group %s: cannot load %s from the registry: %s", group, live, error)
                continue
            log.warning("group %s: registry says %s is live, not %s: switching", group, live, model.version)
            self.lifecycle.install(group, replacement, swapped=True, refit=True)

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
        model = self._registered_model(group, series)
        if model is None:
            model = self._first_model(group, series)
        self._engine.register(group, model)
        plan = self._config.detector.training.plan(progress=False)
        for stream, item in series.items():
            start = model.start_of(stream) or start_stream(model, item, plan)
            self._engine.start_stream(stream, group, start)
            self._engine.warm_up(stream, item.timestamps, item.values)
            self.lifecycle.buffer.seed(stream, self.lifecycle.shape_of(stream), item.timestamps, item.values)
        self.stats.models[group] = model.version
        log.info(
            "group %s live with %s: window %d, hop %d",
            group,
            model.version,
            model.spec.length,
            model.spec.hop,
        )

    def _registered_model(self, group: str, series: dict[str, StreamSeries]) -> GroupModel | None:
        """The live version a previous run left in the registry, if it fits these streams."""
        try:
            model = self.registry.load_live(group)
        except ValueError as error:  # ModelFileError too: a damaged registry is retrained over, not fatal
            log.error("group %s: the registry's live model cannot be used (%s); training anew", group, error)
            return None
        if model is None:
            return None
        channels = {item.channels for item in series.values()}
        if channels != {model.channels} or model.detector.reconstructor.kind != self._config.detector.model:
            log.warning("group %s: the registry's %s does not fit these streams", group, model.version)
            return None
        log.info("group %s: continuing with %s from the registry", group, model.version)
        return model

    def _first_model(self, group: str, series: dict[str, StreamSeries]) -> GroupModel:
        detector = self._config.detector
        version = self.registry.next_version(group, detector.model)
        log.info("training %s for group %s on %d streams", version, group, len(series))
        model = train_group(
            series,
            version=version,
            shape=detector.window.shape(),
            plan=detector.training.plan(progress=self._progress),
            factory=reconstructor_factory(detector),
        )
        first = min(float(item.timestamps[0]) for item in series.values())
        last = max(float(item.timestamps[-1]) for item in series.values())
        try:
            self.registry.accept(
                group, model, trained_at=last, data_span=(first, last), validation={}, reason="first model"
            )
        except OSError as error:  # scoring matters more than remembering: go on, and say what is lost
            log.error("group %s: %s not saved (%s); a restart will train anew", group, version, error)
        log.info(
            "%s: %d epochs in %.1fs",
            version,
            model.fit_report.epochs,
            model.fit_report.seconds,
        )
        return model

    def _emit(self, out: EngineOutput, health: list[AlertEvent] | None = None) -> None:
        alerts = out.alerts + (health or [])
        self.stats.windows += len(out.scores)
        self.stats.alerts += len(alerts)
        if self.metrics is not None:
            self.metrics.dead_letters.inc(len(out.rejected))
        for rejection in out.rejected:
            self.stats.rejected += 1
            raw = repr(dict(rejection.sample.values)).encode()
            self._dead_letter.put(raw, rejection.reason, rejection.source)
        log_events(alerts)
        if alerts or out.quality or out.scores:
            for sink in self._sinks:
                sink.emit(alerts, out.quality, out.scores)
