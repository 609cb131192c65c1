from __future__ import annotations

import itertools
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch import codecs
from streamwatch.codecs import (
    MAX_EVENT_CHARS,
    CsvFrame,
    DecodeError,
    LogCountConfig,
    LogCounter,
    count_log_lines,
    decode_csv_line,
    decode_json,
    decode_line_protocol,
    epoch_seconds,
    read_csv,
)
from streamwatch.records import Sample, parse_iso_utc

T0 = parse_iso_utc("2026-03-02T02:34:40Z")  # 1772418880.0


def _decode_error(excinfo: pytest.ExceptionInfo[DecodeError]) -> DecodeError:
    return excinfo.value


# ---------------------------------------------------------------------------------------------------------
# DecodeError
# ---------------------------------------------------------------------------------------------------------


def test_decode_error_is_value_error_str_is_reason_and_pickles() -> None:
    error = DecodeError("channel 'v' is not finite", b"raw bytes", line=3)
    assert isinstance(error, ValueError)
    assert str(error) == "channel 'v' is not finite"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.raw, copy.line) == (error.reason, error.raw, error.line)


# ---------------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------------


def test_json_values_form_with_iso_time() -> None:
    [sample] = decode_json(b'{"stream": "pmu-1", "ts": "2026-03-02T02:34:40Z", "values": {"v": 1.5, "i": 2}}')
    assert sample == Sample("pmu-1", T0, {"v": 1.5, "i": 2.0})


def test_json_flat_form_ignores_metadata_and_keeps_channel_order() -> None:
    raw = b'{"stream": "pmu-1", "time": 1772418880, "b": 2, "unit": "kV", "a": 1.25, "meta": {"x": 1}}'
    [sample] = decode_json(raw)
    assert sample.ts == T0
    assert list(sample.values.items()) == [("b", 2.0), ("a", 1.25)]


def test_json_array_and_default_stream() -> None:
    raw = b'[{"timestamp": "2026-03-02T02:34:40", "v": 1}, {"stream": "other", "ts": 1772418881, "v": 2}]'
    samples = decode_json(raw, default_stream="fallback")
    assert [(s.stream, s.ts) for s in samples] == [("fallback", T0), ("other", T0 + 1)]
    assert decode_json(b"[]") == []


def test_json_iso_offset_and_naive_time() -> None:
    [aware] = decode_json(b'{"stream": "s", "ts": "2026-03-02T03:34:40.5+01:00", "v": 1}')
    [naive] = decode_json(b'{"stream": "s", "ts": "2026-03-02T02:34:40.5", "v": 1}')
    assert aware.ts == naive.ts == T0 + 0.5


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (1772418880, 1772418880.0),  # seconds
        (1772418880.25, 1772418880.25),
        (100_000_000_000, 100_000_000_000.0),  # exactly 1e11 is still seconds
        (1772418880123, 1772418880.123),  # milliseconds
        (1772418880123456, 1772418880.123456),  # microseconds
        (1772418880123456789, 1772418880123456789 / 10**9),  # nanoseconds, exact int division
        (0, 0.0),
    ],
)
def test_json_epoch_unit_rule(epoch: float, expected: float) -> None:
    raw = json.dumps({"stream": "s", "ts": epoch, "v": 1}).encode()
    [sample] = decode_json(raw)
    assert sample.ts == expected
    assert epoch_seconds(epoch) == expected


