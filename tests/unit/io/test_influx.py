"""The InfluxDB sink against an in-memory InfluxDB behind the PointWriter seam (batching, outages, a full
buffer, refusals, closing, a hung server), and its influxdb-client writer against a real HTTP server on
loopback (what each answer means)."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from http_receiver import Behaviour, Receiver
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.config import ConfigError, InfluxSinkConfig, SecretConfig
from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.metrics import ReceiverMetrics, sink_metrics
from streamwatch.io.influx import (
    ClientWriter,
    InfluxError,
    InfluxMisconfiguredError,
    InfluxRejectedError,
    InfluxSink,
    InfluxUnavailableError,
)
from streamwatch.io.line_protocol import alert_line, health_line, quality_line, score_line
from streamwatch.io.sinks import GroupHealth
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
QUICK = Backoff(initial_s=0.01, max_s=0.02)


class FakeInflux:
    """An in-memory InfluxDB: keeps the payloads it is sent, or fails every write with `failure` (down,
    refusing) until that is cleared."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.attempts: list[float] = []  # when each write came in (monotonic)
        self.failure: InfluxError | None = None
        self.closed = 0
        self._changed = threading.Condition()

    def write(self, payload: bytes) -> None:
        with self._changed:
            self.attempts.append(time.monotonic())
            self._changed.notify_all()
            if self.failure is not None:
                raise self.failure
            self.payloads.append(payload)

    def close(self) -> None:
        self.closed += 1

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return [line for payload in self.payloads for line in payload.decode().split("\n")]

    def wait_for_attempts(self, count: int, timeout_s: float = 5.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.attempts) >= count, timeout_s), self.attempts


