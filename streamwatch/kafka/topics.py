"""Creating the topics the daemon writes to, with the settings each needs."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamwatch.kafka.clients import MAX_MODEL_BYTES


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = 1
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        configs = dict(self.configs)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        return NewTopic(self.name, self.partitions, 1, topic_configs=configs)


def state_topic(name: str, partitions: int) -> TopicSpec:
    # Compacted: only the latest state of each stream is needed to restore it.
    return TopicSpec(name, partitions, compacted=True)


def models_topic(name: str) -> TopicSpec:
    # One partition: every daemon must see the models in the same order (the first record of a version wins).
    return TopicSpec(name, 1, compacted=True, configs={"max.message.bytes": str(MAX_MODEL_BYTES)})


def ensure_topics(client: KafkaAdminClient, specs: list[TopicSpec], *, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are) and wait for them."""
    existing = set(client.list_topics())
    missing = [spec.new_topic() for spec in specs if spec.name not in existing]
    if missing:
        # Another daemon may create it between our list and create: just as good.
        with contextlib.suppress(TopicAlreadyExistsError):
            client.create_topics(missing)
    wanted = {spec.name for spec in specs}
    deadline = time.monotonic() + timeout_s
    while not wanted <= set(client.list_topics()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(wanted)} did not appear within {timeout_s:.0f}s")
        time.sleep(0.2)


def partition_count(client: KafkaAdminClient, topic: str) -> int:
    described = client.describe_topics([topic])
    return len(described[0]["partitions"])
