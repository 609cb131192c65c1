"""The retraining lifecycle end to end over recorded data, in event time (PCA keeps these quick; the conv
autoencoder runs the same scenarios in tests/e2e/test_retrain_scenarios.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import streamwatch.core.retraining
from streamwatch.codecs import CsvFrame
from streamwatch.config import StreamwatchConfig, parse_config
from streamwatch.core.bootstrap import StreamSeries, TrainingPlan, WindowShape, train_group
from streamwatch.core.engine import Engine
from streamwatch.core.model_history import MemoryHistory
from streamwatch.core.retraining import (
    Lifecycle,
    RetrainJob,
    RetrainOutcome,
    RetrainPolicy,
    run_job,
)
from streamwatch.generate.inject import inject
from streamwatch.generate.simulate import Series, simulate
from streamwatch.models.pca import PcaReconstructor
from streamwatch.offline import Split, detect, reconstructor_factory, run_with_retraining, train_on_prefix
from streamwatch.records import AlertEvent, WindowScore

START = 1_767_225_600.0


def _config(**retraining: Any) -> StreamwatchConfig:
    return parse_config({"detector": {"model": "pca"}, "retraining": retraining})


def _voltage(n: int, seed: int) -> Series:
    return simulate("voltage", n=n, start=START, rng=np.random.default_rng(seed))


def _frame(values: np.ndarray, series: Series) -> CsvFrame:
    return CsvFrame("v", series.timestamps, series.channels, values.astype(np.float32))


def _noise_grows(series: Series, *, begin: int, span: int, factor: float) -> np.ndarray:
    """The data's spread grows `factor` times over `span` samples from `begin`, then stays (a sensor or a
    plant that got noisier: a lasting change, not an incident)."""
    values = series.values.astype(np.float64)
    centre = np.median(values, axis=0)
    ramp = np.clip((np.arange(len(values)) - begin) / span, 0.0, 1.0)[:, None]
    return centre + (values - centre) * (1.0 + ramp * (factor - 1.0))


def _alerting_seconds(alerts: list[AlertEvent], end: float) -> float:
    """Event time spent with an alert open (one still open at the end counts until then)."""
    opened: dict[str, float] = {}
    total = 0.0
    for event in alerts:
        if event.kind != "anomaly":
            continue
        if event.status == "firing":
            opened.setdefault(event.alert_id, event.window_start)
        elif event.alert_id in opened:
            total += event.window_end - opened.pop(event.alert_id)
    return total + sum(end - start for start in opened.values())


def test_after_a_drift_the_retrained_model_fires_fewer_false_alerts_than_the_frozen_one() -> None:
    series = _voltage(30_000, seed=1)
    frame = _frame(_noise_grows(series, begin=8000, span=3000, factor=4.0), series)
    frozen = detect(frame, Split(fraction=0.15), _config())
    retrained = detect(frame, Split(fraction=0.15), _config(), retrain=True)
    assert retrained.lifecycle is not None
    assert retrained.lifecycle.stats["file"].accepted >= 3
    # No anomaly was injected: every alert is a false one. The frozen model pages about the new noise level
    # and stays paged (its alert never resolves); the retrained ones learn it.
    end = float(series.timestamps[-1])
    frozen_time = _alerting_seconds(frozen.alerts, end)
    assert frozen_time > 3600
    assert _alerting_seconds(retrained.alerts, end) < frozen_time / 4


def test_long_anomalies_in_the_buffer_period_are_not_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    series = _voltage(26_000, seed=2)
    rng = np.random.default_rng(7)
    poisoned = series
    spans = [(6000, 800), (10_000, 800), (14_000, 800), (18_000, 800)]
    for at, length in spans:
        poisoned, _ = inject(poisoned, "level_shift", at=at, length=length, rng=rng, severity=1.5)
    # The same kind again after the retrains: it must still be seen.
    poisoned, late = inject(poisoned, "level_shift", at=24_000, length=800, rng=rng, severity=1.5)
    seen: list[StreamSeries] = []
    train = streamwatch.core.retraining.run_job

    def watched(job: RetrainJob, **kwargs: Any) -> RetrainOutcome:
        seen.extend([*job.train.values(), *job.held_back.values()])
        return train(job, **kwargs)

    monkeypatch.setattr("streamwatch.offline.run_job", watched)
    result = detect(_frame(poisoned.values, series), Split(fraction=0.15), _config(), retrain=True)
    assert result.lifecycle is not None and result.lifecycle.stats["file"].accepted >= 2
    times = np.concatenate([item.timestamps for item in seen])
    for at, length in spans:
        inside = (times >= series.timestamps[at]) & (times <= series.timestamps[at + length - 1])
        assert not inside.any(), f"an anomaly at row {at} was trained on"
    late_alerts = [
        event
        for event in result.alerts
        if event.status == "firing" and late.start - 600 <= event.window_end <= late.end + 600
    ]
    assert late_alerts, "the anomaly kind seen during buffering went unnoticed after retraining"


def _lifecycle(
    config: StreamwatchConfig, series: Series, cut: int
) -> tuple[Lifecycle, Engine, MemoryHistory]:
    detector = config.detector
    plan = detector.training.plan(progress=False)
    model = train_group(
        {"v": StreamSeries(series.channels, series.timestamps[:cut], series.values[:cut])},
        version="pca@1",
        shape=detector.window.shape(),
        plan=plan,
        factory=reconstructor_factory(detector),
    )
    engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build())
    engine.install("g", model)
    engine.warm_up("v", series.timestamps[:cut], series.values[:cut])
    history = MemoryHistory()
    history.adopt("g", model)
    lifecycle = Lifecycle(
        engine,
        config.retraining.policy(),
        kind="pca",
        threshold=config.threshold_config(),
        plan=plan,
        history=history,
    )
    lifecycle.buffer.seed("v", lifecycle.shape_of("v"), series.timestamps[:cut], series.values[:cut])
    return lifecycle, engine, history


def _feed(lifecycle: Lifecycle, engine: Engine, series: Series, begin: int, end: int) -> list[Any]:
    outputs = []
    for start in range(begin, end, 256):
        block = (
            "v",
            series.timestamps[start : min(start + 256, end)],
            series.values[start : min(start + 256, end)],
        )
        out = engine.process_array(*block)
        lifecycle.observe([block], out)
        outputs.append(out)
    return outputs


def test_a_challenger_trained_on_noise_is_rejected_and_the_champion_stays() -> None:
    config = _config(every_s=3600.0, min_interval_s=0.0)
    series = _voltage(12_000, seed=3)
    lifecycle, engine, history = _lifecycle(config, series, 4000)
    _feed(lifecycle, engine, series, 4000, 12_000)
    jobs = lifecycle.due()
    assert len(jobs) == 1
    job = jobs[0]
    noise = {
        stream: StreamSeries(
            item.channels,
            item.timestamps,
            np.random.default_rng(0).normal(size=item.values.shape).astype(np.float32),
        )
        for stream, item in job.train.items()
    }
    outcome = run_job(
        replace(job, train=noise),
        factory=reconstructor_factory(config.detector),
        plan=config.detector.training.plan(progress=False),
        gate=lifecycle.policy.gate,
        threshold=config.threshold_config(),
    )
    assert not outcome.accepted
    lifecycle.complete(outcome)
    live = engine.model("g")
    assert live is not None and live.version == "pca@1"
    assert history.records[-1]["status"] == "rejected" and history.records[-1]["version"] == job.version
    assert lifecycle.stats["g"].rejected == 1 and lifecycle.stats["g"].accepted == 0


def test_a_swap_mid_incident_neither_repeats_nor_loses_an_alert_and_leaves_no_gap() -> None:
    config = _config(every_s=3600.0, min_interval_s=0.0)
    series = _voltage(14_000, seed=4)
    incident, label = inject(
        series, "level_shift", at=11_000, length=1200, rng=np.random.default_rng(1), severity=2.0
    )
    lifecycle, engine, _ = _lifecycle(config, incident, 4000)
    outputs = _feed(lifecycle, engine, incident, 4000, 11_400)
    firing = [event for out in outputs for event in out.alerts if event.status == "firing"]
    assert firing and firing[-1].window_end >= label.start, "the incident should be alerting before the swap"
    jobs = lifecycle.due()
    assert jobs
    lifecycle.complete(
        run_job(
            jobs[0],
            factory=reconstructor_factory(config.detector),
            plan=config.detector.training.plan(progress=False),
            gate=lifecycle.policy.gate,
            threshold=config.threshold_config(),
        )
    )
    live = engine.model("g")
    assert live is not None and live.version == jobs[0].version, lifecycle.stats["g"].last_reason
    outputs += _feed(lifecycle, engine, incident, 11_400, 14_000)
    scores: list[WindowScore] = [score for out in outputs for score in out.scores]
    assert [score.seq for score in scores] == list(range(scores[0].seq, scores[0].seq + len(scores)))
    assert {score.model_version for score in scores} == {"pca@1", jobs[0].version}
    events: dict[str, list[str]] = defaultdict(list)
    for out in outputs:
        for event in out.alerts:
            events[event.alert_id].append(event.status)
    incident_ids = [
        alert_id
        for out in outputs
        for event in out.alerts
        if event.window_start <= label.end and event.window_end >= label.start
        for alert_id in [event.alert_id]
    ]
    # One alert for the incident, fired once (escalations re-send firing) and resolved exactly once.
    assert len(set(incident_ids)) == 1
    statuses = events[incident_ids[0]]
    assert statuses[0] == "firing" and statuses.count("resolved") == 1 and statuses[-1] == "resolved"


def _zero_weights(model: Any) -> None:
    reconstructor = model.detector.reconstructor
    assert isinstance(reconstructor, PcaReconstructor)
    reconstructor._components[:] = 0.0
    reconstructor._mean[:] = 0.0


def test_a_broken_model_that_gets_live_is_caught_by_the_canaries_and_rolled_back() -> None:
    # The second retrain's model has its weights zeroed on its way live (a corrupted copy, say); the gate
    # is switched off so that it does go live: the canaries must find it on their own.
    config = _config(gate={"max_error_ratio": 1e9, "max_detection_drop": 1.0})
    series = _voltage(40_000, seed=5)
    frame = _frame(series.values, series)
    model, cut = train_on_prefix(frame, Split(fraction=0.15), config, progress=False)
    retrains: list[RetrainOutcome] = []

    def zero_the_second(outcome: RetrainOutcome) -> None:
        retrains.append(outcome)
        if len(retrains) == 2:
            _zero_weights(outcome.challenger)

    result = run_with_retraining(frame, cut, model, config, on_outcome=zero_the_second)
    assert result.history is not None and result.lifecycle is not None
    history = result.history
    broken = [record for record in history.records if record["status"] == "rolled_back"]
    assert [record["version"] for record in broken] == ["pca@3"], history.records
    restored = [record for record in history.records if record["restored_from"] is not None]
    assert [record["restored_from"] for record in restored] == ["pca@2"]
    assert "canaries" in restored[0]["reason"]
    degraded = [event for event in result.alerts if event.kind == "detector-degraded"]
    assert [event.status for event in degraded] == ["firing", "resolved"]
    assert degraded[0].model_version == "pca@3" and degraded[0].stream == "file"
    assert degraded[0].score < degraded[0].threshold
    assert result.lifecycle.stats["file"].rollbacks == 1


def test_detect_retrain_is_deterministic_for_a_seed() -> None:
    series = _voltage(20_000, seed=6)
    frame = _frame(_noise_grows(series, begin=6000, span=2000, factor=3.0), series)
    first = detect(frame, Split(fraction=0.15), _config(), retrain=True)
    second = detect(frame, Split(fraction=0.15), _config(), retrain=True)
    assert first.history is not None and second.history is not None
    assert first.history.records == second.history.records
    assert [event.to_json() for event in first.alerts] == [event.to_json() for event in second.alerts]
    assert [score.score for score in first.scores] == [score.score for score in second.scores]


def test_a_retrain_can_be_due_every_n_new_normal_windows() -> None:
    config = _config(every_windows=300, fresh_share=1.0, min_interval_s=0)
    series = _voltage(12_000, seed=7)
    result = detect(_frame(series.values, series), Split(fraction=0.2), config, retrain=True)
    assert result.history is not None
    reasons = [record["reason"] for record in result.history.records if record["status"] != "rejected"]
    assert any("new normal windows per stream" in reason for reason in reasons), reasons


def test_policy_validation_names_the_setting() -> None:
    with pytest.raises(ValueError, match="fresh_share"):
        RetrainPolicy(fresh_share=0.0)
    with pytest.raises(ValueError, match="min_interval_s"):
        RetrainPolicy(every_s=10.0, min_interval_s=20.0)
    assert TrainingPlan() and WindowShape()
