"""The daemon against a real broker: alerts, dead letters, crash safety, scale-out and a broker crash.

Every daemon is a child process (`python -m streamwatch run`), killed with SIGKILL where the test says so, so
that nothing survives in memory that a real crash would lose.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from http_receiver import Receiver, Request
from kafka_daemon_harness import (
    DaemonProcess,
    StreamData,
    alert_events,
    consume_all,
    create_topic,
    daemon_config,
    dataset,
    lifecycle,
    messages,
    produce,
    produce_in_background,
    progress,
    publish_model,
    read_topic,
    train_model,
    wait_until_consumed,
)
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from streamwatch.core.bootstrap import GroupModel

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "streamwatch" / "schemas" / "alert-event.schema.json").read_text())
STREAMS = 6
SAMPLES = 4000
BATCH = 20


@pytest.fixture(scope="module")
def data() -> list[StreamData]:
    return dataset(STREAMS, SAMPLES)


@pytest.fixture(scope="module")
def model(data: list[StreamData]) -> GroupModel:
    return train_model(data)


def _body(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = request.json()
    return body


def _run_id() -> str:
    return "sw" + uuid.uuid4().hex[:10]


def _prepare(bootstrap: str, model: GroupModel, *, partitions: int = 4) -> tuple[str, str]:
    run = _run_id()
    topic = f"{run}.samples"
    create_topic(bootstrap, topic, partitions)
    publish_model(bootstrap, f"{run}.models", topic, model)
    return run, topic


@pytest.fixture(scope="module")
def reference(
    kafka_bootstrap: str, data: list[StreamData], model: GroupModel, tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[str, str, str, str]]:
    """The alert lifecycle of one uninterrupted daemon over the whole data set."""
    tmp = tmp_path_factory.mktemp("reference")
    run, topic = _prepare(kafka_bootstrap, model)
    produce(kafka_bootstrap, topic, messages(data, BATCH))
    config = daemon_config(tmp / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="ref")
    consume_all(config, kafka_bootstrap, run=run, topics=[topic], log=tmp / "log")
    events = alert_events(kafka_bootstrap, f"{run}.alerts")
    assert events, "the injected anomalies raised no alert at all"
    for event in events:
        jsonschema.validate(event, SCHEMA)
    firing = {event["stream"] for event in events if event["status"] == "firing"}
    assert len(firing) >= STREAMS // 2, f"only {sorted(firing)} alerted"
    return lifecycle(events)


def test_alerts_are_contract_valid_keyed_by_stream_with_headers(
    kafka_bootstrap: str,
    reference: list[tuple[str, str, str, str]],
    data: list[StreamData],
    model: GroupModel,
    tmp_path: Path,
) -> None:
    run, topic = _prepare(kafka_bootstrap, model)
    produce(kafka_bootstrap, topic, messages(data[:2], BATCH))
    config = daemon_config(tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a")
    consume_all(config, kafka_bootstrap, run=run, topics=[topic], log=tmp_path / "log")
    records = read_topic(kafka_bootstrap, f"{run}.alerts")
    assert records
    for record in records:
        event = orjson.loads(record.value)
        jsonschema.validate(event, SCHEMA)
        assert record.key == event["stream"].encode()
        headers = dict(record.headers)
        assert headers["content-type"] == b"application/json"
        assert headers["schema-version"] == b"1"
    # The same streams alone give the same lifecycle as within the full run (streams are independent).
    streams = {item.stream for item in data[:2]}
    assert lifecycle([orjson.loads(record.value) for record in records]) == [
        transition for transition in reference if transition[0] in streams
    ]


def test_a_replayed_file_alerts_as_detect_does_with_the_same_model(
    kafka_bootstrap: str, data: list[StreamData], tmp_path: Path
) -> None:
    """The operator's path end to end, all through the command line: train on a file, publish the model,
    replay the file into Kafka, run the daemon; its alerts are those `detect` finds with that model."""
    item = data[0]
    csv = _write_csv(tmp_path / "feeder-0.csv", item)
    sw = [sys.executable, "-m", "streamwatch"]
    model = str(tmp_path / "model")
    until = str(item.timestamps[1500 - 1])
    subprocess.run([*sw, "train", str(csv), "--train-until", until, "--out", model], check=True)
    offline_path = tmp_path / "detect.jsonl"
    first = str(item.timestamps[0])
    subprocess.run(
        [*sw, "detect", str(csv), "--model", model, "--train-until", first, "--alerts", str(offline_path)],
        check=True,
    )
    offline = [json.loads(line) for line in offline_path.read_text().splitlines()]
    assert offline, "detect found nothing to compare with"

    run = _run_id()
    topic = f"{run}.samples"
    config = daemon_config(
        tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a", model="conv"
    )
    replay = [*sw, "replay", str(csv), "--topic", topic, "--batch", "50", "--bootstrap", kafka_bootstrap]
    subprocess.run([*replay, "--partitions", "2"], check=True)
    subprocess.run([*sw, "publish-model", model, "--group", topic, "-c", str(config)], check=True)
    again = subprocess.run(
        [*sw, "publish-model", model, "--group", topic, "-c", str(config)], capture_output=True
    )
    assert again.returncode == 1 and b"already published" in again.stderr
    consume_all(config, kafka_bootstrap, run=run, topics=[topic], log=tmp_path / "log")
    online = alert_events(kafka_bootstrap, f"{run}.alerts")
    assert lifecycle(online) == lifecycle(offline)
    for event in online:
        jsonschema.validate(event, SCHEMA)


def test_a_stream_without_a_model_trains_one_on_its_first_samples_as_detect_does(
    kafka_bootstrap: str, data: list[StreamData], tmp_path: Path
) -> None:
    """No model published: the daemon trains the group's first model on the first `bootstrap_samples` of the
    stream and scores the rest - what `detect --train-until` does with the same prefix. The rebalance that
    kafka-python goes through right after joining, mid-bootstrap, must lose none of the waiting samples."""
    item = data[1]
    csv = _write_csv(tmp_path / "feeder-1.csv", item)
    sw = [sys.executable, "-m", "streamwatch"]
    offline_path = tmp_path / "detect.jsonl"
    until = str(item.timestamps[1500 - 1])
    subprocess.run(
        [*sw, "detect", str(csv), "--train-until", until, "--alerts", str(offline_path)], check=True
    )
    offline = [json.loads(line) for line in offline_path.read_text().splitlines()]
    assert offline, "detect found nothing to compare with"

    run = _run_id()
    topic = f"{run}.samples"
    extra = {"detector": {"training": {"bootstrap_samples": 1500}}}
    config = daemon_config(
        tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a", model="conv", extra=extra
    )
    replay = [*sw, "replay", str(csv), "--topic", topic, "--batch", "100", "--bootstrap", kafka_bootstrap]
    subprocess.run(replay, check=True)
    daemon = DaemonProcess(config, tmp_path / "log").start()
    try:
        wait_for(
            lambda: len(alert_events(kafka_bootstrap, f"{run}.alerts")) >= len(offline),
            timeout=180,
            what="the daemon's alerts",
            every=2,
        )
        wait_until_consumed(kafka_bootstrap, f"streamwatch-{run}", topic, timeout=60, daemons=[daemon])
    finally:
        daemon.stop()
    assert lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts")) == lifecycle(offline)


def _write_csv(path: Path, item: StreamData) -> Path:
    lines = ["timestamp," + ",".join(item.channels)]
    lines += [
        f"{float(ts)!r}," + ",".join(repr(float(v)) for v in row)
        for ts, row in zip(item.timestamps, item.values, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad_records(item: StreamData) -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, expected reason fragment) for every kind of unusable record."""
    last = float(item.timestamps[-1])
    key = item.stream.encode()
    channels = dict.fromkeys(item.channels, 1.0)
    return [
        (b"junk", b"{this is not json", "invalid JSON"),
        (
            key,
            orjson.dumps({"stream": item.stream, "ts": last + 1, "values": {**channels, "v_a": "high"}}),
            "v_a",
        ),
        (key, orjson.dumps({"stream": item.stream, "ts": last + 1, "values": {"v_a": 1.0}}), "channels"),
        (key, orjson.dumps({"stream": item.stream, "ts": last - 3600, "values": channels}), "late"),
        (
            key,
            b'{"stream": "%s", "ts": %r, "values": {"v_a": 1e999, "v_b": 1, "v_c": 1}}' % (key, last + 2),
            "infinity",
        ),
        # Finite in JSON, beyond float32: the windows refuse it.
        (
            key,
            orjson.dumps({"stream": item.stream, "ts": last + 3, "values": {**channels, "v_b": 1e39}}),
            "finite",
        ),
    ]


