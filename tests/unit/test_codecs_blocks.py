"""decode_json_blocks: the bulk JSON decoder (sample objects, arrays of them, and the columnar form)."""

from __future__ import annotations

import itertools
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch import codecs
from streamwatch.codecs import DecodeError, decode_json, decode_json_blocks, epoch_seconds
from streamwatch.records import SampleBlock, parse_iso_utc

T0 = parse_iso_utc("2026-03-02T02:34:40Z")  # 1772418880.0


def _dumps(document: object) -> bytes:
    return orjson.dumps(document)


def _float32(values: list[float]) -> np.ndarray[Any, np.dtype[np.float32]]:
    with np.errstate(over="ignore"):  # values beyond float32's range become inf, as in the decoder
        return np.array(values, dtype=np.float64).astype(np.float32)


def _assert_block(
    block: SampleBlock,
    stream: str,
    channels: tuple[str, ...],
    timestamps: list[float],
    rows: list[list[float]],
) -> None:
    assert block.stream == stream
    assert block.channels == channels
    assert block.timestamps.dtype == np.float64
    assert block.values.dtype == np.float32
    assert block.values.shape == (len(timestamps), len(channels))
    assert block.values.flags.c_contiguous
    np.testing.assert_array_equal(block.timestamps, np.array(timestamps, dtype=np.float64))
    np.testing.assert_array_equal(
        block.values, _float32([v for row in rows for v in row]).reshape(block.values.shape)
    )


# ---------------------------------------------------------------------------------------------------------
# Sample objects and arrays of them
# ---------------------------------------------------------------------------------------------------------


def test_sample_object_gives_one_row_block_with_read_only_arrays() -> None:
    [block] = decode_json_blocks(
        b'{"stream": "pmu-1", "ts": "2026-03-02T02:34:40Z", "values": {"v": 1.5, "i": 2}}'
    )
    _assert_block(block, "pmu-1", ("v", "i"), [T0], [[1.5, 2.0]])
    assert len(block) == 1
    assert not block.timestamps.flags.writeable
    assert not block.values.flags.writeable


def test_flat_form_keeps_key_order_and_ignores_metadata() -> None:
    [block] = decode_json_blocks(
        b'{"ts": 1772418880000, "host": "a", "z": 3, "a": 1.25}', default_stream="dev"
    )
    _assert_block(block, "dev", ("z", "a"), [T0], [[3.0, 1.25]])


def test_empty_array_gives_no_blocks() -> None:
    assert decode_json_blocks(b"[]") == []


def test_array_groups_consecutive_items_by_stream_and_channel_set() -> None:
    items = [
        {"stream": "a", "ts": 1.0, "values": {"x": 1, "y": 2}},
        {"stream": "a", "ts": 2.0, "values": {"y": 4, "x": 3}},  # same set, other order: aligned
        {"stream": "b", "ts": 3.0, "values": {"x": 5, "y": 6}},
        {"stream": "b", "ts": 4.0, "values": {"x": 7}},  # channel set changes: new block
        {"stream": "a", "ts": 5.0, "values": {"x": 8, "y": 9}},  # back to a: not merged with the first run
    ]
    blocks = decode_json_blocks(_dumps(items))
    assert [(block.stream, block.channels, len(block)) for block in blocks] == [
        ("a", ("x", "y"), 2),
        ("b", ("x", "y"), 1),
        ("b", ("x",), 1),
        ("a", ("x", "y"), 1),
    ]
    _assert_block(blocks[0], "a", ("x", "y"), [1.0, 2.0], [[1, 2], [3, 4]])


