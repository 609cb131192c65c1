"""Alerts to Prometheus Alertmanager (`POST /api/v2/alerts`), the way Prometheus sends them.

Each alert is a label set (alertname, stream, severity, alert_id and the configured static labels) with
annotations (summary, score, threshold, model_version, channels, window) and `startsAt`. Alertmanager holds
alerts as state and forgets one whose `endsAt` passes, so, like Prometheus, every firing alert is re-sent
every `resend_interval_s` with `endsAt` four intervals ahead: an Alertmanager restarted empty has it again
within one interval, and if streamwatch itself dies its alerts end on their own instead of firing forever. A
resolution is sent with `endsAt` set to when it resolved until Alertmanager has taken it.

An escalation (warning to critical) is a new label set; the lower one keeps firing until the alert resolves,
as with Prometheus' tiered rules; an inhibit rule with `equal: [alert_id]` hides it (README). Every
Alertmanager URL (an HA pair) gets every alert, each through its own delivery thread, and the alerts to send
live in the outbox database, so a restart while Alertmanager is down loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streamwatch.config import AlertmanagerSinkConfig
from streamwatch.delivery.active_alerts import Active, ActiveAlerts, Change
from streamwatch.delivery.courier import DeliveryThread
from streamwatch.delivery.http import DeliveryError
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.delivery.metrics import ReceiverMetrics
from streamwatch.delivery.store import StoreError
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore, iso_utc

log = logging.getLogger(__name__)

SINK = "alertmanager"
DEGRADED_ALERTNAME = "StreamwatchDetectorDegraded"
# Firing alerts are valid for this many resend intervals (Prometheus uses four).
_VALID_INTERVALS = 4
# Alerts per request (Prometheus sends at most 64; Alertmanager takes more, but small requests fail small).
_BATCH = 256


def alert_labels(event: AlertEvent, config: AlertmanagerSinkConfig) -> dict[str, str]:
    degraded = event.kind == "detector-degraded"
    labels = dict(config.labels)
    labels.update(
        alertname=DEGRADED_ALERTNAME if degraded else config.alertname,
        severity=event.severity,
        alert_id=event.alert_id,
    )
    # A detector-degraded alert is about a stream group, named in `stream`.
    labels["group" if degraded else "stream"] = event.stream
    return labels


def alert_annotations(event: AlertEvent) -> dict[str, str]:
    ratio = event.score / event.threshold if event.threshold > 0 else float("inf")
    if event.kind == "detector-degraded":
        summary = (
            f"detector of stream group {event.stream} is degraded: it caught {event.score:.0%} of its "
            f"canaries (floor {event.threshold:.0%}), model {event.model_version}"
        )
    else:
        summary = (
            f"{event.stream}: anomaly score {event.score:.3g} is {ratio:.1f}x its threshold "
            f"{event.threshold:.3g} ({event.severity}), model {event.model_version}"
        )
    channels = ", ".join(
        f"{name} {share:.0%}" for name, share in sorted(event.channels.items(), key=lambda item: -item[1])
    )
    annotations = {
        "summary": summary,
        "score": f"{event.score:.6g}",
        "threshold": f"{event.threshold:.6g}",
        "model_version": event.model_version,
        "window_start": iso_utc(event.window_start),
        "window_end": iso_utc(event.window_end),
    }
    if channels:
        annotations["channels"] = channels
    if event.source is not None:
        source = event.source
        annotations["source"] = f"{source.topic}/{source.partition}@{source.offset}"
    return annotations


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class AlertmanagerSink:
    def __init__(
        self,
        config: AlertmanagerSinkConfig,
        hub: DeliveryHub,
        *,
        bearer_token: str | None = None,
        start: bool = True,
    ) -> None:
        self._config = config
        self._hub = hub
        self._active = ActiveAlerts(hub.store)
        self._host = urllib.parse.quote(socket.gethostname(), safe="")
        self._headers = {"Content-Type": "application/json"}
        if bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self.receivers = [_Receiver(url, self._active, self._headers, config, hub) for url in config.urls]
        self._closed = False
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Start the delivery threads (see WebhookSink.start)."""
        if not self._started:
            self._started = True
            for receiver in self.receivers:
                receiver.thread.start()

    def emit(
        self,
        alerts: Sequence[AlertEvent],
        quality: Sequence[DataQualityEvent],
        scores: Sequence[WindowScore] = (),
    ) -> None:
        if not alerts:
            return
        now = self._hub.clock()
        changes = [change for event in alerts for change in self._changes(event, now)]
        try:
            self._active.apply(self._config.urls, changes, now)
            for receiver in self.receivers:
                receiver.metrics.queued(self._active.unsent(receiver.url))
        except StoreError as error:
            # Scoring goes on; the alerts are in the log, whole, for an operator to resend.
            for receiver in self.receivers:
                receiver.metrics.dead_lettered(len(changes))
            for change in changes:
                log.error(
                    "cannot record alert %s for Alertmanager (%s): %s", change.alert_id, error, change.alert
                )
            return
        self._wake()

    def adopt(self, firing: Iterable[AlertEvent]) -> None:
        """Alerts already firing on streams this daemon took over: re-sent from here on."""
        self.emit(list(firing), ())

    def release(self, streams: Iterable[str]) -> None:
        """Streams another daemon took over: it re-sends their firing alerts now, this one stops."""
        self._active.release(streams)

    def release_all(self) -> None:
        """At start: firing alerts of the last run are re-sent only once restored state adopts them (left
        alone, they end in Alertmanager four resend intervals after their last send)."""
        count = self._active.release(None)
        if count:
            log.info("%d firing alerts of the last run are no longer re-sent until adopted", count)

    def _changes(self, event: AlertEvent, now: float) -> list[Change]:
        starts_at = min(event.window_start, now)
        if event.status == "firing":
            return [self._change(event, starts_at, None)]
        # Resolved: its label set ends, and ActiveAlerts ends the lower severities an escalation left firing.
        return [self._change(event, starts_at, min(event.window_end, now))]

    def _change(self, event: AlertEvent, starts_at: float, ends_at: float | None) -> Change:
        labels = alert_labels(event, self._config)
        url = self._config.generator_url.format(
            stream=urllib.parse.quote(event.stream, safe=""), alert_id=event.alert_id, host=self._host
        )
        alert = {
            "labels": labels,
            "annotations": alert_annotations(event),
            "startsAt": iso_utc(starts_at),
            "generatorURL": url,
        }
        return Change(
            fingerprint(labels), event.alert_id, event.stream, orjson.dumps(alert), starts_at, ends_at
        )

    def outages(self) -> list[tuple[str, float]]:
        now = self._hub.clock()
        return [
            (receiver.url, now - receiver.down_since)
            for receiver in self.receivers
            if receiver.down_since is not None
        ]

    def _wake(self) -> None:
        for receiver in self.receivers:
            receiver.thread.wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for receiver in self.receivers:
            if not receiver.thread.stop(self._hub.close_timeout_s):
                log.warning("%s: a request was still in flight at close", receiver.url)