def test_epoch_unit_boundaries() -> None:
    assert epoch_seconds(1e11) == 1e11
    assert epoch_seconds(1e11 + 1) == (1e11 + 1) / 1e3
    assert epoch_seconds(1e14) == 1e14 / 1e3
    assert epoch_seconds(1e14 + 1) == (1e14 + 1) / 1e6
    assert epoch_seconds(1e17) == 1e17 / 1e6
    assert epoch_seconds(2e17) == 2e17 / 1e9


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"stream": "s", "ts": 1, "values": {"v": 1e999}}', "invalid JSON"),
        (b"{not json", "invalid JSON"),
        (b'"just a string"', "expected a sample object or an array of them, got string"),
        (b'[{"stream": "s", "ts": 1, "v": 1}, 3]', "item 1: expected a sample object, got number"),
        (b'{"ts": 1, "v": 1}', "missing stream (and no default stream configured)"),
        (b'{"stream": 7, "ts": 1, "v": 1}', "stream must be a non-empty string, got number"),
        (b'{"stream": "s", "v": 1}', "missing time (one of ts, time, timestamp)"),
        (b'{"stream": "s", "ts": 1, "time": 1, "v": 1}', "ambiguous time: ts and time are all given"),
        (b'{"stream": "s", "ts": "yesterday", "v": 1}', "bad time in 'ts': 'yesterday' is not ISO-8601"),
        (b'{"stream": "s", "ts": true, "v": 1}', "bad time in 'ts': expected an ISO-8601 string or epoch"),
        (b'{"stream": "s", "ts": [1], "v": 1}', "got array"),
        (b'{"stream": "s", "ts": 1}', "no channels: give a 'values' object or numeric keys"),
        (b'{"stream": "s", "ts": 1, "values": {}}', "no channels"),
        (b'{"stream": "s", "ts": 1, "values": [1, 2]}', "'values' must be an object of channel -> number"),
        (b'{"stream": "s", "ts": 1, "values": {"v": true}}', "channel 'v' is a boolean, not a number"),
        (b'{"stream": "s", "ts": 1, "ok": false}', "channel 'ok' is a boolean, not a number"),
        (b'{"stream": "s", "ts": 1, "values": {"v": "NaN"}}', "channel 'v' is not finite"),
        (b'{"stream": "s", "ts": 1, "v": "-Infinity"}', "channel 'v' is not finite"),
        (b'{"stream": "s", "ts": 1, "v": "1.5"}', "channel 'v' is a string, not a number"),
        (b'{"stream": "s", "ts": 1, "values": {"v": "high"}}', "channel 'v' is a string, not a number"),
        (b'{"stream": "s", "ts": 1, "values": {"v": null}}', "channel 'v' is null"),
        (b'{"stream": "s", "ts": 1, "values": {"v": [1]}}', "channel 'v' is not a number (got array)"),
    ],
)
def test_json_errors_name_the_reason_and_keep_raw(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_json(raw)
    error = _decode_error(excinfo)
    assert reason in error.reason
    assert error.raw == raw
    assert error.line is None


def test_json_error_inside_array_names_item() -> None:
    raw = b'[{"stream": "s", "ts": 1, "v": 1}, {"stream": "s", "ts": 1, "v": "nan"}]'
    with pytest.raises(DecodeError, match=r"^item 1: channel 'v' is not finite$"):
        decode_json(raw)


# ---------------------------------------------------------------------------------------------------------
# Line protocol
# ---------------------------------------------------------------------------------------------------------


def test_line_protocol_basic_sorted_tags_and_types() -> None:
    raw = (
        b"# a comment\n"
        b"\n"
        b'cpu,region=eu,host=a usage=0.5,count=3i,big=18446744073709551615u,up=t,down=FALSE,name="x" '
        b"1772418880000000000\n"
        b"  mem free=1e3,neg=-2.5E-1 1772418881000000000\r\n"
    )
    first, second = decode_line_protocol(raw)
    assert first.stream == "cpu,host=a,region=eu"
    assert first.ts == T0
    assert dict(first.values) == {
        "usage": 0.5,
        "count": 3.0,
        "big": float(2**64 - 1),
        "up": 1.0,
        "down": 0.0,
    }
    assert second == Sample("mem", T0 + 1, {"free": 1000.0, "neg": -0.25})


@pytest.mark.parametrize(
    ("line", "stream", "values"),
    [
        (rb"my\ measure\,x,t\ ag=v\,1 f=1 1", "my measure,x,t ag=v,1", {"f": 1.0}),
        (rb"m,k\=ey=v\=al f\,x\ y\=z=2 1", "m,k=ey=v=al", {"f,x y=z": 2.0}),
        (rb"m\=x f=1 1", "m=x", {"f": 1.0}),
        (rb"m,path=C:\dir f=1 1", r"m,path=C:\dir", {"f": 1.0}),  # lone backslash stays literal
        (rb"m,k=a\\b f=1 1", r"m,k=a\b", {"f": 1.0}),  # double backslash is one
        (rb'm s="a \"quoted\" str, with=stuff",f=1 1', "m", {"f": 1.0}),
        (rb'm f=1,s="ends in backslash\\" 1', "m", {"f": 1.0}),
        (b'm s="has spaces and , commas",g=2i 1', "m", {"g": 2.0}),
        (b"m,a=1=2 f=1 1", "m,a=1=2", {"f": 1.0}),  # '=' inside a tag value needs no escape
    ],
)
def test_line_protocol_escaping(line: bytes, stream: str, values: dict[str, float]) -> None:
    [sample] = decode_line_protocol(line, precision="s")
    assert sample.stream == stream
    assert dict(sample.values) == values


@pytest.mark.parametrize(
    "line",
    [
        b"cpu,host=a,region=eu usage=0.5,count=3i 1772418880000000000",
        b"cpu,host=a usage=1,b=t 1",
        b"cpu,host=a usage=abc 1",
        b"cpu,host usage=1 1",
        b"cpu, usage=1 1",
        b"cpu usage=1,,b=2 1",
        b"cpu,host=a,host=b usage=1 1",
    ],
)
def test_line_protocol_fast_and_escaped_paths_agree(line: bytes) -> None:
    text = line.decode()
    fast = codecs._tokenize_line(text)
    slow = codecs._tokenize_escaped(text)
    assert fast == slow


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("ns", T0 + 0.123456789), ("us", T0 + 0.123456), ("ms", T0 + 0.123), ("s", T0)],
)
def test_line_protocol_precision(precision: str, expected: float) -> None:
    stamps = {"ns": 1772418880123456789, "us": 1772418880123456, "ms": 1772418880123, "s": 1772418880}
    raw = f"m f=1 {stamps[precision]}".encode()
    [sample] = decode_line_protocol(raw, precision=precision)  # type: ignore[arg-type]
    assert sample.ts == pytest.approx(expected, abs=1e-9)
    assert sample.ts == stamps[precision] / {"ns": 10**9, "us": 10**6, "ms": 10**3, "s": 1}[precision]


