"""The development Alertmanager and InfluxDB (deploy/dev-alertmanager, deploy/dev-influxdb) do what the
sinks will rely on: Alertmanager takes alerts the way Prometheus posts them and notifies its webhook
receiver of firing and resolved ones; InfluxDB takes points through influxdb-client's v2 API and gives them
back to a Flux query.

    STREAMWATCH_TEST_ALERTMANAGER=$(bash deploy/dev-alertmanager start | tail -n1)
    STREAMWATCH_TEST_INFLUX=$(bash deploy/dev-influxdb start | tail -n1)
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from http_receiver import Receiver, Request


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: Any) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _notification(receiver: Receiver, alertname: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    def matching(requests: list[Request]) -> list[dict[str, Any]]:
        bodies = [request.json() for request in requests]
        return [
            body
            for body in bodies
            if body.get("status") == status and body.get("commonLabels", {}).get("alertname") == alertname
        ]

    receiver.wait_until(lambda requests: bool(matching(requests)), timeout, f"{status} notification")
    return matching(receiver.requests)[0]


@pytest.mark.alertmanager
def test_dev_alertmanager_takes_alerts_and_notifies_firing_then_resolved(alertmanager_url: str) -> None:
    # deploy/dev-alertmanager routes to a receiver on the port after its own (the API hides webhook URLs).
    port = urlsplit(alertmanager_url).port
    assert port is not None
    route = yaml.safe_load(_get(f"{alertmanager_url}/api/v2/status")["config"]["original"])
    assert route["receivers"][0]["webhook_configs"][0]["send_resolved"] is True
    receiver = Receiver(port + 1)
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
        receiver.close()


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
