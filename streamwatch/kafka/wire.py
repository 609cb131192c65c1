"""What streamwatch writes to Kafka: alert events, dead letters and their headers."""

from __future__ import annotations

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from streamwatch.records import AlertEvent

Headers = list[tuple[str, bytes]]

ALERT_SCHEMA_VERSION = b"1"
JSON = b"application/json"


def alert_record(event: AlertEvent) -> tuple[bytes, bytes, Headers]:
    """Key = stream id, so that one stream's lifecycle stays in order in one partition."""
    headers = [("content-type", JSON), ("schema", b"alert-event"), ("schema-version", ALERT_SCHEMA_VERSION)]
    return event.stream.encode(), orjson.dumps(event.to_json()), headers


def dead_letter_record(record: ConsumerRecord, reason: str) -> tuple[bytes | None, bytes | None, Headers]:
    """The record unchanged (key, value, its own headers kept) plus why and where it came from."""
    headers: Headers = [
        (name, value) for name, value in (record.headers or []) if not name.startswith("dlq-")
    ]
    headers += [
        ("dlq-reason", reason.encode("utf-8", "replace")),
        ("dlq-topic", record.topic.encode()),
        ("dlq-partition", str(record.partition).encode()),
        ("dlq-offset", str(record.offset).encode()),
    ]
    return record.key, record.value, headers