def test_line_protocol_unknown_precision_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        decode_line_protocol(b"m f=1 1", precision="h")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"cpu usage=1", "no timestamp: streamwatch uses event time"),
        (b'cpu name="only strings" 1', "no numeric field (string fields are ignored)"),
        (b"cpu 1", "field '1' has no value"),
        (b"cpu", "no fields"),
        (b",host=a f=1 1", "missing measurement"),
        (b"cpu,host f=1 1", "tag 'host' has no value"),
        (b"cpu,host= f=1 1", "tag 'host' has no value"),
        (b"cpu,=a f=1 1", "empty tag key"),
        (b"cpu,h=a,h=b f=1 1", "duplicate tag 'h'"),
        (b"cpu =1 1", "empty field key"),
        (b"cpu f= 1", "field 'f' has no value"),
        (b"cpu f=1,f=2 1", "duplicate field 'f'"),
        (b"cpu f=abc 1", "field 'f' has an invalid value 'abc'"),
        (b"cpu f=tRue 1", "field 'f' has an invalid value 'tRue'"),
        (b"cpu f=1e999 1", "field 'f' is not finite"),
        (b"cpu f=9223372036854775808i 1", "field 'f' is out of range for int64"),
        (b"cpu f=18446744073709551616u 1", "field 'f' is out of range for uint64"),
        (b"cpu f=-1u 1", "field 'f' has an invalid value '-1u'"),
        (b"cpu f=1 12.5", "bad timestamp '12.5': expected an integer"),
        (b"cpu f=1 1 extra", "bad timestamp '1 extra': expected an integer"),
        (b'cpu s="open,f=1 1', "unterminated string in field 's'"),
        (b"cpu f=\xff 1", "not valid UTF-8"),
    ],
)
def test_line_protocol_errors(line: bytes, reason: str) -> None:
    raw = b"ok f=1 1\n# comment\n" + line + b"\r\nok f=2 2\n"
    with pytest.raises(DecodeError) as excinfo:
        decode_line_protocol(raw)
    error = _decode_error(excinfo)
    assert error.reason == f"line 3: {reason}"
    assert error.line == 3
    assert error.raw == line


# ---------------------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------------------


