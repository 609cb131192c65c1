"""The development broker (deploy/dev-kafka) and the suite's service wiring (tests/conftest.py).

The Kafka test needs a real broker: ``STREAMWATCH_TEST_KAFKA=$(bash deploy/dev-kafka start | tail -n1)``.
The wiring tests run anywhere: they drive an inner pytest session with the real conftest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.consumer import KafkaConsumer
from kafka.producer import KafkaProducer
from kafka.structs import TopicPartition

READ_TIMEOUT_S = 15.0
CONFTEST = Path(__file__).parents[1] / "conftest.py"


def _read_until(consumer: Any, last_value: bytes) -> list[bytes]:
    """Values from an assigned consumer up to and including ``last_value`` (partition order is total)."""
    values: list[bytes] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in records)
        if last_value in values:
            return values
    raise AssertionError(f"{last_value!r} not read within {READ_TIMEOUT_S} s; got {values}")


def _read_partition(bootstrap: str, topic: str, isolation_level: str, last_value: bytes) -> list[bytes]:
    # assign() instead of subscribe(): no consumer-group round trips, so the read starts at once.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        return _read_until(consumer, last_value)
    finally:
        consumer.close()


@pytest.mark.kafka
def test_read_committed_consumer_sees_only_committed_transactions(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("txn")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{topic}-producer")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"committed-1")
        producer.send(topic, b"committed-2")
        producer.commit_transaction()

        producer.begin_transaction()
        producer.send(topic, b"aborted-1")
        producer.flush()  # the aborted record must really reach the log, or the check below proves nothing
        producer.abort_transaction()

        producer.begin_transaction()
        producer.send(topic, b"committed-3")
        producer.commit_transaction()
    finally:
        producer.close()

    committed = _read_partition(kafka_bootstrap, topic, "read_committed", b"committed-3")
    everything = _read_partition(kafka_bootstrap, topic, "read_uncommitted", b"committed-3")

    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    assert everything == [b"committed-1", b"committed-2", b"aborted-1", b"committed-3"]


@pytest.mark.kafka
@pytest.mark.parametrize(("partitions", "compacted", "policy"), [(1, False, "delete"), (3, True, "compact")])
def test_new_topic_creates_the_requested_layout(
    kafka_admin: Any, new_topic: Callable[..., str], partitions: int, compacted: bool, policy: str
) -> None:
    topic = new_topic("layout", partitions=partitions, compacted=compacted)

    [description] = kafka_admin.describe_topics([topic])
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    configs = kafka_admin.describe_configs([resource], config_filter="all")["topic"][topic]
    assert topic.startswith("layout-")
    assert len(description["partitions"]) == partitions
    assert all(p["leader_id"] >= 0 for p in description["partitions"])
    assert configs["cleanup.policy"]["value"] == policy


# --- the conftest's service wiring, run in an inner session ---------------------------------------------

INNER_TESTS = """
import pytest


@pytest.mark.kafka
def test_broker_address_is_given(kafka_bootstrap):
    assert kafka_bootstrap


@pytest.mark.kafka
def test_broker_lost_midway(kafka_bootstrap):
    if kafka_bootstrap == "lost":
        pytest.skip("broker went away")
"""

INNER_INI = """
[pytest]
markers =
    kafka: needs Kafka
    influx: needs InfluxDB
    alertmanager: needs Alertmanager
"""

SERVICE_VARIABLES = ("STREAMWATCH_TEST_KAFKA", "STREAMWATCH_TEST_INFLUX", "STREAMWATCH_TEST_ALERTMANAGER")


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner project with the real conftest and a clean service environment (CI sets these outside)."""
    for variable in (*SERVICE_VARIABLES, "STREAMWATCH_REQUIRE_SERVICES"):
        monkeypatch.delenv(variable, raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def test_service_tests_skip_with_a_hint_when_the_address_is_unset(inner: pytest.Pytester) -> None:
    result = inner.runpytest("-rs")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*set STREAMWATCH_TEST_KAFKA=host:port (e.g. from deploy/dev-kafka start)*"])


def test_required_service_without_address_is_a_usage_error(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMWATCH_REQUIRE_SERVICES", "kafka")

    result = inner.runpytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*requires kafka but STREAMWATCH_TEST_KAFKA is not set*"])


def test_unknown_required_service_is_a_usage_error(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMWATCH_REQUIRE_SERVICES", "kafka,kakfa")
    monkeypatch.setenv("STREAMWATCH_TEST_KAFKA", "127.0.0.1:9092")

    result = inner.runpytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown services*kakfa*known: kafka, influx, alertmanager"])


def test_skip_inside_a_required_service_test_fails_the_session(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMWATCH_REQUIRE_SERVICES", " kafka ")
    monkeypatch.setenv("STREAMWATCH_TEST_KAFKA", "lost")

    result = inner.runpytest()

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*1 test(s) needing them skipped*", "*test_inner.py::test_broker_lost_midway"]
    )


def test_skip_of_a_service_that_is_not_required_keeps_the_session_green(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMWATCH_REQUIRE_SERVICES", "influx")
    monkeypatch.setenv("STREAMWATCH_TEST_INFLUX", "http://127.0.0.1:8086")
    monkeypatch.setenv("STREAMWATCH_TEST_KAFKA", "lost")

    result = inner.runpytest()

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_required_service_present_and_no_skips_passes(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMWATCH_REQUIRE_SERVICES", "kafka")
    monkeypatch.setenv("STREAMWATCH_TEST_KAFKA", "127.0.0.1:9092")

    result = inner.runpytest()

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
