"""The Alertmanager sink's contract, against a scripted transport and a hand-moved clock: what is sent, when
it is sent again, and what survives an outage or a restart."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from transports import ScriptedTransport

from streamwatch.config import AlertmanagerSinkConfig, DeliveryConfig, RetryConfig
from streamwatch.delivery.hub import DeliveryHub
from streamwatch.io.alertmanager import AlertmanagerSink
from streamwatch.records import AlertEvent, SourcePosition, iso_utc

AM1, AM2 = "http://am-1.test:9093", "http://am-2.test:9093"
T0 = 1_764_500_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def hub(tmp_path: Path, transport: ScriptedTransport, clock: Clock) -> Iterator[DeliveryHub]:
    config = DeliveryConfig(
        dir=tmp_path / "outbox",
        dead_letter=tmp_path / "undelivered.jsonl",
        retry=RetryConfig(initial_s=1, max_s=30, give_up_after_s=600),
    )
    opened = DeliveryHub.open(config, transport=transport, clock=clock, rng=random.Random(0))
    yield opened
    opened.close()


def _config(**overrides: Any) -> AlertmanagerSinkConfig:
    settings: dict[str, Any] = {
        "urls": (AM1, AM2),
        "labels": {"team": "grid"},
        "resend_interval_s": 60,
        "generator_url": "https://grafana.test/d/sw?var-stream={stream}&alert={alert_id}",
    }
    settings.update(overrides)
    return AlertmanagerSinkConfig(**settings)


def _event(status: str = "firing", severity: str = "warning", alert_id: str = "a1", **kw: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "alert_id": alert_id,
        "stream": "pmu-1/frequency",
        "status": status,
        "severity": severity,
        "window_start": T0 - 600,
        "window_end": T0 - 300 if status == "firing" else T0 - 60,
        "score": 12.5,
        "threshold": 4.0,
        "model_version": "conv@3",
        "channels": {"frequency_hz": 0.75, "rocof": 0.25},
        "detected_at": T0,
        "source": SourcePosition("grid", 3, 12345),
    }
    fields.update(kw)
    return AlertEvent(**fields)


def _endpoint(url: str) -> str:
    return f"{url}/api/v2/alerts"


def _sent(transport: ScriptedTransport, url: str) -> list[list[dict[str, Any]]]:
    return [orjson.loads(post.body) for post in transport.posts if post.url == _endpoint(url)]


def _rounds(sink: AlertmanagerSink, now: float) -> None:
    for receiver in sink.receivers:
        receiver.round(now)


def test_an_alert_goes_to_every_alertmanager_the_way_prometheus_sends_it(
    hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    sink = AlertmanagerSink(_config(), hub, start=False)
    sink.emit([_event()], [])
    _rounds(sink, clock.now)
    for url in (AM1, AM2):
        [[alert]] = _sent(transport, url)
        assert alert["labels"] == {
            "alertname": "StreamwatchAnomaly",
            "stream": "pmu-1/frequency",
            "severity": "warning",
            "alert_id": "a1",
            "team": "grid",
        }
        notes = alert["annotations"]
        assert notes["score"] == "12.5" and notes["threshold"] == "4" and notes["model_version"] == "conv@3"
        assert notes["channels"] == "frequency_hz 75%, rocof 25%"
        assert notes["source"] == "grid/3@12345"
        assert "3.1x its threshold" in notes["summary"]
        assert alert["startsAt"] == iso_utc(T0 - 600)
        # Valid for four resend intervals: it ends by itself if streamwatch dies.
        assert alert["endsAt"] == iso_utc(T0 + 240)
        assert alert["generatorURL"] == "https://grafana.test/d/sw?var-stream=pmu-1%2Ffrequency&alert=a1"
    assert all(post.headers["Content-Type"] == "application/json" for post in transport.posts)


def test_firing_alerts_are_resent_every_interval_and_changes_at_once(
    hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    [receiver] = sink.receivers
    sink.emit([_event()], [])
    assert receiver.round(T0) == T0 + 60
    assert receiver.round(T0 + 30) == T0 + 60  # nothing new: no request
    assert len(_sent(transport, AM1)) == 1
    receiver.round(T0 + 60)
    [[again]] = _sent(transport, AM1)[1:]
    assert again["endsAt"] == iso_utc(T0 + 60 + 240)
    # A change goes out at once, alone; the next resend carries every active alert.
    sink.emit([_event(severity="critical")], [])
    assert receiver.round(T0 + 61) == T0 + 120
    assert [a["labels"]["severity"] for a in _sent(transport, AM1)[-1]] == ["critical"]
    receiver.round(T0 + 120)
    assert {a["labels"]["severity"] for a in _sent(transport, AM1)[-1]} == {"warning", "critical"}
    assert hub.metrics.receiver("alertmanager", AM1).value("delivered") == 2  # re-sends are not news


def test_a_resolution_ends_every_severity_of_the_alert_and_then_it_is_forgotten(
    hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    [receiver] = sink.receivers
    sink.emit([_event(), _event(severity="critical")], [])
    receiver.round(T0)
    sink.emit([_event("resolved", severity="critical")], [])
    assert receiver.round(T0 + 1) is not None
    resolved = _sent(transport, AM1)[-1]
    assert sorted(a["labels"]["severity"] for a in resolved) == ["critical", "warning"]
    assert {a["endsAt"] for a in resolved} == {iso_utc(T0 - 60)}
    # Taken: nothing is left to send.
    assert receiver.round(T0 + 1000) is None
    assert len(_sent(transport, AM1)) == 2


def test_an_outage_is_retried_with_backoff_within_the_resend_interval(
    hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    sink = AlertmanagerSink(_config(), hub, start=False)
    transport.down(_endpoint(AM1))
    sink.emit([_event()], [])
    first, second = sink.receivers
    retry_at = first.round(T0)
    assert retry_at is not None and T0 <= retry_at <= T0 + 60
    second.round(T0)
    assert len(_sent(transport, AM2)) == 1  # the other Alertmanager is not held up
    transport.up(_endpoint(AM1))
    first.round(retry_at)
    assert len(_sent(transport, AM1)) == 1
    metrics = hub.metrics.receiver("alertmanager", AM1)
    assert metrics.value("retries") == 1 and metrics.value("delivered") == 1 and metrics.value("queued") == 0


def test_a_restart_while_alertmanager_is_down_loses_nothing(
    tmp_path: Path, hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    transport.down(_endpoint(AM1))
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    sink.emit([_event(alert_id="still-firing"), _event(alert_id="was-resolved")], [])
    sink.emit([_event("resolved", alert_id="was-resolved")], [])
    sink.receivers[0].round(T0)
    sink.close()
    hub.close()
    again = DeliveryHub.open(
        DeliveryConfig(dir=tmp_path / "outbox", dead_letter=tmp_path / "undelivered.jsonl"),
        transport=transport,
        clock=clock,
    )
    transport.up(_endpoint(AM1))
    restarted = AlertmanagerSink(_config(urls=(AM1,)), again, start=False)
    restarted.receivers[0].round(T0 + 5)
    [alerts] = _sent(transport, AM1)
    by_id = {a["labels"]["alert_id"]: a for a in alerts}
    assert by_id["still-firing"]["endsAt"] == iso_utc(T0 + 5 + 240)
    assert by_id["was-resolved"]["endsAt"] == iso_utc(T0 - 60)
    again.close()


def test_old_data_is_delivered_not_given_up_for_its_age(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    """A backlog days old (a Kafka daemon catching up): its resolutions are sent like any other."""
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    week = 7 * 86400
    sink.emit([_event(window_start=T0 - week, window_end=T0 - week + 60)], [])
    sink.emit([_event("resolved", window_start=T0 - week, window_end=T0 - week + 600)], [])
    assert sink.receivers[0].round(T0) == T0 + 60
    assert sink.receivers[0].round(T0 + 60) is None  # taken: nothing is active any more
    [[resolved]] = _sent(transport, AM1)
    assert resolved["endsAt"] == iso_utc(T0 - week + 600)


def test_while_backing_off_a_round_does_not_touch_the_database(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    transport.down(_endpoint(AM1))
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    sink.emit([_event()], [])
    receiver = sink.receivers[0]
    retry_at = receiver.round(T0)
    assert retry_at is not None and retry_at > T0
    hub.store.close()  # any query now would raise
    assert receiver.round(T0 + (retry_at - T0) / 2) == retry_at
    assert hub.metrics.receiver("alertmanager", AM1).value("queued") == 1


def test_a_resolution_never_delivered_goes_to_the_dead_letters(
    tmp_path: Path, hub: DeliveryHub, transport: ScriptedTransport, clock: Clock
) -> None:
    transport.down(_endpoint(AM1))
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    sink.emit([_event(), _event("resolved")], [])
    receiver = sink.receivers[0]
    receiver.round(T0)
    # Recorded at T0 (its event time, T0-60, does not count); give_up_after_s is 600.
    now = T0 + 1
    while now < T0 + 590:
        now = receiver.round(now) or now + 1
    assert not (tmp_path / "undelivered.jsonl").read_bytes()
    while (next_round := receiver.round(now)) is not None and now < T0 + 700:
        now = next_round
    assert next_round is None and T0 + 600 <= now < T0 + 700
    [line] = (tmp_path / "undelivered.jsonl").read_bytes().splitlines()
    dead = orjson.loads(line)
    assert dead["receiver"] == AM1 and dead["event"]["labels"]["alert_id"] == "a1"
    assert "unreachable" in dead["reason"]


def test_released_streams_are_no_longer_resent_and_adopted_ones_are(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    sink.emit([_event(), _event(alert_id="b1", stream="pmu-2/frequency")], [])
    sink.release(["pmu-1/frequency"])
    sink.receivers[0].round(T0)
    assert [a["labels"]["stream"] for a in _sent(transport, AM1)[0]] == ["pmu-2/frequency"]
    sink.adopt([_event(alert_id="c1", stream="pmu-3/frequency")])
    sink.receivers[0].round(T0 + 1)
    assert [a["labels"]["stream"] for a in _sent(transport, AM1)[1]] == ["pmu-3/frequency"]
    sink.receivers[0].round(T0 + 60)
    assert {a["labels"]["stream"] for a in _sent(transport, AM1)[2]} == {"pmu-2/frequency", "pmu-3/frequency"}


def test_a_degraded_detector_is_its_own_alertname_about_a_group(
    hub: DeliveryHub, transport: ScriptedTransport
) -> None:
    sink = AlertmanagerSink(_config(urls=(AM1,)), hub, start=False)
    sink.emit([_event(stream="grid", kind="detector-degraded", score=0.3, threshold=0.6, channels={})], [])
    sink.receivers[0].round(T0)
    [[alert]] = _sent(transport, AM1)
    assert alert["labels"]["alertname"] == "StreamwatchDetectorDegraded"
    assert alert["labels"]["group"] == "grid" and "stream" not in alert["labels"]
    assert "caught 30% of its canaries (floor 60%)" in alert["annotations"]["summary"]


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="alertname, severity are set by streamwatch"):
        _config(labels={"severity": "x", "alertname": "y"})
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        _config(labels={"9lives": "x"})
    with pytest.raises(ValueError, match="listed twice"):
        _config(urls=(AM1, AM1 + "/"))
    with pytest.raises(ValueError, match="not an http"):
        _config(urls=("am-1:9093",))
