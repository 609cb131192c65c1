from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from streamwatch.core.alerts import AlertConfig
from streamwatch.core.bootstrap import GroupModel, StreamSeries, TrainingPlan, WindowShape, train_group
from streamwatch.core.engine import Engine
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.core.thresholds import PotThresholdConfig
from streamwatch.models.pca import PcaReconstructor
from streamwatch.records import Sample
from streamwatch.schemas import alert_event_schema

START = 1_767_225_600.0


def _pca(length: int, channels: int) -> Reconstructor:
    return PcaReconstructor(length=length, channels=channels)


def _series(rng: np.random.Generator, n: int, start: float = START) -> StreamSeries:
    t = np.arange(n, dtype=np.float64)
    values = np.stack(
        [
            np.sin(2 * np.pi * t / 25) + 0.1 * rng.normal(size=n),
            0.5 * np.cos(2 * np.pi * t / 25) + 0.1 * rng.normal(size=n),
        ],
        axis=1,
    ).astype(np.float32)
    return StreamSeries(("a", "b"), start + t, values)


@pytest.fixture(scope="module")
def model() -> GroupModel:
    rng = np.random.default_rng(0)
    series = {"s1": _series(rng, 6000), "s2": _series(rng, 6000)}
    return train_group(series, version="pca@1", shape=WindowShape(), plan=TrainingPlan(), factory=_pca)


def _engine(model: GroupModel) -> Engine:
    engine = Engine(threshold=PotThresholdConfig(), alerts=AlertConfig())
    engine.install("g", model)
    return engine


def _samples(stream: str, series: StreamSeries) -> list[Sample]:
    return [
        Sample(stream, float(ts), {"a": float(row[0]), "b": float(row[1])})
        for ts, row in zip(series.timestamps, series.values, strict=True)
    ]


def test_window_shape_follows_the_rhythm(model: GroupModel) -> None:
    assert model.spec.length == 56  # two cycles of 25 samples, rounded up to a multiple of 8
    assert model.spec.hop == 3


def test_spike_fires_then_resolves_with_contract_valid_events(model: GroupModel) -> None:
    engine = _engine(model)
    rng = np.random.default_rng(1)
    live = _series(rng, 3000, start=START + 6000)
    live.values[1500:1503, 1] += 8.0
    out = engine.process(_samples("s1", live))
    statuses = [event.status for event in out.alerts]
    assert statuses[0] == "firing" and statuses[-1] == "resolved"
    assert {event.alert_id for event in out.alerts} == {out.alerts[0].alert_id}
    firing = out.alerts[0]
    assert firing.window_start <= live.timestamps[1500] <= firing.window_end
    assert firing.channels["b"] > firing.channels["a"]
    schema = alert_event_schema()
    for event in out.alerts:
        jsonschema.validate(json.loads(json.dumps(event.to_json())), schema)


def test_normal_data_raises_no_alert(model: GroupModel) -> None:
    engine = _engine(model)
    out = engine.process(_samples("s2", _series(np.random.default_rng(2), 4000, start=START + 6000)))
    assert out.alerts == []
    assert len(out.scores) > 1000
    assert all(np.isfinite(score.score) for score in out.scores)


def test_unusable_samples_are_rejected_with_reasons_and_unknown_streams_unrouted(model: GroupModel) -> None:
    engine = _engine(model)
    samples = [
        Sample("s1", START + 10_000, {"a": 0.0, "b": 0.0}),
        Sample("s1", START + 10_001, {"a": float("nan"), "b": 0.0}),
        Sample("s1", START + 10_002, {"a": 0.0}),
        Sample("s1", START + 9_000, {"a": 0.0, "b": 0.0}),
        Sample("other", START, {"x": 1.0}),
    ]
    out = engine.process(samples)
    reasons = [rejection.reason for rejection in out.rejected]
    assert len(reasons) == 3
    assert "not finite" in reasons[0] and "wrong shape" in reasons[1] and "late" in reasons[2]
    assert [sample.stream for sample in out.unrouted] == ["other"]


