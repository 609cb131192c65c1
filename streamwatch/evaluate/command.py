"""`streamwatch evaluate`: the offline path over a public labelled corpus, scored as that corpus's benchmark
scores it, plus incident-level figures. Figures go to stdout (one JSON object with --json), progress to
stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streamwatch.config import StreamwatchConfig, load_config
from streamwatch.evaluate.datasets import DATASETS, dataset_size


def add_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = verbs.add_parser(
        "evaluate",
        help="evaluate on a public labelled dataset (NAB, UCR, SKAB, MIT-BIH)",
        description=(
            "Train on each series' normal prefix as the benchmark prescribes, run the daemon's engine over "
            "the rest, and score it: NAB score (optimised threshold, and from alerts as fired), UCR top-1 "
            "accuracy, SKAB point-wise F1, MIT-BIH beat-level VEB F1, and for all of them event "
            "precision/recall/F1, point-adjusted F1, mean time to detect and false alarms per day."
        ),
    )
    evaluate.add_argument("--dataset", choices=DATASETS, required=True)
    evaluate.add_argument(
        "--data", type=Path, required=True, help="the dataset's directory (with SOURCE layout)"
    )
    evaluate.add_argument(
        "--model", choices=("conv", "lstm", "pca"), help="detector model (default: the config's, conv)"
    )
    evaluate.add_argument(
        "-c", "--config", type=Path, help="YAML config (detector, threshold, alerts sections)"
    )
    evaluate.add_argument(
        "--jobs",
        type=int,
        default=available_cpus(),
        help="series evaluated in parallel, one process each (default: the CPUs this process may use)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument(
        "--per-file", action="store_true", help="add each file's own figures (events, false alarms, headline)"
    )
    evaluate.add_argument(
        "--retrain",
        action="store_true",
        help="run each series under the retraining lifecycle, as `detect --retrain` does",
    )
    evaluate.set_defaults(handler=run)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    from streamwatch.evaluate.corpus import evaluate_corpus

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    config = StreamwatchConfig() if args.config is None else load_config(args.config)
    if args.model is not None:
        config = config.model_copy(
            update={"detector": config.detector.model_copy(update={"model": args.model})}
        )
    total = dataset_size(args.dataset, args.data)
    with tqdm(
        total=total, desc=f"{args.dataset}/{config.detector.model}", unit="file", file=sys.stderr
    ) as bar:
        result = evaluate_corpus(
            args.dataset,
            args.data,
            config,
            clock=time.monotonic,
            jobs=args.jobs,
            on_series=lambda _name: _advance(bar),
            retrain=args.retrain,
        )
    figures = result.figures(per_file=args.per_file)
    if args.json:
        print(json.dumps(_finite(figures), sort_keys=False))
    else:
        print(format_table(figures))
    return 0


def _advance(bar: tqdm[Any]) -> None:
    bar.update()


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: undefined figures become null, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def format_table(figures: dict[str, Any]) -> str:
    corpus = {key: value for key, value in figures.items() if key != "per_file"}
    width = max(len(key) for key in corpus)
    lines = [f"{key:<{width}}  {_shown(value)}" for key, value in corpus.items()]
    for item in figures.get("per_file", []):
        lines.append("  ".join(f"{key}={_shown(value)}" for key, value in item.items()))
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
