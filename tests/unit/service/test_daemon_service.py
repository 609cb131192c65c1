"""The simulated daemon as a service: systemd notifications on a real datagram socket, /readyz readiness
through bootstrap, a live reload of the threshold rule (and a broken file refused), and its metrics."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from simulated_daemon import FastClock
from waiting import wait_for

from streamwatch.config import load_config
from streamwatch.io.sinks import DeadLetterFile, MemorySink
from streamwatch.service.daemon import Daemon
from streamwatch.service.health import Readiness
from streamwatch.service.outputs import Outputs
from streamwatch.service.reload import Reloader
from streamwatch.service.systemd import SystemdNotifier


def _document(tmp_path: Path, floor: float) -> dict[str, object]:
    return {
        "source": {
            "kind": "simulate",
            "history_samples": 3000,
            "poll_interval_s": 0.01,
            "streams": [{"id": "pmu/v", "domain": "voltage", "anomalies_per_hour": 0.5}],
        },
        "detector": {
            "model": "pca",
            "model_dir": str(tmp_path / "models"),
            "training": {"bootstrap_samples": 2500},
        },
        "retraining": {"enabled": False},
        "threshold": {"kind": "robust_z", "floor": floor},
    }


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.01)
    yield listener
    listener.close()


def _messages(listener: socket.socket) -> list[str]:
    received = []
    while True:
        try:
            received.append(listener.recv(4096).decode())
        except TimeoutError:
            return received


def test_notifies_systemd_becomes_ready_reloads_live_and_refuses_a_broken_file(
    tmp_path: Path, notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamwatch")
    path = tmp_path / "streamwatch.yaml"
    path.write_text(yaml.safe_dump(_document(tmp_path, floor=2.5)))
    config = load_config(path)
    memory = MemorySink(keep_scores=True)
    reloader = Reloader(path, Outputs(sinks=[memory]), lambda _: Outputs(sinks=[memory]))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
    readiness = Readiness()
    registry = CollectorRegistry()
    daemon = Daemon(
        config,
        sinks=reloader.outputs.sinks,
        dead_letter=DeadLetterFile(tmp_path / "dead.jsonl"),
        clock=FastClock(),
        metrics=registry,
        notifier=notifier,
        readiness=readiness,
        reloader=reloader,
    )
    seen: set[str] = set()

    def verdict() -> bool:
        check = readiness.check()
        seen.update(check.reasons)
        return check.ready

    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,))
    assert not verdict()
    thread.start()
    try:
        wait_for(verdict, timeout=60, what="ready")
        # Ready only once bootstrapped: the first model was trained before the loop reported in.
        assert seen == {"starting: not consuming yet"} and daemon.stats.models == {"voltage": "pca@1"}
        assert registry.get_sample_value("streamwatch_ready") == 1.0

        # The threshold rule raised live: every window scored afterwards meets the new floor.
        path.write_text(yaml.safe_dump(_document(tmp_path, floor=60.0)))
        reloader.request()
        wait_for(lambda: "reloaded" in caplog.text, timeout=60, what="the reload")
        scored = len(memory.scores)
        wait_for(lambda: len(memory.scores) > scored + 10, timeout=60, what="more windows")
        assert min(score.threshold for score in memory.scores[scored:]) >= 60.0

        # A broken file is refused; the daemon scores on with the rule it had.
        path.write_text("threshold: {kind: robust_z, floor: -3}\n")
        reloader.request()
        wait_for(lambda: "reload refused" in caplog.text, timeout=60, what="the refusal")
        scored = len(memory.scores)
        wait_for(lambda: len(memory.scores) > scored + 10, timeout=60, what="more windows")
        assert min(score.threshold for score in memory.scores[scored:]) >= 60.0
        assert "threshold: floor must be in" in caplog.text
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    messages = _messages(notify_socket)
    assert messages[0].startswith("READY=1\nSTATUS=scoring 1 simulated streams")
    assert "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"
    windows = registry.get_sample_value("streamwatch_windows_scored_total")
    assert windows is not None and windows == daemon.stats.windows > 0
    batches = registry.get_sample_value("streamwatch_batch_seconds_count")
    assert batches is not None and batches > 0
    drift = registry.get_sample_value("streamwatch_score_drift", {"group": "voltage"})
    assert drift is not None and 0.1 < drift < 10
