"""Detection quality on anomalies drawn from a trained model: train on a simulated series' normal prefix,
generate model anomalies into the rest of the same series, run the offline engine, score events.

The same routine backs the severity test of `generate --from-model` and `bench/generated_severity.py`, so the
table the benchmark prints is what the test holds the generator to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamwatch.codecs import CsvFrame
from streamwatch.config import StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel
from streamwatch.evaluate.events import EventScore, Span, alert_spans, score_events
from streamwatch.generate.from_model import generate_from_model
from streamwatch.generate.inject import Label
from streamwatch.generate.simulate import Series, simulate
from streamwatch.offline import Split, run_engine, train_on_prefix

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class TrainedSeries:
    """A normal series and the model trained on its first `cut` samples (anomalies go after them)."""

    model: GroupModel
    base: Series
    stream: str
    cut: int

    @property
    def normal_fraction(self) -> float:
        return self.cut / len(self.base)


@dataclass(frozen=True, slots=True)
class GeneratedScore:
    score: EventScore
    labels: tuple[Label, ...]


def train_on_simulated(
    domain: str, *, samples: int, seed: int, config: StreamwatchConfig, train_fraction: float = 0.3
) -> TrainedSeries:
    """Simulate `samples` of normal `domain` data and train the configured model on its leading share."""
    base = simulate(domain, n=samples, start=START, rng=np.random.default_rng(seed))
    frame = CsvFrame(domain, base.timestamps, base.channels, base.values)
    model, cut = train_on_prefix(frame, Split(fraction=train_fraction), config, progress=False)
    return TrainedSeries(model, base, domain, cut)


def generate_after_prefix(
    trained: TrainedSeries, *, kinds: Sequence[str], severity: float, seed: int, count: int
) -> tuple[Series, list[Label]]:
    """`count` anomalies of `kinds` drawn from the trained model into its base series, after the prefix it
    was trained on."""
    return generate_from_model(
        trained.model,
        trained.base,
        stream=trained.stream,
        rng=np.random.default_rng(seed),
        kinds=kinds,
        count=count,
        severity=severity,
        normal_fraction=trained.normal_fraction,
    )


def score_generated(
    trained: TrainedSeries,
    config: StreamwatchConfig,
    *,
    kinds: Sequence[str],
    severity: float,
    seed: int,
    anomalies: int = 6,
) -> GeneratedScore:
    """Generate `anomalies` of `kinds` at `severity` after the training prefix, detect, score the events."""
    series, labels = generate_after_prefix(
        trained, kinds=kinds, severity=severity, seed=seed, count=anomalies
    )
    frame = CsvFrame(trained.stream, series.timestamps, series.channels, series.values)
    result = run_engine(frame, trained.cut, trained.model, config)
    # As for classic injection: an alert may follow its anomaly by up to one window (it is judged on close).
    window_s = trained.model.spec.length / series.rate_hz
    spans = alert_spans(result.alerts, end_of_data=float(series.timestamps[-1]))
    score = score_events([Span(label.start, label.end) for label in labels], spans, tolerance_s=window_s)
    return GeneratedScore(score, tuple(labels))
