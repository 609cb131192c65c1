"""streamwatch replay: CsvFrame -> messages, pacing, producing (with fakes) and the CLI verb."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamwatch import replay
from streamwatch.cli import main
from streamwatch.codecs import CsvFrame, decode_json_blocks
from streamwatch.replay import (
    CONTENT_TYPE,
    ReplayError,
    ReplayMessage,
    ReplayReport,
    bootstrap_from_env,
    ensure_topic,
    paced,
    produce,
    replay_messages,
)

T0 = 1772418880.0


def _frame(rows: int, channels: tuple[str, ...] = ("freq", "rocof"), stream: str = "pmu-1") -> CsvFrame:
    rng = np.random.default_rng(rows)
    timestamps = T0 + np.arange(rows, dtype=np.float64) * 0.02
    values = rng.normal(50.0, 3.0, size=(rows, len(channels))).astype(np.float32)
    return CsvFrame(stream=stream, timestamps=timestamps, channels=channels, values=values)


def _decoded(messages: list[ReplayMessage]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """All messages decoded by the Kafka source's decoder, rows concatenated."""
    blocks = [block for message in messages for block in decode_json_blocks(message.value)]
    return np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.values for b in blocks])


# ---------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------


def test_batch_one_sends_sample_objects_keyed_by_stream() -> None:
    frame = _frame(3)
    messages = list(replay_messages(frame))
    assert [(m.key, m.samples) for m in messages] == [(b"pmu-1", 1)] * 3
    first = orjson.loads(messages[0].value)
    assert first == {
        "stream": "pmu-1",
        "ts": T0,
        "values": {"freq": float(frame.values[0, 0]), "rocof": float(frame.values[0, 1])},
    }
    assert list(first["values"]) == ["freq", "rocof"]  # channel order kept


def test_batch_k_sends_columnar_messages_last_one_shorter() -> None:
    frame = _frame(23)
    messages = list(replay_messages(frame, batch=10))
    assert [m.samples for m in messages] == [10, 10, 3]
    last = orjson.loads(messages[-1].value)
    assert last["stream"] == "pmu-1"
    assert last["ts"] == frame.timestamps[20:].tolist()
    assert last["values"] == {"freq": frame.values[20:, 0].tolist(), "rocof": frame.values[20:, 1].tolist()}
    assert {m.key for m in messages} == {b"pmu-1"}


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_messages_round_trip_through_the_decoder_exactly(batch: int) -> None:
    frame = _frame(50)
    timestamps, values = _decoded(list(replay_messages(frame, batch=batch)))
    assert timestamps.tobytes() == frame.timestamps.tobytes()
    assert values.dtype == np.float32
    assert values.tobytes() == frame.values.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    batch=st.integers(min_value=1, max_value=9),
    start=st.floats(min_value=-1e9, max_value=1e10, allow_nan=False),
    step=st.floats(min_value=1e-6, max_value=1e3),
)
def test_any_float32_values_and_times_survive_the_round_trip(
    values: np.ndarray[Any, np.dtype[np.float32]], batch: int, start: float, step: float
) -> None:
    rows, width = values.shape
    channels = tuple(f"c{index}" for index in range(width))
    timestamps = start + np.arange(rows, dtype=np.float64) * step
    frame = CsvFrame(stream="s", timestamps=timestamps, channels=channels, values=values)
    messages = list(replay_messages(frame, batch=batch))
    assert [m.samples for m in messages] == [min(batch, rows - i) for i in range(0, rows, batch)]
    got_timestamps, got_values = _decoded(messages)
    assert got_timestamps.tobytes() == timestamps.tobytes()
    assert got_values.tobytes() == values.tobytes()  # bitwise: -0.0, subnormals and extremes included


def test_empty_frame_gives_no_messages_and_unicode_stream_keys_are_utf8() -> None:
    assert list(replay_messages(_frame(0))) == []
    [message] = list(replay_messages(_frame(1, stream="zähler-1")))
    assert message.key == "zähler-1".encode()


def test_bad_batch_and_unreplayable_times_fail_before_any_message() -> None:
    with pytest.raises(ValueError, match="batch must be at least 1"):
        replay_messages(_frame(2), batch=0)
    far_future = CsvFrame(
        stream="s", timestamps=np.array([2e11]), channels=("x",), values=np.zeros((1, 1), np.float32)
    )
    with pytest.raises(ValueError, match="read back as milliseconds"):
        replay_messages(far_future)


