"""The verbs as a user runs them, in a subprocess: generate -> detect/train -> contract-valid alerts."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from streamwatch.schemas import alert_event_schema

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


VERBS = ["run", "detect", "train", "generate", "check-config", "evaluate", "plot", "models"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str, tmp_path: Path) -> None:
    result = _cli(verb, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "usage: streamwatch" in result.stdout


@pytest.mark.slow
def test_generate_then_detect_writes_contract_valid_alerts(tmp_path: Path) -> None:
    generated = _cli(
        "generate", "--domain", "grid_frequency", "--samples", "12000", "--anomalies", "3",
        "--kinds", "spike,level_shift,flatline", "--seed", "3", "--out", "grid.csv", cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    labels = json.loads((tmp_path / "grid.labels.json").read_text())["labels"]
    assert len(labels) == 3
    detected = _cli(
        "detect", "grid.csv", "--train-fraction", "0.3", "--config", str(ROOT / "config.example.yaml"),
        "--alerts", "alerts.jsonl", "--scores", "scores.csv", cwd=tmp_path,
    )  # fmt: skip
    assert detected.returncode == 0, detected.stderr
    events = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    schema = alert_event_schema()
    for event in events:
        jsonschema.validate(event, schema)
    assert {event["status"] for event in events} == {"firing", "resolved"}
    firing_ids = {event["alert_id"] for event in events if event["status"] == "firing"}
    assert len(firing_ids) >= 3
    header = (tmp_path / "scores.csv").read_text().splitlines()[0]
    assert header == "window_start,window_end,score,threshold,exceeds,model_version"

    trained = _cli("train", "grid.csv", "--train-fraction", "0.3", "--out", "models/grid", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "models/grid.safetensors").exists()
    reused = _cli(
        "detect", "grid.csv", "--model", "models/grid", "--train-fraction", "0.3", "--alerts", "again.jsonl",
        cwd=tmp_path,
    )  # fmt: skip
    assert reused.returncode == 0, reused.stderr
    again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert again == events  # same training data and seed: the saved model is the one detect trained


def test_check_config_names_key_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  model: cnn\n")
    result = _cli("check-config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "detector.model" in result.stderr and "'conv', 'lstm' or 'pca'" in result.stderr
    good = _cli("check-config", str(ROOT / "config.example.yaml"), cwd=tmp_path)
    assert good.returncode == 0 and "ok" in good.stdout


def test_a_secret_that_cannot_be_read_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hook.yaml"
    config.write_text(
        "sinks:\n  - kind: webhook\n    url: http://127.0.0.1:9/hook\n"
        "    secret: {env: STREAMWATCH_TEST_NO_SUCH_SECRET}\n"
    )
    result = _cli("run", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    expected = "sinks[0].secret.env: environment variable STREAMWATCH_TEST_NO_SUCH_SECRET is not set"
    assert expected in result.stderr


@pytest.mark.slow
def test_daemon_on_embedded_default_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    """With a webhook whose receiver is down beside the local sinks: scoring and alerting go on, and the
    events wait in the outbox."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    config = tmp_path / "demo.yaml"
    config.write_text(
        "source:\n  kind: simulate\n  speed: 120\n  history_samples: 3000\n  streams:\n"
        "    - {id: pmu-1/frequency, domain: grid_frequency, anomalies_per_hour: 6}\n"
        "detector:\n  training: {bootstrap_samples: 2500, max_seconds: 30}\n"
        "sinks:\n  - kind: stdout\n  - {kind: jsonl, path: alerts.jsonl}\n"
        f"  - {{kind: webhook, url: 'http://127.0.0.1:{dead_port}/hook'}}\n"
        "http: {listen: '127.0.0.1:0'}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "streamwatch.cli", "--log-format", "text", "run", "-c", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    alerts = tmp_path / "alerts.jsonl"
    while time.monotonic() < deadline and not (alerts.exists() and alerts.read_text().strip()):
        time.sleep(1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert events, f"no alert within two minutes; log:\n{stderr[-3000:]}"
    for event in events:
        jsonschema.validate(event, alert_event_schema())
    assert '"alert_id"' in stdout
    assert "received SIGTERM" in stderr and "stopped:" in stderr
    assert "delivery failed, retrying with backoff" in stderr
    with sqlite3.connect(tmp_path / "streamwatch-outbox" / "outbox.sqlite3") as outbox:
        [(waiting,)] = outbox.execute("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL").fetchall()
    assert waiting == len(events)


@pytest.mark.slow
def test_raw_log_file_is_counted_and_scored(tmp_path: Path) -> None:
    generated = _cli(
        "generate", "--domain", "logs", "--samples", "4320", "--anomalies", "2",
        "--kinds", "level_shift,dropout", "--seed", "5", "--log-lines", "--out", "app.log", cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    lines = (tmp_path / "app.log").read_text().splitlines()
    assert any(" ERROR " in line for line in lines)
    assert any(line.startswith("Traceback") for line in lines)
    with (tmp_path / "app.log").open("a") as log:
        log.write("2020-01-01T00:00:00Z INFO a line from long ago\n")  # late: must be dead-lettered
    detected = _cli(
        "detect",
        "app.log",
        "--format",
        "log",
        "--train-fraction",
        "0.4",
        "--alerts",
        "alerts.jsonl",
        cwd=tmp_path,
    )
    assert detected.returncode == 0, detected.stderr
    events = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert events, detected.stderr
    for event in events:
        jsonschema.validate(event, alert_event_schema())
        assert set(event["channels"]) == {"debug", "info", "warn", "error", "critical", "total"}
    dead = [json.loads(line) for line in (tmp_path / "alerts.deadletter.jsonl").read_text().splitlines()]
    assert len(dead) == 1
    assert "late" in dead[0]["reason"] and "long ago" in dead[0]["raw"]