def test_snapshot_restore_gives_identical_scores_and_alerts(model: GroupModel) -> None:
    rng = np.random.default_rng(3)
    live = _series(rng, 2000, start=START + 6000)
    live.values[900:960, 0] = live.values[900, 0]  # a flatline across the cut
    samples = _samples("s1", live)
    whole = _engine(model).process(samples)
    first = _engine(model)
    before = first.process(samples[:930])
    snapshot = json.loads(json.dumps(first.snapshot("s1")))
    second = _engine(model)
    second.restore("s1", snapshot)
    after = second.process(samples[930:])
    assert [s.score for s in before.scores + after.scores] == [s.score for s in whole.scores]
    assert before.alerts + after.alerts == whole.alerts
    assert whole.alerts, "the flatline must be detected"


def test_bulk_and_per_sample_paths_agree(model: GroupModel) -> None:
    live = _series(np.random.default_rng(4), 1500, start=START + 6000)
    live.values[700, 0] += 6
    one = _engine(model).process(_samples("s1", live))
    bulk = _engine(model).process_array("s1", live.timestamps, live.values)
    assert [s.score for s in one.scores] == [s.score for s in bulk.scores]
    assert one.alerts == bulk.alerts


def test_reinstall_refits_thresholds_but_keeps_window_state(model: GroupModel) -> None:
    engine = _engine(model)
    live = _series(np.random.default_rng(5), 500, start=START + 6000)
    engine.process_array("s1", live.timestamps, live.values)
    before = engine.snapshot("s1")
    engine.install("g", model)
    after = engine.snapshot("s1")
    assert after["windower"] == before["windower"]
    assert after["alerts"] == before["alerts"]


def test_bulk_chunk_with_bad_rows_rejects_only_those(model: GroupModel) -> None:
    engine = _engine(model)
    live = _series(np.random.default_rng(6), 400, start=START + 6000)
    values = live.values.copy()
    values[100, 0] = np.nan
    timestamps = live.timestamps.copy()
    timestamps[200] = timestamps[150]  # out of order
    out = engine.process_arrays([("s1", timestamps, values)])
    assert [r.reason.split(" ")[0] for r in out.rejected] == ["channel", "late"]
    assert len(out.scores) > 100


def test_a_live_reconfigure_keeps_learned_state_and_open_alert_under_new_rules(model: GroupModel) -> None:
    rng = np.random.default_rng(6)
    live = _series(rng, 2000, start=START + 6000)
    live.values[900:1100, 0] += 5.0  # a level shift still open at the cut
    engine = _engine(model)
    before = engine.process_array("s1", live.timestamps[:1000], live.values[:1000])
    assert [event.status for event in before.alerts] == ["firing"]
    learned = engine.snapshot("s1")["threshold"]
    engine.reconfigure(threshold=PotThresholdConfig(floor=40.0), alerts=AlertConfig(resolve_windows=2))
    after = engine.snapshot("s1")
    # The same learned state (peaks, streak) under the new parameters: the floor applies at once.
    assert after["threshold"]["state"] == learned["state"]
    assert after["threshold"]["config"]["floor"] == 40.0
    rest = engine.process_array("s1", live.timestamps[1000:], live.values[1000:])
    assert rest.scores and min(score.threshold for score in rest.scores) >= 40.0
    # The open alert carries over (same id) and resolves under the new rule.
    assert (rest.alerts[0].status, rest.alerts[0].alert_id) == ("resolved", before.alerts[0].alert_id)


def test_a_reconfigure_that_cannot_apply_changes_nothing(model: GroupModel) -> None:
    from streamwatch.core.alerts import SeverityLevel
    from streamwatch.core.thresholds import RobustZThresholdConfig

    engine = _engine(model)
    live = _series(np.random.default_rng(7), 1050, start=START + 6000)
    live.values[900:1100, 0] += 9.0
    out = engine.process_array("s1", live.timestamps, live.values)
    assert [e.severity for e in out.alerts if e.status == "firing"][-1] == "critical"
    snapshot = engine.snapshot("s1")
    with pytest.raises(ValueError, match=r"threshold\.kind cannot change while running"):
        engine.reconfigure(threshold=RobustZThresholdConfig(), alerts=AlertConfig())
    # The open alert is at the second level; rules with one level cannot hold it.
    with pytest.raises(ValueError, match="stream s1 cannot take the new settings"):
        engine.reconfigure(
            threshold=PotThresholdConfig(floor=3.0),
            alerts=AlertConfig(severities=(SeverityLevel("page", 1.0),)),
        )
    assert engine.snapshot("s1") == snapshot
