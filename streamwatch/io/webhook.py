"""Alert events POSTed to an HTTP receiver: one event per request, its JSON body the alert contract.

Every request carries

    Content-Type: application/json
    Idempotency-Key: <alert_id>:<status>:<severity>   (an escalation while firing is a new event)
    X-Streamwatch-Timestamp / X-Streamwatch-Signature  (HMAC-SHA256, when a secret is configured)

Events go through the persistent outbox: `emit` only queues them (and wakes the URL's delivery thread), so a
slow or dead receiver never holds up scoring or the other receivers, and events queued while it is down
survive a restart. Per stream they arrive in the order they happened.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Sequence

import orjson

from streamwatch.config import WebhookSinkConfig
from streamwatch.delivery.courier import DeliveryThread, OutboxCourier
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.delivery.outbox import Pending, Queued
from streamwatch.delivery.signing import signed_headers
from streamwatch.delivery.store import StoreError
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

log = logging.getLogger(__name__)

SINK = "webhook"


def idempotency_key(event: AlertEvent) -> str:
    return f"{event.alert_id}:{event.status}:{event.severity}"


class WebhookSink:
    def __init__(
        self, config: WebhookSinkConfig, hub: DeliveryHub, *, secret: bytes | None, start: bool = True
    ) -> None:
        self._config = config
        self._hub = hub
        self._secret = secret
        self._headers = {**config.headers, "Content-Type": "application/json"}
        self.courier = OutboxCourier(
            hub.outbox,
            config.url,
            self._post,
            retry=hub.retry,
            undelivered=hub.undelivered,
            metrics=hub.metrics.receiver(SINK, config.url),
            rng=hub.rng,
        )
        self._thread = DeliveryThread(f"streamwatch-webhook {config.url}", self._round, hub.clock)
        self._closed = False
        self._started = False
        if start:
            self.start()
        pending = hub.outbox.pending(config.url)
        if pending:
            log.info("%s: %d events from before the restart still to deliver", config.url, pending)

    def start(self) -> None:
        """Start delivering (at once unless built with start=False: a reload starts the new sinks only
        after the old ones stopped, so two threads never deliver one URL's queue)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def accepts(self, event: AlertEvent) -> bool:
        config = self._config
        if config.streams and not any(fnmatch.fnmatchcase(event.stream, glob) for glob in config.streams):
            return False
        if config.severities and event.severity not in config.severities:
            return False
        return not config.statuses or event.status in config.statuses

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        chosen = [
            Queued(idempotency_key(event), event.stream, orjson.dumps(event.to_json()))
            for event in alerts
            if self.accepts(event)
        ]
        if not chosen:
            return
        try:
            queued = self._hub.outbox.put(self._config.url, chosen, self._hub.clock())
        except StoreError as error:
            # Scoring goes on; the events are in the log, whole, for an operator to resend.
            self.courier.metrics.dead_lettered(len(chosen))
            for event in chosen:
                log.error(
                    "%s: cannot queue event %s (%s): %s", self._config.url, event.key, error, event.body
                )
            return
        if queued:
            self.courier.metrics.queued(self._hub.outbox.pending(self._config.url))
            self._thread.wake()

    def outages(self) -> list[tuple[str, float]]:
        failing = self.courier.failing_for(self._hub.clock())
        return [] if failing is None else [(self._config.url, failing)]

    def _round(self, now: float, halt: threading.Event | None = None) -> float | None:
        self._hub.forget_old_keys(now)
        return self.courier.round(now, halt)

    def _post(self, event: Pending) -> None:
        headers = {**self._headers, "Idempotency-Key": event.key}
        if self._secret is not None:
            headers.update(signed_headers(self._secret, int(self._hub.clock()), event.body))
        self._hub.transport.post(self._config.url, event.body, headers, timeout_s=self._config.timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._thread.stop(self._hub.close_timeout_s):
            log.warning(
                "%s: a request was still in flight at close; its event stays queued", self._config.url
            )
