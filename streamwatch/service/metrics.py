"""The daemon's Prometheus metrics, on an injected registry.

The retraining lifecycle's figures are a collector read at scrape time: the lifecycle's own figures are the
one source, so the metrics can never drift from what `streamwatch models list` and the logs say. The
daemon's running counts (records, windows, alert events, batch latency, consumer lag) are counters the
loop updates; score drift is computed at scrape time from recent scores. The same lifecycle figures go to
the sinks that record detector health (InfluxDB) every HEALTH_EVERY_S.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.core.retraining import Lifecycle
from streamwatch.io.sinks import GroupHealth, HealthSink, Sink
from streamwatch.records import AlertEvent

# How often (daemon clock seconds) detector health goes to the sinks that record it.
HEALTH_EVERY_S = 60.0


def health_figures(lifecycle: Lifecycle, at: float) -> list[GroupHealth]:
    """The lifecycle's per-group figures as sinks record them: the same ones the collector serves."""
    figures = []
    for group, stats in sorted(lifecycle.stats.items()):
        eyesight = lifecycle.canaries.group(group)
        figures.append(
            GroupHealth(
                group=group,
                version=stats.version,
                at=at,
                canary_hit_rate=None if eyesight is None else eyesight.rate,
                seconds_since_retrain=lifecycle.seconds_since_retrain(group),
                degraded=lifecycle.is_degraded(group),
                retrains_accepted=stats.accepted,
                retrains_rejected=stats.rejected,
                rollbacks=stats.rollbacks,
            )
        )
    return figures


class HealthReporter:
    """Hands detector health to the sinks that record it, every HEALTH_EVERY_S of the daemon's clock."""

    def __init__(
        self, lifecycle: Lifecycle, sinks: Sequence[Sink], *, every_s: float = HEALTH_EVERY_S
    ) -> None:
        self._lifecycle = lifecycle
        self._sinks = [sink for sink in sinks if isinstance(sink, HealthSink)]
        self._every_s = every_s
        self._last: float | None = None

    def step(self, now: float) -> None:
        if not self._sinks or (self._last is not None and now - self._last < self._every_s):
            return
        self._last = now
        figures = health_figures(self._lifecycle, now)
        if figures:
            for sink in self._sinks:
                sink.health(figures)


class LifecycleCollector(Collector):
    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def collect(self) -> Iterator[Metric]:
        lifecycle = self._lifecycle
        retrains = CounterMetricFamily(
            "streamwatch_retrains",
            "Retrains per stream group: attempted, accepted by the validation gate, rejected (or failed).",
            labels=["group", "result"],
        )
        rollbacks = CounterMetricFamily(
            "streamwatch_rollbacks", "Live models put back to an earlier version.", labels=["group"]
        )
        model = InfoMetricFamily(
            "streamwatch_model", "The live model version per stream group.", labels=["group"]
        )
        since = GaugeMetricFamily(
            "streamwatch_seconds_since_retrain",
            "Event time since the group's last accepted retrain (since it was first scored, if none yet).",
            labels=["group"],
        )
        hit_rate = GaugeMetricFamily(
            "streamwatch_canary_hit_rate",
            "Share of the live model's recent canaries (injected anomalies) it caught.",
            labels=["group", "version"],
        )
        stream_rate = GaugeMetricFamily(
            "streamwatch_stream_canary_hit_rate",
            "Share of a stream's recent canaries the live model caught.",
            labels=["group", "stream"],
        )
        degraded = GaugeMetricFamily(
            "streamwatch_detector_degraded",
            "1 while the group's canary hit rate is below its floor (a detector-degraded alert is open).",
            labels=["group"],
        )
        for group, stats in sorted(lifecycle.stats.items()):
            retrains.add_metric([group, "attempted"], stats.attempted)
            retrains.add_metric([group, "accepted"], stats.accepted)
            retrains.add_metric([group, "rejected"], stats.rejected)
            rollbacks.add_metric([group], stats.rollbacks)
            model.add_metric([group], {"version": stats.version})
            elapsed = lifecycle.seconds_since_retrain(group)
            if elapsed is not None:
                since.add_metric([group], elapsed)
            eyesight = lifecycle.canaries.group(group)
            if eyesight is not None and eyesight.rate is not None:
                hit_rate.add_metric([group, eyesight.version], eyesight.rate)
                for stream in sorted(eyesight.per_stream):
                    rate = eyesight.stream_rate(stream)
                    if rate is not None:
                        stream_rate.add_metric([group, stream], rate)
            degraded.add_metric([group], 1.0 if lifecycle.is_degraded(group) else 0.0)
        yield from (retrains, rollbacks, model, since, hit_rate, stream_rate, degraded)


