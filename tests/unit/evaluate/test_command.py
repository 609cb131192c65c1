"""`streamwatch evaluate` end to end on tiny generated corpora (PCA model: seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpora import write_corpus

from streamwatch.cli import main

HEADLINES = {"nab": "nab_standard", "ucr": "top1_accuracy", "skab": "f1", "mitbih": "veb_f1"}
COMMON = (
    "event_precision",
    "event_recall",
    "event_f1",
    "pa_f1",
    "mean_time_to_detect_s",
    "false_alarms_per_day",
    "files",
    "seconds",
)


@pytest.mark.parametrize("dataset", ["nab", "ucr", "skab", "mitbih"])
def test_evaluate_prints_one_json_object_with_the_corpus_metrics(
    dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_corpus(dataset, tmp_path)
    assert (
        main(
            ["evaluate", "--dataset", dataset, "--data", str(root), "--model", "pca", "--json", "--jobs", "1"]
        )
        == 0
    )
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert figures["dataset"] == dataset and figures["model"] == "pca"
    for key in (HEADLINES[dataset], *COMMON):
        assert key in figures
    assert figures["failed_files"] == {}
    # The tiny corpora hold anomalies any working detector finds.
    assert figures["event_recall"] > 0.0
    assert "100%" in captured.err  # the progress bar went to stderr


def test_each_headline_is_earned_on_clear_anomalies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for dataset, floor in (("ucr", 1.0), ("skab", 0.5)):
        main(
            [
                "evaluate",
                "--dataset",
                dataset,
                "--data",
                str(write_corpus(dataset, tmp_path)),
                "--model",
                "pca",
                "--json",
            ]
        )
        figures = json.loads(capsys.readouterr().out)
        assert figures[HEADLINES[dataset]] >= floor, figures


def test_a_file_too_short_to_train_counts_as_silent_not_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "UCR_Anomaly_FullData"
    folder.mkdir()
    (folder / "001_UCR_Anomaly_Short_20_30_35.txt").write_text("\n".join(["1.0", "2.0"] * 25) + "\n")
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "ucr",
                "--data",
                str(tmp_path),
                "--model",
                "pca",
                "--json",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["files"] == 1 and figures["top1_accuracy"] == 0.0
    assert "001_UCR_Anomaly_Short_20_30_35.txt" in figures["failed_files"]


def test_wrong_data_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", "skab", "--data", str(tmp_path)]) == 1
    assert "no SKAB experiments" in capsys.readouterr().err


def test_parallel_evaluation_gives_the_same_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_corpus("skab", tmp_path)
    figures = []
    for jobs in ("1", "2"):
        main(
            ["evaluate", "--dataset", "skab", "--data", str(root), "--model", "pca", "--json", "--jobs", jobs]
        )
        figures.append({k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "seconds"})
    assert figures[0] == figures[1]


@pytest.mark.parametrize(("dataset", "key"), [("nab", "nab_standard_raw_as_fired"), ("ucr", "top1_hit")])
def test_per_file_figures_name_each_file(
    dataset: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_corpus(dataset, tmp_path)
    main(["evaluate", "--dataset", dataset, "--data", str(root), "--model", "pca", "--json", "--per-file"])
    figures = json.loads(capsys.readouterr().out)
    assert len(figures["per_file"]) == figures["files"]
    for item in figures["per_file"]:
        assert {"file", "labelled_events", "found", "alerts", "false_alarms", key} <= set(item)
    assert sum(item["found"] for item in figures["per_file"]) == round(
        figures["event_recall"] * figures["labelled_events"]
    )
    main(["evaluate", "--dataset", dataset, "--data", str(root), "--model", "pca", "--per-file"])
    assert "file=" in capsys.readouterr().out  # one line per file in the table too
