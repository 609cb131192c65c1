"""Turn bytes and text from the outside world into `Sample`s.

Four input shapes are understood:

* JSON messages (`decode_json`): one sample object or an array of them; `decode_json_blocks` also takes
  the columnar form (many samples of one stream per message) and returns array blocks for the bulk path.
* InfluxDB line protocol (`decode_line_protocol`): one sample per line, full escaping grammar.
* CSV files (`read_csv`, vectorised for million-row files) and single CSV lines (`decode_csv_line`).
* Free-form log lines (`LogCounter`, `count_log_lines`): per-interval counts of events by level and pattern.

Every failure to decode raises `DecodeError`, which keeps the offending input unchanged so that it can be
dead-lettered as is.

Epoch numbers (JSON `ts`, CSV timestamp column) carry no unit, so the unit is inferred from the magnitude:
up to 1e11 they are seconds, above 1e11 milliseconds, above 1e14 microseconds and above 1e17 nanoseconds.
1e11 seconds is the year 5138 while 1e11 milliseconds is 1973, so real data never sits on the wrong side.
"""

from __future__ import annotations

import math
import os
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from streamwatch.records import Sample, SampleBlock, iso_utc, parse_iso_utc

CODEC_NAMES: tuple[str, ...] = ("json", "line", "csv", "log")

Float64Array = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]


class DecodeError(ValueError):
    """Input that could not be turned into samples; `raw` is the offending input, unchanged."""

    def __init__(self, reason: str, raw: bytes, line: int | None = None) -> None:
        # All three go into args so that the error pickles (multiprocessing, queues) without extra code.
        super().__init__(reason, raw, line)
        self.reason = reason
        self.raw = raw
        self.line = line

    def __str__(self) -> str:
        return self.reason


def _text_bytes(text: str) -> bytes:
    """The bytes a decoded text came from; surrogate escapes (undecodable input) are restored."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _line_error(detail: str, raw: bytes, line: int) -> DecodeError:
    return DecodeError(f"line {line}: {detail}", raw, line=line)


# ---------------------------------------------------------------------------------------------------------
# Epoch numbers
# ---------------------------------------------------------------------------------------------------------

_MS_ABOVE = 1e11
_US_ABOVE = 1e14
_NS_ABOVE = 1e17
# (exclusive lower, inclusive upper) magnitude bounds of the scaled units and their divisor to seconds.
_EPOCH_UNIT_RANGES: tuple[tuple[float, float, float], ...] = (
    (_MS_ABOVE, _US_ABOVE, 1e3),
    (_US_ABOVE, _NS_ABOVE, 1e6),
    (_NS_ABOVE, math.inf, 1e9),
)


def epoch_seconds(value: float) -> float:
    """Epoch number in seconds, milliseconds, microseconds or nanoseconds (by magnitude) -> epoch seconds."""
    magnitude = abs(value)
    # Integer divisors keep int inputs exact: Python's int / int is correctly rounded.
    if magnitude > _NS_ABOVE:
        return value / 1_000_000_000
    if magnitude > _US_ABOVE:
        return value / 1_000_000
    if magnitude > _MS_ABOVE:
        return value / 1_000
    return float(value)


def _epoch_seconds_array(values: Float64Array) -> Float64Array:
    """Vectorised `epoch_seconds` for float inputs; gives the same floats as the scalar version."""
    magnitude = np.abs(values)
    seconds = values.copy()
    for lower, upper, divisor in _EPOCH_UNIT_RANGES:
        scaled = (magnitude > lower) & (magnitude <= upper)
        seconds[scaled] = values[scaled] / divisor
    return seconds


# ---------------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------------

JSON_TIME_KEYS: tuple[str, ...] = ("ts", "time", "timestamp")
_JSON_RESERVED = frozenset(("stream", *JSON_TIME_KEYS))
_NON_FINITE_WORDS = frozenset(
    sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity", "snan")
)


def decode_json(raw: bytes, *, default_stream: str | None = None) -> list[Sample]:
    """Decode one JSON message: a sample object or an array of them (an empty array gives no samples).

    A sample object is `{"stream": ..., "ts": ..., "values": {channel: number}}` or the flat form
    `{"stream": ..., "ts": ..., "ch1": 1.0, ...}`. In the flat form numbers (and booleans, nulls and
    number-like strings, which are then rejected) are channels; other strings, objects and arrays are
    metadata and ignored. The time is under `ts`, `time` or `timestamp`: ISO-8601 (naive = UTC) or an
    epoch number (unit by magnitude, see the module docstring).
    """
    document = _json_document(raw)
    if isinstance(document, dict):
        return [_json_sample(document, raw, default_stream, where="")]
    return _json_array_samples(document, raw, default_stream)


def _json_document(raw: bytes) -> dict[str, Any] | list[Any]:
    """Parse a message; anything but an object or an array is rejected here, once for every decoder."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}", raw) from None
    if isinstance(document, dict | list):
        return document
    raise DecodeError(f"expected a sample object or an array of them, got {_json_type(document)}", raw)


def _json_array_samples(items: list[Any], raw: bytes, default_stream: str | None) -> list[Sample]:
    return [
        _json_array_item(item, raw, default_stream, where=f"item {index}: ")
        for index, item in enumerate(items)
    ]


def _json_array_item(item: object, raw: bytes, default_stream: str | None, *, where: str) -> Sample:
    if not isinstance(item, dict):
        raise DecodeError(f"{where}expected a sample object, got {_json_type(item)}", raw)
    return _json_sample(item, raw, default_stream, where=where)


def _json_sample(obj: dict[str, Any], raw: bytes, default_stream: str | None, *, where: str) -> Sample:
    try:
        return Sample(_json_stream(obj, default_stream), _json_time(obj), _json_channels(obj))
    except _InvalidInputError as invalid:
        raise DecodeError(f"{where}{invalid.reason}", raw) from None


