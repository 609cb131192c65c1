"""The HTTP endpoints on a real loopback socket: /metrics parses as Prometheus text, /healthz answers,
/readyz follows readiness."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.service.health import Readiness
from streamwatch.service.status_server import StatusServer


@pytest.fixture
def served() -> Iterator[tuple[StatusServer, Readiness, CollectorRegistry]]:
    registry = CollectorRegistry()
    readiness = Readiness()
    server = StatusServer(("127.0.0.1", 0), registry, readiness).start()
    yield server, readiness, registry
    server.close()


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def test_metrics_are_served_in_the_prometheus_text_format(
    served: tuple[StatusServer, Readiness, CollectorRegistry],
) -> None:
    server, _, registry = served
    Counter("streamwatch_windows_scored", "Windows scored.", registry=registry).inc(42)
    status, body, content_type = _get(f"{server.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    [sample] = [s for s in families["streamwatch_windows_scored"].samples if s.name.endswith("_total")]
    assert sample.value == 42


def test_readyz_follows_readiness_and_healthz_answers_throughout(
    served: tuple[StatusServer, Readiness, CollectorRegistry],
) -> None:
    server, readiness, _ = served
    status, body, _ = _get(f"{server.url}/readyz")
    assert status == 503 and json.loads(body) == {"ready": False, "reasons": ["starting: not consuming yet"]}
    assert _get(f"{server.url}/healthz")[0] == 200
    readiness.loop()
    status, body, _ = _get(f"{server.url}/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "reasons": []}
    assert _get(f"{server.url}/nope")[0] == 404


def test_a_taken_port_fails_the_start_naming_the_setting(
    served: tuple[StatusServer, Readiness, CollectorRegistry],
) -> None:
    server, readiness, registry = served
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=rf"http.listen 127.0.0.1:{port}: .*http.enabled: false"):
        StatusServer(("127.0.0.1", port), registry, readiness)
