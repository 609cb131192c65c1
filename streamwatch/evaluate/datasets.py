"""Readers for the public labelled corpora, by path: NAB, the UCR anomaly archive, SKAB and MIT-BIH.

Each reader turns a file into a `LabelledSeries`: values, where training may end, and the labels in row
positions. Rows are the unit everywhere in evaluation, because the benchmarks define their labels by row
(NAB's results align with its data by position; timestamps repeat) and some corpora have no timestamps.
The engine still needs times, so each series carries an evenly spaced clock at its typical sampling
interval: windows then map back to rows exactly.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamwatch.evaluate import nab
from streamwatch.records import FloatArray

F64 = npt.NDArray[np.float64]

# The SKAB leaderboard trains every model on each experiment's first 400 rows (all normal operation).
SKAB_TRAIN_ROWS = 400
MITBIH_RATE_HZ = 360.0
# MIT-BIH is a continuous 30-minute recording: its first five minutes train (some records hold abnormal beats
# there too; an unsupervised monitor has to live with that).
MITBIH_TRAIN_S = 300.0
# AAMI beat classes (SOURCE.md): everything else in the annotation file is a rhythm, noise or artefact marker.
NORMAL_BEATS = frozenset("NLRej")
VEB_BEATS = frozenset("VE")
ABNORMAL_BEATS = frozenset("AaJSVEF/fQ")
# A beat is judged by the samples around its annotation: about 0.25 s either side at 360 Hz.
MITBIH_BEAT_HALF_WIDTH = 90
# UCR files carry no clock: a row is taken as a second. (Read as milliseconds instead, every rhythm up to 512
# rows would set the window length; on every fourth file that found one anomaly fewer, 26 against 27 of 40.)
UCR_NOMINAL_INTERVAL_S = 1.0
# KDD Cup 2021 scoring of UCR: a top-1 location within 100 points of the labelled range counts.
UCR_TOLERANCE = 100

DATASETS = ("nab", "ucr", "skab", "mitbih")


class DatasetError(ValueError):
    """A dataset directory that does not hold what its reader expects."""


@dataclass(frozen=True, slots=True)
class Beat:
    row: int
    symbol: str


@dataclass(frozen=True, slots=True, eq=False)
class LabelledSeries:
    """One labelled recording: `values` (N, C), rows `[0, train_rows)` for training, `anomalies` as inclusive
    row spans, and `timestamps` an evenly spaced clock (epoch seconds) at `interval_s`."""

    name: str
    channels: tuple[str, ...]
    values: FloatArray
    interval_s: float
    train_rows: int
    anomalies: tuple[tuple[int, int], ...]
    start_s: float = 0.0
    # Per-row anomaly labels where the corpus labels points (SKAB); otherwise derived from `anomalies`.
    point_labels: npt.NDArray[np.bool_] | None = None
    beats: tuple[Beat, ...] = field(default=())
    # False where the corpus has no sampling clock (UCR): its interval is nominal, and figures in seconds or
    # per day would mean nothing.
    clocked: bool = True

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def timestamps(self) -> F64:
        return self.start_s + np.arange(self.rows, dtype=np.float64) * self.interval_s

    def labels(self) -> npt.NDArray[np.bool_]:
        if self.point_labels is not None:
            return self.point_labels
        labels = np.zeros(self.rows, dtype=np.bool_)
        for first, last in self.anomalies:
            labels[first : last + 1] = True
        return labels


def typical_interval(timestamps: F64) -> float:
    steps = np.diff(timestamps)
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 1.0


def spans_of(labels: npt.NDArray[np.bool_]) -> tuple[tuple[int, int], ...]:
    """Runs of True as inclusive (first, last) row spans."""
    padded = np.concatenate([[False], labels, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return tuple((int(first), int(last) - 1) for first, last in zip(edges[::2], edges[1::2], strict=True))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} not found: --data must point at the {what}")
    return path


# -- NAB -----------------------------------------------------------------------------------------------------


def nab_files(root: Path) -> list[str]:
    """The corpus's files as NAB names them ("category/file.csv"), in a stable order."""
    data = _require(root / "data", "NAB directory (holding data/ and labels/)")
    return sorted(str(path.relative_to(data)) for path in data.glob("*/*.csv"))


