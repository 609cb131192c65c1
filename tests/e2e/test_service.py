"""`streamwatch run` as systemd runs it, in a subprocess: notifications on a real NOTIFY_SOCKET, the HTTP
endpoints scraped, SIGHUP reloading the threshold rule, SIGTERM draining and STOPPING."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

SERVING = re.compile(r"serving /metrics, /healthz and /readyz at (http://127\.0\.0\.1:\d+)")


def _config(tmp_path: Path, floor: float) -> str:
    return yaml.safe_dump(
        {
            "source": {
                "kind": "simulate",
                "speed": 600,
                "history_samples": 3000,
                "streams": [{"id": "pmu-1/v", "domain": "voltage", "anomalies_per_hour": 6}],
            },
            "detector": {"model": "pca", "training": {"bootstrap_samples": 2500}},
            "retraining": {"enabled": False},
            "threshold": {"kind": "robust_z", "floor": floor},
            "sinks": [{"kind": "jsonl", "path": "alerts.jsonl"}],
            "http": {"listen": "127.0.0.1:0"},
        }
    )


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _scraped(url: str) -> dict[str, float]:
    text = _get(f"{url}/metrics")[1].decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("streamwatch_windows_scored_total", "streamwatch_ready")
    }


def test_the_daemon_as_a_systemd_service(tmp_path: Path) -> None:
    config = tmp_path / "streamwatch.yaml"
    config.write_text(_config(tmp_path, floor=2.5))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.05)
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "WATCHDOG_USEC": "2000000",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamwatch", "--log-format", "text", "run", "-c", str(config)],
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    messages: list[str] = []

    def received(prefix: str) -> bool:
        with contextlib.suppress(TimeoutError):
            messages.append(listener.recv(4096).decode())
        return any(message.startswith(prefix) for message in messages)

    try:
        wait_for(lambda: SERVING.search(log.read_text()), timeout=120, what="the HTTP endpoints")
        match = SERVING.search(log.read_text())
        assert match is not None
        url = match.group(1)
        assert _get(f"{url}/healthz")[0] == 200
        wait_for(lambda: received("READY=1"), timeout=120, what="READY")
        wait_for(lambda: _get(f"{url}/readyz")[0] == 200, timeout=120, what="ready")
        ready = json.loads(_get(f"{url}/readyz")[1])
        assert ready == {"ready": True, "reasons": []}
        wait_for(lambda: received("WATCHDOG=1"), timeout=120, what="a watchdog ping")
        wait_for(
            lambda: _scraped(url).get("streamwatch_windows_scored_total", 0) > 0,
            timeout=120,
            what="windows scored",
        )
        assert _scraped(url)["streamwatch_ready"] == 1.0

        config.write_text(_config(tmp_path, floor=80.0))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in log.read_text(), timeout=120, what="the reload")
        config.write_text(_config(tmp_path, floor=-3.0))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), timeout=120, what="the refusal")
        assert "threshold: floor must be in" in log.read_text()
        config.write_text(_config(tmp_path, floor=80.0).replace("speed: 600", "speed: 60"))
        process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "source changed; these need a restart" in log.read_text(),
            timeout=120,
            what="the second refusal",
        )
        assert process.poll() is None, "a refused reload must not stop the daemon"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    wait_for(lambda: received("STOPPING=1"), timeout=5, what="STOPPING")
    listener.close()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "received SIGTERM" in text and "stopped:" in text
