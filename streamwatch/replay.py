"""Replay a recorded CSV into Kafka as the JSON messages the Kafka source reads.

Three layers, each testable on its own:

* `replay_messages`: a CsvFrame -> (key, value) messages. Pure. One sample object per message, or with
  `batch` > 1 the columnar form of `decode_json_blocks`. The key is the stream id, so that the default
  partitioner keeps a stream in one partition, in order.
* `paced`: lets messages through at a sample rate, on an injected clock and sleep.
* `produce` / `replay_csv`: the thin Kafka part (topic creation, an idempotent producer, delivery checks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson

from streamwatch.codecs import CsvFrame, read_csv

Clock = Callable[[], float]
Sleep = Callable[[float], None]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "STREAMWATCH_KAFKA_BOOTSTRAP"
DEFAULT_PARTITIONS = 4
CONNECT_TIMEOUT_S = 10.0
CONTENT_TYPE = ("content-type", b"application/json")
# Epoch numbers carry no unit; readers infer it by magnitude, and above 1e11 "seconds" read as milliseconds
# (codecs module docstring). Such times (after the year 5138) cannot be replayed faithfully.
_MAX_EPOCH_SECONDS = 1e11
# Rows turned into Python floats at a time: bounds memory on million-row files without per-row numpy calls.
_ROWS_PER_CHUNK = 4096
# Closing waits this long for records still in flight; after a failure the broker may never answer them.
_CLOSE_TIMEOUT_S = 5.0


class ReplayError(Exception):
    """Replaying failed on the Kafka side (unreachable broker, refused topic, undelivered messages)."""


class ReplayMessage(NamedTuple):
    """One Kafka record to send, and how many samples its value carries (for pacing and the summary)."""

    key: bytes
    value: bytes
    samples: int


@dataclass(frozen=True, slots=True)
class ReplayReport:
    samples: int
    messages: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.inf

    def summary(self, topic: str) -> str:
        return (
            f"replayed {self.samples} samples in {self.messages} messages to {topic} "
            f"in {self.seconds:.2f} s ({self.samples_per_second:.0f} samples/s)"
        )


# ---------------------------------------------------------------------------------------------------------
# CsvFrame -> messages
# ---------------------------------------------------------------------------------------------------------


def replay_messages(frame: CsvFrame, *, batch: int = 1) -> Iterator[ReplayMessage]:
    """The frame's samples in order as JSON messages keyed by the stream id, `batch` samples per message.

    `batch` 1 gives `{"stream", "ts", "values": {channel: value}}` objects; more gives the columnar form
    `{"stream", "ts": [...], "values": {channel: [...]}}` (the last message may be shorter). Times are epoch
    seconds; float32 values are written as the float64 of the same value, which orjson prints
    shortest-round-trip, so decoding gives back the identical float32.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if len(frame) and float(np.abs(frame.timestamps).max()) > _MAX_EPOCH_SECONDS:
        raise ValueError(
            f"{frame.stream}: a timestamp lies beyond the year 5138; as epoch seconds it would be read back "
            "as milliseconds"
        )
    # Checks above run now; the messages are produced lazily, a chunk at a time.
    if batch == 1:
        return _sample_messages(frame)
    return _columnar_messages(frame, batch)


def _sample_messages(frame: CsvFrame) -> Iterator[ReplayMessage]:
    key = frame.stream.encode("utf-8")
    for start in range(0, len(frame), _ROWS_PER_CHUNK):
        stop = start + _ROWS_PER_CHUNK
        # tolist() converts in C once per chunk instead of creating numpy scalars per cell.
        for ts, row in zip(
            frame.timestamps[start:stop].tolist(), frame.values[start:stop].tolist(), strict=True
        ):
            body = {"stream": frame.stream, "ts": ts, "values": dict(zip(frame.channels, row, strict=True))}
            yield ReplayMessage(key, orjson.dumps(body), 1)


def _columnar_messages(frame: CsvFrame, batch: int) -> Iterator[ReplayMessage]:
    key = frame.stream.encode("utf-8")
    by_channel = frame.values.T  # a view: one row per channel, sliced per message below
    for start in range(0, len(frame), batch):
        stop = min(start + batch, len(frame))
        body = {
            "stream": frame.stream,
            "ts": frame.timestamps[start:stop].tolist(),
            "values": {
                name: by_channel[index, start:stop].tolist() for index, name in enumerate(frame.channels)
            },
        }
        yield ReplayMessage(key, orjson.dumps(body), stop - start)


# ---------------------------------------------------------------------------------------------------------
# Pacing
# ---------------------------------------------------------------------------------------------------------


