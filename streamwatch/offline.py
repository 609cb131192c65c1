"""The offline path: train on a file's normal prefix, run the daemon's engine over the rest.

`detect` is the live pipeline replayed in event time, so what it finds on a recording is what the daemon
would have alerted on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from streamwatch.codecs import CsvFrame, DecodeError, LogCountConfig, count_log_lines, read_csv
from streamwatch.config import DetectorConfig, StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel, StreamSeries, train_group
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.core.model_history import MemoryHistory, ModelHistory
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.core.retraining import Lifecycle, RetrainOutcome, run_job
from streamwatch.io.sinks import JsonlSink
from streamwatch.records import AlertEvent, FloatArray, WindowScore, iso_utc, parse_iso_utc

# A file is one stream in a group of its own.
FILE_GROUP = "file"
# Scoring in chunks bounds memory on long recordings (a day of 360 Hz ECG is 31M samples).
_CHUNK_SAMPLES = 200_000


@dataclass(frozen=True, slots=True)
class Split:
    """Where training ends: an event time, or a share of the rows."""

    until: float | None = None
    fraction: float | None = None

    def index(self, timestamps: npt.NDArray[np.float64]) -> int:
        if self.until is not None:
            return int(np.searchsorted(timestamps, self.until, side="right"))
        fraction = 0.3 if self.fraction is None else self.fraction
        return int(len(timestamps) * fraction)

    @classmethod
    def parse(cls, until: str | None, fraction: float | None) -> Split:
        if until is not None and fraction is not None:
            raise ValueError("give --train-until or --train-fraction, not both")
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise ValueError(f"--train-fraction must be between 0 and 1 (exclusive), got {fraction}")
        if until is None:
            return cls(fraction=fraction)
        try:
            return cls(until=float(until))
        except ValueError:
            return cls(until=parse_iso_utc(until))


@dataclass(slots=True)
class DetectResult:
    model: GroupModel
    alerts: list[AlertEvent]
    scores: list[WindowScore]
    train_rows: int
    scored_rows: int
    # With retraining: what the lifecycle did (versions, gate verdicts, canaries).
    lifecycle: Lifecycle | None = None
    history: MemoryHistory | None = None

    @property
    def anomaly_alerts(self) -> list[AlertEvent]:
        """Alert events about the data (without detector-health events)."""
        return [event for event in self.alerts if event.kind == "anomaly"]


def reconstructor_factory(detector: DetectorConfig) -> Callable[[int, int], Reconstructor]:
    """Build reconstructors of the configured kind; torch is imported only when a torch kind is used."""
    from streamwatch.models import build_reconstructor

    training = detector.training
    hyper: dict[str, float | int] = {}
    if detector.model != "pca":
        from streamwatch.models import configure_torch

        configure_torch(detector.torch_threads)
        hyper = {"max_epochs": training.max_epochs, "max_seconds": training.max_seconds}

    def build(length: int, channels: int) -> Reconstructor:
        return build_reconstructor(detector.model, length=length, channels=channels, **hyper)

    return build


def load_frame(
    path: Path, *, fmt: str, stream: str, log_interval_s: float = 60.0
) -> tuple[CsvFrame, list[DecodeError]]:
    """A file as one stream: CSV as is (strict: a bad cell is an error naming line and column), a log file
    turned into per-interval counts by level. Log lines that cannot be used come back as errors, for the
    dead-letter file, rather than vanishing."""
    if fmt == "csv":
        return read_csv(path, stream=stream), []
    if fmt == "log":
        with path.open(encoding="utf-8", errors="surrogateescape") as lines:
            samples, errors = count_log_lines(lines, LogCountConfig(stream=stream, interval_s=log_interval_s))
        if not samples:
            raise ValueError(f"{path}: no timestamped log lines found")
        channels = tuple(samples[0].values)
        timestamps = np.asarray([sample.ts for sample in samples], dtype=np.float64)
        values = np.asarray([[sample.values[c] for c in channels] for sample in samples], dtype=np.float32)
        return CsvFrame(stream, timestamps, channels, values), errors
    raise ValueError(f"unknown format {fmt!r}; use csv or log")


def train_on_prefix(
    frame: CsvFrame, split: Split, config: StreamwatchConfig, *, progress: bool, version: int = 1
) -> tuple[GroupModel, int]:
    cut = split.index(frame.timestamps)
    if cut < 2:
        raise ValueError("the training prefix is empty: move --train-until later or raise --train-fraction")
    series = StreamSeries(frame.channels, frame.timestamps[:cut], frame.values[:cut])
    model = train_group(
        {frame.stream: series},
        version=f"{config.detector.model}@{version}",
        shape=config.detector.window.shape(),
        plan=config.detector.training.plan(progress=progress),
        factory=reconstructor_factory(config.detector),
    )
    return model, cut


def detect(
    frame: CsvFrame,
    split: Split,
    config: StreamwatchConfig,
    *,
    progress: bool = False,
    retrain: bool = False,
) -> DetectResult:
    model, cut = train_on_prefix(frame, split, config, progress=progress)
    if retrain:
        return run_with_retraining(frame, cut, model, config)
    return run_engine(frame, cut, model, config)


def detect_with_model(
    frame: CsvFrame, split: Split, config: StreamwatchConfig, model_path: Path
) -> DetectResult:
    """Score a file with a saved model; the prefix only warms the windows up (it is not trained on)."""
    from streamwatch.models.group_store import load_group_model

    model = load_group_model(model_path)
    if model.channels != frame.channels:
        raise ValueError(
            f"{model_path} expects channels {list(model.channels)}, the file has {list(frame.channels)}"
        )
    if frame.stream not in model.profiles:
        # One file = one stream: a model trained on another file's stream is applied to this one.
        only = next(iter(model.profiles))
        model.profiles[frame.stream] = model.profiles.pop(only)
        model.initial_scores[frame.stream] = model.initial_scores.pop(only)
        model.level_references[frame.stream] = model.level_references.pop(only)
    return run_engine(frame, split.index(frame.timestamps), model, config)


def run_engine(frame: CsvFrame, cut: int, model: GroupModel, config: StreamwatchConfig) -> DetectResult:
    """The daemon's engine over rows from `cut` on, with the rows before it warming the windows up."""
    engine = _warmed_engine(frame, cut, model, config)
    result = DetectResult(model, [], [], cut, len(frame.timestamps) - cut)
    for out in _run_in_chunks(engine, frame.stream, frame.timestamps[cut:], frame.values[cut:]):
        result.alerts.extend(out.alerts)
        result.scores.extend(out.scores)
    return result


