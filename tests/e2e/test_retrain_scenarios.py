"""The retraining scenarios with the default model, the conv autoencoder, through the command line where
an operator would use it (tests/unit/core/test_retraining.py runs them all quickly with PCA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamwatch.codecs import CsvFrame
from streamwatch.config import parse_config
from streamwatch.core.retraining import RetrainOutcome
from streamwatch.generate.inject import write_csv
from streamwatch.generate.simulate import Series, simulate
from streamwatch.offline import FILE_GROUP, Split, run_with_retraining, train_on_prefix

START = 1_767_225_600.0


def _noisier(series: Series, *, begin: int, span: int, factor: float) -> Series:
    values = series.values.astype(np.float64)
    centre = np.median(values, axis=0)
    ramp = np.clip((np.arange(len(values)) - begin) / span, 0.0, 1.0)[:, None]
    changed = centre + (values - centre) * (1.0 + ramp * (factor - 1.0))
    return Series(series.timestamps, series.channels, changed.astype(np.float32), series.rate_hz)


def _alerting_seconds(events: list[dict[str, Any]], end: float) -> float:
    from streamwatch.records import parse_iso_utc

    opened: dict[str, float] = {}
    total = 0.0
    for event in events:
        if event.get("kind", "anomaly") != "anomaly":
            continue
        if event["status"] == "firing":
            opened.setdefault(event["alert_id"], parse_iso_utc(event["window_start"]))
        elif event["alert_id"] in opened:
            total += parse_iso_utc(event["window_end"]) - opened.pop(event["alert_id"])
    return total + sum(end - start for start in opened.values())


@pytest.mark.slow
def test_detect_retrain_learns_a_lasting_change_the_frozen_model_keeps_paging_about(tmp_path: Path) -> None:
    normal = simulate("voltage", n=30_000, start=START, rng=np.random.default_rng(1))
    series = _noisier(normal, begin=8000, span=3000, factor=4)
    csv = tmp_path / "noisier.csv"
    write_csv(csv, series)
    results = {}
    for name, extra in (("frozen", []), ("retrained", ["--retrain"])):
        alerts = tmp_path / f"{name}.jsonl"
        command = [sys.executable, "-m", "streamwatch", "detect", str(csv), "--train-fraction", "0.15"]
        subprocess.run([*command, "--alerts", str(alerts), *extra], check=True, capture_output=True)
        events = [json.loads(line) for line in alerts.read_text().splitlines()]
        results[name] = _alerting_seconds(events, float(series.timestamps[-1]))
    assert results["frozen"] > 3600, results
    assert results["retrained"] < results["frozen"] / 4, results


@pytest.mark.slow
def test_a_conv_model_with_zeroed_weights_is_caught_by_the_canaries_and_rolled_back() -> None:
    import torch

    # The gate is switched off so that the broken model does go live: the canaries must find it alone.
    config = parse_config({"retraining": {"gate": {"max_error_ratio": 1e9, "max_detection_drop": 1.0}}})
    series = simulate("grid_frequency", n=24_000, start=START, rng=np.random.default_rng(2))
    frame = CsvFrame("g", series.timestamps, series.channels, series.values)
    model, cut = train_on_prefix(frame, Split(fraction=0.2), config, progress=False)
    retrains: list[RetrainOutcome] = []

    def zero_the_first(outcome: RetrainOutcome) -> None:
        retrains.append(outcome)
        if len(retrains) == 1 and outcome.challenger is not None:
            net = outcome.challenger.detector.reconstructor.net  # type: ignore[attr-defined]
            with torch.no_grad():
                for parameter in net.parameters():
                    parameter.zero_()

    result = run_with_retraining(frame, cut, model, config, on_outcome=zero_the_first)
    assert result.history is not None and result.lifecycle is not None
    statuses = {record["version"]: record["status"] for record in result.history.records}
    assert statuses.get("conv@2") == "rolled_back", result.history.records
    degraded = [event for event in result.alerts if event.kind == "detector-degraded"]
    assert [event.status for event in degraded] == ["firing", "resolved"]
    assert degraded[0].model_version == "conv@2"
    assert result.lifecycle.stats[FILE_GROUP].rollbacks == 1
