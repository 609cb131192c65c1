"""What a reload takes and what it refuses, reading real config files."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import yaml
from http_receiver import Receiver

from streamwatch.config import StreamwatchConfig, load_config
from streamwatch.io.sinks import JsonlSink
from streamwatch.records import AlertEvent
from streamwatch.service.outputs import Outputs, build_outputs
from streamwatch.service.reload import Reloader


def _write(path: Path, document: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump(document))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, StreamwatchConfig, Reloader, list[Outputs]]:
    path = tmp_path / "streamwatch.yaml"
    _write(path, {"threshold": {"kind": "robust_z", "floor": 2.5}, "sinks": [{"kind": "stdout"}]})
    config = load_config(path)
    built: list[Outputs] = []

    def build(new: StreamwatchConfig) -> Outputs:
        outputs = build_outputs(new, start=False)
        built.append(outputs)
        return outputs

    return path, config, Reloader(path, build_outputs(config), build), built


def test_nothing_happens_until_asked_and_an_unchanged_file_is_a_no_op(
    setup: tuple[Path, StreamwatchConfig, Reloader, list[Outputs]],
) -> None:
    _, config, reloader, built = setup
    assert reloader.prepare(config) is None
    reloader.request()
    assert reloader.prepare(config) is None and built == []


def test_a_threshold_change_is_taken_without_new_sinks(
    setup: tuple[Path, StreamwatchConfig, Reloader, list[Outputs]],
) -> None:
    path, config, reloader, built = setup
    _write(path, {"threshold": {"kind": "robust_z", "floor": 9.0}, "sinks": [{"kind": "stdout"}]})
    reloader.request()
    reload = reloader.prepare(config)
    assert reload is not None and reload.outputs is None and built == []
    assert reload.config.threshold == {"kind": "robust_z", "floor": 9.0}


def test_changed_sinks_are_built_and_swapped_in_on_commit(
    tmp_path: Path, setup: tuple[Path, StreamwatchConfig, Reloader, list[Outputs]]
) -> None:
    path, config, reloader, built = setup
    first = reloader.outputs
    _write(path, {"sinks": [{"kind": "jsonl", "path": str(tmp_path / "alerts.jsonl")}]})
    reloader.request()
    reload = reloader.prepare(config)
    assert reload is not None and reload.outputs is built[0]
    assert isinstance(reload.outputs.sinks[0], JsonlSink)
    reloader.commit(reload)
    assert reloader.outputs is reload.outputs and reloader.outputs is not first


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"threshold": {"kind": "robust_z", "floor": -1}}, "threshold: floor must be in"),
        ({"source": {"kind": "simulate", "seed": 99}}, "source changed; these need a restart"),
        ({"http": {"listen": "127.0.0.1:9999"}}, "http changed; these need a restart"),
        (
            {"sinks": [{"kind": "webhook", "url": "http://h/x", "secret": {"env": "SW_TEST_NO_SECRET"}}]},
            "sinks[0].secret.env: environment variable SW_TEST_NO_SECRET is not set",
        ),
    ],
)
def test_a_bad_or_unreloadable_config_is_refused_with_the_reason(
    setup: tuple[Path, StreamwatchConfig, Reloader, list[Outputs]],
    caplog: pytest.LogCaptureFixture,
    document: dict[str, object],
    reason: str,
) -> None:
    path, config, reloader, _ = setup
    _write(path, document)
    reloader.request()
    with caplog.at_level(logging.ERROR):
        assert reloader.prepare(config) is None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert reason in record.getMessage() and "the running configuration stays" in record.getMessage()


def test_a_file_that_is_not_yaml_is_refused(
    setup: tuple[Path, StreamwatchConfig, Reloader, list[Outputs]], caplog: pytest.LogCaptureFixture
) -> None:
    path, config, reloader, _ = setup
    path.write_text("threshold: [unclosed\n")
    reloader.request()
    assert reloader.prepare(config) is None
    assert "is not valid YAML" in caplog.text and "reload refused" in caplog.text


def test_a_reload_never_has_two_threads_delivering_one_receivers_queue(tmp_path: Path) -> None:
    """Both configurations name the same receiver, whose queue lives in the same outbox: the new sink starts
    delivering only after the old one stopped, so an event queued across the swap arrives once, and events
    after it carry the new settings."""
    receiver = Receiver()
    path = tmp_path / "streamwatch.yaml"
    delivery = {"dir": str(tmp_path / "outbox"), "dead_letter": str(tmp_path / "undelivered.jsonl")}
    _write(path, {"sinks": [{"kind": "webhook", "url": receiver.url}], "delivery": delivery})
    config = load_config(path)
    reloader = Reloader(path, build_outputs(config), lambda new: build_outputs(new, start=False))
    hook = {"kind": "webhook", "url": receiver.url, "headers": {"X-Rev": "2"}}
    _write(path, {"sinks": [hook], "delivery": delivery})
    reloader.request()
    reload = reloader.prepare(config)
    assert reload is not None and reload.outputs is not None
    [new_sink] = reload.outputs.sinks
    try:
        new_sink.emit([_alert("0123456789abcdef")], [])
        reloader.commit(reload)
        new_sink.emit([_alert("fedcba9876543210")], [])
        receiver.wait_for(2)
        time.sleep(0.5)  # a second delivery of the first event would arrive now
        keys = [request.headers["Idempotency-Key"] for request in receiver.requests]
        assert sorted(keys) == ["0123456789abcdef:firing:warning", "fedcba9876543210:firing:warning"]
        assert receiver.requests[-1].headers["X-Rev"] == "2"
    finally:
        reloader.outputs.close()
        receiver.close()


def _alert(alert_id: str) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id,
        stream="pmu-1/v",
        status="firing",
        severity="warning",
        window_start=1_764_500_000.0,
        window_end=1_764_500_060.0,
        score=5.0,
        threshold=2.0,
        model_version="pca@1",
        channels={"v": 1.0},
        detected_at=1_764_500_060.0,
    )
