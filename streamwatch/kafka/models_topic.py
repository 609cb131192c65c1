"""The models topic: how every daemon of a consumer group scores a stream group with the same model.

A daemon that trains a group's model publishes it here; all daemons read the topic from the start, in one
order (one partition), and for each group and model version the *first* record wins. Two daemons that trained
the same version at the same time therefore agree on one of the two without talking to each other. Keys are
unique per publication (group, version and publisher), so compaction never removes the winner.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamwatch.config import KafkaConfig
from streamwatch.core.bootstrap import GroupModel
from streamwatch.models.group_store import group_model_from_bytes, group_model_to_bytes
from streamwatch.models.store import ModelFileError

log = logging.getLogger("streamwatch.models_topic")


@dataclass(frozen=True, slots=True)
class Publication:
    group: str
    model: GroupModel
    key: str
    # What the publisher said about it (trained_at, data span, gate figures, reason, restored_from): JSON.
    notes: dict[str, Any] = field(default_factory=dict)


def version_number(version: str) -> int:
    """`conv@3` -> 3 (0 when the version carries no number)."""
    _, _, number = version.rpartition("@")
    return int(number) if number.isdigit() else 0


class ModelsTopic:
    def __init__(self, consumer: KafkaConsumer, producer: KafkaProducer, topic: str, publisher: str) -> None:
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._publisher = publisher
        self._partition = TopicPartition(topic, 0)
        self._seen: set[tuple[str, str]] = set()
        consumer.assign([self._partition])
        consumer.seek_to_beginning(self._partition)

    def close(self) -> None:
        self._producer.close(timeout=5)
        self._consumer.close()

    def publish(self, group: str, model: GroupModel, notes: dict[str, Any] | None = None) -> str:
        """Send a model (blocking until the broker has it); returns the record key."""
        key = f"{group}\x1f{model.version}\x1f{self._publisher}\x1f{time.time_ns()}"
        headers = [("group", group.encode()), ("version", model.version.encode())]
        if notes:
            headers.append(("notes", json.dumps(notes, allow_nan=False).encode()))
        future = self._producer.send(
            self._topic, key=key.encode(), value=group_model_to_bytes(model), headers=headers, partition=0
        )
        future.get(timeout=60)
        return key

    def poll(self, *, timeout_ms: int = 0) -> list[Publication]:
        """New winning publications, in topic order."""
        winners: list[Publication] = []
        for records in self._consumer.poll(timeout_ms=timeout_ms, max_records=50).values():
            for record in records:
                winner = self._winner(record.key, record.value, record.offset, record.headers)
                if winner is not None:
                    winners.append(winner)
        return winners

    def catch_up(self, *, timeout_s: float = 60.0) -> list[Publication]:
        """Everything published so far (call before restoring state, which names model versions)."""
        end = self._consumer.end_offsets([self._partition])[self._partition]
        deadline = time.monotonic() + timeout_s
        winners: list[Publication] = []
        while self._consumer.position(self._partition) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self._topic} did not finish within {timeout_s:.0f}s")
            winners.extend(self.poll(timeout_ms=200))
        return winners

    def _winner(
        self, key: bytes | None, value: bytes | None, offset: int, headers: Any = ()
    ) -> Publication | None:
        if key is None or value is None:
            return None
        name = key.decode(errors="replace")
        group, _, rest = name.partition("\x1f")
        version = rest.partition("\x1f")[0]
        if (group, version) in self._seen:
            return None  # a later publication of a version someone else published first
        try:
            model = group_model_from_bytes(value, where=f"{self._topic}@{offset}")
        except ModelFileError as error:
            log.error("ignoring an unusable model on %s: %s", self._topic, error)
            return None
        self._seen.add((group, version))
        return Publication(group, model, name, _notes(headers))


def publish_model(config: KafkaConfig, topic: str, group: str, model: GroupModel) -> None:
    """Publish `model` for `group` (creating the topic if needed); ValueError if that version is out already,
    because daemons would ignore it."""
    from streamwatch.kafka import clients
    from streamwatch.kafka.topics import ensure_topics, models_topic

    admin = clients.admin(config)
    try:
        ensure_topics(admin, [models_topic(topic)])
    finally:
        admin.close()
    consumer = clients.reader(config, isolation_level="read_uncommitted")
    producer = clients.plain_producer(config, large=True)
    models = ModelsTopic(consumer, producer, topic, "cli")
    try:
        published = {(item.group, item.model.version) for item in models.catch_up()}
        if (group, model.version) in published:
            raise ValueError(
                f"{model.version} is already published for group {group}; publish it as a new version "
                "(--version N) for daemons to take it"
            )
        models.publish(group, model)
    finally:
        models.close()


def _notes(headers: Any) -> dict[str, Any]:
    for name, value in headers or ():
        if name == "notes":
            try:
                notes = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return {}
            return notes if isinstance(notes, dict) else {}
    return {}