def test_values_beyond_float32_range_become_inf_without_warnings() -> None:
    raw = _dumps({"stream": "s", "ts": [1.0, 2.0], "values": {"x": [1e39, -1e300]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [columnar] = decode_json_blocks(raw)
        [single] = decode_json_blocks(b'{"stream": "s", "ts": 1, "x": 1e39}')
    np.testing.assert_array_equal(columnar.values[:, 0], [np.inf, -np.inf])
    assert single.values[0, 0] == np.inf


# ---------------------------------------------------------------------------------------------------------
# Columnar form
# ---------------------------------------------------------------------------------------------------------


def test_columnar_form_decodes_to_one_block() -> None:
    raw = _dumps(
        {
            "stream": "pmu-1",
            "ts": [T0, T0 + 0.02, T0 + 0.04],
            "values": {"freq": [50, 50.01, 49.99], "rocof": [0.0, 0.5, -0.5]},
        }
    )
    [block] = decode_json_blocks(raw)
    _assert_block(
        block,
        "pmu-1",
        ("freq", "rocof"),
        [T0, T0 + 0.02, T0 + 0.04],
        [[50, 0.0], [50.01, 0.5], [49.99, -0.5]],
    )
    assert not block.timestamps.flags.writeable
    assert not block.values.flags.writeable


@pytest.mark.parametrize(
    "entries",
    [
        [1772418880, 1772418880.5],  # seconds
        [1772418880000, 1772418880500],  # milliseconds
        [1772418880000000, 1772418880500000],  # microseconds (above 2**53 /1e3, below 2**53)
        [1772418880000000000, 1772418880000001994],  # ns ints beyond 2**53: float(n) / 1e9 is 1 ulp off
        [1772418880.0, 1772418880500, 1.7724188805e15, 1772418880500000001],  # every unit in one message
        [-5.0, 0, 1e11, -1e12],  # negative and boundary magnitudes
    ],
)
def test_columnar_epoch_numbers_follow_the_scalar_unit_rule_exactly(entries: list[float]) -> None:
    raw = _dumps({"stream": "s", "time": entries, "values": {"x": [0.0] * len(entries)}})
    [block] = decode_json_blocks(raw)
    assert block.timestamps.tolist() == [epoch_seconds(entry) for entry in entries]


def test_columnar_iso_times_per_entry_and_vectorised_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 3, 2, 2, 34, 40, tzinfo=UTC)
    stamps = [
        (start + timedelta(milliseconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        for i in range(300)
    ]
    raw = _dumps({"stream": "s", "timestamp": stamps, "values": {"x": list(range(300))}})
    expected = [parse_iso_utc(stamp) for stamp in stamps]
    [vectorised] = decode_json_blocks(raw)  # 300 entries: above the vectorised threshold
    monkeypatch.setattr(codecs, "_VECTORISED_ISO_FROM", 10_000)
    [per_entry] = decode_json_blocks(raw)
    assert vectorised.timestamps.tolist() == expected
    assert per_entry.timestamps.tolist() == expected


def test_columnar_mixed_iso_and_epoch_times() -> None:
    raw = _dumps(
        {"stream": "s", "ts": ["2026-03-02T02:34:40Z", T0 + 1, (T0 + 2) * 1000], "values": {"x": [1, 2, 3]}}
    )
    [block] = decode_json_blocks(raw)
    assert block.timestamps.tolist() == [T0, T0 + 1, T0 + 2]


def test_columnar_stream_defaults_and_extra_keys_are_ignored() -> None:
    raw = _dumps({"ts": [1.0], "values": {"x": [2.0]}, "source": "lab", "seq": 7})
    [block] = decode_json_blocks(raw, default_stream="fallback")
    _assert_block(block, "fallback", ("x",), [1.0], [[2.0]])


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"stream": "s", "ts": [1, 2], "values": {"freq": [1.0]}}, "values['freq'] has 1 entries, ts has 2"),
        (
            {"stream": "s", "ts": [1], "values": {"a": [1], "freq": [1, 2]}},
            "values['freq'] has 2 entries, ts has 1",
        ),
        ({"stream": "s", "ts": [], "values": {"x": []}}, "'ts' is an empty array"),
        (
            {"stream": "s", "ts": [1, 2], "values": {"x": [1, True]}},
            "values['x'][1]: expected a number, got boolean",
        ),
        (
            {"stream": "s", "ts": [1, 2], "values": {"x": [None, 1]}},
            "values['x'][0]: expected a number, got null",
        ),
        (
            {"stream": "s", "ts": [1, 2], "values": {"x": [1, "2"]}},
            "values['x'][1]: expected a number, got string",
        ),
        (
            {"stream": "s", "ts": [1, 2], "values": {"x": [1, [2]]}},
            "values['x'][1]: expected a number, got array",
        ),
        (
            {"stream": "s", "ts": [1], "values": {"x": 1.0}},
            "values['x'] must be an array of numbers, got number",
        ),
        (
            {"stream": "s", "ts": [1], "values": []},
            "'values' must be an object of channel -> array of numbers",
        ),
        ({"stream": "s", "ts": [1], "values": {}}, "no channels: 'values' is an empty object"),
        ({"stream": "s", "ts": [1], "x": [1]}, "columnar form needs 'values'"),
        (
            {"stream": "s", "ts": [1, False], "values": {"x": [1, 2]}},
            "bad time in ts[1]: expected an ISO-8601",
        ),
        (
            {"stream": "s", "ts": [1, "soon"], "values": {"x": [1, 2]}},
            "bad time in ts[1]: 'soon' is not ISO-8601",
        ),
        (
            {"stream": "s", "ts": [1, None], "values": {"x": [1, 2]}},
            "bad time in ts[1]: expected an ISO-8601",
        ),
        ({"stream": "s", "ts": [1], "time": 1, "values": {"x": [1]}}, "ambiguous time: ts and time"),
        ({"ts": [1], "values": {"x": [1]}}, "missing stream (and no default stream configured)"),
        ({"stream": "", "ts": [1], "values": {"x": [1]}}, "stream must be a non-empty string"),
    ],
)
def test_columnar_errors_name_what_and_where_and_keep_raw(document: object, reason: str) -> None:
    raw = _dumps(document)
    with pytest.raises(DecodeError) as excinfo:
        decode_json_blocks(raw)
    assert reason in excinfo.value.reason
    assert excinfo.value.raw == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'"a string"',
        b"42",
        b'{"stream": "s", "values": {"x": 1}}',
        b'{"stream": "s", "ts": "yesterday", "x": 1}',
        b'{"stream": "s", "ts": 1, "values": {"x": "nan"}}',
        b'{"stream": "s", "ts": 1, "x": true}',
        b'{"stream": "s", "ts": 1, "host": "a"}',
        b'[{"stream": "s", "ts": 1, "x": 1}, 3]',
        b'[{"stream": "s", "ts": 1, "x": 1}, {"stream": "s", "ts": 2, "x": null}]',
        # columnar objects are whole messages; inside an array they are sample objects with a bad time
        b'[{"stream": "s", "ts": [1], "values": {"x": [1]}}]',
    ],
)
def test_non_columnar_errors_are_exactly_decode_json_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError) as expected:
        decode_json(raw)
    with pytest.raises(DecodeError) as got:
        decode_json_blocks(raw)
    assert (got.value.reason, got.value.raw) == (expected.value.reason, expected.value.raw)


