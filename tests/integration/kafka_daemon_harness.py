"""Shared machinery for the daemon-against-a-real-broker tests: data, models, producing, daemons as
processes (so they can be killed with -9 like systemd would see them die), and reading results back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from waiting import wait_for

from streamwatch.config import DetectorConfig, KafkaConfig, StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel, StreamSeries, train_group
from streamwatch.generate.simulate import simulate
from streamwatch.kafka import models_topic
from streamwatch.offline import reconstructor_factory

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TRAIN = 1500  # the first samples of every stream are normal and train the model


@dataclass(frozen=True)
class StreamData:
    stream: str
    channels: tuple[str, ...]
    timestamps: np.ndarray
    values: np.ndarray


def dataset(streams: int, samples: int, *, seed: int = 0) -> list[StreamData]:
    """Three-phase voltage streams with a level shift and a spike burst after the training part."""
    out = []
    for index in range(streams):
        rng = np.random.default_rng(seed + index)
        series = simulate("voltage", n=samples, start=START, rng=rng)
        values = series.values.copy()
        scale = float(np.std(values[:TRAIN, 0]))
        shift_at = TRAIN + 300 + 97 * index % 700
        values[shift_at : shift_at + 120, 0] += 6 * scale
        spike_at = min(samples - 50, shift_at + 900)
        values[spike_at : spike_at + 5, 1] -= 12 * scale
        out.append(StreamData(f"feeder-{index}/voltage", series.channels, series.timestamps, values))
    return out


def train_model(data: list[StreamData], kind: str = "pca") -> GroupModel:
    detector = DetectorConfig(model=kind)  # type: ignore[arg-type]
    series = {
        item.stream: StreamSeries(item.channels, item.timestamps[:TRAIN], item.values[:TRAIN])
        for item in data
    }
    return train_group(
        series,
        version=f"{kind}@1",
        shape=detector.window.shape(),
        plan=detector.training.plan(progress=False),
        factory=reconstructor_factory(detector),
    )


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + 20
        while name not in admin.list_topics():
            assert time.monotonic() < deadline, f"topic {name} did not appear"
            time.sleep(0.1)
    finally:
        admin.close()


def publish_model(bootstrap: str, topic: str, group: str, model: GroupModel) -> None:
    models_topic.publish_model(KafkaConfig(bootstrap_servers=bootstrap), topic, group, model)


def messages(data: list[StreamData], batch: int) -> list[tuple[bytes, bytes]]:
    """Columnar JSON messages of `batch` samples, interleaved across streams in time order."""
    out: list[tuple[bytes, bytes]] = []
    samples = len(data[0].timestamps)
    for begin in range(0, samples, batch):
        for item in data:
            end = begin + batch
            body = {
                "stream": item.stream,
                "ts": item.timestamps[begin:end].tolist(),
                "values": {name: item.values[begin:end, c].tolist() for c, name in enumerate(item.channels)},
            }
            out.append((item.stream.encode(), orjson.dumps(body)))
    return out


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]], *, per_s: float = 0
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=1_000_000, delivery_timeout_ms=600_000
    )
    started = time.monotonic()
    for index, (key, value) in enumerate(records):
        if per_s > 0:
            delay = started + index / per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def produce_in_background(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], per_s: float
) -> threading.Thread:
    thread = threading.Thread(
        target=produce, args=(bootstrap, topic, records), kwargs={"per_s": per_s}, daemon=True
    )
    thread.start()
    return thread


def daemon_config(
    path: Path,
    bootstrap: str,
    *,
    run: str,
    topic: str,
    instance: str,
    model: str = "pca",
    extra: dict[str, Any] | None = None,
) -> Path:
    document: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "source": {
            "kind": "kafka",
            "topics": [{"name": topic}],
            "group_id": f"streamwatch-{run}",
            "instance_id": instance,
            "state_topic": f"{run}.state",
            "models_topic": f"{run}.models",
            "max_poll_records": 40,
            "session_timeout_ms": 6000,
        },
        "detector": {"model": model},
        "sinks": [{"kind": "kafka", "topic": f"{run}.alerts"}],
        "dead_letter": {"kind": "kafka", "topic": f"{run}.deadletter"},
        # Several daemons run at once: each serves its endpoints on a free port.
        "http": {"listen": "127.0.0.1:0"},
    }
    for key, value in (extra or {}).items():
        document[key] = value if not isinstance(value, dict) else {**document.get(key, {}), **value}
    StreamwatchConfig.model_validate(document)  # fail here, not in the subprocess
    path.write_text(yaml.safe_dump(document))
    return path


class DaemonProcess:
    """`streamwatch run -c CONFIG` as a child process; its log goes to a file the test can read."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamwatch", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def progress(bootstrap: str, group_id: str, topic: str) -> tuple[int, int]:
    """(committed offsets summed over partitions, end offsets summed) for the group on `topic`."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets(group_id).get(group_id, {})
        done = sum(committed[tp].offset for tp in partitions if tp in committed and committed[tp].offset >= 0)
        return done, sum(ends.values())
    finally:
        consumer.close()
        admin.close()


def wait_until_consumed(
    bootstrap: str, group_id: str, topic: str, *, timeout: float, daemons: Iterable[DaemonProcess] = ()
) -> None:
    def consumed() -> bool:
        for daemon in daemons:
            assert daemon.alive(), f"daemon died:\n{daemon.text()[-3000:]}"
        done, end = progress(bootstrap, group_id, topic)
        return end > 0 and done >= end

    wait_for(consumed, timeout=timeout, what=f"{group_id} to consume {topic}", every=0.5)


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of `topic`, read to its end with isolation_level=read_committed."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []  # not created yet
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def alert_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(record.value) for record in read_topic(bootstrap, topic)]


def lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """What must be identical between runs: each transition (stream, alert_id, status, severity), sorted."""
    return sorted(
        (event["stream"], event["alert_id"], event["status"], event["severity"]) for event in events
    )


def consume_all(
    config: Path, bootstrap: str, *, run: str, topics: Iterable[str], log: Path, timeout: float = 120
) -> DaemonProcess:
    """Run a daemon until its group has committed everything on `topics`, then stop it (SIGTERM): it must
    exit cleanly."""
    daemon = DaemonProcess(config, log).start()
    try:
        for topic in topics:
            wait_until_consumed(bootstrap, f"streamwatch-{run}", topic, timeout=timeout, daemons=[daemon])
    finally:
        daemon.stop()
    assert daemon.process is not None and daemon.process.returncode == 0, daemon.text()[-3000:]
    return daemon