class HungInflux(FakeInflux):
    """A server that takes the connection and never answers, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, payload: bytes) -> None:
        self.entered.set()
        self.release.wait(30)
        super().write(payload)


def _eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _scores(count: int, stream: str = "pmu-1/voltage", first: int = 0) -> list[WindowScore]:
    return [
        WindowScore(stream, seq, START + seq, START + seq + 10.0, 0.1 * seq, 2.5, {"v": 1.0}, "pca@1")
        for seq in range(first, first + count)
    ]


def _config(**overrides: object) -> InfluxSinkConfig:
    values: dict[str, object] = {
        "url": "http://influx.test:8086",
        "batch_points": 100,
        "flush_interval_s": 60.0,
        "close_timeout_s": 1.0,
    }
    return InfluxSinkConfig.model_validate(values | overrides)


@pytest.fixture
def metrics() -> ReceiverMetrics:
    return sink_metrics().receiver("influxdb", "http://influx.test:8086")


def _sink(writer: FakeInflux, metrics: ReceiverMetrics, **overrides: object) -> InfluxSink:
    return InfluxSink(
        _config(**overrides), writer=writer, metrics=metrics.family, rng=random.Random(7), backoff=QUICK
    )


def test_full_batches_go_out_at_once_and_the_rest_at_the_interval(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics, batch_points=3, flush_interval_s=0.3)
    scores = _scores(7)
    sink.emit([], [], scores)
    influx.wait_for_attempts(2)
    sent_at_once = [payload.count(b"\n") + 1 for payload in influx.payloads]
    influx.wait_for_attempts(3)
    assert sent_at_once == [3, 3]
    assert influx.lines == [score_line(score) for score in scores]
    assert metrics.value("delivered") == 7 and metrics.value("queued") == 0
    sink.close()


def test_close_sends_what_waits_for_the_interval_and_closes_the_writer_once(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics)
    sink.emit([], [], _scores(5))
    sink.close()
    sink.close()
    assert len(influx.lines) == 5 and influx.closed == 1
    assert metrics.value("delivered") == 5 and metrics.value("dropped") == 0


def test_points_emitted_after_close_are_counted_as_dropped(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics)
    sink.close()
    sink.emit([], [], _scores(2))
    assert influx.lines == [] and metrics.value("dropped") == 2
    assert "emitted after close" in caplog.text


def test_points_are_held_while_influxdb_is_down_and_delivered_in_order_after(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamwatch.io.influx")
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("connection refused")
    sink = _sink(influx, metrics, batch_points=4, flush_interval_s=0.01)
    scores = _scores(10)
    for first in range(0, 10, 2):
        sink.emit([], [], scores[first : first + 2])
    influx.wait_for_attempts(4)
    _eventually(lambda: metrics.value("retries") >= 4 and metrics.value("queued") == 10)
    assert influx.payloads == [] and metrics.value("delivered") == 0
    influx.failure = None
    _eventually(lambda: metrics.value("delivered") == 10)
    assert influx.lines == [score_line(score) for score in scores]
    assert metrics.value("queued") == 0 and metrics.value("dropped") == 0
    down = [r for r in caplog.records if "unavailable" in r.getMessage()]
    up = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(down) == 1 and "connection refused" in down[0].getMessage()
    assert len(up) == 1
    sink.close()


def test_a_full_buffer_drops_the_oldest_points_and_counts_them(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("connection refused")
    sink = _sink(influx, metrics, batch_points=2, flush_interval_s=0.01, buffer_points=5)
    scores = _scores(8)
    for score in scores:
        sink.emit([], [], [score])
    influx.wait_for_attempts(2)
    influx.failure = None
    assert sink.flush(5.0)
    assert influx.lines == [score_line(score) for score in scores[3:]]
    assert metrics.value("dropped") == 3 and metrics.value("delivered") == 5
    assert len([r for r in caplog.records if "buffer of 5 points full" in r.getMessage()]) == 1
    sink.close()


def test_one_emit_larger_than_the_buffer_keeps_its_newest_points(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("connection refused")
    sink = _sink(influx, metrics, buffer_points=3)
    scores = _scores(5)
    sink.emit([], [], scores)
    influx.failure = None
    assert sink.flush(5.0)
    assert influx.lines == [score_line(score) for score in scores[2:]]
    assert metrics.value("dropped") == 2
    sink.close()


def test_a_rejected_batch_is_dropped_counted_and_logged_once_per_burst(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    influx.failure = InfluxRejectedError("HTTP 400: field type conflict")
    sink = _sink(influx, metrics, batch_points=2)
    sink.emit([], [], _scores(4))
    assert sink.flush(5.0)
    assert metrics.value("dropped") == 4 and metrics.value("retries") == 0 and len(influx.attempts) == 2
    influx.failure = None
    later = _scores(1, first=4)
    sink.emit([], [], later)
    assert sink.flush(5.0)
    assert influx.lines == [score_line(later[0])]
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "field type conflict" in rejected[0].getMessage()
    sink.close()


def test_an_unexpected_writer_error_drops_the_batch_but_not_the_sink(metrics: ReceiverMetrics) -> None:
    class Broken(FakeInflux):
        def write(self, payload: bytes) -> None:
            if not self.attempts:
                self.attempts.append(time.monotonic())
                raise RuntimeError("bug")
            super().write(payload)

    influx = Broken()
    sink = _sink(influx, metrics)
    sink.emit([], [], _scores(2))
    assert sink.flush(5.0)
    sink.emit([], [], _scores(1, first=2))
    assert sink.flush(5.0)
    assert metrics.value("dropped") == 2 and metrics.value("delivered") == 1
    sink.close()


def test_a_misconfigured_sink_names_the_setting_to_fix_and_keeps_the_points(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    influx.failure = InfluxMisconfiguredError("HTTP 401: unauthorized", settings=("token",))
    sink = InfluxSink(
        _config(flush_interval_s=0.01),
        key="sinks[2]",
        writer=influx,
        metrics=metrics.family,
        rng=random.Random(1),
        backoff=QUICK,
    )
    sink.emit([], [], _scores(3))
    influx.wait_for_attempts(3)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "sinks[2].token" in error.getMessage() and "401" in error.getMessage()
    influx.failure = None
    assert sink.flush(5.0)
    assert metrics.value("delivered") == 3 and metrics.value("dropped") == 0
    sink.close()


def test_an_outage_is_logged_when_it_begins_and_when_its_cause_changes_kind_not_per_retry(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("connection refused")
    sink = _sink(influx, metrics, flush_interval_s=0.01)
    sink.emit([], [], _scores(1))
    influx.wait_for_attempts(3)
    influx.failure = InfluxMisconfiguredError("HTTP 401: unauthorized", settings=("token",))
    influx.wait_for_attempts(len(influx.attempts) + 3)
    influx.failure = None
    sink.close()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 2
    assert "unavailable (connection refused)" in logged[0] and "check sinks.influxdb.token" in logged[1]


def test_retries_wait_for_the_servers_retry_after(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("HTTP 429", retry_after_s=0.3)
    sink = _sink(influx, metrics, flush_interval_s=0.01)
    sink.emit([], [], _scores(1))
    influx.wait_for_attempts(2)
    assert influx.attempts[1] - influx.attempts[0] >= 0.3
    influx.failure = None
    sink.close()


def test_retries_back_off_with_full_jitter_from_the_injected_rng(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    influx.failure = InfluxUnavailableError("connection refused")
    backoff = Backoff(initial_s=0.2, max_s=0.2)
    sink = InfluxSink(
        _config(flush_interval_s=0.01, close_timeout_s=0.1),
        writer=influx,
        metrics=metrics.family,
        rng=random.Random(3),
        backoff=backoff,
    )
    sink.emit([], [], _scores(1))
    influx.wait_for_attempts(3)
    sink.close()
    expected = random.Random(3)
    delays = [backoff.delay(1, expected), backoff.delay(2, expected)]
    gaps = [later - earlier for earlier, later in zip(influx.attempts, influx.attempts[1:3], strict=False)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay <= gap < delay + 0.15


def test_emit_never_waits_for_a_hung_server_and_close_gives_up_in_time(metrics: ReceiverMetrics) -> None:
    influx = HungInflux()
    sink = _sink(influx, metrics, batch_points=10, flush_interval_s=0.01, close_timeout_s=0.3)
    sink.emit([], [], _scores(10))
    assert influx.entered.wait(5)
    slowest = 0.0
    for first in range(10, 2010, 10):
        began = time.perf_counter()
        sink.emit([], [], _scores(10, first=first))
        slowest = max(slowest, time.perf_counter() - began)
    assert slowest < 0.05
    began = time.monotonic()
    sink.close()
    assert time.monotonic() - began < 1.0
    # Everything, the batch stuck in the write included, is counted once; a late answer changes nothing.
    assert metrics.value("dropped") == 2010 and metrics.value("queued") == 0
    influx.release.set()
    time.sleep(0.05)
    assert metrics.value("delivered") == 0 and metrics.value("dropped") == 2010


def test_health_figures_are_written_as_points(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics)
    figures = [
        GroupHealth("grid", "pca@2", START, 0.9, 120.0, False, 1, 0, 0),
        GroupHealth("ecg", "pca@1", START, None, None, True, 0, 2, 1),
    ]
    sink.health(figures)
    sink.close()
    assert influx.lines == [health_line(item) for item in figures]


def test_without_scores_only_alerts_and_data_quality_are_written(metrics: ReceiverMetrics) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics, scores=False)
    alert = AlertEvent(
        "id1", "s", "firing", "warning", START, START + 10, 4.0, 2.5, "pca@1", {"v": 1.0}, START
    )
    gap = DataQualityEvent("s", "gap", START, START + 60, "no data for 60.0s")
    sink.emit([alert], [gap], _scores(3))
    sink.close()
    assert influx.lines == [alert_line(alert), quality_line(gap)]


def test_a_point_line_protocol_cannot_carry_is_counted_and_logged_once(
    metrics: ReceiverMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    influx = FakeInflux()
    sink = _sink(influx, metrics)
    good = _scores(1)
    sink.emit([], [], [*_scores(1, stream="bad\nname"), *good])
    sink.emit([], [], _scores(1, stream="bad\nname", first=1))
    sink.close()
    assert influx.lines == [score_line(good[0])]
    assert metrics.value("dropped") == 2
    assert len([r for r in caplog.records if "cannot write a point" in r.getMessage()]) == 1


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.one_of(st.integers(1, 6), st.sampled_from(["down", "up"])), min_size=1, max_size=12),
    buffer_points=st.integers(1, 12),
)
def test_every_point_is_delivered_or_counted_as_dropped_and_the_kept_ones_in_order(
    steps: list[int | str], buffer_points: int
) -> None:
    metrics = sink_metrics().receiver("influxdb", "http://influx.test:8086")
    influx = FakeInflux()
    sink = _sink(influx, metrics, batch_points=3, flush_interval_s=0.001, buffer_points=buffer_points)
    emitted: list[str] = []
    for step in steps:
        if step == "down":
            influx.failure = InfluxUnavailableError("connection refused")
        elif step == "up":
            influx.failure = None
        else:
            assert isinstance(step, int)
            scores = _scores(step, first=len(emitted))
            emitted += [score_line(score) for score in scores]
            sink.emit([], [], scores)
    influx.failure = None
    assert sink.flush(5.0)
    sink.close()
    delivered = influx.lines
    assert metrics.value("delivered") == len(delivered)
    assert len(delivered) + metrics.value("dropped") == len(emitted)
    assert delivered == sorted(delivered, key=emitted.index)  # a subsequence, in emit order


# --- the influxdb-client writer against a real HTTP server ------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Receiver]:
    # One for the module: shutting a server down waits out its half-second poll.
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def receiver(server: Receiver) -> Receiver:
    server.behaviour = Behaviour()
    server.requests.clear()
    return server


def _client(url: str, *, token: str = "", timeout_s: float = 5.0) -> ClientWriter:
    return ClientWriter(url=url, token=token, org="-", bucket="streamwatch/autogen", timeout_s=timeout_s)


def test_the_client_posts_the_lines_to_the_v2_write_api_with_the_token(receiver: Receiver) -> None:
    receiver.behaviour.status = 204
    writer = _client(receiver.url, token="user:secret")
    writer.write(b"m,stream=a v=1 1\nm,stream=b v=2 2")
    writer.close()
    [request] = receiver.wait_for(1)
    assert request.path.startswith("/api/v2/write?")
    assert {"org=-", "bucket=streamwatch%2Fautogen", "precision=ns"} <= set(
        request.path.split("?")[1].split("&")
    )
    assert request.headers["Authorization"] == "Token user:secret"
    assert request.body == b"m,stream=a v=1 1\nm,stream=b v=2 2"


@pytest.mark.parametrize(
    ("status", "kind", "names"),
    [
        (401, InfluxMisconfiguredError, ("token",)),
        (403, InfluxMisconfiguredError, ("token",)),
        (404, InfluxMisconfiguredError, ("org", "bucket")),
        (400, InfluxRejectedError, None),
        (413, InfluxRejectedError, None),
        (500, InfluxUnavailableError, None),
        (503, InfluxUnavailableError, None),
        (429, InfluxUnavailableError, None),
    ],
)
def test_each_answer_becomes_the_right_error(
    receiver: Receiver, status: int, kind: type[InfluxError], names: tuple[str, ...] | None
) -> None:
    receiver.behaviour.status = status
    receiver.behaviour.headers = {"Retry-After": "7"}
    writer = _client(receiver.url)
    with pytest.raises(kind) as raised:
        writer.write(b"m v=1 1")
    writer.close()
    assert type(raised.value) is kind and f"HTTP {status}" in str(raised.value)
    if isinstance(raised.value, InfluxMisconfiguredError):
        assert raised.value.settings == names
    elif isinstance(raised.value, InfluxUnavailableError):
        assert raised.value.retry_after_s == 7.0


def test_a_refused_connection_and_a_timeout_mean_unavailable(receiver: Receiver) -> None:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(InfluxUnavailableError):
        _client(f"http://127.0.0.1:{closed_port}").write(b"m v=1 1")
    receiver.behaviour.delay_s = 1.0
    began = time.monotonic()
    with pytest.raises(InfluxUnavailableError):
        _client(receiver.url, timeout_s=0.2).write(b"m v=1 1")
    assert time.monotonic() - began < 0.9  # the client's own retries are off


def test_a_token_from_the_environment_reaches_the_server(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, metrics: ReceiverMetrics
) -> None:
    monkeypatch.setenv("SW_TEST_INFLUX_TOKEN", "api-token")
    config = _config(url=receiver.url, token=SecretConfig(env="SW_TEST_INFLUX_TOKEN"))
    sink = InfluxSink(config, metrics=metrics.family)
    sink.emit([], [], _scores(2))
    sink.close()
    [request] = receiver.wait_for(1)
    assert request.headers["Authorization"] == "Token api-token"
    assert request.body.decode().split("\n") == [score_line(score) for score in _scores(2)]


def test_a_token_that_cannot_be_read_is_a_config_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SW_TEST_INFLUX_TOKEN", raising=False)
    config = _config(token=SecretConfig(env="SW_TEST_INFLUX_TOKEN"))
    with pytest.raises(
        ConfigError, match=r"sinks\[1\]\.token\.env: environment variable SW_TEST_INFLUX_TOKEN"
    ):
        InfluxSink(config, key="sinks[1]")