# ---------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------

_CHANNEL_NAMES = st.sampled_from(["a", "b", "freq", "rocof", "v"])
_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
_EPOCHS = st.one_of(
    st.floats(min_value=-1e11, max_value=1e11, allow_nan=False),
    st.integers(min_value=0, max_value=2**64 - 1),  # every unit, including ints beyond 2**53
    st.floats(min_value=1e11, max_value=1e19),
)
_ISO_TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda moment: moment.isoformat() + "Z"
)


@st.composite
def _sample_objects(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_CHANNEL_NAMES, min_size=1, max_size=3, unique=True))
    values = {name: draw(_VALUES) for name in names}
    document: dict[str, Any] = {"stream": draw(st.sampled_from(["s1", "s2"]))}
    document[draw(st.sampled_from(["ts", "time", "timestamp"]))] = draw(st.one_of(_EPOCHS, _ISO_TIMES))
    if draw(st.booleans()):
        document["values"] = values
    else:
        document.update(values)
    return document


@settings(max_examples=200, deadline=None)
@given(st.lists(_sample_objects(), max_size=12))
def test_blocks_rows_are_exactly_the_decode_json_samples(items: list[dict[str, Any]]) -> None:
    raw = _dumps(items)
    samples = decode_json(raw)
    blocks = decode_json_blocks(raw)
    assert sum(len(block) for block in blocks) == len(samples)
    rows = [(block, row) for block in blocks for row in range(len(block))]
    for sample, (block, row) in zip(samples, rows, strict=True):
        assert block.stream == sample.stream
        assert set(block.channels) == set(sample.values)
        assert block.timestamps[row] == sample.ts
        expected = _float32([sample.values[name] for name in block.channels])
        np.testing.assert_array_equal(block.values[row], expected)
    # maximal runs: neighbouring blocks always differ in stream or channel set
    for first, second in itertools.pairwise(blocks):
        assert (first.stream, set(first.channels)) != (second.stream, set(second.channels))


@st.composite
def _columnar_documents(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A columnar message and the equivalent array of sample objects."""
    names = draw(st.lists(_CHANNEL_NAMES, min_size=1, max_size=3, unique=True))
    rows = draw(st.integers(min_value=1, max_value=20))
    times = draw(st.lists(st.one_of(_EPOCHS, _ISO_TIMES), min_size=rows, max_size=rows))
    columns = {name: draw(st.lists(_VALUES, min_size=rows, max_size=rows)) for name in names}
    columnar = {"stream": "pmu", "ts": times, "values": columns}
    objects = [
        {"stream": "pmu", "ts": times[row], "values": {name: columns[name][row] for name in names}}
        for row in range(rows)
    ]
    return columnar, objects


@settings(max_examples=200, deadline=None)
@given(_columnar_documents())
def test_columnar_and_array_of_objects_decode_to_identical_arrays(
    documents: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    columnar, objects = documents
    [from_columns] = decode_json_blocks(_dumps(columnar))
    [from_objects] = decode_json_blocks(_dumps(objects))
    assert from_columns.stream == from_objects.stream
    assert from_columns.channels == from_objects.channels
    # Bytes, not ==: also tells -0.0 from 0.0 and compares infs.
    assert from_columns.timestamps.tobytes() == from_objects.timestamps.tobytes()
    assert from_columns.values.tobytes() == from_objects.values.tobytes()
    assert from_columns.values.shape == from_objects.values.shape