def test_unusable_records_go_to_the_dead_letter_topic_and_good_streams_keep_alerting(
    kafka_bootstrap: str,
    data: list[StreamData],
    model: GroupModel,
    reference: list[tuple[str, str, str, str]],
    tmp_path: Path,
) -> None:
    run, topic = _prepare(kafka_bootstrap, model, partitions=2)
    line_topic = f"{run}.metrics"
    create_topic(kafka_bootstrap, line_topic, 1)
    good = messages(data, BATCH)
    half = len(good) // 2
    produce(kafka_bootstrap, topic, good[:half])
    bad = _bad_records(data[0])
    produce(kafka_bootstrap, topic, [(key, value) for key, value, _ in bad])
    produce(kafka_bootstrap, topic, good[half:])
    produce(
        kafka_bootstrap,
        line_topic,
        [
            (None, b"cpu,host=a usage=0.5 not-a-time"),
            (None, b"cpu,host=a usage= 1"),
            (None, b"cpu usage=NaN 1"),
        ],
    )
    extra = {"source": {"topics": [{"name": topic}, {"name": line_topic, "format": "line"}]}}
    config = daemon_config(
        tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a", extra=extra
    )
    consume_all(config, kafka_bootstrap, run=run, topics=[topic, line_topic], log=tmp_path / "log")
    dead = read_topic(kafka_bootstrap, f"{run}.deadletter")
    by_value = {record.value: record for record in dead}
    for key, value, fragment in bad:
        assert value in by_value, f"{value!r} was not dead-lettered"
        record = by_value[value]
        headers = dict(record.headers)
        assert record.key == key
        assert fragment in headers["dlq-reason"].decode(), headers["dlq-reason"]
        assert headers["dlq-topic"] == topic.encode()
        assert int(headers["dlq-offset"]) >= 0 and int(headers["dlq-partition"]) in (0, 1)
    line_dead = [record for record in dead if dict(record.headers)["dlq-topic"] == line_topic.encode()]
    assert len(line_dead) == 3, [dict(record.headers)["dlq-reason"] for record in line_dead]
    assert len(dead) == len(bad) + 3
    # Good streams alert exactly as without the garbage in between.
    assert lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts")) == reference


