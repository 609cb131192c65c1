from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamwatch.config import ConfigError, StreamwatchConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def test_example_config_is_valid_and_is_the_embedded_default() -> None:
    config = load_config(EXAMPLE)
    assert config.source.kind == "simulate"
    assert config.source == StreamwatchConfig().source
    assert config.detector == StreamwatchConfig().detector
    assert config.retraining == StreamwatchConfig().retraining
    assert config.delivery == StreamwatchConfig().delivery
    assert config.http == StreamwatchConfig().http
    assert config.threshold_config().kind == "robust_z"


def test_the_commented_sink_examples_are_valid_too() -> None:
    """The example's commented-out sinks, uncommented, parse: the documentation cannot drift from the code."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  - kind: alertmanager"))
    block = []
    for line in lines[start:]:
        if not line.startswith("#  "):
            break
        block.append(line[1:])
    sinks = yaml.safe_load("\n".join(block))
    assert [sink["kind"] for sink in sinks] == ["alertmanager", "webhook", "influxdb"]
    config = parse_config({"sinks": sinks})
    assert [sink.kind for sink in config.sinks] == ["alertmanager", "webhook", "influxdb"]


def test_empty_mapping_gives_the_defaults() -> None:
    assert parse_config({}) == StreamwatchConfig()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"detector": {"model": "cnn"}},
            "detector.model: Input should be 'conv', 'lstm' or 'pca' (got 'cnn')",
        ),
        ({"detector": {"modle": "conv"}}, "detector.modle: unknown key; remove it or check its spelling"),
        ({"alerts": {"for_windows": 0}}, "alerts.for_windows: Input should be greater than or equal to 1"),
        ({"threshold": {"kind": "pot", "risk": 2}}, "threshold: risk"),
        ({"threshold": {"kind": "magic"}}, "threshold: "),
        (
            {"source": {"kind": "simulate", "streams": [{"id": "x", "domain": "moon"}]}},
            "unknown domain 'moon'",
        ),
        ({"source": {"kind": "carrier-pigeon"}}, "source: Input tag 'carrier-pigeon' found using 'kind'"),
        ({"sinks": [{"kind": "jsonl"}]}, "sinks.0.path: required key is missing"),
        (
            {"sinks": [{"kind": "webhook", "url": "hooks.example"}]},
            "sinks.0.url: 'hooks.example' is not an http",
        ),
        (
            {"sinks": [{"kind": "webhook", "url": "http://h", "secret": {}}]},
            "sinks.0.secret: give exactly one of env",
        ),
        ({"sinks": [{"kind": "alertmanager"}]}, "sinks.0.urls: required key is missing"),
        (
            {"sinks": [{"kind": "alertmanager", "urls": ["http://am"], "generator_url": "grafana {stream}"}]},
            "sinks.0.generator_url: 'grafana {stream}' is not a URI template",
        ),
        (
            {"sinks": [{"kind": "alertmanager", "urls": ["http://am"], "generator_url": "http://g/{strem}"}]},
            "use only {stream}, {alert_id} and {host}",
        ),
        (
            {
                "sinks": [
                    {"kind": "webhook", "url": "http://h"},
                    {"kind": "alertmanager", "urls": ["http://h"]},
                ]
            },
            "http://h appears in more than one sink",
        ),
        (
            {"delivery": {"retry": {"initial_s": 10, "max_s": 1}}},
            "delivery.retry: max_s (1.0) must be at least",
        ),
        (
            {"sinks": [{"kind": "influxdb", "buffer_points": 0}]},
            "sinks.0.buffer_points: Input should be greater",
        ),
    ],
)
def test_config_errors_name_the_key_and_the_fix(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert expected in str(raised.value)


def test_environment_variables_expand_and_missing_ones_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SW_ALERTS", "/tmp/a.jsonl")
    config = parse_config({"sinks": [{"kind": "jsonl", "path": "${SW_ALERTS}"}, {"kind": "stdout"}]})
    assert str(config.sinks[0].path) == "/tmp/a.jsonl"  # type: ignore[union-attr]
    defaulted = parse_config({"dead_letter": {"path": "${SW_NOPE:-dl.jsonl}"}})
    assert defaulted.dead_letter.kind == "jsonl"
    assert str(defaulted.dead_letter.path) == "dl.jsonl"
    with pytest.raises(ConfigError, match=r"dead_letter\.path: environment variable SW_NOPE is not set"):
        parse_config({"dead_letter": {"path": "${SW_NOPE}"}})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("detector: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(listed)


def test_the_commented_kafka_example_is_a_valid_configuration() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("# On Kafka instead") : text.index("# The cluster")].splitlines()[1:]
    uncommented = "\n".join(line[2:] for line in block if line.startswith("# "))
    config = parse_config(yaml.safe_load(uncommented))
    assert config.source.kind == "kafka"
    assert config.source.group_of("pmu-3/frequency", "streamwatch.samples") == "grid-frequency"
    assert config.source.topic("metrics").format == "line"
    assert config.dead_letter.kind == "kafka"
    assert [sink.kind for sink in config.sinks] == ["kafka"]
