"""Tiny corpora in each public dataset's layout, generated here (the real ones are never committed).

Shared by the evaluation tests (importable as `corpora`: tests/support is on pytest's and mypy's path)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

Writer = Callable[[Path], Path]


def _wave(rows: int, seed: int, period: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(rows) / period) + 0.05 * rng.standard_normal(rows)


def write_nab(root: Path) -> Path:
    """Two files of 2,000 hourly rows: one with a window around a level shift, one without windows."""
    (root / "data" / "realTest").mkdir(parents=True)
    (root / "labels").mkdir()
    start = np.datetime64("2020-01-01T00:00:00")
    windows: dict[str, list[list[str]]] = {}
    for index, name in enumerate(("realTest/shift.csv", "realTest/quiet.csv")):
        values = _wave(2000, index)
        if name.endswith("shift.csv"):
            values[1500:1540] += 6.0
            windows[name] = [["2020-03-04 00:00:00.000000", "2020-03-05 23:00:00.000000"]]
        else:
            windows[name] = []
        stamps = [str(start + np.timedelta64(hour, "h")).replace("T", " ") for hour in range(2000)]
        lines = [
            "timestamp,value",
            *(f"{stamp},{value:.6f}" for stamp, value in zip(stamps, values, strict=True)),
        ]
        (root / "data" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows), encoding="utf-8")
    return root


def write_ucr(root: Path) -> Path:
    """One UCR file: 3,000 rows, train on the first 1,000, a distorted stretch at rows 2001-2060 (1-based)."""
    folder = root / "UCR_Anomaly_FullData"
    folder.mkdir(parents=True)
    values = _wave(3000, 3)
    values[2000:2060] = 0.2 * np.sign(values[2000:2060])
    path = folder / "001_UCR_Anomaly_TinyWave_1000_2001_2060.txt"
    path.write_text("\n".join(repr(float(v)) for v in values) + "\n", encoding="utf-8")
    return root


def write_skab(root: Path) -> Path:
    """Two experiments of 1,200 rows at 1 Hz with two channels; anomaly rows 800-899 in each."""
    header = "datetime;Current;Voltage;anomaly;changepoint"
    for folder, seed in (("valve1", 4), ("other", 5)):
        (root / "data" / folder).mkdir(parents=True)
        current, voltage = _wave(1200, seed, period=30), _wave(1200, seed + 10, period=30)
        labels = np.zeros(1200)
        labels[800:900] = 1.0
        current[800:900] += 4.0
        start = np.datetime64("2020-03-09T10:00:00")
        rows = [
            f"{str(start + np.timedelta64(i, 's')).replace('T', ' ')};{current[i]:.5f};{voltage[i]:.5f};"
            f"{labels[i]:.1f};0.0"
            for i in range(1200)
        ]
        (root / "data" / folder / "0.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


def write_mitbih(root: Path) -> Path:
    """One record of 240 s at 360 Hz: a beat each second, every 20th beat a broad inverted (V) beat."""
    folder = root / "MLII"
    folder.mkdir(parents=True)
    rate, seconds = 360, 240
    rng = np.random.default_rng(6)
    values = 0.02 * rng.standard_normal(rate * seconds)
    annotations = ["sample,symbol", "10,+"]
    shape = np.exp(-0.5 * (np.arange(-30, 31) / 6.0) ** 2)
    broad = -np.exp(-0.5 * (np.arange(-30, 31) / 14.0) ** 2)
    for beat in range(1, seconds):
        centre = beat * rate
        ventricular = beat % 20 == 0 and beat > 100
        values[centre - 30 : centre + 31] += broad if ventricular else shape
        annotations.append(f"{centre},{'V' if ventricular else 'N'}")
    (folder / "900_MLII_values.txt").write_text(
        "\n".join(f"{v:.4f}" for v in values) + "\n", encoding="utf-8"
    )
    (folder / "900_annotations.csv").write_text("\n".join(annotations) + "\n", encoding="utf-8")
    return root


WRITERS: dict[str, Writer] = {"nab": write_nab, "ucr": write_ucr, "skab": write_skab, "mitbih": write_mitbih}


def write_corpus(name: str, parent: Path) -> Path:
    """A tiny corpus of `name` in its public layout under `parent / name`."""
    return WRITERS[name](parent / name)
