"""Suite-wide wiring for tests that need real services (Kafka, InfluxDB, Alertmanager).

A test marked with a service marker runs only when the service's address is in the environment
(``STREAMWATCH_TEST_KAFKA=127.0.0.1:9092``, printed by ``deploy/dev-kafka start``); otherwise it is skipped
with a hint. CI sets ``STREAMWATCH_REQUIRE_SERVICES=kafka,...``: for those services a missing address is a
usage error and any skipped test (whatever skipped it) fails the session, so a broken service can never
turn the integration tests into a silent green run of skips.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

pytest_plugins = ["pytester"]

SERVICE_ADDRESS_ENV: dict[str, str] = {
    "kafka": "STREAMWATCH_TEST_KAFKA",
    "influx": "STREAMWATCH_TEST_INFLUX",
    "alertmanager": "STREAMWATCH_TEST_ALERTMANAGER",
}
# What to put in the variable, shown in the skip reason.
SERVICE_ADDRESS_HINT: dict[str, str] = {
    "kafka": "host:port (e.g. from deploy/dev-kafka start)",
    "influx": "url (e.g. from deploy/dev-influxdb start)",
    "alertmanager": "url (e.g. from deploy/dev-alertmanager start)",
}
REQUIRE_SERVICES_ENV = "STREAMWATCH_REQUIRE_SERVICES"
TOPIC_READY_TIMEOUT_MS = 10_000


def service_address(service: str) -> str | None:
    """The address the environment gives for ``service``, or None when it is unset or blank."""
    return os.environ.get(SERVICE_ADDRESS_ENV[service], "").strip() or None


def missing_service_reason(service: str) -> str:
    return f"set {SERVICE_ADDRESS_ENV[service]}={SERVICE_ADDRESS_HINT[service]} to run"


def required_services() -> frozenset[str]:
    """Services named in STREAMWATCH_REQUIRE_SERVICES; an unknown name is a usage error, not a no-op."""
    names = {name.strip() for name in os.environ.get(REQUIRE_SERVICES_ENV, "").split(",") if name.strip()}
    unknown = sorted(names - SERVICE_ADDRESS_ENV.keys())
    if unknown:
        known = ", ".join(SERVICE_ADDRESS_ENV)
        raise pytest.UsageError(f"{REQUIRE_SERVICES_ENV} names unknown services {unknown}; known: {known}")
    return frozenset(names)


def item_services(item: pytest.Item) -> set[str]:
    return {service for service in SERVICE_ADDRESS_ENV if item.get_closest_marker(service) is not None}


class RequiredServicesGate:
    """Skips service tests whose address is unset; fails the session when a required service's test skips.

    A plugin object rather than module-level hooks: ``pytest_runtest_logreport`` gets no session, and the
    skips must be counted per session (pytester runs nest sessions in one process).
    """

    def __init__(self) -> None:
        self.required: frozenset[str] = frozenset()
        self.required_nodeids: set[str] = set()
        self.skipped: list[str] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.required = required_services()
        unset = sorted(service for service in self.required if service_address(service) is None)
        if unset:
            variables = ", ".join(SERVICE_ADDRESS_ENV[service] for service in unset)
            raise pytest.UsageError(
                f"{REQUIRE_SERVICES_ENV} requires {', '.join(unset)} but {variables} is not set"
            )

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            services = item_services(item)
            if services & self.required:
                self.required_nodeids.add(item.nodeid)
            for service in sorted(services):
                if service_address(service) is None:
                    item.add_marker(pytest.mark.skip(reason=missing_service_reason(service)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # An expected failure is reported as skipped too, but it ran; only real skips hide a missing service.
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        if report.nodeid in self.required_nodeids and report.nodeid not in self.skipped:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.skipped:
            return
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if session.config.pluginmanager.get_plugin("terminalreporter") is None:
            print(self.message(), file=sys.stderr)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            terminalreporter.section("required services skipped", sep="=", red=True, bold=True)
            terminalreporter.write_line(self.message(), red=True)

    def message(self) -> str:
        required = ",".join(sorted(self.required))
        lines = [f"{REQUIRE_SERVICES_ENV}={required}, but {len(self.skipped)} test(s) needing them skipped:"]
        lines += [f"  {nodeid}" for nodeid in self.skipped]
        return "\n".join(lines)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RequiredServicesGate(), "streamwatch-required-services")


# --- Kafka fixtures ---------------------------------------------------------------------------------------


class NewTopicFactory(Protocol):
    def __call__(self, prefix: str = "t", *, partitions: int = 1, compacted: bool = False) -> str: ...


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of the test broker (``STREAMWATCH_TEST_KAFKA``); skips the test when unset."""
    address = service_address("kafka")
    if address is None:
        pytest.skip(missing_service_reason("kafka"))
    return address


@pytest.fixture(scope="session")
def alertmanager_url() -> str:
    """URL of the test Alertmanager (``STREAMWATCH_TEST_ALERTMANAGER``); skips the test when unset."""
    return _service_or_skip("alertmanager").rstrip("/")


@pytest.fixture(scope="session")
def influx_url() -> str:
    """URL of the test InfluxDB (``STREAMWATCH_TEST_INFLUX``); skips the test when unset."""
    return _service_or_skip("influx").rstrip("/")


def _service_or_skip(service: str) -> str:
    address = service_address(service)
    if address is None:
        pytest.skip(missing_service_reason(service))
    return address


@pytest.fixture
def kafka_admin(kafka_bootstrap: str) -> Iterator[Any]:
    # Per test: a client that outlived a broker restart (the broker-crash test) would refuse to reconnect.
    # Imported on use: every test session loads this conftest, few of them talk to Kafka.
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="streamwatch-tests")
    yield admin
    admin.close()


@pytest.fixture
def new_topic(kafka_admin: Any) -> Iterator[NewTopicFactory]:
    """Factory for uniquely named topics that exist (with leaders) on return; deleted after the test."""
    created: list[str] = []

    def create(prefix: str = "t", *, partitions: int = 1, compacted: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        configs = {"cleanup.policy": "compact"} if compacted else {}
        # The dict form: kafka-python 3 deprecates lists of NewTopic.
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs}
        kafka_admin.create_topics({name: spec})
        created.append(name)
        kafka_admin.wait_for_topics([name], timeout_ms=TOPIC_READY_TIMEOUT_MS)
        return name

    yield create
    if created:
        from kafka.errors import KafkaError

        # Unique names make leftovers harmless; a failed delete must not turn a passing test red.
        with contextlib.suppress(KafkaError):
            kafka_admin.delete_topics(created)