def _iso_ms(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_csv_fast_path_100k_rows_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    rows = 100_000
    values = rng.normal(scale=100.0, size=(rows, 3)).astype(np.float32)
    millis = 1772418880000 + np.cumsum(rng.integers(1, 2000, size=rows))
    timestamps = [_iso_ms(int(ms) / 1000) for ms in millis.tolist()]
    lines = ["timestamp,v,i,f"] + [
        f"{ts},{a!r},{b!r},{c!r}" for ts, (a, b, c) in zip(timestamps, values.tolist(), strict=True)
    ]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")

    def no_per_line_fallback(*args: object) -> None:
        raise AssertionError("a clean ISO file must not need the per-line parser")

    monkeypatch.setattr(codecs, "_csv_slow", no_per_line_fallback)
    frame = read_csv(path, stream="pmu-1")

    assert frame.channels == ("v", "i", "f")
    assert frame.timestamps.dtype == np.float64
    assert frame.timestamps.shape == (rows,)
    assert frame.values.dtype == np.float32
    assert frame.values.shape == (rows, 3)
    np.testing.assert_array_equal(frame.values, values)
    assert frame.timestamps.tolist() == [int(ms) / 1000 for ms in millis.tolist()]
    # The vectorised ISO path matches the reference parser on every row it could get wrong.
    for index in (0, 1, rows // 2, rows - 1):
        assert frame.timestamps[index] == parse_iso_utc(timestamps[index])


def test_csv_epoch_millis_and_space_separated_iso_forms() -> None:
    epoch = read_csv(["ts,a", "1772418880123,1", "1772418881,2"], stream="s")
    assert epoch.timestamps.tolist() == [1772418880.123, 1772418881.0]
    spaced = read_csv(["time,a", "2026-03-02 02:34:40,1", "2026-03-02 02:34:41.5,2"], stream="s")
    assert spaced.timestamps.tolist() == [T0, T0 + 1.5]
    offset = read_csv(
        ["Timestamp,a", "2026-03-02T03:34:40+01:00,1", "2026-03-01T21:34:41-0500,2"], stream="s"
    )
    assert offset.timestamps.tolist() == [T0, T0 + 1]


def test_csv_mixed_time_forms_fall_back_to_per_line_parser() -> None:
    lines = [
        "\ufefftimestamp, a ,b",
        "2026-03-02T02:34:40Z,1,2",
        "",
        "1772418881000,3,4",
        " 2026-03-02T02:34:42 ,5,6",
    ]
    frame = read_csv(lines, stream="s")
    assert frame.channels == ("a", "b")
    assert frame.timestamps.tolist() == [T0, T0 + 1, T0 + 2]
    assert frame.values.tolist() == [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize(
    "lines",
    [
        ["timestamp,a,b", "2026-03-02T02:34:40.250Z,1.5,-2", "2026-03-02T02:34:41.750Z,3e2,.5"],
        ["timestamp,a,b", "1772418880.25,1.5,-2", "1772418881.75,3e2,.5"],
    ],
)
def test_csv_fast_and_per_line_parsers_agree(lines: list[str]) -> None:
    frame = read_csv(lines, stream="s")
    slow_ts, slow_values = codecs._csv_slow(lines[1:], ("a", "b"), range(2, 2 + len(lines) - 1))
    assert frame.timestamps.tolist() == slow_ts.tolist()
    np.testing.assert_array_equal(frame.values, slow_values)


def test_csv_samples_iterates_rows() -> None:
    frame = read_csv(["ts,a,b", "1772418880,1,2", "1772418881,3,4"], stream="s")
    assert len(frame) == 2
    assert list(frame.samples()) == [
        Sample("s", T0, {"a": 1.0, "b": 2.0}),
        Sample("s", T0 + 1, {"a": 3.0, "b": 4.0}),
    ]


def test_csv_header_only_gives_empty_frame() -> None:
    frame = read_csv(["timestamp,a,b", ""], stream="s")
    assert frame.timestamps.shape == (0,)
    assert frame.values.shape == (0, 2)
    assert list(frame.samples()) == []


def test_csv_frame_is_read_only() -> None:
    frame = read_csv(["ts,a", "1,2"], stream="s")
    with pytest.raises(ValueError, match="read-only"):
        frame.values[0, 0] = 5.0
    with pytest.raises(ValueError, match="float32"):
        # Deliberately the wrong dtype: the runtime check is what is under test.
        CsvFrame("s", np.zeros(2), ("a",), np.zeros((2, 1)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("2026-03-02T02:34:41Z,,2", "line 3, column 2 ('a'): empty cell"),
        ("2026-03-02T02:34:41Z,1,abc", "line 3, column 3 ('b'): not a number: 'abc'"),
        ("2026-03-02T02:34:41Z,1,nan", "line 3, column 3 ('b'): not finite"),
        ("2026-03-02T02:34:41Z,1,1e39", "line 3, column 3 ('b'): out of float32 range"),
        ("2026-03-02T02:34:41Z,1_000,2", "line 3, column 2 ('a'): not a number: '1_000'"),
        ("2026-03-02T02:34:41Z,1", "line 3: expected 3 columns, got 2"),
        ("2026-03-02T02:34:41Z,1,2,3", "line 3: expected 3 columns, got 4"),
        (",1,2", "line 3, column 1 (timestamp): empty cell"),
        ("now,1,2", "line 3, column 1 (timestamp): 'now' is neither ISO-8601 nor an epoch number"),
        ("2026-02-30T00:00:00Z,1,2", "line 3, column 1 (timestamp): '2026-02-30T00:00:00Z' is neither"),
    ],
)
def test_csv_errors_name_line_and_column(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"timestamp,a,b\n2026-03-02T02:34:40Z,1,2\n{bad_line}\n2026-03-02T02:34:42Z,1,2\n")
    with pytest.raises(DecodeError) as excinfo:
        read_csv(path, stream="s")
    error = _decode_error(excinfo)
    assert error.reason.startswith(reason)
    assert error.line == 3
    assert error.raw == bad_line.encode()


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["ts,a,b", "1,1,2", "2,1,2,3", "3,1,2"], "line 3: expected 3 columns, got 4"),
        (["ts,a,b", "1,1,2", "2,1", "3,1,2"], "line 3: expected 3 columns, got 2"),
        (["ts,a,b", "2,1,2,3", "3,1,2"], "line 2: expected 3 columns, got 4"),
        # One line too long and one too short: the total comma count alone would not notice.
        (
            ["ts,a,b", "2026-03-02T02:34:40Z,1,2,3", "2026-03-02T02:34:41Z,1"],
            "line 2: expected 3 columns, got 4",
        ),
        (
            ["ts,a,b", "2026-03-02T02:34:40Z,1", "2026-03-02T02:34:41Z,1,2,3"],
            "line 2: expected 3 columns, got 2",
        ),
    ],
)
def test_csv_column_count_errors_in_both_fast_modes(lines: list[str], reason: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        read_csv(lines, stream="s")
    assert _decode_error(excinfo).reason == reason


def test_csv_error_line_numbers_count_skipped_blank_lines() -> None:
    with pytest.raises(DecodeError) as excinfo:
        read_csv(["", "ts,a", "1,1", "", "", "2,x"], stream="s")
    assert _decode_error(excinfo).reason == "line 6, column 2 ('a'): not a number: 'x'"


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "empty CSV: no header"),
        (["date,a", "1,2"], "line 1: header must start with timestamp, time, ts; got 'date'"),
        (["timestamp", "1"], "line 1: header names no channels"),
        (["timestamp,a,,b"], "line 1: column 3 has an empty name"),
        (["timestamp,a,b,a"], "line 1: duplicate channel 'a'"),
    ],
)
def test_csv_header_errors(lines: list[str], reason: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        read_csv(lines, stream="s")
    assert _decode_error(excinfo).reason == reason


def test_csv_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"ts,a\n1,2\n2,\xe9\n")
    with pytest.raises(DecodeError) as excinfo:
        read_csv(path, stream="s")
    error = _decode_error(excinfo)
    assert (error.reason, error.line, error.raw) == ("line 3: not valid UTF-8", 3, b"2,\xe9")


