from __future__ import annotations

from pathlib import Path

import pytest

from streamwatch.config import ConfigError, KafkaConfig, KafkaSecurityConfig, parse_config
from streamwatch.kafka.clients import KafkaSetupError, connection_settings


def test_plaintext_needs_only_the_servers() -> None:
    settings = connection_settings(KafkaConfig(bootstrap_servers="k1:9092, k2:9092"), {})
    assert settings["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert settings["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in settings


def test_scram_over_tls_reads_secrets_from_the_environment_and_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("---")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    key_password = tmp_path / "key-password"
    key_password.write_text("k3y\n")
    security = KafkaSecurityConfig(
        protocol="SASL_SSL",
        ssl_cafile=ca,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_password_file=key_password,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="streamwatch",
        sasl_password_env="KAFKA_PASSWORD",
    )
    settings = connection_settings(KafkaConfig(security=security), {"KAFKA_PASSWORD": "s3cret"})
    assert settings["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings["sasl_plain_username"] == "streamwatch"
    assert settings["sasl_plain_password"] == "s3cret"
    assert settings["ssl_cafile"] == str(ca) and settings["ssl_keyfile"] == str(key)
    assert settings["ssl_password"] == "k3y"  # the file's trailing newline is not part of it


def test_a_missing_secret_or_file_names_the_key_and_the_fix(tmp_path: Path) -> None:
    security = KafkaSecurityConfig(
        protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password_env="NOPE"
    )
    with pytest.raises(KafkaSetupError, match="sasl_password_env: environment variable NOPE is not set"):
        connection_settings(KafkaConfig(security=security), {})
    tls = KafkaSecurityConfig(protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(KafkaSetupError, match="ssl_cafile"):
        connection_settings(KafkaConfig(security=tls), {})


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        (
            {"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "exactly one of sasl_password_env and sasl_password_file",
        ),
        ({"sasl_mechanism": "PLAIN"}, "needs protocol SASL_PLAINTEXT or SASL_SSL"),
        ({"protocol": "SSL", "ssl_certfile": "c.pem"}, "both ssl_certfile and ssl_keyfile"),
    ],
)
def test_incomplete_security_is_a_config_error(security: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka.security: .*{message}"):
        parse_config({"kafka": {"security": security}})


def test_kafka_source_config_mistakes_name_the_key() -> None:
    with pytest.raises(ConfigError, match="source: give either topics"):
        parse_config({"source": {"kind": "kafka"}})
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        parse_config({"source": {"kind": "kafka", "topic_pattern": "("}})
    with pytest.raises(ConfigError, match=r"need source\.kind: kafka"):
        parse_config({"sinks": [{"kind": "kafka"}]})


def test_stream_groups_follow_rules_then_the_topic() -> None:
    config = parse_config(
        {
            "source": {
                "kind": "kafka",
                "topics": [{"name": "pmu"}],
                "groups": [{"match": "pmu-*/frequency", "group": "frequency"}],
            }
        }
    )
    assert config.source.kind == "kafka"
    assert config.source.group_of("pmu-7/frequency", "pmu") == "frequency"
    assert config.source.group_of("pmu-7/voltage", "pmu") == "pmu"
    assert config.source.topic("other").format == "json"
