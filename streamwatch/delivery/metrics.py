"""The delivery counters every outbound sink shares, labelled by sink kind and receiver.

Created once per registry (validated at construction, like prometheus_client's own metrics): a registry that
already holds them gets the same objects back, so several sinks can report into one daemon's registry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True, slots=True)
class SinkMetrics:
    registry: CollectorRegistry
    delivered: Counter
    retries: Counter
    dead_letters: Counter
    dropped: Counter
    queued: Gauge

    def receiver(self, sink: str, receiver: str) -> ReceiverMetrics:
        return ReceiverMetrics(self, sink, receiver)


@dataclass(frozen=True, slots=True)
class ReceiverMetrics:
    """The counters of one receiver, label values bound."""

    family: SinkMetrics
    sink: str
    receiver: str

    def delivered(self, count: int = 1) -> None:
        self.family.delivered.labels(self.sink, self.receiver).inc(count)

    def retried(self, count: int = 1) -> None:
        self.family.retries.labels(self.sink, self.receiver).inc(count)

    def dead_lettered(self, count: int = 1) -> None:
        self.family.dead_letters.labels(self.sink, self.receiver).inc(count)

    def dropped(self, count: int = 1) -> None:
        self.family.dropped.labels(self.sink, self.receiver).inc(count)

    def queued(self, size: int) -> None:
        self.family.queued.labels(self.sink, self.receiver).set(size)

    def value(self, name: str) -> float:
        """The current value of `delivered`, `retries`, `dead_letters`, `dropped` or `queued` (for logs and
        tests), read back through the registry like a scrape would."""
        sample = f"streamwatch_sink_{name}" if name == "queued" else f"streamwatch_sink_{name}_total"
        found = self.family.registry.get_sample_value(sample, {"sink": self.sink, "receiver": self.receiver})
        return 0.0 if found is None else found


_LABELS = ("sink", "receiver")
_lock = threading.Lock()
_by_registry: dict[int, tuple[CollectorRegistry, SinkMetrics]] = {}


def sink_metrics(registry: CollectorRegistry | None = None) -> SinkMetrics:
    """The shared sink metrics on `registry` (a private one when None: counted, not exported)."""
    if registry is None:
        return _create(CollectorRegistry())
    with _lock:
        known = _by_registry.get(id(registry))
        if known is not None and known[0] is registry:
            return known[1]
        metrics = _create(registry)
        _by_registry[id(registry)] = (registry, metrics)
        return metrics


def _create(registry: CollectorRegistry) -> SinkMetrics:
    return SinkMetrics(
        registry=registry,
        delivered=Counter(
            "streamwatch_sink_delivered", "Events or points a receiver accepted.", _LABELS, registry=registry
        ),
        retries=Counter(
            "streamwatch_sink_retries",
            "Failed delivery attempts that will be retried.",
            _LABELS,
            registry=registry,
        ),
        dead_letters=Counter(
            "streamwatch_sink_dead_letters",
            "Events given up on (retries exhausted or refused) and written to the delivery dead-letter file.",
            _LABELS,
            registry=registry,
        ),
        dropped=Counter(
            "streamwatch_sink_dropped",
            "Points dropped because the buffer for an unreachable receiver was full.",
            _LABELS,
            registry=registry,
        ),
        queued=Gauge(
            "streamwatch_sink_queued", "Events or points waiting for a receiver.", _LABELS, registry=registry
        ),
    )