def _consumed(bootstrap: str, group: str, topic: str, records: float) -> Callable[[], bool]:
    return lambda: progress(bootstrap, group, topic)[0] >= records


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_kill_9_at_any_point_neither_loses_nor_repeats_an_alert(
    kafka_bootstrap: str,
    data: list[StreamData],
    model: GroupModel,
    reference: list[tuple[str, str, str, str]],
    tmp_path: Path,
    delivery: str,
) -> None:
    """SIGKILL five times at random moments while records keep arriving (so kills land while polling,
    scoring and committing), restarted half a second later each time, as systemd would. A webhook receiver
    on loopback gets every event too, through the outbox: each idempotency key, none lost."""
    run, topic = _prepare(kafka_bootstrap, model)
    group = f"streamwatch-{run}"
    records = messages(data, BATCH)
    producer = produce_in_background(kafka_bootstrap, topic, records, per_s=len(records) / 20)
    receiver = Receiver()
    extra = {
        "source": {"delivery": delivery},
        "sinks": [
            {"kind": "kafka", "topic": f"{run}.alerts"},
            {"kind": "webhook", "url": f"{receiver.url}/hook"},
        ],
        "delivery": {"dir": str(tmp_path / "outbox"), "retry": {"initial_s": 0.1, "max_s": 1}},
    }
    config = daemon_config(
        tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a", extra=extra
    )
    daemon = DaemonProcess(config, tmp_path / "log").start()
    rng = random.Random(7)
    resumed_after: list[float] = []
    wait_for(_consumed(kafka_bootstrap, group, topic, 1), timeout=60, what="scoring to start", every=0.1)
    for _ in range(5):
        time.sleep(rng.uniform(0.05, 1.5))
        daemon.kill9()
        before = progress(kafka_bootstrap, group, topic)[0]
        time.sleep(0.5)  # systemd's RestartSec
        daemon.start()
        if before >= len(records):
            break
        resumed_after.append(
            wait_for(
                _consumed(kafka_bootstrap, group, topic, before + 1),
                timeout=60,
                what="scoring to resume",
                every=0.1,
            )
        )
    producer.join(120)
    try:
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[daemon])
    finally:
        daemon.stop()
    events = lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts"))
    if delivery == "exactly_once":
        assert events == reference
    else:
        # At least once: nothing lost; a repeat (a crash between delivering and committing) has the same id.
        assert set(events) == set(reference)
    # Webhooks: the events went to the outbox before each commit, so a kill in between repeats them and the
    # outbox drops the repeats; a kill after a POST but before it was marked sent repeats it with its key.
    events_expected = len(set(reference))
    receiver.wait_until(
        lambda hooks: len({hook.headers["Idempotency-Key"] for hook in hooks}) >= events_expected,
        timeout_s=60,
        what="every event at the webhook",
    )
    receiver.close()
    hooks = receiver.requests
    delivered = sorted({(b["stream"], b["alert_id"], b["status"], b["severity"]) for b in map(_body, hooks)})
    assert delivered == sorted(set(reference))
    by_key: dict[str, bytes] = {}
    for hook in hooks:
        assert by_key.setdefault(hook.headers["Idempotency-Key"], hook.body) == hook.body
    print(f"{delivery}: webhook requests {len(hooks)} for {len(by_key)} events")
    # Restarts resume within seconds (static membership, no session timeout to wait out).
    assert resumed_after and max(resumed_after) < 30, resumed_after
    print(f"{delivery}: resumed after restarts in {', '.join(f'{s:.1f}s' for s in resumed_after)}")