def test_decode_csv_line_streaming() -> None:
    sample = decode_csv_line("2026-03-02T02:34:40Z,1.5,2\r\n", ("a", "b"), stream="s")
    assert sample == Sample("s", T0, {"a": 1.5, "b": 2.0})
    with pytest.raises(DecodeError) as excinfo:
        decode_csv_line("1772418880,1.5,", ("a", "b"), stream="s")
    error = _decode_error(excinfo)
    assert (error.reason, error.raw, error.line) == ("column 3 ('b'): empty cell", b"1772418880,1.5,", None)


# ---------------------------------------------------------------------------------------------------------
# Log counting
# ---------------------------------------------------------------------------------------------------------

CHANNELS = ("debug", "info", "warn", "error", "critical", "total")


def _counts(sample: Sample) -> dict[str, int]:
    return {name: int(value) for name, value in sample.values.items()}


def _zeros(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in CHANNELS}


@pytest.mark.parametrize(
    "line",
    [
        "2026-03-02T02:34:40Z ERROR boom",
        "2026-03-02T03:34:40.123+01:00 ERROR boom",
        "2026-03-02T03:34:40.123+0100 ERROR boom",
        "2026-03-02T03:34:40+01 ERROR boom",
        "2026-03-01T21:34:40-05:00 ERROR boom",
        "2026-03-02 02:34:40,123 - app.module - ERROR - boom",
        "2026-03-02 02:34:40 ERROR boom",
        "[2026-03-02 02:34:40,123] [main] ERROR boom",
        "Mar  2 02:34:40 host app[123]: ERROR boom",
        "[Mar 2 02:34:40] ERROR boom",
    ],
)
def test_log_timestamp_forms(line: str) -> None:
    counter = LogCounter(LogCountConfig(stream="app", interval_s=60.0, year=2026))
    assert counter.feed(line) == []
    [sample] = counter.flush()
    assert sample.stream == "app"
    assert sample.ts == T0 - 40.0  # aligned interval start 02:34:00
    assert _counts(sample) == _zeros(error=1, total=1)