# ---------------------------------------------------------------------------------------------------------
# Pacing
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FakeTime:
    """A clock that only moves when slept on (or advanced by the test, to play a slow sender)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def _messages(*sizes: int) -> list[ReplayMessage]:
    return [ReplayMessage(b"k", b"{}", size) for size in sizes]


def test_pacing_sends_each_message_when_its_samples_are_due() -> None:
    time = FakeTime()
    sent_at = [time.now for _ in paced(_messages(3, 3, 1, 2), rate=2.0, clock=time.clock, sleep=time.sleep)]
    # due after 0, 3, 6 and 7 samples at 2 samples/s
    assert [at - 1000.0 for at in sent_at] == [0.0, 1.5, 3.0, 3.5]


def test_pacing_is_absolute_so_a_slow_sender_catches_up_without_drift() -> None:
    time = FakeTime()
    sent_at = []
    for _ in paced(_messages(1, 1, 1, 1, 1), rate=10.0, clock=time.clock, sleep=time.sleep):
        sent_at.append(time.now - 1000.0)
        if len(sent_at) == 2:
            time.now += 0.25  # sending the second message stalled for 2.5 sample periods
    assert sent_at == pytest.approx([0.0, 0.1, 0.35, 0.35, 0.4])
    assert time.sleeps == pytest.approx([0.1, 0.05])  # no sleep while behind schedule


def test_no_rate_means_no_clock_and_no_sleep() -> None:
    def fail() -> float:
        raise AssertionError("clock read without a rate")

    def no_sleep(_seconds: float) -> None:
        raise AssertionError("slept without a rate")

    assert len(list(paced(_messages(1, 2, 3), rate=None, clock=fail, sleep=no_sleep))) == 3


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("inf")])
def test_pacing_rejects_rates_that_are_not_positive_and_finite(rate: float) -> None:
    time = FakeTime()
    with pytest.raises(ValueError, match="rate must be a positive number"):
        paced(_messages(1), rate=rate, clock=time.clock, sleep=time.sleep)


# ---------------------------------------------------------------------------------------------------------
# Producing (fakes standing in for kafka-python)
# ---------------------------------------------------------------------------------------------------------


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_errback(self, errback: Callable[[BaseException], Any]) -> None:
        if self.error is not None:
            errback(self.error)


@dataclass
class FakeProducer:
    fail_from: int | None = None  # index of the first send whose delivery fails
    sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    flushes: int = 0
    closed_with: float | None = None

    def send(self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> FakeFuture:
        failed = self.fail_from is not None and len(self.sent) >= self.fail_from
        self.sent.append((topic, key, value, headers))
        return FakeFuture(RuntimeError("NotEnoughReplicas") if failed else None)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed_with = timeout


@dataclass
class FakeAdmin:
    existing: set[str] = field(default_factory=set)
    requests: list[dict[str, dict[str, int]]] = field(default_factory=list)
    closed: bool = False

    def create_topics(self, new_topics: dict[str, dict[str, int]], *, wait_for_metadata: bool) -> None:
        from kafka.errors import TopicAlreadyExistsError

        assert wait_for_metadata
        self.requests.append(new_topics)
        if set(new_topics) & self.existing:
            raise TopicAlreadyExistsError("exists")
        self.existing |= set(new_topics)

    def close(self) -> None:
        self.closed = True


def test_produce_sends_every_message_with_key_and_content_type_then_flushes() -> None:
    producer = FakeProducer()
    messages = list(replay_messages(_frame(5), batch=2))
    assert produce(iter(messages), producer, topic="t") == 3
    assert producer.sent == [("t", m.key, m.value, [CONTENT_TYPE]) for m in messages]
    assert CONTENT_TYPE == ("content-type", b"application/json")
    assert producer.flushes == 1


def test_produce_stops_at_the_first_failed_delivery_and_raises_after_flushing() -> None:
    producer = FakeProducer(fail_from=2)
    with pytest.raises(ReplayError, match=r"1 of 3 messages sent to t were not delivered.*NotEnoughReplicas"):
        produce(_messages(1, 1, 1, 1, 1), producer, topic="t")
    assert len(producer.sent) == 3  # nothing sent after the failure was seen
    assert producer.flushes == 1


def test_ensure_topic_creates_missing_topic_and_keeps_existing_one() -> None:
    admin = FakeAdmin(existing={"old"})
    assert ensure_topic(admin, "new", partitions=6) is True
    assert ensure_topic(admin, "old", partitions=6) is False
    assert admin.requests[0] == {"new": {"num_partitions": 6, "replication_factor": 1}}


def _write_csv(path: Path, rows: int = 20) -> Path:
    frame = _frame(rows)
    lines = ["timestamp,freq,rocof"]
    lines += [
        f"{ts!r},{a!r},{b!r}"
        for ts, (a, b) in zip(frame.timestamps.tolist(), frame.values.tolist(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeAdmin, FakeProducer]:
    admin, producer = FakeAdmin(), FakeProducer()
    monkeypatch.setattr(replay, "kafka_admin", lambda bootstrap, *, connect_timeout_s: admin)
    monkeypatch.setattr(replay, "kafka_producer", lambda bootstrap, *, connect_timeout_s: producer)
    return admin, producer


def test_replay_csv_creates_topic_sends_paced_and_reports(
    tmp_path: Path, fake_kafka: tuple[FakeAdmin, FakeProducer]
) -> None:
    admin, producer = fake_kafka
    time = FakeTime()
    report = replay.replay_csv(
        _write_csv(tmp_path / "grid.csv"), topic="t", stream="grid", bootstrap="b:1", batch=4, rate=8.0,
        partitions=2, clock=time.clock, sleep=time.sleep,
    )  # fmt: skip
    assert report == ReplayReport(samples=20, messages=5, seconds=2.0)  # 5 messages of 4 at 8/s: last at 2 s
    assert admin.requests == [{"t": {"num_partitions": 2, "replication_factor": 1}}] and admin.closed
    assert {key for _, key, _, _ in producer.sent} == {b"grid"}
    assert producer.closed_with is not None
    assert report.summary("t") == "replayed 20 samples in 5 messages to t in 2.00 s (10 samples/s)"


def test_replay_csv_turns_kafka_errors_into_replay_errors_and_still_closes(
    tmp_path: Path, fake_kafka: tuple[FakeAdmin, FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kafka.errors import KafkaTimeoutError

    _, producer = fake_kafka

    def send(*_args: object, **_kwargs: object) -> FakeFuture:
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    monkeypatch.setattr(producer, "send", send)
    time = FakeTime()
    with pytest.raises(ReplayError, match=r"Kafka at b:1: .*Failed to update metadata"):
        replay.replay_csv(
            _write_csv(tmp_path / "grid.csv"), topic="t", stream="grid", bootstrap="b:1",
            clock=time.clock, sleep=time.sleep,
        )  # fmt: skip
    assert producer.closed_with is not None


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def kafka_log_level() -> Iterator[None]:
    """The verb quiets kafka-python's logger for the process; put it back for the other tests."""
    logger = logging.getLogger("kafka")
    level = logger.level
    yield
    logger.setLevel(level)


