"""Evaluate one configuration on a whole corpus: every series through the offline path, then the figures.

A series that cannot be run (too short to train on, say) is not left out, which would flatter the result:
it counts as a detector that said nothing, and the report names it and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamwatch.config import StreamwatchConfig
from streamwatch.evaluate.datasets import LabelledSeries, read_dataset
from streamwatch.evaluate.report import file_figures, score
from streamwatch.evaluate.run import SeriesRun, run_series

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Progress = Callable[[str], None]


@dataclass(slots=True)
class CorpusResult:
    dataset: str
    model: str
    runs: list[SeriesRun] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def figures(self, *, per_file: bool = False) -> dict[str, Any]:
        figures = {
            "dataset": self.dataset,
            "model": self.model,
            **score(self.dataset, self.runs),
            "files": len(self.runs),
            "failed_files": dict(self.failures),
            "seconds": round(self.seconds, 1),
        }
        if per_file:
            figures["per_file"] = [file_figures(self.dataset, run) for run in self.runs]
        return figures


def silent_run(series: LabelledSeries) -> SeriesRun:
    """The run of a detector that said nothing about `series`."""
    empty = np.zeros(0, dtype=np.int64)
    return SeriesRun(series, 0, empty, empty, np.zeros(0), np.zeros(0), ())


def evaluate_corpus(
    dataset: str,
    root: Path,
    config: StreamwatchConfig,
    *,
    clock: Clock,
    jobs: int = 1,
    on_series: Progress | None = None,
    retrain: bool = False,
) -> CorpusResult:
    """Run every series of `dataset` under `root` (with `retrain`, under the retraining lifecycle);
    `on_series` is told each finished series' name."""
    result = CorpusResult(dataset, config.detector.model)
    started = clock()
    for name, outcome in _runs(read_dataset(dataset, root), config, jobs, retrain):
        if isinstance(outcome, SeriesRun):
            result.runs.append(outcome)
        else:
            series, reason = outcome
            log.warning("%s: %s (scored as no detections)", name, reason)
            result.failures[name] = reason
            result.runs.append(silent_run(series))
        if on_series is not None:
            on_series(name)
    result.seconds = clock() - started
    return result


_Outcome = SeriesRun | tuple[LabelledSeries, str]


def _run_one(series: LabelledSeries, config: StreamwatchConfig, retrain: bool) -> _Outcome:
    try:
        return run_series(series, config, retrain=retrain)
    except ValueError as error:
        return series, str(error)


def _runs(
    series: Iterator[LabelledSeries], config: StreamwatchConfig, jobs: int, retrain: bool
) -> Iterator[tuple[str, _Outcome]]:
    if jobs <= 1:
        for item in series:
            yield item.name, _run_one(item, config, retrain)
        return
    # Each worker trains and scores whole series; a bounded number in flight bounds memory on large corpora.
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending = []
        for item in series:
            pending.append((item.name, pool.submit(_run_one, item, config, retrain)))
            if len(pending) >= 2 * jobs:
                name, future = pending.pop(0)
                yield name, future.result()
        for name, future in pending:
            yield name, future.result()
