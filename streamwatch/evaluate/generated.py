"""Detection quality on generated data: simulate a domain, inject labelled anomalies, run `detect`, score.

The same routine backs the end-to-end tests and `bench/quality_generated.py`, so the figures a benchmark
prints are the ones the tests hold the detector to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamwatch.codecs import CsvFrame, LogCountConfig, count_log_lines
from streamwatch.config import StreamwatchConfig
from streamwatch.evaluate.events import EventScore, Span, alert_spans, score_events
from streamwatch.generate.inject import KINDS, Label
from streamwatch.generate.logs import render_log_lines
from streamwatch.generate.scenario import inject_spread, levels_only
from streamwatch.generate.simulate import Series, simulate
from streamwatch.offline import DetectResult, Split, detect

# Samples per scenario, by domain: about a day of the slow domains (so a daily cycle is visible in the 30 %
# training prefix only for server data, which needs it), and minutes of ECG.
SCENARIO_SAMPLES = {
    "grid_frequency": 30_000,
    "voltage": 30_000,
    "ecg": 90_000,
    "server": 8_640,
    "logs": 8_640,
    # Raw application log lines rendered from the logs domain and counted back by the log codec.
    "applog": 8_640,
}
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Scenario:
    domain: str
    seed: int
    kinds: tuple[str, ...] = KINDS
    anomalies: int = 6
    severity: float = 1.0
    train_fraction: float = 0.3


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    score: EventScore
    labels: tuple[Label, ...]
    result: DetectResult


def make_series(scenario: Scenario) -> tuple[CsvFrame, list[Label]]:
    rng = np.random.default_rng(scenario.seed)
    samples = SCENARIO_SAMPLES[scenario.domain]
    domain = "logs" if scenario.domain == "applog" else scenario.domain
    series = simulate(domain, n=samples, start=START, rng=rng)
    if scenario.domain == "applog":
        series = levels_only(series)
    injected, labels = inject_spread(
        series,
        rng=rng,
        kinds=scenario.kinds,
        count=scenario.anomalies,
        severity=scenario.severity,
        normal_fraction=scenario.train_fraction,
    )
    if scenario.domain == "applog":
        return _through_log_lines(injected, rng), labels
    frame = CsvFrame(scenario.domain, injected.timestamps, injected.channels, injected.values)
    return frame, labels


def _through_log_lines(series: Series, rng: np.random.Generator) -> CsvFrame:
    """Render counts as log lines and count them again, as `detect --format log` would read a file."""
    config = LogCountConfig(stream="applog", interval_s=1.0 / series.rate_hz)
    samples, errors = count_log_lines(render_log_lines(series, rng), config)
    if errors:
        raise ValueError(f"rendered log lines did not parse: {errors[0].reason}")
    channels = config.channels
    timestamps = np.asarray([sample.ts for sample in samples], dtype=np.float64)
    values = np.asarray([[sample.values[name] for name in channels] for sample in samples], dtype=np.float32)
    return CsvFrame("applog", timestamps, channels, values)


def run_scenario(scenario: Scenario, config: StreamwatchConfig | None = None) -> ScenarioResult:
    frame, labels = make_series(scenario)
    result = detect(frame, Split(fraction=scenario.train_fraction), config or StreamwatchConfig())
    window_s = result.model.spec.length * result.model.profiles[frame.stream].interval_s
    spans = alert_spans(result.alerts, end_of_data=float(frame.timestamps[-1]))
    score = score_events([Span(label.start, label.end) for label in labels], spans, tolerance_s=window_s)
    return ScenarioResult(scenario, score, tuple(labels), result)


def summarise(results: Sequence[ScenarioResult]) -> EventScore:
    """Pool several scenarios into one event score (counts add up)."""
    return EventScore(
        labels=sum(item.score.labels for item in results),
        found=sum(item.score.found for item in results),
        alerts=sum(item.score.alerts for item in results),
        false_alarms=sum(item.score.false_alarms for item in results),
        detection_delays_s=tuple(delay for item in results for delay in item.score.detection_delays_s),
    )