def test_sigterm_mid_run_drains_within_bounds_and_loses_nothing(
    kafka_bootstrap: str,
    data: list[StreamData],
    model: GroupModel,
    reference: list[tuple[str, str, str, str]],
    tmp_path: Path,
) -> None:
    """What `systemctl stop` or a restart does, three times while records keep arriving: each stop
    finishes the batch in flight, commits and exits 0 well within systemd's stop timeout; the restarted
    daemon carries on where it committed, and no alert is lost or repeated."""
    run, topic = _prepare(kafka_bootstrap, model)
    group = f"streamwatch-{run}"
    records = messages(data, BATCH)
    producer = produce_in_background(kafka_bootstrap, topic, records, per_s=len(records) / 15)
    config = daemon_config(tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a")
    daemon = DaemonProcess(config, tmp_path / "log").start()
    rng = random.Random(11)
    stop_seconds: list[float] = []
    wait_for(_consumed(kafka_bootstrap, group, topic, 1), timeout=60, what="scoring to start", every=0.1)
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 1.5))
        started = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        stop_seconds.append(time.monotonic() - started)
        daemon.start()
    producer.join(120)
    try:
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[daemon])
        # The lag is measured every 10 s: the figure for the fully consumed topic comes within that.
        wait_for(lambda: set(_lags(_scrape(daemon)).values()) == {0.0}, timeout=30, what="lag 0")
        metrics = _scrape(daemon)
    finally:
        assert daemon.stop() == 0
    assert lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts")) == reference
    assert daemon.text().count("received SIGTERM") == 4
    # The last incarnation's /metrics: what it consumed, and a lag figure for each partition it owns.
    assert metrics["streamwatch_records_total"] > 0 and metrics["streamwatch_ready"] == 1.0
    assert len(_lags(metrics)) == 4
    print(f"SIGTERM to exit: {', '.join(f'{s:.1f}s' for s in stop_seconds)}")


