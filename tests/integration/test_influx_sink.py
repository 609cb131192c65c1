"""The InfluxDB sink against a real InfluxDB (deploy/dev-influxdb, 1.8 through its v2 API): every kind of
point read back with Flux, awkward stream names included; and an InfluxDB stopped while the engine scores
holds up nothing, then gets every point once it is back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dev_servers import dev_server

from streamwatch.codecs import CsvFrame
from streamwatch.config import InfluxSinkConfig, StreamwatchConfig, parse_config
from streamwatch.core.engine import Engine
from streamwatch.delivery.backoff import Backoff
from streamwatch.delivery.metrics import sink_metrics
from streamwatch.generate.inject import inject
from streamwatch.generate.simulate import simulate
from streamwatch.io.influx import InfluxSink
from streamwatch.io.sinks import GroupHealth
from streamwatch.offline import FILE_GROUP, Split, train_on_prefix
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

pytestmark = pytest.mark.influx

BUCKET = "streamwatch/autogen"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SINCE = "2025-12-31T00:00:00Z"
PCA: StreamwatchConfig = parse_config({"detector": {"model": "pca"}})


def _flux_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _query(url: str, where: str) -> list[dict[str, Any]]:
    """Every record of the points matching the Flux predicate `where` (on `r`), as dicts of its columns."""
    from influxdb_client.client.influxdb_client import InfluxDBClient

    flux = f"from(bucket: {_flux_string(BUCKET)}) |> range(start: {SINCE}) |> filter(fn: (r) => {where})"
    with InfluxDBClient(url=url, token="", org="-") as client:
        tables = client.query_api().query(flux)
    return [dict(record.values) for table in tables for record in table.records]


def _config(url: str) -> InfluxSinkConfig:
    return InfluxSinkConfig(url=url, org="-", bucket=BUCKET, flush_interval_s=0.05, timeout_s=2.0)


def test_every_kind_of_point_reads_back_with_flux_awkward_names_unchanged(influx_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    stream = f'site {run},bay=2 "north" C:\\feeds/spänning'
    group = f"grid {run}"
    metrics = sink_metrics().receiver("influxdb", influx_url)
    sink = InfluxSink(_config(influx_url), metrics=metrics.family)
    scores = [
        WindowScore(stream, seq, START + seq, START + seq + 10.0, score, 2.5, {"v": 1.0}, "pca@4")
        for seq, score in enumerate([0.5, 3.25])
    ]
    alert = AlertEvent(
        f"alert-{run}",
        stream,
        "firing",
        "critical",
        START + 1.0,
        START + 11.0,
        3.25,
        2.5,
        "pca@4",
        {"v": 1.0},
        START,
    )
    gap = DataQualityEvent(stream, "gap", START + 20.0, START + 50.5, 'no data for 30.5s ("max" 10s) \\o/')
    health = GroupHealth(group, "pca@4", START + 60.0, 0.875, None, False, 3, 1, 0)
    sink.emit([alert], [gap], scores)
    sink.health([health])
    sink.close()
    assert metrics.value("delivered") == 5 and metrics.value("dropped") == 0

    records = _query(influx_url, f"r.stream == {_flux_string(stream)}")
    assert {record["stream"] for record in records} == {stream}
    by_point: dict[tuple[str, float], dict[str, Any]] = {}
    for record in records:
        point = by_point.setdefault((record["_measurement"], record["_time"].timestamp()), {})
        point[record["_field"]] = record["_value"]
        point |= {
            key: record[key] for key in ("model_version", "status", "severity", "kind") if key in record
        }
    assert by_point == {
        ("streamwatch_score", START + 10.0): {
            "score": 0.5,
            "threshold": 2.5,
            "exceeds": False,
            "model_version": "pca@4",
        },
        ("streamwatch_score", START + 11.0): {
            "score": 3.25,
            "threshold": 2.5,
            "exceeds": True,
            "model_version": "pca@4",
        },
        ("streamwatch_alert", START + 11.0): {
            "alert_id": f"alert-{run}",
            "score": 3.25,
            "threshold": 2.5,
            "firing": 1,
            "status": "firing",
            "severity": "critical",
            "kind": "anomaly",
        },
        ("streamwatch_data_quality", START + 50.5): {
            "start": START + 20.0,
            "end": START + 50.5,
            "detail": gap.detail,
            "kind": "gap",
        },
    }
    health_records = _query(influx_url, f"r.group == {_flux_string(group)}")
    assert {record["_field"]: record["_value"] for record in health_records} == {
        "canary_hit_rate": 0.875,
        "degraded": False,
        "retrains_accepted": 3,
        "retrains_rejected": 1,
        "rollbacks": 0,
    }
    assert {(r["_measurement"], r["version"], r["_time"].timestamp()) for r in health_records} == {
        ("streamwatch_health", "pca@4", START + 60.0)
    }


def _engine_on_a_voltage_stream(stream: str) -> tuple[Engine, CsvFrame, int]:
    """The daemon's engine with a PCA model trained on the first 40% of a voltage stream (a level shift
    later on, so that alerts fire), its windows warmed up; returns it, the data and where scoring starts."""
    rng = np.random.default_rng(5)
    series = simulate("voltage", n=5000, start=START, rng=rng)
    series, _ = inject(series, "level_shift", at=3500, length=300, rng=rng, severity=2.0)
    frame = CsvFrame(stream, series.timestamps, series.channels, series.values)
    model, cut = train_on_prefix(frame, Split(fraction=0.4), PCA, progress=False)
    engine = Engine(threshold=PCA.threshold_config(), alerts=PCA.alerts.build())
    engine.install(FILE_GROUP, model)
    engine.warm_up(stream, frame.timestamps[:cut], frame.values[:cut])
    return engine, frame, cut


def _count(url: str, stream: str, measurement: str, field: str) -> int:
    where = (
        f"r.stream == {_flux_string(stream)} and r._measurement == {_flux_string(measurement)} "
        f"and r._field == {_flux_string(field)}"
    )
    return len(_query(url, where))


def test_scoring_goes_on_while_influxdb_is_down_and_every_point_arrives_after(tmp_path: Path) -> None:
    stream = f"feeder {uuid.uuid4().hex[:8]}/voltage"
    engine, frame, cut = _engine_on_a_voltage_stream(stream)
    emitted: dict[str, int] = {"streamwatch_score": 0, "streamwatch_alert": 0, "streamwatch_data_quality": 0}
    chunk = 100
    with dev_server("influx", tmp_path / "influx") as server:
        metrics = sink_metrics().receiver("influxdb", server.url)
        sink = InfluxSink(
            _config(server.url), metrics=metrics.family, backoff=Backoff(initial_s=0.05, max_s=0.5)
        )
        emit_seconds: list[float] = []

        def score(begin: int, end: int) -> None:
            out = engine.process_array(stream, frame.timestamps[begin:end], frame.values[begin:end])
            began = time.perf_counter()
            sink.emit(out.alerts, out.quality, out.scores)
            emit_seconds.append(time.perf_counter() - began)
            emitted["streamwatch_score"] += len(out.scores)
            emitted["streamwatch_alert"] += len(out.alerts)
            emitted["streamwatch_data_quality"] += len(out.quality)

        halfway = cut + (len(frame) - cut) // 2
        score(cut, halfway)
        assert sink.flush(30.0), "the running InfluxDB did not take the first points"
        before_outage = metrics.value("delivered")
        assert before_outage == sum(emitted.values()) > 0

        server.stop()
        for begin in range(halfway, len(frame), chunk):
            score(begin, begin + chunk)
        deadline = time.monotonic() + 10
        while metrics.value("retries") < 2:
            assert time.monotonic() < deadline, "the sink never tried the stopped InfluxDB"
            time.sleep(0.05)
        assert max(emit_seconds) < 0.5, emit_seconds
        assert metrics.value("delivered") == before_outage
        assert metrics.value("queued") == sum(emitted.values()) - before_outage > 0
        assert emitted["streamwatch_alert"] > 0

        server.start()
        assert sink.flush(60.0), "the held points did not go out after InfluxDB came back"
        sink.close()
        assert metrics.value("delivered") == sum(emitted.values())
        assert metrics.value("dropped") == 0
        assert _count(server.url, stream, "streamwatch_score", "score") == emitted["streamwatch_score"]
        assert _count(server.url, stream, "streamwatch_alert", "firing") == emitted["streamwatch_alert"]
        assert (
            _count(server.url, stream, "streamwatch_data_quality", "end")
            == emitted["streamwatch_data_quality"]
        )