def paced(
    messages: Iterable[ReplayMessage], *, rate: float | None, clock: Clock, sleep: Sleep
) -> Iterator[ReplayMessage]:
    """Let messages through at `rate` samples per second (None: as fast as they come).

    The schedule is absolute (a message is due when the samples before it have had their time since the
    first message), so time spent sending does not add up into drift, and a late sender catches up
    instead of sleeping.
    """
    if rate is None:
        return iter(messages)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of samples per second, got {rate}")
    return _paced(messages, rate, clock, sleep)


def _paced(
    messages: Iterable[ReplayMessage], rate: float, clock: Clock, sleep: Sleep
) -> Iterator[ReplayMessage]:
    start: float | None = None
    samples_before = 0
    for message in messages:
        if start is None:
            start = clock()
        else:
            delay = start + samples_before / rate - clock()
            if delay > 0:
                sleep(delay)
        yield message
        samples_before += message.samples


# ---------------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------------


class DeliveryFuture(Protocol):
    def add_errback(self, errback: Callable[[BaseException], Any]) -> Any: ...


class Producer(Protocol):
    """The part of kafka-python's KafkaProducer that replaying uses."""

    def send(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> DeliveryFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class TopicAdmin(Protocol):
    """The part of kafka-python's KafkaAdminClient that replaying uses."""

    def create_topics(self, new_topics: dict[str, dict[str, int]], *, wait_for_metadata: bool) -> Any: ...

    def close(self) -> None: ...


def produce(messages: Iterable[ReplayMessage], producer: Producer, *, topic: str) -> int:
    """Send every message and wait until all are acknowledged; returns how many were sent.

    Stops sending at the first failed delivery (reported by the producer's I/O thread) and raises
    ReplayError after flushing what is in flight, so that a refused record does not go unnoticed.
    """
    failures: list[BaseException] = []
    sent = 0
    for message in messages:
        if failures:
            break
        future = producer.send(topic, key=message.key, value=message.value, headers=[CONTENT_TYPE])
        future.add_errback(failures.append)  # list.append is atomic: safe from the producer's thread
        sent += 1
    producer.flush()
    if failures:
        raise ReplayError(
            f"{len(failures)} of {sent} messages sent to {topic} were not delivered (first: {failures[0]!r})"
        )
    return sent


def ensure_topic(admin: TopicAdmin, topic: str, *, partitions: int) -> bool:
    """Create `topic` with `partitions` (replication 1) unless it exists; True when it was created."""
    from kafka.errors import TopicAlreadyExistsError

    try:
        # Creating and catching "already exists" has no race, unlike listing topics first.
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
        )
    except TopicAlreadyExistsError:
        return False
    return True


def kafka_admin(bootstrap: str, *, connect_timeout_s: float) -> TopicAdmin:
    from kafka.admin import KafkaAdminClient

    admin: TopicAdmin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="streamwatch-replay",
        bootstrap_timeout_ms=_milliseconds(connect_timeout_s),
    )
    return admin


def kafka_producer(bootstrap: str, *, connect_timeout_s: float) -> Producer:
    """An idempotent producer: retries (unbounded in count, bounded by the delivery timeout) cannot
    duplicate or reorder a stream's records."""
    from kafka import KafkaProducer

    producer: Producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="streamwatch-replay",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
        retry_backoff_ms=20,
        bootstrap_timeout_ms=_milliseconds(connect_timeout_s),
    )
    return producer


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def bootstrap_from_env(environ: Mapping[str, str]) -> str:
    """The broker address to use when none is given: $STREAMWATCH_KAFKA_BOOTSTRAP or the local default."""
    return environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


def replay_csv(
    path: str | os.PathLike[str],
    *,
    topic: str,
    stream: str,
    bootstrap: str,
    batch: int = 1,
    rate: float | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    clock: Clock,
    sleep: Sleep,
) -> ReplayReport:
    """Read a CSV and produce its samples to `topic` (created if missing), paced at `rate` samples/s.

    Raises DecodeError for a bad CSV and ValueError for bad arguments, before anything is sent; ReplayError
    for anything that fails on the Kafka side.
    """
    from kafka.errors import KafkaError

    frame = read_csv(path, stream=stream)
    messages = paced(replay_messages(frame, batch=batch), rate=rate, clock=clock, sleep=sleep)
    try:
        with closing(kafka_admin(bootstrap, connect_timeout_s=connect_timeout_s)) as admin:
            ensure_topic(admin, topic, partitions=partitions)
        producer = kafka_producer(bootstrap, connect_timeout_s=connect_timeout_s)
        try:
            started = clock()
            sent = produce(messages, producer, topic=topic)
            seconds = clock() - started
        finally:
            producer.close(timeout=_CLOSE_TIMEOUT_S)
    except KafkaError as error:
        raise ReplayError(f"Kafka at {bootstrap}: {error}") from error
    return ReplayReport(samples=len(frame), messages=sent, seconds=seconds)