def _scrape(daemon: DaemonProcess) -> dict[str, float]:
    """The daemon's /metrics (at the address its last start logged), samples keyed by name and labels."""
    url = re.findall(r"serving /metrics, /healthz and /readyz at (http://\S+)", daemon.text())[-1]
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _lags(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if key.startswith("streamwatch_consumer_lag,")}


def test_two_daemons_share_the_work_and_one_takes_over_from_the_changelog(
    kafka_bootstrap: str,
    data: list[StreamData],
    model: GroupModel,
    reference: list[tuple[str, str, str, str]],
    tmp_path: Path,
) -> None:
    run, topic = _prepare(kafka_bootstrap, model)
    group = f"streamwatch-{run}"
    records = messages(data, BATCH)
    half = len(records) // 2
    produce(kafka_bootstrap, topic, records[:half])
    a = DaemonProcess(
        daemon_config(tmp_path / "a.yaml", kafka_bootstrap, run=run, topic=topic, instance="a"),
        tmp_path / "a.log",
    ).start()
    b = DaemonProcess(
        daemon_config(tmp_path / "b.yaml", kafka_bootstrap, run=run, topic=topic, instance="b"),
        tmp_path / "b.log",
    ).start()
    try:
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[a, b])
        assert "claimed" in a.text() and "claimed" in b.text()
        assert b.stop() == 0
        produce(kafka_bootstrap, topic, records[half:])
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=120, daemons=[a])
    finally:
        a.stop()
        b.stop()
    # b's streams continued in a from the changelog, so the whole is what one daemon finds alone.
    restored = [line for line in a.text().splitlines() if "streams restored" in line]
    assert any(" 0 streams restored" not in line for line in restored), restored
    assert lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts")) == reference


def _broker_control() -> dict[str, str]:
    """The environment that makes deploy/dev-kafka act on the broker under test, or skip."""
    env = dict(os.environ)
    status = subprocess.run(
        ["bash", str(REPO / "deploy" / "dev-kafka"), "status"], capture_output=True, text=True, env=env
    )
    address = os.environ.get("STREAMWATCH_TEST_KAFKA", "")
    if status.returncode != 0 or address not in status.stdout:
        pytest.skip(
            f"the broker at {address} is not one deploy/dev-kafka controls here "
            f"(status: {status.stdout.strip()})"
        )
    return env


def test_a_broker_crash_is_survived_unaided_and_loses_nothing(
    kafka_bootstrap: str,
    data: list[StreamData],
    model: GroupModel,
    reference: list[tuple[str, str, str, str]],
    tmp_path: Path,
) -> None:
    env = _broker_control()
    dev_kafka = ["bash", str(REPO / "deploy" / "dev-kafka")]
    run, topic = _prepare(kafka_bootstrap, model)
    group = f"streamwatch-{run}"
    records = messages(data, BATCH)
    producer = produce_in_background(kafka_bootstrap, topic, records, per_s=len(records) / 16)
    daemon = DaemonProcess(
        daemon_config(tmp_path / "c.yaml", kafka_bootstrap, run=run, topic=topic, instance="a"),
        tmp_path / "log",
    ).start()
    try:
        wait_for(
            lambda: progress(kafka_bootstrap, group, topic)[0] >= 0.35 * len(records),
            timeout=120,
            what="35% consumed",
        )
        subprocess.run([*dev_kafka, "kill9"], check=True, env=env, capture_output=True)
        time.sleep(3)
        assert daemon.alive(), "the daemon died with the broker"
        subprocess.run([*dev_kafka, "start"], check=True, env=env, capture_output=True)
        producer.join(240)
        wait_until_consumed(kafka_bootstrap, group, topic, timeout=240, daemons=[daemon])
    finally:
        daemon.stop()
    assert lifecycle(alert_events(kafka_bootstrap, f"{run}.alerts")) == reference