@pytest.mark.parametrize(
    ("rest", "channel"),
    [
        ("[ERROR] x", "error"),
        ("ERROR: x", "error"),
        ("level=error msg=x", "error"),
        ('severity="warning" x', "warn"),
        ("<error> x", "error"),
        ("err x", "error"),
        ("a b c d e WARN", "warn"),  # sixth field still searched
        ("TRACE x", "debug"),
        ("debug x", "debug"),
        ("Notice: x", "info"),
        ("INFO x", "info"),
        ("Warning x", "warn"),
        ("FATAL x", "critical"),
        ("crit x", "critical"),
        ("ALERT x", "critical"),
        ("emerg x", "critical"),
        ("CRITICAL x", "critical"),
    ],
)
def test_log_level_detection(rest: str, channel: str) -> None:
    samples, errors = count_log_lines([f"2026-03-02T02:34:40Z {rest}"], LogCountConfig(stream="app"))
    assert errors == []
    assert _counts(samples[0]) == _zeros(**{channel: 1, "total": 1})


@pytest.mark.parametrize(
    "rest",
    ["a b c d e f ERROR", "status=error x", "nothing to see", "ERRORS x", ""],
)
def test_log_line_without_level_counts_only_in_total(rest: str) -> None:
    samples, _ = count_log_lines([f"2026-03-02T02:34:40Z {rest}"], LogCountConfig(stream="app"))
    assert _counts(samples[0]) == _zeros(total=1)


def test_log_continuations_and_patterns_count_once_per_event() -> None:
    config = LogCountConfig(stream="app", patterns={"timeout": r"TimeoutError", "db": r"db\.query"})
    lines = [
        "2026-03-02T02:34:40Z ERROR request failed",
        "Traceback (most recent call last):",
        '  File "db.query.py", line 1',
        "TimeoutError: took too long",
        "TimeoutError: again in the chained exception",
        "2026-03-02T02:34:41Z INFO TimeoutError mentioned on the first line",
        "2026-03-02T02:34:42Z INFO unrelated",
    ]
    samples, errors = count_log_lines(lines, config)
    assert errors == []
    [sample] = samples
    assert list(sample.values) == [*CHANNELS, "timeout", "db"]
    assert _counts(sample) == {**_zeros(error=1, info=2, total=3), "timeout": 2, "db": 1}


def test_log_pattern_spanning_lines_matches_whole_event_text() -> None:
    config = LogCountConfig(stream="app", patterns={"chain": r"first\nsecond"})
    samples, _ = count_log_lines(["2026-03-02T02:34:40Z ERROR first", "second"], config)
    assert samples[0].values["chain"] == 1.0


