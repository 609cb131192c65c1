"""What the outbound sinks share: the outbox database, the dead-letter file, the HTTP transport, the retry
policy and the counters, built once from `delivery:` and closed after the sinks."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from streamwatch.config import DeliveryConfig
from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.courier import RetryPolicy
from streamwatch.delivery.http import HttpTransport, Transport
from streamwatch.delivery.metrics import SinkMetrics, sink_metrics
from streamwatch.delivery.outbox import Outbox
from streamwatch.delivery.store import Store
from streamwatch.delivery.undelivered import UndeliveredFile

OUTBOX_FILE = "outbox.sqlite3"
# How often delivered keys older than `remember_delivered_s` are forgotten.
_FORGET_EVERY_S = 3600.0


@dataclass
class DeliveryHub:
    store: Store
    outbox: Outbox
    undelivered: UndeliveredFile
    transport: Transport
    retry: RetryPolicy
    metrics: SinkMetrics
    remember_delivered_s: float
    close_timeout_s: float
    # Wall clock: queue times are stored and compared across restarts.
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    _forgotten_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(
        cls,
        config: DeliveryConfig,
        *,
        metrics: CollectorRegistry | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> DeliveryHub:
        store = Store(config.dir / OUTBOX_FILE)
        return cls(
            store=store,
            outbox=Outbox(store),
            undelivered=UndeliveredFile(config.dead_letter),
            transport=transport if transport is not None else HttpTransport(),
            retry=RetryPolicy(
                Backoff(config.retry.initial_s, config.retry.max_s), config.retry.give_up_after_s
            ),
            metrics=sink_metrics(metrics),
            remember_delivered_s=config.remember_delivered_s,
            close_timeout_s=config.close_timeout_s,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
        )

    def forget_old_keys(self, now: float) -> None:
        """Forget delivered keys past the remembered span, at most once per _FORGET_EVERY_S."""
        with self._lock:
            if now - self._forgotten_at < _FORGET_EVERY_S:
                return
            self._forgotten_at = now
        self.outbox.forget_delivered(now - self.remember_delivered_s)

    def close(self) -> None:
        self.transport.close()
        self.undelivered.close()
        self.store.close()
