"""The webhook sink's requests: which events each URL gets, their body, idempotency key and signature."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from transports import ScriptedTransport

from streamwatch.config import DeliveryConfig, WebhookSinkConfig
from streamwatch.core.alerts import alert_id_for
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.delivery.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from streamwatch.io.webhook import WebhookSink
from streamwatch.records import AlertEvent
from streamwatch.schemas import alert_event_schema

URL = "https://hooks.test/streamwatch"
NOW = 1_764_500_000.0


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def hub(tmp_path: Path, transport: ScriptedTransport) -> Iterator[DeliveryHub]:
    config = DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "undelivered.jsonl")
    opened = DeliveryHub.open(config, transport=transport, clock=lambda: NOW, rng=random.Random(0))
    yield opened
    opened.close()


def _event(stream: str = "pmu-1/frequency", status: str = "firing", severity: str = "warning") -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id_for(stream, NOW - 600),
        stream=stream,
        status=status,  # type: ignore[arg-type]
        severity=severity,
        window_start=NOW - 600,
        window_end=NOW - 300,
        score=9.0,
        threshold=3.0,
        model_version="conv@1",
        channels={"frequency_hz": 1.0},
        detected_at=NOW,
    )


def _delivered(sink: WebhookSink, transport: ScriptedTransport) -> list[dict[str, Any]]:
    sink.courier.round(NOW)
    return [orjson.loads(post.body) for post in transport.posts]


def test_each_event_is_one_signed_request_with_the_contract_as_body(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    sink = WebhookSink(WebhookSinkConfig(url=URL, headers={"X-Team": "grid"}), hub, secret=b"k", start=False)
    sink.emit([_event(), _event(status="resolved")], [])
    bodies = _delivered(sink, transport)
    assert [body["status"] for body in bodies] == ["firing", "resolved"]
    for post, body in zip(transport.posts, bodies, strict=True):
        jsonschema.validate(body, alert_event_schema())
        assert post.url == URL
        assert post.headers["Content-Type"] == "application/json" and post.headers["X-Team"] == "grid"
        assert post.headers["Idempotency-Key"] == f"{body['alert_id']}:{body['status']}:warning"
        assert verify(
            b"k",
            timestamp=post.headers[TIMESTAMP_HEADER],
            signature_header=post.headers[SIGNATURE_HEADER],
            body=post.body,
            now=NOW,
        )


def test_without_a_secret_requests_are_unsigned(hub: DeliveryHub, transport: ScriptedTransport) -> None:
    sink = WebhookSink(WebhookSinkConfig(url=URL), hub, secret=None, start=False)
    sink.emit([_event()], [])
    _delivered(sink, transport)
    assert SIGNATURE_HEADER not in transport.posts[0].headers


def test_an_escalation_is_a_new_event_and_a_repeat_is_not(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    sink = WebhookSink(WebhookSinkConfig(url=URL), hub, secret=None, start=False)
    sink.emit([_event(), _event(severity="critical")], [])
    sink.emit([_event()], [])  # a replay after a crash
    assert [body["severity"] for body in _delivered(sink, transport)] == ["warning", "critical"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["a/x firing warning", "a/x resolved warning", "b/y firing critical"]),
        ({"streams": ["a/*"]}, ["a/x firing warning", "a/x resolved warning"]),
        ({"severities": ["critical"]}, ["b/y firing critical"]),
        ({"statuses": ["firing"]}, ["a/x firing warning", "b/y firing critical"]),
        ({"streams": ["b/*"], "statuses": ["resolved"]}, []),
    ],
)
def test_filters_choose_streams_severities_and_statuses(
    hub: DeliveryHub, transport: ScriptedTransport, filters: dict[str, Any], expected: list[str]
) -> None:
    sink = WebhookSink(WebhookSinkConfig(url=URL, **filters), hub, secret=None, start=False)
    sink.emit([_event("a/x"), _event("a/x", "resolved"), _event("b/y", severity="critical")], [])
    got = sorted(f"{b['stream']} {b['status']} {b['severity']}" for b in _delivered(sink, transport))
    assert got == expected
