"""The daemon on the simulated source with retraining: background retrains go live, a restart keeps the live
version, a rollback made from the CLI is picked up, and the lifecycle's figures reach Prometheus."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from simulated_daemon import FastClock, run_until, simulated_config

from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.io.sinks import DeadLetterFile, GroupHealth, MemorySink
from streamwatch.models.registry import ModelRegistry
from streamwatch.service.daemon import Daemon
from streamwatch.service.metrics import HEALTH_EVERY_S

GROUP = "voltage"


def _config(tmp_path: Path) -> StreamwatchConfig:
    return simulated_config(
        tmp_path, anomalies_per_hour=0.5, retraining={"min_interval_s": 0, "fresh_share": 0.25}
    )


class _HealthRecorder(MemorySink):
    """A sink that also records detector health, as the InfluxDB sink does."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[GroupHealth] = []

    def health(self, figures: Sequence[GroupHealth]) -> None:
        self.figures.extend(figures)


def _daemon(
    config: StreamwatchConfig,
    tmp_path: Path,
    metrics: CollectorRegistry | None = None,
    sink: MemorySink | None = None,
) -> Daemon:
    return Daemon(
        config,
        sinks=[sink or MemorySink()],
        dead_letter=DeadLetterFile(tmp_path / "dead.jsonl"),
        clock=FastClock(),
        metrics=metrics,
    )


def test_retrains_go_live_in_the_background_and_a_restart_keeps_the_live_version(tmp_path: Path) -> None:
    config = _config(tmp_path)
    metrics = CollectorRegistry()
    health = _HealthRecorder()
    first = _daemon(config, tmp_path, metrics, health)
    registry = ModelRegistry(tmp_path / "models")
    run_until(
        first,
        lambda: GROUP in first.lifecycle.stats
        and first.lifecycle.stats[GROUP].accepted >= 1
        and any(figure.retrains_accepted for figure in health.figures),
    )
    live = registry.live_version(GROUP)
    assert live is not None and live != "pca@1"
    assert first.stats.models[GROUP] == live
    accepted = metrics.get_sample_value("streamwatch_retrains_total", {"group": GROUP, "result": "accepted"})
    assert accepted is not None and accepted >= 1
    assert metrics.get_sample_value("streamwatch_model_info", {"group": GROUP, "version": live}) == 1.0
    assert metrics.get_sample_value("streamwatch_seconds_since_retrain", {"group": GROUP}) is not None
    assert metrics.get_sample_value("streamwatch_detector_degraded", {"group": GROUP}) == 0.0
    # The same figures went to the health sink, once per HEALTH_EVERY_S of the daemon's clock.
    assert {figure.group for figure in health.figures} == {GROUP}
    assert health.figures[0].version == "pca@1"
    assert health.figures[-1].version in {record.version for record in registry.history(GROUP)} - {"pca@1"}
    times = [figure.at for figure in health.figures]
    assert all(later - earlier >= HEALTH_EVERY_S for earlier, later in itertools.pairwise(times))

    second = _daemon(config, tmp_path)
    run_until(second, lambda: GROUP in second.stats.models)
    assert second.stats.models[GROUP] == live
    statuses = [record.status for record in registry.history(GROUP)]
    assert statuses.count("live") == 1


def test_a_rollback_from_the_cli_is_picked_up_by_the_running_daemon(tmp_path: Path) -> None:
    config = _config(tmp_path)
    daemon = _daemon(config, tmp_path)
    registry = ModelRegistry(tmp_path / "models")
    rolled: list[str] = []

    def rolled_back_and_adopted() -> bool:
        stats = daemon.lifecycle.stats.get(GROUP)
        if not rolled and stats is not None and stats.accepted >= 1:
            # A retrain may be in flight: it must not override the operator's choice when it finishes.
            record, _ = registry.roll_back(GROUP, reason="operator", at=0.0)
            rolled.append(record.version)
        return bool(rolled) and daemon.stats.models.get(GROUP) == rolled[0]

    run_until(daemon, rolled_back_and_adopted)
    assert registry.live_version(GROUP) == rolled[0]


@pytest.mark.parametrize("key", ["every_s", "fresh_share"])
def test_retraining_settings_are_validated_with_the_key_named(key: str) -> None:
    from streamwatch.config import ConfigError

    with pytest.raises(ConfigError, match=f"retraining.{key}"):
        parse_config({"retraining": {key: -1}})