def test_log_event_held_until_next_timestamped_line() -> None:
    config = LogCountConfig(stream="app", interval_s=60.0, patterns={"oom": "OutOfMemory"})
    counter = LogCounter(config)
    assert counter.feed("2026-03-02T02:34:59Z ERROR crash") == []
    assert counter.feed("    java.lang.OutOfMemoryError") == []  # continuation after interval-end time
    [closed] = counter.feed("2026-03-02T02:35:01Z INFO recovered")
    assert closed.ts == T0 - 40.0
    assert closed.values["oom"] == 1.0
    assert closed.values["error"] == 1.0


def test_log_zero_filled_gaps_and_aligned_times() -> None:
    config = LogCountConfig(stream="app", interval_s=60.0)
    counter = LogCounter(config)
    counter.feed("2026-03-02T02:34:40Z INFO a")
    samples = counter.feed("2026-03-02T02:38:05Z WARN b")
    start = T0 - 40.0
    assert [s.ts for s in samples] == [start, start + 60, start + 120, start + 180]
    assert _counts(samples[0]) == _zeros(info=1, total=1)
    assert all(_counts(s) == _zeros() for s in samples[1:])
    [last] = counter.flush()
    assert last.ts == start + 240
    assert _counts(last) == _zeros(warn=1, total=1)
    assert counter.flush() == []


def test_log_late_line_is_rejected_without_changing_state() -> None:
    counter = LogCounter(LogCountConfig(stream="app", interval_s=60.0))
    counter.feed("2026-03-02T02:34:40Z INFO a")
    counter.feed("2026-03-02T02:35:10Z INFO b")
    before = counter.snapshot()
    with pytest.raises(DecodeError) as excinfo:
        counter.feed("2026-03-02T02:34:50Z ERROR late")
    error = _decode_error(excinfo)
    assert error.reason == (
        "late line: 2026-03-02T02:34:50.000Z is before 2026-03-02T02:35:00.000Z; "
        "earlier intervals were already emitted"
    )
    assert error.raw == b"2026-03-02T02:34:50Z ERROR late"
    assert counter.snapshot() == before
    # Within the open interval, order does not matter.
    assert counter.feed("2026-03-02T02:35:01Z ERROR early but fine") == []
    [sample] = counter.flush()
    assert _counts(sample) == _zeros(info=1, error=1, total=2)


def test_log_line_in_an_already_flushed_interval_is_late_and_later_lines_zero_fill() -> None:
    counter = LogCounter(LogCountConfig(stream="app", interval_s=60.0))
    counter.feed("2026-03-02T02:34:40Z INFO a")
    counter.flush()
    with pytest.raises(DecodeError, match="late line"):
        counter.feed("2026-03-02T02:34:50Z INFO b")
    assert [s.ts for s in counter.feed("2026-03-02T02:36:00Z INFO c")] == [T0 - 40.0 + 60]


def test_log_syslog_year_from_last_iso_timestamp_or_error() -> None:
    config = LogCountConfig(stream="app", interval_s=3600.0)
    samples, errors = count_log_lines(
        ["Mar  2 02:34:40 h app: ERROR x", "2026-03-02T02:00:00Z INFO y", "Mar  2 02:34:40 h app: ERROR z"],
        config,
    )
    assert len(errors) == 1
    assert errors[0].line == 1
    assert errors[0].reason == (
        "line 1: syslog timestamp has no year: set LogCountConfig.year "
        "(no ISO timestamp seen yet to take it from)"
    )
    assert errors[0].raw == b"Mar  2 02:34:40 h app: ERROR x"
    assert [(_counts(s)["error"], _counts(s)["total"]) for s in samples] == [(1, 2)]


def test_log_orphan_continuation_and_bad_dates_are_errors() -> None:
    samples, errors = count_log_lines(
        ["  at the start", "2026-02-30T00:00:00Z INFO x", "2026-03-02T25:00:00Z INFO x", "", "   "],
        LogCountConfig(stream="app"),
    )
    assert samples == []
    assert [e.reason for e in errors] == [
        "line 1: continuation line without a preceding timestamped line",
        "line 2: bad timestamp: 2026-02-30 is not a date",
        "line 3: bad timestamp '2026-03-02T25:00:00Z': impossible time of day",
    ]


def test_log_text_glued_to_timestamp_is_not_a_timestamp() -> None:
    samples, errors = count_log_lines(
        ["2026-03-02T02:34:40Z INFO a", "2026-03-02T02:34:40.123abc continuation"],
        LogCountConfig(stream="app", patterns={"abc": "abc"}),
    )
    assert errors == []
    assert _counts(samples[0]) == {**_zeros(info=1, total=1), "abc": 1}