# Window scores kept per group for the drift figure: enough for a stable median, little memory.
_RECENT_SCORES = 2048
# Batch latency buckets (seconds): a batch takes milliseconds when quiet and up to seconds when saturated.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DaemonMetrics:
    """What a daemon counts as it runs (records in, windows scored, alert events out, batch latency,
    consumer lag) and the detector-health figures read at scrape time (score drift against training,
    readiness), on an injected registry."""

    def __init__(
        self, registry: CollectorRegistry, engine: Engine, ready: Callable[[], bool] | None = None
    ) -> None:
        self._engine = engine
        self.records = Counter("streamwatch_records", "Records consumed from the source.", registry=registry)
        self.samples = Counter("streamwatch_samples", "Samples read from the source.", registry=registry)
        self.dead_letters = Counter(
            "streamwatch_dead_letters",
            "Records or samples sent to the dead-letter destination (unusable, with the reason).",
            registry=registry,
        )
        self.windows = Counter("streamwatch_windows_scored", "Windows scored.", registry=registry)
        self.alert_events = Counter(
            "streamwatch_alert_events",
            "Alert events sent to the sinks, by status and kind.",
            ["status", "kind"],
            registry=registry,
        )
        self.stream_alert_events = Counter(
            "streamwatch_stream_alert_events",
            "Alert events per stream (its alert rate is the rate of this).",
            ["stream", "status"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "streamwatch_batch_seconds",
            "Time to score one batch and hand its events to the sinks.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "streamwatch_consumer_lag",
            "Records in an owned partition not consumed yet (end offset - position).",
            ["topic", "partition"],
            registry=registry,
        )
        ready_gauge = Gauge("streamwatch_ready", "1 when /readyz answers ready.", registry=registry)
        if ready is not None:
            ready_gauge.set_function(lambda: 1.0 if ready() else 0.0)
        self._recent: dict[str, deque[float]] = {}
        self._group_of: dict[str, str] = {}
        self._trained_median: dict[str, tuple[str, float]] = {}  # group -> (model version, median)
        registry.register(_DriftCollector(self))

    def batch(self, out: EngineOutput, alerts: Sequence[AlertEvent], seconds: float) -> None:
        """One scored batch: its windows, the alert events it sent (health events included), its time."""
        self.windows.inc(len(out.scores))
        self.batch_seconds.observe(seconds)
        for event in alerts:
            self.alert_events.labels(event.status, event.kind).inc()
            if event.kind == "anomaly":
                self.stream_alert_events.labels(event.stream, event.status).inc()
        for score in out.scores:
            group = self._group_of.get(score.stream)
            if group is None:
                group = self._group_of[score.stream] = self._engine.group_of(score.stream)
            recent = self._recent.get(group)
            if recent is None:
                recent = self._recent[group] = deque(maxlen=_RECENT_SCORES)
            recent.append(score.score)

    def forget(self, streams: Iterable[str]) -> None:
        """Streams this daemon no longer scores (their group may change when they come back)."""
        for stream in streams:
            self._group_of.pop(stream, None)

    def drift(self) -> dict[str, float]:
        """Per group: median recent window score ÷ median score of the live model on its training data."""
        figures = {}
        for group, recent in list(self._recent.items()):
            trained = self._trained(group)
            if trained and recent:
                figures[group] = float(np.median(np.fromiter(recent, dtype=np.float64))) / trained
        return figures

    def _trained(self, group: str) -> float | None:
        model = self._engine.model(group)
        if model is None:
            return None
        known = self._trained_median.get(group)
        if known is None or known[0] != model.version:
            scores = [np.asarray(s, dtype=np.float64) for s in model.initial_scores.values() if len(s)]
            if not scores:
                return None
            known = (model.version, float(np.median(np.concatenate(scores))))
            self._trained_median[group] = known
        return known[1] if known[1] > 0 else None


class _DriftCollector(Collector):
    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        drift = GaugeMetricFamily(
            "streamwatch_score_drift",
            "Median recent window score ÷ median score on the live model's training data (1: as trained; "
            "a steady rise means the data moved away from what the model learned).",
            labels=["group"],
        )
        for group, value in sorted(self._metrics.drift().items()):
            drift.add_metric([group], value)
        yield drift
