"""Detection quality of the default configuration on every public corpus, with published figures beside it.

    python bench/quality.py [--data ../shared/data] [--models conv,lstm,pca] [--datasets nab,ucr,skab,mitbih]
                            [--jobs 2] [--out quality.md] [--json-dir DIR] [--from-json DIR]

Runs `streamwatch evaluate` (the same code) for each dataset and model, prints a markdown table and writes it
to --out. Each corpus's headline metric is the one its benchmark defines: NAB normalised score (standard,
reward-low-FP, reward-low-FN) both with NAB's corpus-wide threshold optimisation and from streamwatch's alerts
as they fired; UCR top-1 accuracy; SKAB point-wise F1 over all rows; MIT-BIH beat-level VEB F1. Beside them,
for every corpus: event F1, point-adjusted F1, mean time to detect and false alarms per day.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streamwatch.config import DetectorConfig, StreamwatchConfig
from streamwatch.evaluate.corpus import evaluate_corpus
from streamwatch.evaluate.datasets import DATASETS, dataset_size

# Published figures, quoted in each dataset's SOURCE.md (different detectors, same protocol where stated).
REFERENCES: dict[str, list[tuple[str, str]]] = {
    "nab": [
        ("ARTime (best published)", "74.9 / 65.1 / 80.4"),
        ("Numenta HTM", "70.5 / 62.6 / 75.2"),
        ("Random Cut Forest", "51.7 / 38.4 / 59.7"),
        ("Windowed Gaussian", "39.6 / 20.9 / 47.4"),
    ],
    "ucr": [
        ("KDD Cup 2021 winner (all 250 files)", "0.836"),
        ("vanilla conv AE (all 250 files)", "0.292"),
    ],
    "skab": [("Conv-AE (leaderboard best)", "0.78"), ("LSTM-AE", "0.74"), ("T²+Q (PCA)", "0.76")],
    "mitbih": [("no unsupervised beat-level F1 published for these records", "–")],
}

MODELS = ("conv", "lstm", "pca")

HEADLINE = {
    "nab": "NAB standard / low FP / low FN",
    "ucr": "top-1 accuracy",
    "skab": "point-wise F1",
    "mitbih": "VEB F1 (beats)",
}


def headline(dataset: str, figures: dict[str, Any]) -> str:
    if dataset == "nab":
        optimised = " / ".join(f"{figures[key]:.1f}" for key in ("nab_standard", "nab_low_fp", "nab_low_fn"))
        as_fired = " / ".join(
            f"{figures[key + '_alerts']:.1f}" for key in ("nab_standard", "nab_low_fp", "nab_low_fn")
        )
        return f"{optimised} (alerts as fired: {as_fired})"
    key = {"ucr": "top1_accuracy", "skab": "f1", "mitbih": "veb_f1"}[dataset]
    return f"{figures[key]:.3f}"


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _files(figures: dict[str, Any]) -> str:
    failed = len(figures["failed_files"])
    return f"{figures['files']} ({failed} failed)" if failed else str(figures["files"])


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | model | headline metric | ours | event F1 | PA F1 | MTTD | false alarms/day | files "
        "| time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for figures in rows:
        dataset = figures["dataset"]
        lines.append(
            f"| {dataset} | {figures['model']} | {HEADLINE[dataset]} | {headline(dataset, figures)} "
            f"| {_number(figures['event_f1'])} | {_number(figures['pa_f1'])} "
            f"| {_duration(figures['mean_time_to_detect_s'])} "
            f"| {_number(figures['false_alarms_per_day'], 2)} "
            f"| {_files(figures)} "
            f"| {figures['seconds'] / 60:.1f} min |"
        )
    lines += ["", "Published figures (from each dataset's SOURCE.md):", ""]
    lines += ["| dataset | detector | figure |", "|---|---|---|"]
    for dataset in dict.fromkeys(figures["dataset"] for figures in rows):
        lines += [f"| {dataset} | {name} | {value} |" for name, value in REFERENCES[dataset]]
    return "\n".join(lines)


def _ticker(bar: tqdm[Any]) -> Callable[[str], None]:
    def tick(_name: str) -> None:
        bar.update()

    return tick


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder holding nab/ ucr/ ..."
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all three)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--jobs", type=int, default=2, help="series in parallel (default 2)")
    parser.add_argument(
        "--out", type=Path, default=Path("quality.md"), help="markdown table (default quality.md)"
    )
    parser.add_argument("--json-dir", type=Path, help="also write each evaluation's JSON here")
    parser.add_argument(
        "--from-json", type=Path, help="only print the table of evaluations saved earlier with --json-dir"
    )
    args = parser.parse_args()
    if args.from_json is not None:
        saved = [json.loads(path.read_text()) for path in sorted(args.from_json.glob("*.json"))]
        print(
            table(
                sorted(saved, key=lambda item: (MODELS.index(item["model"]), DATASETS.index(item["dataset"])))
            )
        )
        return
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        config = StreamwatchConfig(detector=DetectorConfig(model=model))
        for dataset in args.datasets.split(","):
            root = args.data / dataset
            if not root.is_dir():
                print(f"skipping {dataset}: {root} not found", file=sys.stderr)
                continue
            with tqdm(total=dataset_size(dataset, root), desc=f"{dataset}/{model}", file=sys.stderr) as bar:
                result = evaluate_corpus(
                    dataset, root, config, clock=time.monotonic, jobs=args.jobs, on_series=_ticker(bar)
                )
            figures = result.figures()
            rows.append(figures)
            if args.json_dir is not None:
                args.json_dir.mkdir(parents=True, exist_ok=True)
                (args.json_dir / f"{dataset}-{model}.json").write_text(json.dumps(figures, indent=1))
            print(f"{dataset}/{model}: {HEADLINE[dataset]} {headline(dataset, figures)}", file=sys.stderr)
    markdown = table(rows)
    args.out.write_text(markdown + "\n", encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
