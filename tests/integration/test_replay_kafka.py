"""`streamwatch replay` against a real broker: every sample arrives once, in order, keyed by its stream."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamwatch.cli import main
from streamwatch.codecs import CsvFrame, decode_json_blocks, read_csv

pytestmark = pytest.mark.kafka

ROWS = 300
CONSUME_TIMEOUT_S = 30.0


def _write_csv(path: Path, seed: int) -> CsvFrame:
    """A few hundred rows, two channels, epoch-second times; returns the frame as the replay will read it."""
    rng = np.random.default_rng(seed)
    timestamps = 1772418880.0 + np.arange(ROWS) * 0.02
    values = rng.normal((50.0, 0.0), (0.05, 0.3), size=(ROWS, 2))
    lines = ["timestamp,freq,rocof"]
    lines += [f"{ts!r},{f!r},{r!r}" for ts, (f, r) in zip(timestamps.tolist(), values.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return read_csv(path, stream=path.stem)


def _consume(bootstrap: str, topic: str, expected_messages: int) -> list[Any]:
    """Every record of `topic` from the beginning, once `expected_messages` arrived (or the deadline)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(records) < expected_messages and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # One more poll: anything beyond the expected count would be a duplicate.
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def _replay(csv: Path, topic: str, bootstrap: str, *extra: str) -> None:
    assert main(["replay", str(csv), "--topic", topic, "--bootstrap", bootstrap, *extra]) == 0


@pytest.fixture
def kafka_quiet() -> Iterator[None]:
    """The verb quiets kafka-python's logger for the process; put it back afterwards."""
    import logging

    logger = logging.getLogger("kafka")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("kafka_quiet")
@pytest.mark.parametrize("batch", [1, 50])
def test_replayed_samples_arrive_once_in_order_keyed_by_stream(
    batch: int, tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("replay", partitions=3)
    frames = {
        frame.stream: frame
        for frame in (_write_csv(tmp_path / "pmu-a.csv", seed=1), _write_csv(tmp_path / "pmu-b.csv", seed=2))
    }
    for stream in frames:
        _replay(tmp_path / f"{stream}.csv", topic, kafka_bootstrap, "--batch", str(batch))

    per_stream_messages = -(-ROWS // batch)
    records = _consume(kafka_bootstrap, topic, expected_messages=per_stream_messages * len(frames))
    assert len(records) == per_stream_messages * len(frames)

    partitions: dict[str, set[int]] = defaultdict(set)
    timestamps: dict[str, list[Any]] = defaultdict(list)
    values: dict[str, list[Any]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        stream = record.key.decode("utf-8")
        assert ("content-type", b"application/json") in list(record.headers)
        partitions[stream].add(record.partition)
        for block in decode_json_blocks(record.value):
            assert block.stream == stream
            assert block.channels == ("freq", "rocof")
            timestamps[stream].append(block.timestamps)
            values[stream].append(block.values)

    assert set(timestamps) == set(frames)
    for stream, frame in frames.items():
        assert len(partitions[stream]) == 1  # keyed by stream: one partition, so one order
        # Offsets order within the partition equals the file's order; exactly once means equal arrays.
        assert np.concatenate(timestamps[stream]).tobytes() == frame.timestamps.tobytes()
        assert np.concatenate(values[stream]).tobytes() == frame.values.tobytes()


@pytest.mark.usefixtures("kafka_quiet")
def test_replay_creates_a_missing_topic_with_the_requested_partitions(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: Any
) -> None:
    topic = f"replay-created-{uuid.uuid4().hex[:12]}"
    frame = _write_csv(tmp_path / "pmu-c.csv", seed=3)
    try:
        _replay(tmp_path / "pmu-c.csv", topic, kafka_bootstrap, "--batch", "100", "--partitions", "3")
        [description] = kafka_admin.describe_topics([topic])
        assert len(description["partitions"]) == 3
        records = _consume(kafka_bootstrap, topic, expected_messages=3)
        assert sum(len(block) for r in records for block in decode_json_blocks(r.value)) == len(frame)
        # Replaying again into the now existing topic uses it as is.
        _replay(tmp_path / "pmu-c.csv", topic, kafka_bootstrap, "--batch", "100", "--partitions", "5")
        [description] = kafka_admin.describe_topics([topic])
        assert len(description["partitions"]) == 3
    finally:
        kafka_admin.delete_topics([topic])
