"""The Alertmanager sink against a real Alertmanager (deploy/dev-alertmanager): an anomaly found by the
engine becomes an alert Alertmanager holds and routes to its webhook receiver as firing, then resolved; an
Alertmanager restarted empty gets the still-firing alert back from the resend loop."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dev_servers import dev_server
from http_receiver import Receiver

from streamwatch.codecs import CsvFrame
from streamwatch.config import (
    AlertmanagerSinkConfig,
    DeliveryConfig,
    RetryConfig,
    StreamwatchConfig,
    parse_config,
)
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.generate.inject import inject
from streamwatch.generate.simulate import simulate
from streamwatch.io.alertmanager import AlertmanagerSink
from streamwatch.offline import Split, detect
from streamwatch.records import AlertEvent

pytestmark = pytest.mark.alertmanager

PCA: StreamwatchConfig = parse_config({"detector": {"model": "pca"}})


def _anomaly_alerts(stream: str) -> list[AlertEvent]:
    """The engine's events for a voltage stream with a level shift: one alert, firing then resolved."""
    rng = np.random.default_rng(3)
    series = simulate("voltage", n=4000, start=time.time() - 4000, rng=rng)
    series, _ = inject(series, "level_shift", at=3000, length=300, rng=rng, severity=2.0)
    result = detect(
        CsvFrame(stream, series.timestamps, series.channels, series.values), Split(fraction=0.5), PCA
    )
    assert [event.status for event in result.alerts] == ["firing", "resolved"]
    return result.alerts


def _active(url: str, stream: str) -> list[dict[str, Any]]:
    query = urllib.parse.quote(f'stream="{stream}"')
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true&filter={query}", timeout=10) as answer:
        alerts: list[dict[str, Any]] = json.loads(answer.read())
    return alerts


def _eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError("not within time")
        time.sleep(0.1)


def _notified(receiver: Receiver, stream: str, status: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for request in receiver.requests:
            body = request.json()
            if body["status"] == status and body["commonLabels"].get("stream") == stream:
                return dict(body)
        return None

    found: dict[str, Any] = _eventually(find)
    return found


def _hub(tmp_path: Path) -> DeliveryHub:
    retry = RetryConfig(initial_s=0.1, max_s=1)
    return DeliveryHub.open(
        DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "dead.jsonl", retry=retry)
    )


def test_an_anomaly_fires_in_alertmanager_reaches_its_receiver_and_resolves(
    alertmanager_url: str, tmp_path: Path
) -> None:
    stream = f"feeder-{uuid.uuid4().hex[:6]}/voltage"
    firing, resolved = _anomaly_alerts(stream)
    port = urllib.parse.urlsplit(alertmanager_url).port
    assert port is not None
    receiver = Receiver(port + 1)  # where deploy/dev-alertmanager's route notifies
    hub = _hub(tmp_path)
    sink = AlertmanagerSink(AlertmanagerSinkConfig(urls=(alertmanager_url,), labels={"site": "test"}), hub)
    try:
        sink.emit([firing], [])
        [alert] = _eventually(lambda: _active(alertmanager_url, stream))
        assert alert["labels"] == {
            "alertname": "StreamwatchAnomaly",
            "stream": stream,
            "severity": firing.severity,
            "alert_id": firing.alert_id,
            "site": "test",
        }
        assert alert["annotations"]["model_version"] == firing.model_version
        assert alert["status"]["state"] == "active"
        notice = _notified(receiver, stream, "firing")
        assert notice["alerts"][0]["labels"]["alert_id"] == firing.alert_id
        sink.emit([resolved], [])
        _eventually(lambda: not _active(alertmanager_url, stream) or None)
        assert _notified(receiver, stream, "resolved")["alerts"][0]["status"] == "resolved"
    finally:
        sink.close()
        hub.close()
        receiver.close()


def test_a_restarted_alertmanager_has_the_still_firing_alert_again_without_help(tmp_path: Path) -> None:
    stream = f"feeder-{uuid.uuid4().hex[:6]}/voltage"
    firing, _ = _anomaly_alerts(stream)
    with dev_server("alertmanager", tmp_path / "am") as server:
        hub = _hub(tmp_path)
        config = AlertmanagerSinkConfig(urls=(server.url,), resend_interval_s=1)
        sink = AlertmanagerSink(config, hub)
        try:
            sink.emit([firing], [])
            _eventually(lambda: _active(server.url, stream))
            server.stop()
            metrics = hub.metrics.receiver("alertmanager", server.url)
            _eventually(lambda: metrics.value("retries") >= 2)
            server.start()
            # Alertmanager keeps no alerts across a restart: this one is back only because the sink re-sends.
            [alert] = _eventually(lambda: _active(server.url, stream))
            assert alert["labels"]["alert_id"] == firing.alert_id
        finally:
            sink.close()
            hub.close()
