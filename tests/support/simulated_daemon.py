"""The simulated-source daemon as tests drive it: a small PCA configuration, a clock that runs fast, and a
run on a thread until a condition holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.service.daemon import Daemon


class FastClock:
    """Wall time that runs 20 s per call: the simulated source (60x) then feeds about 20 min per poll."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += 20.0
            return self._now


def simulated_config(tmp_path: Path, *, anomalies_per_hour: float, **sections: Any) -> StreamwatchConfig:
    """One simulated voltage stream (`pmu/v`), PCA, models under tmp_path; `sections` add top-level keys."""
    return parse_config(
        {
            "source": {
                "kind": "simulate",
                "history_samples": 3000,
                "poll_interval_s": 0.01,
                "streams": [{"id": "pmu/v", "domain": "voltage", "anomalies_per_hour": anomalies_per_hour}],
            },
            "detector": {
                "model": "pca",
                "model_dir": str(tmp_path / "models"),
                "training": {"bootstrap_samples": 2500},
            },
            **sections,
        }
    )


def run_until(daemon: Daemon, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Run the daemon on a thread until `done()` (failing after `timeout_s`), then stop it cleanly."""
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert done(), "the daemon did not get there in time"
