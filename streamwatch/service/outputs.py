"""The configured sinks, built: local ones (stdout, JSONL) and the outbound ones (webhooks, Alertmanager,
InfluxDB) with the delivery hub they share. Kafka sinks are not here: the Kafka daemon writes them inside its
transactions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry

from streamwatch.config import StreamwatchConfig
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.delivery.metrics import sink_metrics
from streamwatch.delivery.secrets import read_secret
from streamwatch.io.sinks import JsonlSink, Sink, StreamSink
from streamwatch.records import AlertEvent

log = logging.getLogger("streamwatch.alerts")


def log_events(alerts: Sequence[AlertEvent]) -> None:
    """One log line per alert event, its ids as fields (JSON logs under systemd carry them as keys)."""
    for event in alerts:
        log.info(
            "%s %s %s: score %.3g, threshold %.3g (%s)",
            event.kind,
            event.status,
            event.stream,
            event.score,
            event.threshold,
            event.severity,
            extra={
                "stream": event.stream,
                "alert_id": event.alert_id,
                "status": event.status,
                "severity": event.severity,
                "model_version": event.model_version,
            },
        )


@runtime_checkable
class Delivering(Protocol):
    """A sink with delivery threads to start (webhooks, Alertmanager)."""

    def start(self) -> None: ...


@dataclass
class Outputs:
    sinks: list[Sink] = field(default_factory=list)
    hub: DeliveryHub | None = None

    def start(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, Delivering):
                sink.start()

    def close(self) -> None:
        """Close every sink, then what they share (idempotent: the daemons close the sinks already)."""
        for sink in self.sinks:
            sink.close()
        if self.hub is not None:
            self.hub.close()
            self.hub = None


def build_outputs(
    config: StreamwatchConfig, *, metrics: CollectorRegistry | None = None, start: bool = True
) -> Outputs:
    """Raises ConfigError (naming the key) when a secret a sink needs cannot be read. With start=False
    webhook and Alertmanager deliveries wait for `Outputs.start()`."""
    from streamwatch.io.alertmanager import AlertmanagerSink
    from streamwatch.io.influx import InfluxSink
    from streamwatch.io.webhook import WebhookSink

    outputs = Outputs()

    def hub() -> DeliveryHub:
        if outputs.hub is None:
            outputs.hub = DeliveryHub.open(config.delivery, metrics=metrics)
        return outputs.hub

    try:
        for index, item in enumerate(config.sinks):
            key = f"sinks[{index}]"
            if item.kind == "stdout":
                outputs.sinks.append(StreamSink(include_quality=item.include_quality))
            elif item.kind == "jsonl":
                outputs.sinks.append(JsonlSink(item.path, include_quality=item.include_quality))
            elif item.kind == "webhook":
                secret = None if item.secret is None else read_secret(item.secret, key=f"{key}.secret")
                outputs.sinks.append(
                    WebhookSink(item, hub(), secret=None if secret is None else secret.encode(), start=start)
                )
            elif item.kind == "alertmanager":
                token = (
                    None
                    if item.bearer_token is None
                    else read_secret(item.bearer_token, key=f"{key}.bearer_token")
                )
                outputs.sinks.append(AlertmanagerSink(item, hub(), bearer_token=token, start=start))
            elif item.kind == "influxdb":
                outputs.sinks.append(InfluxSink(item, key=key, metrics=sink_metrics(metrics)))
    except BaseException:
        outputs.close()
        raise
    return outputs