class _Receiver:
    """One Alertmanager: its delivery thread and when it next needs the alerts again."""

    def __init__(
        self,
        url: str,
        active: ActiveAlerts,
        headers: dict[str, str],
        config: AlertmanagerSinkConfig,
        hub: DeliveryHub,
    ) -> None:
        self.url = url
        self._endpoint = f"{url}/api/v2/alerts"
        self._active = active
        self._headers = headers
        self._config = config
        self._hub = hub
        self.metrics: ReceiverMetrics = hub.metrics.receiver(SINK, url)
        self._resend_at = 0.0
        self._retry_at = 0.0
        self._failures = 0
        self.down_since: float | None = None
        self.thread = DeliveryThread(f"streamwatch-alertmanager {url}", self.round, hub.clock)

    def round(self, now: float, stop: threading.Event | None = None) -> float | None:
        """Send what changed at once, and every active alert when a resend is due (as Prometheus does);
        returns when to look again (None: nothing is active)."""
        if now < self._retry_at:  # backing off: not even the database is asked until then
            return self._retry_at
        resend = now >= self._resend_at
        rows = self._active.of(self.url, unsent_only=not resend)
        if not rows:
            return None if resend else self._resend_at
        try:
            for start in range(0, len(rows), _BATCH):
                if stop is not None and stop.is_set():
                    return None
                self._post(rows[start : start + _BATCH], now)
        except DeliveryError as error:
            self._give_up_old_resolutions(now)
            self.metrics.queued(self._active.unsent(self.url))
            return self._failed(error, now)
        self._delivered(now)
        self.metrics.queued(self._active.unsent(self.url))
        if resend:
            self._resend_at = now + self._config.resend_interval_s
        return self._resend_at

    def _post(self, rows: list[Active], now: float) -> None:
        valid_until = now + _VALID_INTERVALS * self._config.resend_interval_s
        body = orjson.dumps([_payload(row, valid_until) for row in rows])
        self._hub.transport.post(self._endpoint, body, self._headers, timeout_s=self._config.timeout_s)
        news = self._active.sent(self.url, [(row.fingerprint, row.version) for row in rows])
        if news:
            self.metrics.delivered(news)

    def _delivered(self, now: float) -> None:
        self._failures = 0
        self._retry_at = 0.0
        if self.down_since is not None:
            log.info("%s: Alertmanager takes alerts again after %.0fs", self.url, now - self.down_since)
            self.down_since = None

    def _failed(self, error: DeliveryError, now: float) -> float:
        self._failures += 1
        self.metrics.retried()
        if self.down_since is None:
            self.down_since = now
            if error.retryable:
                log.warning("%s: cannot send alerts, retrying with backoff: %s", self.url, error)
            else:
                # Alertmanager refusing the payload itself (4xx) will not pass by waiting, but firing alerts
                # must not be dropped: keep trying (a fixed config is picked up) and say so once per streak.
                log.error("%s: Alertmanager refused the alerts, retrying: %s", self.url, error)
        wait = self._hub.retry.backoff.delay(
            self._failures, self._hub.rng, at_least=error.retry_after_s or 0.0
        )
        self._retry_at = now + min(wait, self._config.resend_interval_s)
        return self._retry_at

    def _give_up_old_resolutions(self, now: float) -> None:
        for row in self._active.give_up(self.url, now - self._hub.retry.give_up_after_s):
            log.error(
                "%s: resolution of alert %s never delivered; it goes to the dead letters",
                self.url,
                row.alert_id,
            )
            self._hub.undelivered.put(
                receiver=self.url,
                key=f"{row.alert_id}:{row.fingerprint}",
                reason=f"Alertmanager unreachable for {self._hub.retry.give_up_after_s:.0f}s",
                attempts=self._failures,
                queued_at=row.changed_at,
                event=_payload(row, now),
            )
            self.metrics.dead_lettered()


def _payload(row: Active, valid_until: float) -> dict[str, Any]:
    alert: dict[str, Any] = orjson.loads(row.alert)
    alert["endsAt"] = iso_utc(valid_until if row.ends_at is None else row.ends_at)
    return alert
