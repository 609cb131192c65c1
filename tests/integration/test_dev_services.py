"""The development Alertmanager and InfluxDB (deploy/dev-alertmanager, deploy/dev-influxdb) do what the
sinks will rely on: Alertmanager takes alerts the way Prometheus posts them and notifies its webhook
receiver of firing and resolved ones; InfluxDB takes points through influxdb-client's v2 API and gives them
back to a Flux query.

    STREAMWATCH_TEST_ALERTMANAGER=$(bash deploy/dev-alertmanager start | tail -n1)
    STREAMWATCH_TEST_INFLUX=$(bash deploy/dev-influxdb start | tail -n1)
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: Any) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


class _Receiver(ThreadingHTTPServer):
    """A loopback webhook receiver that queues every notification body."""

    def __init__(self, port: int) -> None:
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.put(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


def _notification(receiver: _Receiver, alertname: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = receiver.bodies.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if body.get("status") == status and body.get("commonLabels", {}).get("alertname") == alertname:
            return body
    raise AssertionError(f"no {status} notification for {alertname} within {timeout:.0f}s")


@pytest.mark.alertmanager
def test_dev_alertmanager_takes_alerts_and_notifies_firing_then_resolved(alertmanager_url: str) -> None:
    # deploy/dev-alertmanager routes to a receiver on the port after its own (the API hides webhook URLs).
    port = urlsplit(alertmanager_url).port
    assert port is not None
    route = yaml.safe_load(_get(f"{alertmanager_url}/api/v2/status")["config"]["original"])
    assert route["receivers"][0]["webhook_configs"][0]["send_resolved"] is True
    receiver = _Receiver(port + 1)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        name = f"streamwatch-test-{uuid.uuid4().hex[:8]}"
        started = datetime.now(UTC)
        alert = {
            "labels": {"alertname": name, "stream": "pmu-1/voltage", "severity": "warning"},
            "annotations": {"summary": "test"},
            "startsAt": started.isoformat(),
            "generatorURL": "http://streamwatch.invalid/",
        }
        _post(f"{alertmanager_url}/api/v2/alerts", [alert])
        active = _get(f"{alertmanager_url}/api/v2/alerts?filter=alertname%3D%22{name}%22")
        assert [item["labels"]["stream"] for item in active] == ["pmu-1/voltage"]
        assert _notification(receiver, name, "firing")["alerts"][0]["labels"]["stream"] == "pmu-1/voltage"
        ended = {**alert, "endsAt": (started + timedelta(seconds=1)).isoformat()}
        _post(f"{alertmanager_url}/api/v2/alerts", [ended])
        assert _notification(receiver, name, "resolved")["alerts"][0]["status"] == "resolved"
    finally:
        receiver.shutdown()
        receiver.server_close()


@pytest.mark.influx
def test_dev_influxdb_takes_points_and_answers_flux(influx_url: str) -> None:
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    measurement = f"test_{uuid.uuid4().hex[:8]}"
    with InfluxDBClient(url=influx_url, token="", org="-") as client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        now = datetime.now(UTC)
        for index in range(3):
            # Line protocol, nanoseconds: influxdb-client's Point builder is untyped.
            at = int((now - timedelta(seconds=3 - index)).timestamp() * 1e9)
            line = f"{measurement},stream=pmu-1/voltage score={0.5 * index} {at}"
            writer.write(bucket="streamwatch/autogen", record=line)
        query = (
            'from(bucket: "streamwatch/autogen") |> range(start: -1h) '
            f'|> filter(fn: (r) => r._measurement == "{measurement}")'
        )
        values = [record.get_value() for table in client.query_api().query(query) for record in table.records]
    assert values == [0.0, 0.5, 1.0]
