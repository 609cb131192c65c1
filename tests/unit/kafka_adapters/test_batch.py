from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from streamwatch.codecs import decode_json_blocks
from streamwatch.config import KafkaSourceConfig, KafkaTopicConfig
from streamwatch.kafka.batch import BatchDecoder, align
from streamwatch.records import SourcePosition

TOPIC = "samples"
SOURCE = KafkaSourceConfig(
    topics=(KafkaTopicConfig(name=TOPIC), KafkaTopicConfig(name="metrics", format="line", precision="s"))
)


def _record(offset: int, value: bytes | None, *, topic: str = TOPIC, partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic, partition, -1, offset, 0, 0, b"k", value, [], None, 1, 0 if value is None else len(value), 0
    )


def _json(stream: str, ts: float, **values: float) -> bytes:
    return orjson.dumps({"stream": stream, "ts": ts, "values": values})


def test_records_become_one_block_per_stream_in_record_order() -> None:
    tp = TopicPartition(TOPIC, 0)
    columnar = orjson.dumps({"stream": "a", "ts": [3.0, 4.0], "values": {"x": [30.0, 40.0], "y": [3.5, 4.5]}})
    records = [
        _record(10, _json("a", 1.0, x=10.0, y=1.5)),
        _record(11, _json("b", 1.0, x=7.0, y=0.0)),
        # Same channels in another order: aligned to the stream's first order, not rejected.
        _record(12, orjson.dumps({"stream": "a", "ts": 2.0, "values": {"y": 2.5, "x": 20.0}})),
        _record(13, columnar),
    ]
    decoded = BatchDecoder(SOURCE).decode({tp: records})
    assert decoded.offsets == {tp: 14}
    assert decoded.records == 4 and decoded.samples == 5 and decoded.rejected == []
    by_stream = {rows.stream: rows for rows in decoded.streams}
    a = by_stream["a"]
    assert a.channels == ("x", "y")
    assert a.timestamps.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert a.values.tolist() == [[10.0, 1.5], [20.0, 2.5], [30.0, 3.5], [40.0, 4.5]]
    assert a.offsets.tolist() == [10, 12, 13, 13]
    assert a.positions[2] == SourcePosition(TOPIC, 0, 13)
    assert [position.offset for position in a.record_positions()] == [10, 12, 13]
    # Rows of records at or before an offset were processed already (records delivered again).
    again = a.after(12)
    assert again is not None and again.timestamps.tolist() == [3.0, 4.0]
    assert a.after(9) is a
    assert a.after(13) is None
    assert a.origin == tp


def test_undecodable_and_inconsistent_records_are_rejected_with_reasons() -> None:
    tp = TopicPartition(TOPIC, 1)
    records = [
        _record(0, b"{not json", partition=1),
        _record(1, None, partition=1),
        _record(2, _json("a", 1.0, x=1.0), partition=1),
        _record(3, _json("a", 2.0, x=1.0, z=2.0), partition=1),
    ]
    decoded = BatchDecoder(SOURCE).decode({tp: records})
    reasons = {record.offset: reason for record, reason in decoded.rejected}
    assert set(reasons) == {0, 1, 3}
    assert "invalid JSON" in reasons[0]
    assert "null" in reasons[1]
    assert "channels" in reasons[3]
    assert decoded.offsets == {tp: 4}
    assert [rows.timestamps.tolist() for rows in decoded.streams] == [[1.0]]
    found = decoded.records_by_position({SourcePosition(TOPIC, 1, 2)})
    assert [record.offset for record in found] == [2]


def test_line_protocol_topics_decode_with_their_precision() -> None:
    tp = TopicPartition("metrics", 0)
    records = [_record(0, b"cpu,host=web-1 user=0.5,system=0.25 1767225600", topic="metrics")]
    decoded = BatchDecoder(SOURCE).decode({tp: records})
    assert decoded.rejected == []
    (rows,) = decoded.streams
    assert rows.timestamps.tolist() == [1767225600.0]
    assert dict(zip(rows.channels, rows.values[0].tolist(), strict=True)) == {"user": 0.5, "system": 0.25}


def test_align_reorders_columns_or_refuses_other_channels() -> None:
    tp = TopicPartition(TOPIC, 0)
    decoded = BatchDecoder(SOURCE).decode({tp: [_record(0, _json("a", 1.0, x=1.0, y=2.0))]})
    (rows,) = decoded.streams
    swapped = align(rows, ("y", "x"))
    assert swapped is not None and swapped.values.tolist() == [[2.0, 1.0]]
    assert align(rows, ("x", "z")) is None
    assert align(rows, ("x", "y")) is rows


sample_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**53), max_value=2**53),
)
epochs = st.one_of(
    st.floats(min_value=1e9, max_value=2e9),  # seconds
    st.integers(min_value=10**12, max_value=2 * 10**12),  # milliseconds
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), epochs, sample_values, sample_values, st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_single_sample_records_decode_as_the_general_decoder_does(
    rows: list[tuple[str, float, float, float, bool]],
) -> None:
    """The per-record fast path (plain floats, arrays built once) must equal decoding every record on its
    own, whatever the channel order, number types and time units."""
    tp = TopicPartition(TOPIC, 0)
    records = []
    for offset, (stream, ts, x, y, swapped) in enumerate(rows):
        values = {"y": y, "x": x} if swapped else {"x": x, "y": y}
        records.append(_record(offset, orjson.dumps({"stream": stream, "ts": ts, "values": values})))
    decoded = BatchDecoder(SOURCE).decode({tp: records})
    assert decoded.rejected == []
    for rows_of_stream in decoded.streams:
        blocks = [
            block
            for record in records
            for block in decode_json_blocks(record.value)
            if block.stream == rows_of_stream.stream
        ]
        order = [[block.channels.index(name) for name in rows_of_stream.channels] for block in blocks]
        expected_values = np.concatenate([block.values[:, o] for block, o in zip(blocks, order, strict=True)])
        expected_times = np.concatenate([block.timestamps for block in blocks])
        assert rows_of_stream.timestamps.tolist() == expected_times.tolist()
        np.testing.assert_array_equal(rows_of_stream.values, expected_values)