def test_log_event_text_is_capped() -> None:
    counter = LogCounter(LogCountConfig(stream="app", patterns={"tail": "TAIL"}))
    counter.feed("2026-03-02T02:34:40Z INFO start")
    counter.feed("x" * MAX_EVENT_CHARS)
    counter.feed("TAIL")
    assert len(counter.snapshot()["event"]["text"]) <= MAX_EVENT_CHARS + 1
    [sample] = counter.flush()
    assert sample.values["tail"] == 0.0


def test_log_config_validation() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LogCountConfig(stream="s", interval_s=0.0)
    with pytest.raises(ValueError, match="clashes"):
        LogCountConfig(stream="s", patterns={"total": "x"})
    with pytest.raises(ValueError, match="not a valid regex"):
        LogCountConfig(stream="s", patterns={"p": "("})


SNAPSHOT_LOG = [
    "2026-03-02T02:34:40Z INFO start",
    "2026-03-02T02:34:41Z ERROR failed",
    "Traceback (most recent call last):",
    "  ValueError: bad",
    "2026-03-02T02:35:30Z WARN slow",
    "2026-03-02T02:34:10Z ERROR late",
    "Mar  2 02:38:00 host app: CRIT disk",
    "2026-03-02T02:38:20Z DEBUG x",
    "   more detail ValueError",
    "2026-03-02T02:41:00Z INFO end",
]


def _run(counter: LogCounter, lines: list[str]) -> list[Sample | str]:
    out: list[Sample | str] = []
    for line in lines:
        try:
            out.extend(counter.feed(line))
        except DecodeError as error:
            out.append(error.reason)
    return out


@pytest.mark.parametrize("split", range(len(SNAPSHOT_LOG) + 1))
def test_log_snapshot_restore_mid_stream_matches_uninterrupted(split: int) -> None:
    config = LogCountConfig(stream="app", interval_s=60.0, patterns={"value_error": "ValueError"})
    whole = LogCounter(config)
    expected = _run(whole, SNAPSHOT_LOG) + list(whole.flush())

    first = LogCounter(config)
    got = _run(first, SNAPSHOT_LOG[:split])
    snapshot = json.loads(json.dumps(first.snapshot()))
    resumed = LogCounter.restore(snapshot)
    got += _run(resumed, SNAPSHOT_LOG[split:]) + list(resumed.flush())

    assert got == expected
    assert any(isinstance(item, str) and item.startswith("late line") for item in expected)


def test_log_restore_rejects_unknown_version() -> None:
    snapshot = LogCounter(LogCountConfig(stream="s")).snapshot()
    snapshot["version"] = 99
    with pytest.raises(ValueError, match="version"):
        LogCounter.restore(snapshot)


LEVEL_WORDS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL", "", "notice:", "[err]")


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=60),
    levels=st.lists(st.sampled_from(LEVEL_WORDS), min_size=60, max_size=60),
    continuations=st.lists(st.booleans(), min_size=60, max_size=60),
    interval_s=st.sampled_from([1.0, 10.0, 60.0, 0.5, 300.0]),
)
def test_log_counts_conserve_events_and_intervals_are_contiguous(
    gaps: list[int], levels: list[str], continuations: list[bool], interval_s: float
) -> None:
    lines: list[str] = []
    ts = T0
    for index, gap in enumerate(gaps):
        ts += gap / 4  # quarter seconds: exact in binary floating point
        stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        lines.append(f"{stamp} {levels[index]} event {index}")
        if continuations[index]:
            lines.append("    at continuation")
    samples, errors = count_log_lines(lines, LogCountConfig(stream="app", interval_s=interval_s))

    assert errors == []
    assert sum(s.values["total"] for s in samples) == len(gaps)
    level_sum = sum(sum(s.values[name] for name in CHANNELS[:5]) for s in samples)
    assert level_sum == sum(1 for index in range(len(gaps)) if levels[index])
    times = [s.ts for s in samples]
    assert all(later - earlier == interval_s for earlier, later in itertools.pairwise(times))
    assert times[0] <= T0 + gaps[0] / 4 < times[0] + interval_s
