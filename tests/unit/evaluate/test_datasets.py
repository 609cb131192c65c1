from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpora import write_corpus
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.evaluate.datasets import (
    DatasetError,
    UcrName,
    dataset_size,
    nab_file,
    read_dataset,
    spans_of,
)


def test_nab_windows_map_to_rows_by_position_even_with_repeated_timestamps(tmp_path: Path) -> None:
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    stamps = ["2020-01-01 00:00:00", "2020-01-01 01:00:00", "2020-01-01 01:00:00", "2020-01-01 02:00:00"]
    lines = ["timestamp,value", *(f"{stamp},{index}" for index, stamp in enumerate(stamps * 3))]
    (tmp_path / "data" / "cat" / "f.csv").write_text("\n".join(lines) + "\n")
    windows = {"cat/f.csv": [["2020-01-01 01:00:00.000000", "2020-01-01 02:00:00.000000"]]}
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (series,) = read_dataset("nab", tmp_path)
    # The repeated hour keeps both rows (never sorted, never de-duplicated): the window opens at the first
    # row with its start time and closes at the first row after that with its end time.
    assert series.anomalies == ((1, 3),)
    assert series.rows == 12 and series.train_rows == 1  # floor(0.15 * 12)
    assert nab_file(series).probation == 1


def test_read_nab(tmp_path: Path) -> None:
    series = {item.name: item for item in read_dataset("nab", write_corpus("nab", tmp_path))}
    shift = series["realTest/shift.csv"]
    assert shift.rows == 2000 and shift.train_rows == 300 and shift.interval_s == 3600.0
    # 2020-03-04 00:00 is hour 63*24 = 1512 of the year; the window ends 47 hours later.
    assert shift.anomalies == ((1512, 1559),)
    assert shift.timestamps[0] == shift.start_s and shift.timestamps[1] - shift.timestamps[0] == 3600.0
    assert series["realTest/quiet.csv"].anomalies == ()


def test_ucr_name_and_reader(tmp_path: Path) -> None:
    name = UcrName.parse("135_UCR_Anomaly_InternalBleeding16_1200_4187_4199.txt")
    assert (name.number, name.series, name.train_end, name.anomaly_start, name.anomaly_end) == (
        135,
        "InternalBleeding16",
        1200,
        4187,
        4199,
    )
    (series,) = read_dataset("ucr", write_corpus("ucr", tmp_path))
    # 1-based inclusive range 2001..2060 -> rows 2000..2059.
    assert series.anomalies == ((2000, 2059),)
    assert series.train_rows == 1000 and series.rows == 3000
    with pytest.raises(DatasetError, match="not a UCR archive name"):
        UcrName.parse("notes.txt")


def test_read_skab_keeps_point_labels_and_trains_on_400_rows(tmp_path: Path) -> None:
    root = write_corpus("skab", tmp_path)
    series = list(read_dataset("skab", root))
    assert [item.name for item in series] == ["data/other/0.csv", "data/valve1/0.csv"]
    first = series[0]
    assert first.channels == ("Current", "Voltage")
    assert first.train_rows == 400 and first.interval_s == 1.0
    assert first.anomalies == ((800, 899),)
    assert int(first.labels().sum()) == 100
    assert dataset_size("skab", root) == 2


def test_read_mitbih_beats_and_spans(tmp_path: Path) -> None:
    (record,) = read_dataset("mitbih", write_corpus("mitbih", tmp_path))
    assert record.name == "900" and record.interval_s == pytest.approx(1 / 360)
    # Five minutes of training would be the whole record: training stops at half of it.
    assert record.train_rows == 43_200
    symbols = [beat.symbol for beat in record.beats]
    assert symbols.count("V") == 6 and symbols[0] == "+"
    # Each V beat becomes a span of +-90 samples around its annotation.
    first_v = next(beat.row for beat in record.beats if beat.symbol == "V")
    assert (first_v - 90, first_v + 90) in record.anomalies


def test_wrong_directory_names_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="NAB directory"):
        list(read_dataset("nab", tmp_path))
    with pytest.raises(DatasetError, match="not a directory"):
        list(read_dataset("ucr", tmp_path / "missing"))
    with pytest.raises(DatasetError, match="unknown dataset"):
        list(read_dataset("yahoo", tmp_path))


@given(st.lists(st.booleans(), max_size=60))
def test_spans_of_round_trips_labels(labels: list[bool]) -> None:
    array = np.asarray(labels, dtype=np.bool_)
    rebuilt = np.zeros(len(labels), dtype=np.bool_)
    for first, last in spans_of(array):
        assert first <= last
        rebuilt[first : last + 1] = True
    assert (rebuilt == array).all()
