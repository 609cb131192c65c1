"""Webhooks against a real HTTP server on loopback: an outage, a restart while the receiver is down, and a
receiver that hangs, with real delivery threads and the real outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from http_receiver import Receiver, Request
from simulated_daemon import FastClock, run_until, simulated_config
from waiting import wait_for

from streamwatch.config import DeliveryConfig, RetryConfig, StreamwatchConfig, WebhookSinkConfig
from streamwatch.core.alerts import alert_id_for
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.delivery.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from streamwatch.io.sinks import DeadLetterFile, MemorySink
from streamwatch.io.webhook import WebhookSink, idempotency_key
from streamwatch.records import AlertEvent
from streamwatch.service.daemon import Daemon
from streamwatch.service.outputs import build_outputs

pytestmark = pytest.mark.webhook

SECRET = b"webhook-test-secret"
START = 1_764_500_000.0
FAST_RETRY = RetryConfig(initial_s=0.05, max_s=0.3)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _events(streams: int, per_stream: int) -> list[AlertEvent]:
    """Alternating firing and resolved events of several alerts per stream, in event order."""
    events = []
    for n in range(per_stream):
        for s in range(streams):
            stream = f"site-{s}/frequency"
            start = START + 600 * (n // 2)
            events.append(
                AlertEvent(
                    alert_id=alert_id_for(stream, start),
                    stream=stream,
                    status="firing" if n % 2 == 0 else "resolved",
                    severity="warning",
                    window_start=start,
                    window_end=start + 60 + 60 * (n % 2),
                    score=5.0,
                    threshold=2.0,
                    model_version="pca@1",
                    channels={"frequency_hz": 1.0},
                    detected_at=START + n,
                )
            )
    return events


def _keys(requests: list[Request]) -> list[str]:
    return [request.headers["Idempotency-Key"] for request in requests]


def _signed(request: Request) -> bool:
    return verify(
        SECRET,
        timestamp=request.headers[TIMESTAMP_HEADER],
        signature_header=request.headers[SIGNATURE_HEADER],
        body=request.body,
        now=time.time(),
    )


def test_a_receiver_down_for_a_while_gets_every_event_once_in_order_signed(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.down()
    hub = DeliveryHub.open(
        DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "dead.jsonl", retry=FAST_RETRY)
    )
    sink = WebhookSink(WebhookSinkConfig(url=f"{receiver.url}/hook", timeout_s=2), hub, secret=SECRET)
    metrics = hub.metrics.receiver("webhook", f"{receiver.url}/hook")
    events = _events(streams=3, per_stream=6)
    sink.emit(events[:9], [])
    wait_for(lambda: metrics.value("retries") >= 3, timeout=20, what="retries")
    # More events, and a replay of the first ones (a restart before the source committed), while still down.
    sink.emit(events[:3] + events[9:], [])
    receiver.up()
    requests = receiver.wait_for(len(events))
    time.sleep(0.3)  # anything sent twice would arrive now
    sink.close()
    hub.close()
    requests = receiver.requests
    assert sorted(_keys(requests)) == sorted(idempotency_key(event) for event in events)
    for stream in {event.stream for event in events}:
        got = [r.json()["status"] + r.json()["alert_id"] for r in requests if r.json()["stream"] == stream]
        assert got == [e.status + e.alert_id for e in events if e.stream == stream]
    assert all(_signed(request) for request in requests)
    assert metrics.value("delivered") == len(events) and metrics.value("queued") == 0
    assert not (tmp_path / "dead.jsonl").read_bytes()


def test_closing_delivers_what_is_queued_to_a_receiver_that_answers(
    tmp_path: Path, receiver: Receiver
) -> None:
    hub = DeliveryHub.open(DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "dead.jsonl"))
    sink = WebhookSink(WebhookSinkConfig(url=receiver.url), hub, secret=None)
    events = _events(streams=4, per_stream=6)
    sink.emit(events, [])
    sink.close()
    hub.close()
    assert sorted(_keys(receiver.requests)) == sorted(idempotency_key(event) for event in events)


def test_a_hung_receiver_holds_up_neither_scoring_nor_the_other_receivers(tmp_path: Path) -> None:
    hung, healthy = Receiver(), Receiver()
    hung.behaviour.hold = threading.Event()
    config = DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "dead.jsonl", retry=FAST_RETRY)
    hub = DeliveryHub.open(config)
    sinks = [
        WebhookSink(WebhookSinkConfig(url=hung.url, timeout_s=30), hub, secret=None),
        WebhookSink(WebhookSinkConfig(url=healthy.url), hub, secret=None),
    ]
    events = _events(streams=2, per_stream=4)
    try:
        for event in events:
            for sink in sinks:
                sink.emit([event], [])
        # Every emit returned while the hung receiver holds its first request; the healthy one has it all.
        assert len(healthy.wait_for(len(events))) == len(events)
        assert hung.requests == []
        hung.behaviour.hold.set()
        assert len(hung.wait_for(len(events))) == len(events)
    finally:
        hung.behaviour.hold.set()
        for sink in sinks:
            sink.close()
        hub.close()
        hung.close()
        healthy.close()


def _daemon_config(tmp_path: Path, url: str) -> StreamwatchConfig:
    return simulated_config(
        tmp_path,
        anomalies_per_hour=6,
        retraining={"enabled": False},
        sinks=[{"kind": "webhook", "url": url, "secret": {"file": str(tmp_path / "secret")}}],
        delivery={
            "dir": str(tmp_path / "outbox"),
            "dead_letter": str(tmp_path / "undelivered.jsonl"),
            "retry": FAST_RETRY.model_dump(),
        },
    )


def _run(config: StreamwatchConfig, tmp_path: Path, done: Callable[[], bool], memory: MemorySink) -> None:
    outputs = build_outputs(config)
    daemon = Daemon(
        config,
        sinks=[*outputs.sinks, memory],
        dead_letter=DeadLetterFile(tmp_path / "dead.jsonl"),
        clock=FastClock(start=time.time()),
    )
    try:
        run_until(daemon, done, timeout_s=90)
    finally:
        outputs.close()


def test_events_of_a_daemon_restarted_while_the_receiver_is_down_are_not_lost(
    tmp_path: Path, receiver: Receiver
) -> None:
    (tmp_path / "secret").write_text(SECRET.decode() + "\n")
    url = f"{receiver.url}/alerts"
    config = _daemon_config(tmp_path, url)
    receiver.down()
    first = MemorySink()
    # The first run scores until it has alerted (and resolved), then stops with the receiver still down.
    _run(config, tmp_path, lambda: any(a.status == "resolved" for a in first.alerts), first)
    assert first.alerts and receiver.requests == []
    receiver.up()
    second = MemorySink()
    _run(config, tmp_path, lambda: len(receiver.requests) >= len(first.alerts), second)
    time.sleep(0.3)
    delivered = {r.headers["Idempotency-Key"]: r.json() for r in receiver.requests}
    assert len(delivered) == len(receiver.requests)
    for event in first.alerts:
        assert delivered[idempotency_key(event)] == orjson.loads(orjson.dumps(event.to_json()))
    assert all(_signed(request) for request in receiver.requests)
