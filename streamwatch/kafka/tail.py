"""Reading what the daemon wrote: alert events (or dead letters) from their topic, as the subscribers of the
alert contract see them (read_committed: never an event of an aborted transaction)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from streamwatch.config import KafkaConfig
from streamwatch.kafka import clients


def follow(
    config: KafkaConfig,
    topic: str,
    *,
    from_beginning: bool,
    keep_going: Callable[[], bool],
    idle_timeout_s: float | None = None,
) -> Iterator[ConsumerRecord]:
    """Records of `topic` (all partitions, without joining a group) until `keep_going` says stop or nothing
    arrived for `idle_timeout_s`."""
    consumer = clients.reader(config)
    try:
        partitions = _partitions(consumer, topic)
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        last = time.monotonic()
        while keep_going():
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                yield from records
            if batch:
                last = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
    finally:
        consumer.close()


def _partitions(consumer: Any, topic: str, timeout_s: float = 10.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while not (numbers := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise ValueError(f"topic {topic} does not exist (yet)")
        time.sleep(0.2)
    return [TopicPartition(topic, number) for number in sorted(numbers)]


def describe(record: ConsumerRecord) -> bytes:
    """One JSON line: an alert event as is; a dead letter as its headers plus the value (text or base64)."""
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or []}
    if "dlq-reason" not in headers:
        return bytes(record.value or b"")
    body: dict[str, Any] = {"headers": headers}
    try:
        body["value"] = (record.value or b"").decode("utf-8")
    except UnicodeDecodeError:
        body["value_base64"] = base64.b64encode(record.value).decode("ascii")
    return orjson.dumps(body)