class _InvalidInputError(Exception):
    """Internal: a reason without the raw input; turned into DecodeError by whoever holds the input.

    `where` optionally locates the problem inside a line (a CSV column), so that the holder can put the
    line number in front of it.
    """

    def __init__(self, reason: str, where: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names = {dict: "object", list: "array", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _json_stream(obj: dict[str, Any], default_stream: str | None) -> str:
    stream = obj.get("stream")
    if stream is None:
        if default_stream is None:
            raise _InvalidInputError("missing stream (and no default stream configured)")
        return default_stream
    if not isinstance(stream, str) or not stream:
        raise _InvalidInputError(f"stream must be a non-empty string, got {_json_type(stream)}")
    return stream


def _json_time(obj: dict[str, Any]) -> float:
    key = _json_time_key(obj)
    return _json_time_value(obj[key], repr(key))


def _json_time_key(obj: dict[str, Any]) -> str:
    """Which of the time keys the object uses; exactly one must be present."""
    present = [key for key in JSON_TIME_KEYS if key in obj]
    if not present:
        raise _InvalidInputError(f"missing time (one of {', '.join(JSON_TIME_KEYS)})")
    if len(present) > 1:
        # Picking one silently could pick the wrong clock; the producer has to decide.
        raise _InvalidInputError(f"ambiguous time: {' and '.join(present)} are all given")
    return present[0]


def _json_time_value(value: object, label: str) -> float:
    """One JSON time (ISO-8601 string or epoch number) -> epoch seconds; `label` names it in errors."""
    if isinstance(value, str):
        try:
            return parse_iso_utc(value)
        except (ValueError, OverflowError):
            raise _InvalidInputError(f"bad time in {label}: {value!r} is not ISO-8601") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _InvalidInputError(
            f"bad time in {label}: expected an ISO-8601 string or epoch number, got {_json_type(value)}"
        )
    seconds = epoch_seconds(value)
    if not math.isfinite(seconds):
        raise _InvalidInputError(f"bad time in {label}: not finite")
    return seconds


def _json_channels(obj: dict[str, Any]) -> dict[str, float]:
    if "values" in obj:
        values = obj["values"]
        if not isinstance(values, dict):
            raise _InvalidInputError(
                f"'values' must be an object of channel -> number, got {_json_type(values)}"
            )
        channels = {name: _json_channel_value(name, value) for name, value in values.items()}
    else:
        channels = {
            name: _json_channel_value(name, value)
            for name, value in obj.items()
            if name not in _JSON_RESERVED and _is_flat_channel(value)
        }
    if not channels:
        raise _InvalidInputError("no channels: give a 'values' object or numeric keys")
    return channels


def _is_flat_channel(value: object) -> bool:
    """In the flat form, which keys are meant as channels (and must then be valid numbers)."""
    if value is None or isinstance(value, int | float):  # bool is an int: rejected later, loudly
        return True
    # A quoted number is a producer bug, not metadata: dropping it would silently lose a channel.
    return isinstance(value, str) and _looks_numeric(value)


def _looks_numeric(text: str) -> bool:
    stripped = text.strip()
    return _DECIMAL.fullmatch(stripped) is not None or stripped.lower() in _NON_FINITE_WORDS


def _json_channel_value(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise _InvalidInputError(f"channel {name!r} is a boolean, not a number")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise _InvalidInputError(f"channel {name!r} is not finite")
        return number
    if value is None:
        raise _InvalidInputError(f"channel {name!r} is null")
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE_WORDS:
        raise _InvalidInputError(f"channel {name!r} is not finite")
    if isinstance(value, str):
        raise _InvalidInputError(f"channel {name!r} is a string, not a number")
    raise _InvalidInputError(f"channel {name!r} is not a number (got {_json_type(value)})")


# ---------------------------------------------------------------------------------------------------------
# JSON -> SampleBlocks (the Kafka source's bulk path)
# ---------------------------------------------------------------------------------------------------------

_JSON_NUMBER_TYPES = frozenset((int, float))
# Above this not every integer is a float64: converting first and dividing after could round twice.
_FLOAT64_EXACT_INTS = 2.0**53
# Measured crossover: below about this many ISO times, parsing each is faster than the vectorised parser's
# fixed cost (it was built for million-row CSVs).
_VECTORISED_ISO_FROM = 256


def decode_json_blocks(raw: bytes, *, default_stream: str | None = None) -> list[SampleBlock]:
    """Decode one JSON message into blocks of consecutive samples of one stream each.

    Takes everything `decode_json` takes, with the same checks and errors, plus the columnar form for many
    samples of one stream: `{"stream": ..., "ts": [t0, t1, ...], "values": {channel: [v0, v1, ...]}}`.
    Its times (under `ts`, `time` or `timestamp`) are epoch numbers (unit by magnitude) or ISO-8601 strings;
    every channel array is as long as the time array. A sample object gives a one-row block; an array of
    sample objects one block per run of consecutive items with the same stream and channel set. Only the
    message's structure is checked here: finiteness, order and lateness of samples are the engine's job.
    """
    document = _json_document(raw)
    if isinstance(document, list):
        return _sample_blocks(_json_array_samples(document, raw, default_stream))
    if _columnar_time_key(document) is None:
        return [_samples_block([_json_sample(document, raw, default_stream, where="")])]
    try:
        return [_columnar_block(document, default_stream)]
    except _InvalidInputError as invalid:
        raise DecodeError(invalid.reason, raw) from None


def _columnar_time_key(obj: dict[str, Any]) -> str | None:
    """The time key holding an array, which is what makes an object columnar; None for a sample object."""
    for key in JSON_TIME_KEYS:
        if isinstance(obj.get(key), list):
            return key
    return None


def _columnar_block(obj: dict[str, Any], default_stream: str | None) -> SampleBlock:
    stream = _json_stream(obj, default_stream)
    key = _json_time_key(obj)
    timestamps = _columnar_times(obj[key], key)
    channels, values = _columnar_values(obj, key, len(timestamps))
    return _frozen_block(stream, channels, timestamps, values)


def _columnar_times(entries: list[Any], key: str) -> Float64Array:
    if not entries:
        raise _InvalidInputError(f"{key!r} is an empty array")
    # One C-level pass over the types decides the path. It must be exact: float conversion would take a
    # JSON true/false as 1.0/0.0 without a word.
    types = set(map(type, entries))
    if types <= _JSON_NUMBER_TYPES:
        numbers = np.frombuffer(array("d", entries), dtype=np.float64)
        return _epoch_seconds_column(numbers, entries, has_ints=int in types)
    if types == {str} and len(entries) >= _VECTORISED_ISO_FROM:
        iso = _iso_cells(entries)  # None unless all share one layout: then per entry, as below
        if iso is not None:
            return iso
    # The scalar rule, entry by entry: for ISO strings, mixed forms, and to say which entry is bad and why.
    return np.array(
        [_json_time_value(entry, f"{key}[{index}]") for index, entry in enumerate(entries)], dtype=np.float64
    )


def _epoch_seconds_column(numbers: Float64Array, entries: list[Any], *, has_ints: bool) -> Float64Array:
    """`epoch_seconds` of every entry, exactly as the scalar rule would give it, vectorised."""
    low, high = float(numbers.min()), float(numbers.max())
    largest_magnitude = max(-low, high)
    if has_ints and largest_magnitude > _FLOAT64_EXACT_INTS:
        # Nanosecond integers lost digits on the way to float64; the scalar rule divides the exact int.
        return np.array([epoch_seconds(entry) for entry in entries], dtype=np.float64)
    if largest_magnitude <= _MS_ABOVE:
        return numbers  # already seconds: the common case costs two reductions and nothing else
    for lower, upper, divisor in _EPOCH_UNIT_RANGES:
        if lower < low and high <= upper:
            return numbers / divisor  # one unit for the whole message: a single division
    return _epoch_seconds_array(numbers)


def _columnar_values(obj: dict[str, Any], time_key: str, rows: int) -> tuple[tuple[str, ...], Float32Array]:
    if "values" not in obj:
        raise _InvalidInputError("columnar form needs 'values': an object of channel -> array of numbers")
    columns = obj["values"]
    if not isinstance(columns, dict):
        raise _InvalidInputError(
            f"'values' must be an object of channel -> array of numbers, got {_json_type(columns)}"
        )
    if not columns:
        raise _InvalidInputError("no channels: 'values' is an empty object")
    for name, column in columns.items():
        _check_column(name, column, time_key, rows)
    return tuple(columns), _float32_columns(list(columns.values()), rows)


def _check_column(name: str, column: object, time_key: str, rows: int) -> None:
    label = f"values[{name!r}]"
    if not isinstance(column, list):
        raise _InvalidInputError(f"{label} must be an array of numbers, got {_json_type(column)}")
    if len(column) != rows:
        raise _InvalidInputError(f"{label} has {len(column)} entries, {time_key} has {rows}")
    # Exact types, not a float conversion that would let true/false through as 1.0/0.0.
    if not set(map(type, column)) <= _JSON_NUMBER_TYPES:
        index, entry = next(
            (index, entry) for index, entry in enumerate(column) if type(entry) not in _JSON_NUMBER_TYPES
        )
        raise _InvalidInputError(f"{label}[{index}]: expected a number, got {_json_type(entry)}")


def _float32_columns(columns: list[list[Any]], rows: int) -> Float32Array:
    """Channel columns of numbers -> (rows, channels) float32, converted in C."""
    by_channel = np.frombuffer(_float32_buffer(columns), dtype=np.float32).reshape(len(columns), rows)
    return np.ascontiguousarray(by_channel.T)


def _float32_buffer(sequences: Iterable[list[Any]]) -> array[float]:
    """Sequences of numbers -> packed float32, one C loop per sequence.

    array("f") rounds each number to float32 through float64, as numpy's cast does, and (IEEE 754, which
    CPython requires) takes a finite value beyond float32's range to inf without numpy's overflow warning:
    whether values are finite is the engine's per-sample check, not a reason to drop the whole message.
    """
    flat = array("f")
    for sequence in sequences:
        flat.fromlist(sequence)
    return flat


def _sample_blocks(samples: list[Sample]) -> list[SampleBlock]:
    """One block per maximal run of consecutive samples with the same stream and the same channel set."""
    blocks: list[SampleBlock] = []
    start = 0
    for end in range(1, len(samples) + 1):
        if end == len(samples) or not _same_series(samples[start], samples[end]):
            blocks.append(_samples_block(samples[start:end]))
            start = end
    return blocks


def _same_series(first: Sample, other: Sample) -> bool:
    # keys() views compare as sets: the same channels in another order still belong to the same block.
    return first.stream == other.stream and first.values.keys() == other.values.keys()


def _samples_block(run: list[Sample]) -> SampleBlock:
    """Samples of one stream and channel set -> a block, columns in the first sample's channel order."""
    first = run[0]
    channels = tuple(first.values)
    rows = [[sample.values[name] for name in channels] for sample in run]
    values = np.frombuffer(_float32_buffer(rows), dtype=np.float32).reshape(len(run), len(channels))
    timestamps = np.array([sample.ts for sample in run], dtype=np.float64)
    return _frozen_block(first.stream, channels, timestamps, values)


def _frozen_block(
    stream: str, channels: tuple[str, ...], timestamps: Float64Array, values: Float32Array
) -> SampleBlock:
    # Blocks travel through queues and windows by reference; read-only arrays make sharing them safe.
    timestamps.setflags(write=False)
    values.setflags(write=False)
    return SampleBlock(stream, channels, timestamps, values)


# ---------------------------------------------------------------------------------------------------------
# InfluxDB line protocol
# ---------------------------------------------------------------------------------------------------------

Precision = Literal["ns", "us", "ms", "s"]
_PRECISION_DIVISOR: dict[str, int] = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000, "s": 1}
_MEASUREMENT_ESCAPABLE = ", =\\"
_KEY_ESCAPABLE = ", =\\"
_LP_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_LP_INTEGER = re.compile(r"-?\d+i", re.ASCII)
_LP_UNSIGNED = re.compile(r"\d+u", re.ASCII)
_LP_TIMESTAMP = re.compile(r"-?\d+", re.ASCII)
_LP_BOOLEANS: dict[str, float] = {
    **dict.fromkeys(("t", "T", "true", "True", "TRUE"), 1.0),
    **dict.fromkeys(("f", "F", "false", "False", "FALSE"), 0.0),
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class _LineTokens:
    """One line split by the grammar, text unescaped; validation happens afterwards, in one place."""

    measurement: str
    tags: list[tuple[str, str | None]]
    fields: list[tuple[str, str | None, bool]]  # key, value text, quoted (string field)
    timestamp: str | None


def decode_line_protocol(raw: bytes, *, precision: Precision = "ns") -> list[Sample]:
    """Decode InfluxDB line protocol: one sample per non-empty, non-comment line.

    The stream id is the series key with tags sorted, unescaped: `cpu,host=a,region=eu`. Numeric and
    boolean (1.0/0.0) fields are channels; string fields are ignored. The timestamp is required (event
    time) and converted from `precision` units to epoch seconds. String field values cannot span lines.
    """
    divisor = _PRECISION_DIVISOR.get(precision)
    if divisor is None:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(_PRECISION_DIVISOR)}")
    samples: list[Sample] = []
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        raw_line = raw_line.removesuffix(b"\r")
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            raise _line_error("not valid UTF-8", raw_line, number) from None
        text = text.lstrip(" \t")
        if not text.strip() or text.startswith("#"):
            continue
        try:
            samples.append(_line_sample(_tokenize_line(text), divisor))
        except _InvalidInputError as invalid:
            raise _line_error(invalid.reason, raw_line, number) from None
    return samples


def _tokenize_line(text: str) -> _LineTokens:
    if "\\" not in text and '"' not in text:
        parts = [part for part in text.split(" ") if part]
        if len(parts) == 3:
            return _tokenize_plain(*parts)
    return _tokenize_escaped(text)


def _tokenize_plain(series: str, fields_text: str, timestamp: str) -> _LineTokens:
    """Fast path for the common line without escapes or quotes: plain splitting is the whole grammar."""
    measurement, *tag_items = series.split(",")
    tags = [_split_pair(item) for item in tag_items]
    fields = [(*_split_pair(item), False) for item in fields_text.split(",")]
    return _LineTokens(measurement, tags, fields, timestamp)


def _split_pair(item: str) -> tuple[str, str | None]:
    key, equals, value = item.partition("=")
    return key, (value if equals else None)


def _tokenize_escaped(text: str) -> _LineTokens:
    """The full grammar, character by character: backslash escapes and quoted string field values."""
    measurement, pos = _scan(text, 0, ", ", _MEASUREMENT_ESCAPABLE)
    tags: list[tuple[str, str | None]] = []
    while pos < len(text) and text[pos] == ",":
        key, pos = _scan(text, pos + 1, "=, ", _KEY_ESCAPABLE)
        value: str | None = None
        if pos < len(text) and text[pos] == "=":
            value, pos = _scan(text, pos + 1, ", ", _KEY_ESCAPABLE)
        tags.append((key, value))
    pos = _skip_spaces(text, pos)
    fields: list[tuple[str, str | None, bool]] = []
    while pos < len(text):
        key, pos = _scan(text, pos, "=, ", _KEY_ESCAPABLE)
        field_value: str | None = None
        quoted = False
        if pos < len(text) and text[pos] == "=":
            quoted = pos + 1 < len(text) and text[pos + 1] == '"'
            field_value, pos = _scan_quoted(text, pos + 1, key) if quoted else _scan_plain(text, pos + 1)
        fields.append((key, field_value, quoted))
        if pos >= len(text) or text[pos] != ",":
            break
        pos += 1
    pos = _skip_spaces(text, pos)
    timestamp = text[pos:].rstrip(" \t") or None
    return _LineTokens(measurement, tags, fields, timestamp)


def _scan(text: str, pos: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to the first unescaped character in `stops`; returns the unescaped text and where it stopped.

    A backslash escapes the next character only if that one is escapable; otherwise it is literal, which
    is how InfluxDB treats e.g. `C:\\path`.
    """
    pieces: list[str] = []
    start = pos
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == "\\" and pos + 1 < end and text[pos + 1] in escapable:
            pieces.append(text[start:pos])
            pieces.append(text[pos + 1])
            pos += 2
            start = pos
            continue
        if char in stops:
            break
        pos += 1
    pieces.append(text[start:pos])
    return "".join(pieces), pos


def _scan_plain(text: str, pos: int) -> tuple[str, int]:
    """Unquoted field values (numbers, booleans) have no escapes: they end at a comma or a space."""
    end = pos
    while end < len(text) and text[end] not in ", ":
        end += 1
    return text[pos:end], end


def _scan_quoted(text: str, pos: int, key: str) -> tuple[str, int]:
    """Read a quoted string field value starting at its opening quote; returns it and the position after."""
    pieces: list[str] = []
    pos += 1
    start = pos
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
            pieces.append(text[start:pos])
            pieces.append(text[pos + 1])
            pos += 2
            start = pos
        elif char == '"':
            pieces.append(text[start:pos])
            return "".join(pieces), pos + 1
        else:
            pos += 1
    raise _InvalidInputError(f"unterminated string in field {key!r}")


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    return pos


def _line_sample(tokens: _LineTokens, divisor: int) -> Sample:
    if not tokens.measurement:
        raise _InvalidInputError("missing measurement")
    stream = tokens.measurement + "".join(f",{key}={value}" for key, value in _valid_tags(tokens.tags))
    channels = _line_channels(tokens.fields)
    if tokens.timestamp is None:
        raise _InvalidInputError("no timestamp: streamwatch uses event time")
    if _LP_TIMESTAMP.fullmatch(tokens.timestamp) is None:
        raise _InvalidInputError(f"bad timestamp {tokens.timestamp!r}: expected an integer")
    return Sample(stream, int(tokens.timestamp) / divisor, channels)


def _valid_tags(tags: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    valid: dict[str, str] = {}
    for key, value in tags:
        if not key:
            raise _InvalidInputError("empty tag key")
        if not value:
            raise _InvalidInputError(f"tag {key!r} has no value")
        if key in valid:
            raise _InvalidInputError(f"duplicate tag {key!r}")
        valid[key] = value
    return sorted(valid.items())


def _line_channels(fields: list[tuple[str, str | None, bool]]) -> dict[str, float]:
    if not fields:
        raise _InvalidInputError("no fields")
    channels: dict[str, float] = {}
    seen: set[str] = set()
    for key, value, quoted in fields:
        if not key:
            raise _InvalidInputError("empty field key")
        if value is None or (not value and not quoted):
            raise _InvalidInputError(f"field {key!r} has no value")
        if key in seen:
            raise _InvalidInputError(f"duplicate field {key!r}")
        seen.add(key)
        if not quoted:
            channels[key] = _line_field_value(key, value)
    if not channels:
        raise _InvalidInputError("no numeric field (string fields are ignored)")
    return channels


def _line_field_value(key: str, text: str) -> float:
    # Dispatch on the type suffix so that each value meets one regex, not up to three.
    suffix = text[-1]
    if suffix == "i" and _LP_INTEGER.fullmatch(text):
        return _ranged_integer(key, int(text[:-1]), _INT64_MIN, _INT64_MAX, "int64")
    if suffix == "u" and _LP_UNSIGNED.fullmatch(text):
        return _ranged_integer(key, int(text[:-1]), 0, _UINT64_MAX, "uint64")
    if suffix.isalpha():
        boolean = _LP_BOOLEANS.get(text)
        if boolean is not None:
            return boolean
    elif _LP_FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise _InvalidInputError(f"field {key!r} is not finite")
        return value
    raise _InvalidInputError(f"field {key!r} has an invalid value {text!r}")


def _ranged_integer(key: str, value: int, low: int, high: int, kind: str) -> float:
    if not low <= value <= high:
        raise _InvalidInputError(f"field {key!r} is out of range for {kind}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------------------

CSV_TIME_HEADERS: tuple[str, ...] = ("timestamp", "time", "ts")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# Smallest magnitude that rounds to infinity in float32 (halfway between FLT_MAX and 2**128, ties to even).
_F32_OVERFLOW = 2.0**128 - 2.0**103
_ISO_TEMPLATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(?:[Zz]|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CsvFrame:
    """A whole CSV file of one stream: `timestamps` (N,) epoch seconds, `values` (N, C) float32.

    Equality is identity (eq=False): element-wise array comparison has no single truth value.
    """

    stream: str
    timestamps: Float64Array
    channels: tuple[str, ...]
    values: Float32Array

    def __post_init__(self) -> None:
        rows = self.timestamps.shape[0] if self.timestamps.ndim == 1 else -1
        if rows < 0 or self.timestamps.dtype != np.float64:
            raise ValueError("timestamps must be a float64 array of shape (N,)")
        if self.values.dtype != np.float32 or self.values.shape != (rows, len(self.channels)):
            raise ValueError(f"values must be a float32 array of shape ({rows}, {len(self.channels)})")

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def samples(self) -> Iterator[Sample]:
        # tolist() converts in C once instead of creating numpy scalars per cell.
        for ts, row in zip(self.timestamps.tolist(), self.values.tolist(), strict=True):
            yield Sample(self.stream, ts, dict(zip(self.channels, row, strict=True)))


def read_csv(source: str | os.PathLike[str] | Iterable[str], *, stream: str) -> CsvFrame:
    """Read a CSV file (a path) or its lines: header `timestamp,<channel>,...` (or `time`/`ts` first).

    Timestamps are ISO-8601 (naive = UTC, `T` or space separated) or epoch numbers (unit by magnitude).
    Values must be finite numbers within float32 range. Empty lines are skipped; cells are not quoted.
    The common case (one timestamp format for the whole file) is parsed vectorised; anything else goes
    through the per-line parser, which is also what reports errors precisely (line, column).
    """
    lines = _csv_source_lines(source)
    header_index = next((index for index, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise DecodeError("empty CSV: no header", b"")
    channels = _csv_header(lines[header_index], header_index + 1)
    body = lines[header_index + 1 :]
    while body and not body[-1]:
        body.pop()
    first_line_number = header_index + 2
    line_numbers: list[int] | None = None
    if "" in body:
        kept = [index for index, line in enumerate(body) if line]
        line_numbers = [first_line_number + index for index in kept]
        body = [body[index] for index in kept]
    parsed = _csv_fast(body, len(channels)) if body else None
    if parsed is None:
        parsed = _csv_slow(
            body, channels, line_numbers or range(first_line_number, first_line_number + len(body))
        )
    timestamps, values = parsed
    timestamps.flags.writeable = False
    values.flags.writeable = False
    return CsvFrame(stream=stream, timestamps=timestamps, channels=channels, values=values)


def decode_csv_line(line: str, channels: tuple[str, ...], *, stream: str) -> Sample:
    """One CSV data line (timestamp first, then `channels` in order) -> Sample, for streaming use."""
    text = line.rstrip("\r\n")
    ts, values = _csv_row(text, channels, line_number=None)
    return Sample(stream, ts, dict(zip(channels, values, strict=True)))


def _csv_source_lines(source: str | os.PathLike[str] | Iterable[str]) -> list[str]:
    if isinstance(source, str | os.PathLike):
        data = Path(source).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            number = data.count(b"\n", 0, exc.start) + 1
            line_start = data.rfind(b"\n", 0, exc.start) + 1
            line_end = data.find(b"\n", exc.start)
            raw_line = data[line_start : line_end if line_end >= 0 else len(data)]
            raise _line_error("not valid UTF-8", raw_line, number) from None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
    else:
        lines = [line.rstrip("\r\n") for line in source]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines


def _csv_header(header: str, line_number: int) -> tuple[str, ...]:
    names = [name.strip() for name in header.split(",")]
    if names[0].lower() not in CSV_TIME_HEADERS:
        raise _line_error(
            f"header must start with {', '.join(CSV_TIME_HEADERS)}; got {names[0]!r}",
            _text_bytes(header),
            line_number,
        )
    channels = names[1:]
    if not channels:
        raise _line_error("header names no channels", _text_bytes(header), line_number)
    for column, name in enumerate(channels, start=2):
        if not name:
            raise _line_error(f"column {column} has an empty name", _text_bytes(header), line_number)
    duplicates = sorted({name for name in channels if channels.count(name) > 1})
    if duplicates:
        raise _line_error(f"duplicate channel {duplicates[0]!r}", _text_bytes(header), line_number)
    return tuple(channels)


def _csv_fast(body: list[str], n_channels: int) -> tuple[Float64Array, Float32Array] | None:
    """Vectorised parse, or None when the file needs the per-line parser (errors, mixed formats)."""
    try:
        if _DECIMAL.fullmatch(body[0].partition(",")[0].strip()):
            # Without usecols, loadtxt itself rejects lines whose column count differs from the first's.
            grid = np.loadtxt(body, delimiter=",", dtype=np.float64, comments=None, ndmin=2)
            timestamps: Float64Array | None = _epoch_seconds_array(np.ascontiguousarray(grid[:, 0]))
            values = grid[:, 1:]
        else:
            # With usecols, loadtxt rejects short lines but ignores extra columns; given the exact total
            # comma count, a line with extra columns implies a short one elsewhere.
            if "\n".join(body).count(",") != len(body) * n_channels:
                return None
            timestamps = _iso_cells([line.partition(",")[0] for line in body])
            values = np.loadtxt(
                body,
                delimiter=",",
                usecols=range(1, n_channels + 1),
                dtype=np.float64,
                comments=None,
                ndmin=2,
            )
    except ValueError:
        return None
    if timestamps is None or values.shape != (len(body), n_channels):
        return None
    with np.errstate(over="ignore"):  # overflow to inf is detected just below, per cell by the slow path
        values32 = values.astype(np.float32)
    if not (np.isfinite(timestamps).all() and np.isfinite(values).all() and np.isfinite(values32).all()):
        return None
    return timestamps, np.ascontiguousarray(values32)


def _iso_cells(cells: list[str]) -> Float64Array | None:
    """Parse ISO-8601 cells that all share the first cell's layout, by digit arithmetic on the bytes.

    Returns None (caller falls back to per-cell parsing) unless every cell has exactly the same layout and
    a valid date and time. numpy's own datetime64 parser is avoided on purpose: it accepts "now" and
    "today", which would read the wall clock.
    """
    match = _ISO_TEMPLATE.fullmatch(cells[0])
    if match is None:
        return None
    try:
        grid = np.array(cells, dtype=np.bytes_)
    except UnicodeEncodeError:  # non-ASCII somewhere: not the layout of the first cell
        return None
    width = len(cells[0])
    if grid.dtype.itemsize != width:  # a longer cell; shorter ones are NUL-padded and fail below
        return None
    codes = grid.view(np.uint8).reshape(len(cells), width)
    digits = codes - np.uint8(ord("0"))  # wraps around below '0', so "is a digit" is just "<= 9"
    digit_columns = digits[0] <= 9
    if (digits[:, digit_columns] > 9).any() or (codes[:, ~digit_columns] != codes[0, ~digit_columns]).any():
        return None

    def number(group: int, max_digits: int = 9) -> Int64Array:
        start, end = match.span(group)
        value = np.zeros(len(cells), dtype=np.int64)
        for column in range(start, min(end, start + max_digits)):
            value = value * 10 + digits[:, column]
        return value

    year, month, day, hour, minute, second = (number(group) for group in range(1, 7))
    micros = np.zeros(len(cells), dtype=np.int64)
    if match.group(7) is not None:
        kept = min(len(match.group(7)), 6)  # beyond microseconds is truncated, as datetime does
        micros = number(7, max_digits=6) * 10 ** (6 - kept)
    offset = np.zeros(len(cells), dtype=np.int64)
    if match.group(8) is not None:
        offset_hours, offset_minutes = number(9), number(10)
        if (offset_hours > 23).any() or (offset_minutes > 59).any():
            return None
        offset = (offset_hours * 3600 + offset_minutes * 60) * (1 if match.group(8) == "+" else -1)
    if not _valid_civil(year, month, day, hour, minute, second):
        return None
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    # Whole microseconds as int64 then one division: the same rounding as datetime.timestamp().
    epoch_micros: Int64Array = seconds * 1_000_000 + micros
    return epoch_micros / 1e6


def _valid_civil(
    year: Int64Array,
    month: Int64Array,
    day: Int64Array,
    hour: Int64Array,
    minute: Int64Array,
    second: Int64Array,
) -> bool:
    if (year < 1).any() or (month < 1).any() or (month > 12).any():
        return False
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[month - 1] + (leap & (month == 2))
    return not ((day < 1) | (day > month_days) | (hour > 23) | (minute > 59) | (second > 59)).any()


def _days_from_civil(year: Int64Array, month: Int64Array, day: Int64Array) -> Int64Array:
    """Days since 1970-01-01 of proleptic Gregorian dates (era arithmetic, March-based years)."""
    shifted_year = year - (month <= 2)
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days: Int64Array = era * 146097 + day_of_era - 719468
    return days


def _csv_slow(
    body: list[str], channels: tuple[str, ...], line_numbers: Iterable[int]
) -> tuple[Float64Array, Float32Array]:
    timestamps = np.empty(len(body), dtype=np.float64)
    values = np.empty((len(body), len(channels)), dtype=np.float32)
    for index, (line, number) in enumerate(zip(body, line_numbers, strict=True)):
        timestamps[index], values[index] = _csv_row(line, channels, line_number=number)
    return timestamps, values


def _csv_row(line: str, channels: tuple[str, ...], *, line_number: int | None) -> tuple[float, list[float]]:
    cells = line.split(",")
    try:
        if len(cells) != len(channels) + 1:
            raise _InvalidInputError(f"expected {len(channels) + 1} columns, got {len(cells)}")
        ts = _csv_time_cell(cells[0])
        values = [
            _csv_value_cell(cell, column, name)
            for column, (cell, name) in enumerate(zip(cells[1:], channels, strict=True), start=2)
        ]
    except _InvalidInputError as invalid:
        location = [f"line {line_number}"] if line_number is not None else []
        if invalid.where is not None:
            location.append(invalid.where)
        reason = ": ".join((", ".join(location), invalid.reason)) if location else invalid.reason
        raise DecodeError(reason, _text_bytes(line), line=line_number) from None
    return ts, values


def _csv_time_cell(cell: str) -> float:
    text = cell.strip()
    where = "column 1 (timestamp)"
    if not text:
        raise _InvalidInputError("empty cell", where)
    if text.lower() in _NON_FINITE_WORDS:
        raise _InvalidInputError("not finite", where)
    if _DECIMAL.fullmatch(text):
        seconds = epoch_seconds(float(text))
        if not math.isfinite(seconds):
            raise _InvalidInputError("not finite", where)
        return seconds
    try:
        return parse_iso_utc(text)
    except (ValueError, OverflowError):
        raise _InvalidInputError(f"{cell!r} is neither ISO-8601 nor an epoch number", where) from None


def _csv_value_cell(cell: str, column: int, name: str) -> float:
    text = cell.strip()
    where = f"column {column} ({name!r})"
    if not text:
        raise _InvalidInputError("empty cell", where)
    if text.lower() in _NON_FINITE_WORDS:
        raise _InvalidInputError("not finite", where)
    if _DECIMAL.fullmatch(text) is None:
        raise _InvalidInputError(f"not a number: {cell!r}", where)
    value = float(text)
    if not math.isfinite(value):
        raise _InvalidInputError("not finite", where)
    if abs(value) >= _F32_OVERFLOW:
        raise _InvalidInputError("out of float32 range", where)
    return value


# ---------------------------------------------------------------------------------------------------------
# Log lines -> per-interval counts
# ---------------------------------------------------------------------------------------------------------

LEVEL_CHANNELS: tuple[str, ...] = ("debug", "info", "warn", "error", "critical")
TOTAL_CHANNEL = "total"
_TOTAL_INDEX = len(LEVEL_CHANNELS)
_LEVEL_WORDS: dict[str, int] = {
    **dict.fromkeys(("DEBUG", "TRACE"), 0),
    **dict.fromkeys(("INFO", "NOTICE"), 1),
    **dict.fromkeys(("WARN", "WARNING"), 2),
    **dict.fromkeys(("ERROR", "ERR"), 3),
    **dict.fromkeys(("CRITICAL", "FATAL", "CRIT", "ALERT", "EMERG"), 4),
}
_LEVEL_KEYS = frozenset(("level", "lvl", "severity", "loglevel"))
_LEVEL_FIELDS_SEARCHED = 6
_LEVEL_PUNCTUATION = "[]<>(){}:;,|\"'"
# A runaway "continuation" (a binary dump, a log without timestamps) must not grow memory or snapshots
# without bound; patterns only see the first this-many characters of an event.
MAX_EVENT_CHARS = 65_536

# Possessive quantifiers (?+) stop the optional fraction/offset from backtracking into a shorter match
# when something glued to the timestamp means it is not one ("...40.123abc").
_LOG_ISO = re.compile(
    r"\[?(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?+"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?+)?+\]?(?!\w)",
    re.ASCII,
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, start=1)}
_LOG_SYSLOG = re.compile(
    rf"\[?({'|'.join(_MONTHS)}) {{1,2}}(\d{{1,2}}) (\d{{2}}):(\d{{2}}):(\d{{2}})(?:\.(\d{{1,6}}))?+\]?(?!\w)",
    re.ASCII,
)
_TIMESTAMP_FIRST_CHARS = frozenset("[0123456789" + "".join(name[0] for name in _MONTHS))


@dataclass(frozen=True)
class LogCountConfig:
    """How to count one log stream: interval length, optional `patterns` (channel name -> regex), and the
    `year` for syslog timestamps, which have none."""

    stream: str
    interval_s: float = 60.0
    patterns: Mapping[str, str] = field(default_factory=dict)
    year: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be a positive number, got {self.interval_s}")
        if self.year is not None and not 1 <= self.year <= 9999:
            raise ValueError(f"year must be within 1..9999, got {self.year}")
        for name, pattern in self.patterns.items():
            if not name or name in LEVEL_CHANNELS or name == TOTAL_CHANNEL:
                raise ValueError(f"pattern name {name!r} is empty or clashes with a built-in channel")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name!r} is not a valid regex: {exc}") from None

    @property
    def channels(self) -> tuple[str, ...]:
        return (*LEVEL_CHANNELS, TOTAL_CHANNEL, *self.patterns)


@dataclass(slots=True)
class _Event:
    """The event being assembled: its first line plus any continuation lines seen so far."""

    ts: float
    level: int | None
    parts: list[str]
    chars: int


class LogCounter:
    """Counts log events per aligned interval, by level, in total and per configured pattern.

    An event is a timestamped line plus the continuation lines after it (stack traces), so each event is
    held until the next timestamped line (or `flush`) shows it is complete. Intervals are aligned to
    multiples of `interval_s` since the epoch; a sample's ts is its interval start. Intervals without
    events between two events are emitted as all-zero samples: silence is a signal.
    """

    def __init__(self, config: LogCountConfig) -> None:
        self.config = config
        self.channels = config.channels
        self._patterns = tuple(re.compile(pattern) for pattern in config.patterns.values())
        self._next_interval: int | None = None  # first interval index not emitted yet
        self._open = False  # whether `_next_interval` has received events (is the open interval)
        self._counts = [0] * len(self.channels)
        self._event: _Event | None = None
        self._last_iso_year: int | None = None

    def feed(self, line: str) -> list[Sample]:
        """Take one line; returns the samples of intervals this line closed by moving time forward."""
        text = line.rstrip("\r\n")
        stamp = _match_log_timestamp(text)
        if stamp is None:
            self._continue_event(text)
            return []
        ts, iso_year = self._stamp_time(stamp, text)
        interval = math.floor(ts / self.config.interval_s)
        self._check_not_late(interval, ts, text)
        if iso_year is not None:
            self._last_iso_year = iso_year
        samples = self._advance_to(interval)
        level = _detect_level(text[stamp.end() :])
        self._event = _Event(
            ts=ts, level=level, parts=[text[:MAX_EVENT_CHARS]], chars=min(len(text), MAX_EVENT_CHARS)
        )
        return samples

    def flush(self) -> list[Sample]:
        """Close the open interval (counting the held event) and return its sample."""
        self._commit_event()
        if not self._open or self._next_interval is None:
            return []
        sample = self._sample(self._next_interval)
        self._next_interval += 1
        self._open = False
        return [sample]

    def snapshot(self) -> dict[str, Any]:
        event = self._event
        return {
            "version": 1,
            "config": {
                "stream": self.config.stream,
                "interval_s": self.config.interval_s,
                "patterns": dict(self.config.patterns),
                "year": self.config.year,
            },
            "next_interval": self._next_interval,
            "open": self._open,
            "counts": list(self._counts),
            "event": None
            if event is None
            else {"ts": event.ts, "level": event.level, "text": "\n".join(event.parts)},
            "last_iso_year": self._last_iso_year,
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> LogCounter:
        if snapshot.get("version") != 1:
            raise ValueError(f"unsupported LogCounter snapshot version {snapshot.get('version')!r}")
        config = snapshot["config"]
        counter = cls(
            LogCountConfig(
                stream=config["stream"],
                interval_s=float(config["interval_s"]),
                patterns=dict(config["patterns"]),
                year=config["year"],
            )
        )
        counts = [int(count) for count in snapshot["counts"]]
        if len(counts) != len(counter.channels):
            raise ValueError("snapshot counts do not match the configured channels")
        counter._counts = counts
        counter._next_interval = snapshot["next_interval"]
        counter._open = bool(snapshot["open"])
        counter._last_iso_year = snapshot["last_iso_year"]
        event = snapshot["event"]
        if event is not None:
            text = str(event["text"])
            counter._event = _Event(
                ts=float(event["ts"]), level=event["level"], parts=[text], chars=len(text)
            )
        return counter

    def _stamp_time(self, stamp: re.Match[str], text: str) -> tuple[float, int | None]:
        """Epoch seconds of a matched timestamp, and its year if it was ISO (syslog has none to offer)."""
        try:
            if stamp.re is _LOG_ISO:
                return _iso_stamp_seconds(stamp), int(stamp.group(1))
            year = self.config.year if self.config.year is not None else self._last_iso_year
            if year is None:
                raise _InvalidInputError(
                    "syslog timestamp has no year: set LogCountConfig.year "
                    "(no ISO timestamp seen yet to take it from)"
                )
            return _syslog_stamp_seconds(stamp, year), None
        except _InvalidInputError as invalid:
            raise DecodeError(invalid.reason, _text_bytes(text)) from None

    def _check_not_late(self, interval: int, ts: float, text: str) -> None:
        if self._next_interval is not None and interval < self._next_interval:
            start = self._next_interval * self.config.interval_s
            raise DecodeError(
                f"late line: {iso_utc(ts)} is before {iso_utc(start)}; "
                "earlier intervals were already emitted",
                _text_bytes(text),
            )

    def _continue_event(self, text: str) -> None:
        if not text.strip():
            return
        event = self._event
        if event is None:
            raise DecodeError("continuation line without a preceding timestamped line", _text_bytes(text))
        room = MAX_EVENT_CHARS - event.chars
        if room > 0:
            piece = text[:room]
            event.parts.append(piece)
            event.chars += len(piece)

    def _advance_to(self, interval: int) -> list[Sample]:
        """Count the held event, then emit every interval before `interval` and open `interval`."""
        self._commit_event()
        if self._next_interval is None:
            self._next_interval = interval
            self._open = True
            return []
        samples: list[Sample] = []
        if self._open and interval > self._next_interval:
            samples.append(self._sample(self._next_interval))
            self._next_interval += 1
        samples.extend(self._zero_sample(gap) for gap in range(self._next_interval, interval))
        self._next_interval = interval
        self._open = True
        return samples

    def _commit_event(self) -> None:
        event = self._event
        if event is None:
            return
        self._event = None
        counts = self._counts
        counts[_TOTAL_INDEX] += 1
        if event.level is not None:
            counts[event.level] += 1
        if self._patterns:
            whole = "\n".join(event.parts)
            for index, pattern in enumerate(self._patterns, start=_TOTAL_INDEX + 1):
                if pattern.search(whole):
                    counts[index] += 1

    def _sample(self, interval: int) -> Sample:
        values = {name: float(count) for name, count in zip(self.channels, self._counts, strict=True)}
        self._counts = [0] * len(self.channels)
        return Sample(self.config.stream, interval * self.config.interval_s, values)

    def _zero_sample(self, interval: int) -> Sample:
        return Sample(
            self.config.stream, interval * self.config.interval_s, dict.fromkeys(self.channels, 0.0)
        )


def count_log_lines(lines: Iterable[str], config: LogCountConfig) -> tuple[list[Sample], list[DecodeError]]:
    """Count a whole log: feed every line, collect errors (with 1-based line numbers) and flush at the end."""
    counter = LogCounter(config)
    samples: list[Sample] = []
    errors: list[DecodeError] = []
    for number, line in enumerate(lines, start=1):
        try:
            samples.extend(counter.feed(line))
        except DecodeError as error:
            errors.append(_line_error(error.reason, error.raw, number))
    samples.extend(counter.flush())
    return samples, errors


def _match_log_timestamp(text: str) -> re.Match[str] | None:
    if not text or text[0] not in _TIMESTAMP_FIRST_CHARS:
        return None  # cheap exit for the common continuation line (indented stack frame)
    return _LOG_ISO.match(text) or _LOG_SYSLOG.match(text)


def _iso_stamp_seconds(stamp: re.Match[str]) -> float:
    year, month, day, hour, minute, second = (int(stamp.group(index)) for index in range(1, 7))
    seconds = _day_start(year, month, day) + _time_of_day(hour, minute, second, stamp.group(0))
    if stamp.group(9) is not None:
        offset_hours, offset_minutes = int(stamp.group(10)), int(stamp.group(11) or 0)
        if offset_hours > 23 or offset_minutes > 59:
            raise _InvalidInputError(f"bad timestamp {stamp.group(0)!r}: impossible UTC offset")
        offset = offset_hours * 3600 + offset_minutes * 60
        seconds -= offset if stamp.group(9) == "+" else -offset
    return seconds + _fraction(stamp.group(7))


def _syslog_stamp_seconds(stamp: re.Match[str], year: int) -> float:
    month = _MONTH_NUMBERS[stamp.group(1)]
    day, hour, minute, second = (int(stamp.group(index)) for index in range(2, 6))
    return (
        _day_start(year, month, day)
        + _time_of_day(hour, minute, second, stamp.group(0))
        + _fraction(stamp.group(6))
    )


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=1024)
def _day_start(year: int, month: int, day: int) -> int:
    """Epoch seconds of a UTC midnight; cached because a log stays on the same day for many lines."""
    try:
        return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * 86400
    except ValueError:
        raise _InvalidInputError(f"bad timestamp: {year:04d}-{month:02d}-{day:02d} is not a date") from None


def _time_of_day(hour: int, minute: int, second: int, stamp_text: str) -> int:
    if hour > 23 or minute > 59 or second > 59:
        raise _InvalidInputError(f"bad timestamp {stamp_text!r}: impossible time of day")
    return hour * 3600 + minute * 60 + second


def _fraction(digits: str | None) -> float:
    return int(digits) / 10 ** len(digits) if digits else 0.0


def _detect_level(rest: str) -> int | None:
    """Index of the level channel named by one of the first few words after the timestamp, if any."""
    for word in rest.split(None, _LEVEL_FIELDS_SEARCHED)[:_LEVEL_FIELDS_SEARCHED]:
        candidate = word
        if "=" in word:
            key, _, candidate = word.partition("=")
            if key.strip(_LEVEL_PUNCTUATION).lower() not in _LEVEL_KEYS:
                continue
        level = _LEVEL_WORDS.get(candidate.strip(_LEVEL_PUNCTUATION).upper())
        if level is not None:
            return level
    return None
