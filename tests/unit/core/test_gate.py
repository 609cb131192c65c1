"""The validation gate: a challenger goes live only if it sees at least as well as the champion."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from streamwatch.core.bootstrap import (
    GroupModel,
    StreamSeries,
    TrainingPlan,
    WindowShape,
    segment_bounds,
    train_group,
)
from streamwatch.core.detector import WindowDetector
from streamwatch.core.gate import GateConfig, judge
from streamwatch.core.reconstructor import Batch, FitReport, Reconstructor
from streamwatch.core.thresholds import threshold_from_dict
from streamwatch.models.pca import PcaReconstructor

START = 1_767_225_600.0
THRESHOLD = threshold_from_dict({"kind": "robust_z", "floor": 2.5})
SHAPE = WindowShape(length=32, hop=2)


def _pca(length: int, channels: int) -> Reconstructor:
    return PcaReconstructor(length=length, channels=channels)


def _rhythm(rng: np.random.Generator, n: int, begin: int = 0) -> StreamSeries:
    t = np.arange(begin, begin + n, dtype=np.float64)
    values = (np.sin(2 * np.pi * t / 25) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    return StreamSeries(("v",), START + t, values)


def _model(series: StreamSeries, version: str) -> GroupModel:
    return train_group({"s": series}, version=version, shape=SHAPE, plan=TrainingPlan(), factory=_pca)


def _judge(champion: GroupModel, challenger: GroupModel, held: StreamSeries, **config: Any) -> Any:
    return judge(
        champion,
        champion.profiles,
        challenger,
        {"s": held},
        config=GateConfig(**config),
        threshold=THRESHOLD,
        seed=3,
    )


def test_a_challenger_trained_on_the_same_kind_of_data_is_accepted() -> None:
    rng = np.random.default_rng(1)
    champion = _model(_rhythm(rng, 3000), "pca@1")
    challenger = _model(_rhythm(rng, 3000, begin=3000), "pca@2")
    report = _judge(champion, challenger, _rhythm(rng, 1500, begin=6000))
    assert report.accepted, report.reason
    assert 0.8 < report.error_ratio < 1.25
    assert report.champion.detection > 0.7 and report.challenger.detection > 0.7
    assert report.probes == 40
    assert set(report.figures()) >= {"error_ratio", "champion_detection", "challenger_detection"}


def test_a_challenger_trained_on_noise_is_rejected() -> None:
    rng = np.random.default_rng(2)
    champion = _model(_rhythm(rng, 3000), "pca@1")
    noise = StreamSeries(("v",), START + np.arange(3000.0), rng.normal(size=(3000, 1)).astype(np.float32))
    challenger = _model(noise, "pca@2")
    report = _judge(champion, challenger, _rhythm(rng, 1500, begin=6000))
    assert not report.accepted
    assert "pca@1" in report.reason


def test_the_same_model_never_loses_to_itself() -> None:
    rng = np.random.default_rng(3)
    champion = _model(_rhythm(rng, 3000), "pca@1")
    report = _judge(champion, champion, _rhythm(rng, 1500, begin=6000), max_detection_drop=0.0)
    assert report.accepted
    assert report.error_ratio == pytest.approx(1.0)
    assert np.array_equal(report.champion.caught, report.challenger.caught)


class _Broken:
    kind = "pca"

    def __init__(self, inner: Reconstructor) -> None:
        self._inner = inner

    def fit(self, windows: Batch, *, seed: int, progress: bool = False) -> FitReport:
        raise NotImplementedError

    def reconstruct(self, windows: Batch) -> Batch:
        return np.full_like(windows, np.nan)

    def tensors(self) -> dict[str, npt.NDArray[np.float32]]:
        return self._inner.tensors()

    def metadata(self) -> dict[str, Any]:
        return self._inner.metadata()


def test_a_challenger_that_reconstructs_nan_is_rejected() -> None:
    rng = np.random.default_rng(4)
    champion = _model(_rhythm(rng, 3000), "pca@1")
    detector = WindowDetector(
        _Broken(champion.detector.reconstructor), champion.detector.calibration, "pca@2"
    )
    challenger = replace(champion, version="pca@2", detector=detector)
    report = _judge(champion, challenger, _rhythm(rng, 1500, begin=6000))
    assert not report.accepted
    assert "not finite" in report.reason or "worse" in report.reason


def test_held_back_data_with_holes_is_judged_within_its_segments() -> None:
    rng = np.random.default_rng(5)
    champion = _model(_rhythm(rng, 3000), "pca@1")
    held = _rhythm(rng, 1500, begin=6000)
    holed = StreamSeries(held.channels, held.timestamps, held.values, (500, 1000))
    assert segment_bounds(holed.breaks, 0, 1500) == [(0, 500), (500, 1000), (1000, 1500)]
    report = _judge(champion, champion, holed)
    assert report.accepted and report.probes == 40


def test_gate_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_error_ratio"):
        GateConfig(max_error_ratio=0.5)
    with pytest.raises(ValueError, match="max_detection_drop"):
        GateConfig(max_detection_drop=2.0)