def test_bootstrap_comes_from_the_environment_or_the_local_default() -> None:
    assert bootstrap_from_env({}) == "127.0.0.1:9092"
    assert bootstrap_from_env({"STREAMWATCH_KAFKA_BOOTSTRAP": "kafka:29092"}) == "kafka:29092"


@pytest.mark.usefixtures("kafka_log_level")
def test_cli_defaults_pass_through_and_summary_goes_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_replay_csv(path: Path, **kwargs: Any) -> ReplayReport:
        calls.append({"path": path, **kwargs})
        return ReplayReport(samples=10, messages=10, seconds=0.5)

    monkeypatch.setattr(replay, "replay_csv", fake_replay_csv)
    monkeypatch.setenv("STREAMWATCH_KAFKA_BOOTSTRAP", "broker:9093")
    csv = _write_csv(tmp_path / "feeder-7.csv")
    assert main(["replay", str(csv), "--topic", "t", "--as-fast-as-possible"]) == 0
    [call] = calls
    assert call["stream"] == "feeder-7"
    assert (call["bootstrap"], call["batch"], call["rate"], call["partitions"]) == ("broker:9093", 1, None, 4)
    assert "replayed 10 samples in 10 messages to t in 0.50 s (20 samples/s)" in capsys.readouterr().err

    assert main(["replay", str(csv), "--topic", "t", "--stream", "s", "--rate", "250", "--batch", "50",
                 "--bootstrap", "h:1", "--partitions", "3"]) == 0  # fmt: skip
    assert (calls[1]["stream"], calls[1]["bootstrap"], calls[1]["batch"], calls[1]["rate"]) == (
        "s",
        "h:1",
        50,
        250.0,
    )
    assert calls[1]["partitions"] == 3


@pytest.mark.parametrize(
    "extra",
    [
        ["--rate", "10", "--as-fast-as-possible"],
        ["--rate", "0"],
        ["--rate", "nan"],
        ["--batch", "0"],
        ["--batch", "2.5"],
        ["--partitions", "0"],
    ],
)
def test_cli_bad_usage_exits_2(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(tmp_path / "x.csv"), "--topic", "t", *extra])
    assert exit_info.value.code == 2


@pytest.mark.usefixtures("kafka_log_level")
def test_cli_bad_csv_exits_1_with_the_decode_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("timestamp,v\n2026-03-02T02:34:40Z,1.0\n2026-03-02T02:34:41Z,oops\n", encoding="utf-8")
    assert main(["replay", str(csv), "--topic", "t", "--bootstrap", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "line 3, column 2 ('v'): not a number: 'oops'" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("kafka_log_level")
def test_cli_unreachable_broker_exits_1_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    csv = _write_csv(tmp_path / "grid.csv")
    code = main(
        ["replay", str(csv), "--topic", "t", "--bootstrap", f"127.0.0.1:{port}", "--connect-timeout", "0.3"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"streamwatch: replay failed: Kafka at 127.0.0.1:{port}:" in err
    assert "Unable to bootstrap" in err
    assert "Traceback" not in err
