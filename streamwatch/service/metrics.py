"""Prometheus metrics of the retraining lifecycle, read from its state at scrape time.

A collector rather than counters updated along the way: the lifecycle's own figures are the one source, so
the metrics can never drift from what `streamwatch models list` and the logs say. It is registered on an
injected registry (prometheus_client's default one only where the caller passes it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from streamwatch.core.retraining import Lifecycle
from streamwatch.io.sinks import GroupHealth, HealthSink, Sink

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
