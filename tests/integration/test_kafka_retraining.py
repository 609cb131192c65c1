"""Retraining on Kafka: a retrained model reaches the models topic, goes live between two transactions
without repeating or losing an alert, and a restarted daemon carries on with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka_daemon_harness import (
    DaemonProcess,
    StreamData,
    alert_events,
    create_topic,
    daemon_config,
    dataset,
    lifecycle,
    messages,
    produce,
    produce_in_background,
    publish_model,
    read_topic,
    train_model,
    wait_until_consumed,
)

from streamwatch.kafka.models_topic import version_number

pytestmark = pytest.mark.kafka

SAMPLES = 9000


def _with_late_incidents(data: list[StreamData]) -> list[StreamData]:
    """The harness's early incidents, plus a level shift late in the second half (under retrained models)."""
    out = []
    for index, item in enumerate(data):
        values = item.values.copy()
        scale = float(np.std(values[:1500, 0]))
        at = 7600 + 150 * index
        values[at : at + 150, 0] += 6 * scale
        out.append(StreamData(item.stream, item.channels, item.timestamps, values))
    return out


def _published_versions(bootstrap: str, topic: str) -> list[str]:
    versions = []
    for record in read_topic(bootstrap, topic):
        headers = dict(record.headers or [])
        versions.append(headers["version"].decode())
    return versions


def test_retrained_models_go_live_without_repeating_an_alert_and_survive_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    data = _with_late_incidents(dataset(2, SAMPLES, seed=11))
    run = "sw" + uuid.uuid4().hex[:10]
    topic = f"{run}.samples"
    group = f"streamwatch-{run}"
    create_topic(kafka_bootstrap, topic, 2)
    publish_model(kafka_bootstrap, f"{run}.models", topic, train_model(data))
    records = messages(data, 20)
    half = len(records) // 2
    extra = {"retraining": {"min_interval_s": 0, "fresh_share": 0.3, "every_s": 1800}}
    config = daemon_config(
        tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a", extra=extra
    )

    # First half at a pace that lets background retrains finish and go live mid-stream.
    producer = produce_in_background(kafka_bootstrap, topic, records[:half], per_s=half / 20)
    daemon = DaemonProcess(config, tmp_path / "log").start()
    try:
        producer.join(120)
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[daemon])
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    versions = _published_versions(kafka_bootstrap, f"{run}.models")
    assert len(versions) >= 2, f"no retrain was published:\n{daemon.text()[-3000:]}"
    live = max(versions, key=version_number)

    # Restart: the streams come back from the changelog under the live (retrained) version.
    restarted = DaemonProcess(config, tmp_path / "log2").start()
    try:
        produce(kafka_bootstrap, topic, records[half:])
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[restarted])
    finally:
        assert restarted.stop() == 0, restarted.text()[-3000:]
    log = restarted.text()
    assert re.search(rf"{re.escape(live)} is live", log), log[-3000:]
    assert re.search(r"claimed \d+ partitions: 2 streams restored", log), log[-3000:]

    events = [event for event in alert_events(kafka_bootstrap, f"{run}.alerts") if "kind" not in event]
    transitions = lifecycle(events)
    assert len(transitions) == len(set(transitions)), "an alert transition was published twice"
    by_alert: dict[str, list[str]] = {}
    for event in events:
        by_alert.setdefault(event["alert_id"], []).append(event["status"])
    for statuses in by_alert.values():
        assert statuses[0] == "firing" and statuses.count("resolved") <= 1
    late = [event for event in events if event["window_start"] >= _iso(data[0].timestamps[7500])]
    assert late, "the late incidents raised no alert under the retrained models"
    assert all(event["model_version"] != "pca@1" for event in late)

    # The models topic is the registry on Kafka: listed, and rolled back from the command line.
    listed = _models(config, "list", "--json")
    history = json.loads(listed)["groups"][topic]
    live_now = [record["version"] for record in history if record["status"] == "live"]
    assert live_now == [max((record["version"] for record in history), key=version_number)]
    assert all("trained_at" in record for record in history)
    _models(config, "rollback", "--group", topic, "--reason", "test")
    after = json.loads(_models(config, "list", "--json"))["groups"][topic]
    newest = max(after, key=lambda record: version_number(record["version"]))
    assert newest["status"] == "live" and newest["restored_from"] is not None
    assert [record["status"] for record in after if record["version"] == live_now[0]] == ["rolled_back"]


def _models(config: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "streamwatch", "models", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _iso(ts: float) -> str:
    from streamwatch.records import iso_utc

    return iso_utc(float(ts))
