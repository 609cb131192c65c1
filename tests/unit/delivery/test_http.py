"""The HTTP seam against a real server on loopback: what succeeds, and which failures are worth a retry."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from http_receiver import Receiver

from streamwatch.delivery.http import DeliveryError, HttpTransport, retry_after_seconds, status_error


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_a_post_arrives_with_its_body_and_headers(receiver: Receiver) -> None:
    transport = HttpTransport()
    answer = transport.post(f"{receiver.url}/hook", b'{"a":1}', {"X-Test": "yes"}, timeout_s=5)
    assert answer.status == 200
    [request] = receiver.wait_for(1)
    assert request.path == "/hook" and request.body == b'{"a":1}' and request.headers["X-Test"] == "yes"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)]
)
def test_statuses_are_sorted_into_retry_and_give_up(receiver: Receiver, status: int, retryable: bool) -> None:
    receiver.behaviour.status = status
    receiver.behaviour.headers = {"Retry-After": "7"}
    with pytest.raises(DeliveryError) as raised:
        HttpTransport().post(receiver.url, b"{}", {}, timeout_s=5)
    assert raised.value.retryable is retryable
    assert raised.value.retry_after_s == 7.0
    assert f"HTTP {status}" in str(raised.value)


def test_a_closed_port_and_a_slow_receiver_are_retryable(receiver: Receiver) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(DeliveryError) as refused:
        HttpTransport().post(f"http://127.0.0.1:{closed_port}/", b"{}", {}, timeout_s=5)
    assert refused.value.retryable
    receiver.behaviour.delay_s = 1.0
    with pytest.raises(DeliveryError) as slow:
        HttpTransport().post(receiver.url, b"{}", {}, timeout_s=0.2)
    assert slow.value.retryable and "timed out" in str(slow.value).lower()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412400.0) == pytest.approx(110.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert status_error("http://x", 503, b"busy" * 100, None).retry_after_s is None
    assert len(str(status_error("http://x", 503, b"busy" * 100, None))) < 260