def nab_windows(root: Path) -> dict[str, list[tuple[str, str]]]:
    path = _require(root / "labels" / "combined_windows.json", "NAB directory (holding data/ and labels/)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: [(start, end) for start, end in windows] for name, windows in raw.items()}


def parse_timestamps(texts: Sequence[str]) -> npt.NDArray[np.datetime64]:
    """NAB and SKAB timestamps, "YYYY-MM-DD hh:mm:ss[.ffffff]" (UTC), in file order."""
    return np.array([text.strip().replace(" ", "T") for text in texts], dtype="datetime64[us]")


def epoch_seconds(moments: npt.NDArray[np.datetime64]) -> F64:
    return moments.astype("datetime64[us]").astype(np.int64).astype(np.float64) / 1e6


def read_nab_file(root: Path, name: str, windows: Sequence[tuple[str, str]]) -> LabelledSeries:
    with (root / "data" / name).open(encoding="utf-8") as source:
        rows = list(csv.reader(source))
    body = [row for row in rows[1:] if row]
    moments = parse_timestamps([row[0] for row in body])
    values = np.asarray([[float(row[1])] for row in body], dtype=np.float32)
    scored = nab.prepare_file(
        name, moments, [tuple(parse_timestamps([start, end])) for start, end in windows]
    )
    timestamps = epoch_seconds(moments)
    return LabelledSeries(
        name=name,
        channels=("value",),
        values=values,
        interval_s=typical_interval(timestamps),
        train_rows=scored.probation,
        anomalies=scored.windows,
        start_s=float(timestamps[0]),
    )


def nab_file(series: LabelledSeries) -> nab.NabFile:
    """The scoring view of a NAB series: its windows in rows and its probationary period."""
    return nab.NabFile(series.name, series.rows, series.anomalies, nab.probation_rows(series.rows))


def read_nab(root: Path) -> Iterator[LabelledSeries]:
    windows = nab_windows(root)
    for name in nab_files(root):
        yield read_nab_file(root, name, windows.get(name, []))


# -- UCR anomaly archive -----------------------------------------------------------------------------------

_UCR_NAME = re.compile(r"^(\d+)_UCR_Anomaly_(.+)_(\d+)_(\d+)_(\d+)\.txt$")


@dataclass(frozen=True, slots=True)
class UcrName:
    """What a UCR file name encodes: training end and the anomaly range (1-based, inclusive)."""

    number: int
    series: str
    train_end: int
    anomaly_start: int
    anomaly_end: int

    @classmethod
    def parse(cls, file_name: str) -> UcrName:
        match = _UCR_NAME.match(file_name)
        if match is None:
            raise DatasetError(
                f"{file_name}: not a UCR archive name (NNN_UCR_Anomaly_<name>_<train>_<a>_<b>.txt)"
            )
        number, series, train, start, end = match.groups()
        return cls(int(number), series, int(train), int(start), int(end))


def ucr_files(root: Path) -> list[Path]:
    folder = root / "UCR_Anomaly_FullData"
    folder = folder if folder.is_dir() else root
    files = sorted(folder.glob("*_UCR_Anomaly_*.txt"))
    if not files:
        raise DatasetError(f"no NNN_UCR_Anomaly_*.txt files under {root}")
    return files


def read_ucr_file(path: Path) -> LabelledSeries:
    name = UcrName.parse(path.name)
    values = np.loadtxt(path, dtype=np.float64, ndmin=1).astype(np.float32).reshape(-1, 1)
    if name.anomaly_end > len(values):
        raise DatasetError(
            f"{path.name}: the anomaly ends at {name.anomaly_end}, past the {len(values)} rows"
        )
    return LabelledSeries(
        name=path.name,
        channels=("value",),
        values=values,
        interval_s=UCR_NOMINAL_INTERVAL_S,
        clocked=False,
        train_rows=name.train_end,
        anomalies=((name.anomaly_start - 1, name.anomaly_end - 1),),
    )


def read_ucr(root: Path) -> Iterator[LabelledSeries]:
    for path in ucr_files(root):
        yield read_ucr_file(path)


# -- SKAB ----------------------------------------------------------------------------------------------------

SKAB_EXPERIMENTS = ("valve1", "valve2", "other")
_SKAB_LABELS = ("anomaly", "changepoint")


def skab_files(root: Path) -> list[Path]:
    data = root / "data" if (root / "data").is_dir() else root
    files = [path for folder in SKAB_EXPERIMENTS for path in sorted((data / folder).glob("*.csv"))]
    if not files:
        raise DatasetError(f"no SKAB experiments ({', '.join(SKAB_EXPERIMENTS)}/*.csv) under {root}")
    # The leaderboard's order is irrelevant to a point-wise F1, but a stable one keeps reports comparable.
    return sorted(files, key=lambda path: (path.parent.name, int(path.stem) if path.stem.isdigit() else 0))


def read_skab_file(path: Path, root: Path) -> LabelledSeries:
    with path.open(encoding="utf-8") as source:
        rows = [row for row in csv.reader(source, delimiter=";") if row]
    header = rows[0]
    label_column = header.index("anomaly")
    channels = tuple(name for name in header[1:] if name not in _SKAB_LABELS)
    channel_columns = [header.index(name) for name in channels]
    body = rows[1:]
    timestamps = epoch_seconds(parse_timestamps([row[0] for row in body]))
    values = np.asarray([[float(row[i]) for i in channel_columns] for row in body], dtype=np.float32)
    labels = np.asarray([float(row[label_column]) > 0.5 for row in body], dtype=np.bool_)
    return LabelledSeries(
        name=str(path.relative_to(root)),
        channels=channels,
        values=values,
        interval_s=typical_interval(timestamps),
        train_rows=min(SKAB_TRAIN_ROWS, len(values) // 2),
        anomalies=spans_of(labels),
        start_s=float(timestamps[0]),
        point_labels=labels,
    )


def read_skab(root: Path) -> Iterator[LabelledSeries]:
    for path in skab_files(root):
        yield read_skab_file(path, root)


# -- MIT-BIH -------------------------------------------------------------------------------------------------


def mitbih_records(root: Path) -> list[tuple[Path, Path]]:
    folder = root / "MLII" if (root / "MLII").is_dir() else root
    pairs = []
    for values in sorted(folder.glob("*_MLII_values.txt")):
        annotations = values.with_name(values.name.replace("_MLII_values.txt", "_annotations.csv"))
        pairs.append((values, _require(annotations, "MIT-BIH directory (MLII/<rec>_annotations.csv)")))
    if not pairs:
        raise DatasetError(f"no <record>_MLII_values.txt files under {root}")
    return pairs


def read_beats(path: Path) -> tuple[Beat, ...]:
    with path.open(encoding="utf-8") as source:
        return tuple(Beat(int(row["sample"]), row["symbol"]) for row in csv.DictReader(source))


def beat_spans(beats: Sequence[Beat], rows: int, classes: frozenset[str]) -> tuple[tuple[int, int], ...]:
    """The samples around each beat of the given classes, as row spans (overlapping beats merge)."""
    labels = np.zeros(rows, dtype=np.bool_)
    for beat in beats:
        if beat.symbol in classes:
            labels[max(0, beat.row - MITBIH_BEAT_HALF_WIDTH) : beat.row + MITBIH_BEAT_HALF_WIDTH + 1] = True
    return spans_of(labels)


def read_mitbih_record(values_path: Path, annotations_path: Path) -> LabelledSeries:
    values = np.loadtxt(values_path, dtype=np.float64, ndmin=1).astype(np.float32).reshape(-1, 1)
    beats = tuple(beat for beat in read_beats(annotations_path) if beat.row < len(values))
    return LabelledSeries(
        name=values_path.name.split("_")[0],
        channels=("MLII",),
        values=values,
        interval_s=1.0 / MITBIH_RATE_HZ,
        train_rows=min(int(MITBIH_TRAIN_S * MITBIH_RATE_HZ), len(values) // 2),
        anomalies=beat_spans(beats, len(values), ABNORMAL_BEATS),
        beats=beats,
    )


def read_mitbih(root: Path) -> Iterator[LabelledSeries]:
    for values_path, annotations_path in mitbih_records(root):
        yield read_mitbih_record(values_path, annotations_path)


def read_dataset(name: str, root: Path) -> Iterator[LabelledSeries]:
    readers = {"nab": read_nab, "ucr": read_ucr, "skab": read_skab, "mitbih": read_mitbih}
    if name not in readers:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory (--data must point at the {name} dataset)")
    return readers[name](root)


def dataset_size(name: str, root: Path) -> int:
    """How many series `read_dataset` will yield (for progress reporting), without reading them."""
    counts = {
        "nab": lambda: len(nab_files(root)),
        "ucr": lambda: len(ucr_files(root)),
        "skab": lambda: len(skab_files(root)),
        "mitbih": lambda: len(mitbih_records(root)),
    }
    return counts[name]()