def configured_lifecycle(
    engine: Engine,
    config: StreamwatchConfig,
    history: ModelHistory,
    *,
    clock: Callable[[], float] | None = None,
    install_on_accept: bool = True,
) -> Lifecycle:
    """The retraining lifecycle the configuration describes: its policy, threshold, training plan and
    seed. `clock` stamps events with the wall clock (the daemons); None keeps event time (offline)."""
    detector = config.detector
    return Lifecycle(
        engine,
        config.retraining.policy(),
        kind=detector.model,
        threshold=config.threshold_config(),
        plan=detector.training.plan(progress=False),
        history=history,
        clock=clock,
        seed=detector.training.seed,
        install_on_accept=install_on_accept,
    )


def run_with_retraining(
    frame: CsvFrame,
    cut: int,
    model: GroupModel,
    config: StreamwatchConfig,
    *,
    on_outcome: Callable[[RetrainOutcome], None] | None = None,
) -> DetectResult:
    """`run_engine` with the daemon's retraining lifecycle, in event time: the schedule, buffer, gate,
    threshold re-fit, swap and canaries decide as they would live; a retrain runs inline, so its model goes
    live at the next step instead of after its training time. Deterministic for a given seed."""
    engine = _warmed_engine(frame, cut, model, config)
    history = MemoryHistory()
    history.adopt(FILE_GROUP, model)
    lifecycle = configured_lifecycle(engine, config, history)
    lifecycle.buffer.seed(
        frame.stream, lifecycle.shape_of(frame.stream), frame.timestamps[:cut], frame.values[:cut]
    )
    factory = reconstructor_factory(config.detector)
    result = DetectResult(model, [], [], cut, len(frame.timestamps) - cut, lifecycle, history)
    # Small steps, so that a retrain falls due (and its model goes live) close to when it would live.
    step = max(16 * model.spec.hop, 256)
    timestamps, values = frame.timestamps[cut:], frame.values[cut:]
    for begin in range(0, len(timestamps) + 1, step):
        block = (frame.stream, timestamps[begin : begin + step], values[begin : begin + step])
        out = engine.process_array(*block) if begin < len(timestamps) else engine.flush()
        result.alerts.extend(out.alerts)
        result.scores.extend(out.scores)
        result.alerts.extend(lifecycle.observe([block], out))
        for job in lifecycle.due():
            outcome = run_job(
                job,
                factory=factory,
                plan=config.detector.training.plan(progress=False),
                gate=lifecycle.policy.gate,
                threshold=config.threshold_config(),
            )
            if on_outcome is not None:
                on_outcome(outcome)  # a test's chance to look at (or break) the challenger
            lifecycle.complete(outcome)
    result.model = engine.model(FILE_GROUP) or model
    return result


def _warmed_engine(frame: CsvFrame, cut: int, model: GroupModel, config: StreamwatchConfig) -> Engine:
    """The daemon's engine, the file's stream live under `model`, windows warmed by rows before `cut`."""
    engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build())
    engine.install(FILE_GROUP, model)
    engine.warm_up(frame.stream, frame.timestamps[:cut], frame.values[:cut])
    return engine


def _run_in_chunks(
    engine: Engine, stream: str, timestamps: npt.NDArray[np.float64], values: FloatArray
) -> Iterator[EngineOutput]:
    for begin in range(0, len(timestamps), _CHUNK_SAMPLES):
        end = begin + _CHUNK_SAMPLES
        yield engine.process_array(stream, timestamps[begin:end], values[begin:end])
    yield engine.flush()


def write_alerts(path: Path, alerts: list[AlertEvent]) -> None:
    if path.exists():
        path.unlink()
    sink = JsonlSink(path)
    sink.emit(alerts, [])
    sink.close()


def write_scores(target: IO[str], scores: list[WindowScore]) -> None:
    writer = csv.writer(target)
    writer.writerow(["window_start", "window_end", "score", "threshold", "exceeds", "model_version"])
    for item in scores:
        writer.writerow(
            [
                iso_utc(item.start),
                iso_utc(item.end),
                f"{item.score:.6g}",
                f"{item.threshold:.6g}",
                int(item.exceeds),
                item.model_version,
            ]
        )
