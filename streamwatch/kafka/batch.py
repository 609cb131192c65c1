"""One poll's records -> per-stream sample blocks, dead letters and the offsets to commit.

Blocks of one stream are concatenated in record order (a stream lives in one partition, so that is its
order), each row remembering the offset of the record it came from: a sample the engine rejects is
dead-lettered as the record it arrived in, and a record delivered again (after a restart) is recognised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import numpy.typing as npt
import orjson
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from streamwatch.codecs import DecodeError, decode_json_blocks, decode_line_protocol, epoch_seconds
from streamwatch.config import KafkaSourceConfig, KafkaTopicConfig
from streamwatch.records import FloatArray, SampleBlock, SourcePosition

Decoder = Callable[[bytes], list[SampleBlock]]


class RecordPositions(Sequence[SourcePosition]):
    """The record position of every row, built only for the rows that are asked for (rejections)."""

    def __init__(self, origin: TopicPartition, offsets: npt.NDArray[np.int64]) -> None:
        self._origin = origin
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> SourcePosition: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SourcePosition]: ...

    def __getitem__(self, index: int | slice) -> SourcePosition | Sequence[SourcePosition]:
        if isinstance(index, slice):
            return RecordPositions(self._origin, self._offsets[index])
        return SourcePosition(self._origin.topic, self._origin.partition, int(self._offsets[index]))


@dataclass(slots=True)
class StreamRows:
    """One stream's samples from one poll, in order, with the offset of the record of every row."""

    stream: str
    origin: TopicPartition
    channels: tuple[str, ...]
    timestamps: npt.NDArray[np.float64]
    values: FloatArray
    offsets: npt.NDArray[np.int64]

    @property
    def positions(self) -> RecordPositions:
        return RecordPositions(self.origin, self.offsets)

    def record_positions(self) -> list[SourcePosition]:
        """Each record once, in order."""
        firsts = np.flatnonzero(np.diff(self.offsets, prepend=-1))
        return [self.positions[int(row)] for row in firsts]

    def after(self, offset: int) -> StreamRows | None:
        """The rows of records after `offset` (None if there are none): a record delivered again after a
        restart was applied already."""
        if self.offsets[0] > offset:
            return self
        return self.where(self.offsets > offset)

    def where(self, keep: npt.NDArray[np.bool_]) -> StreamRows | None:
        """The rows where `keep` holds (None if none does)."""
        if keep.all():
            return self
        if not keep.any():
            return None
        return StreamRows(
            self.stream,
            self.origin,
            self.channels,
            self.timestamps[keep],
            self.values[keep],
            self.offsets[keep],
        )


@dataclass(slots=True)
class DecodedBatch:
    streams: list[StreamRows] = field(default_factory=list)
    rejected: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    # The offset to commit per partition: one past the last record of this poll.
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    samples: int = 0
    batch: Mapping[TopicPartition, Sequence[ConsumerRecord]] = field(default_factory=dict)

    def records_by_position(self, positions: set[SourcePosition]) -> list[ConsumerRecord]:
        """The records at these positions, in batch order (rare: only when something was rejected)."""
        return [
            record
            for records in self.batch.values()
            for record in records
            if SourcePosition(record.topic, record.partition, record.offset) in positions
        ]


@dataclass(slots=True)
class _Parts:
    origin: TopicPartition
    channels: tuple[str, ...]
    timestamps: list[npt.NDArray[np.float64]] = field(default_factory=list)
    values: list[FloatArray] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    # Single samples as plain floats, turned into arrays once (not one tiny array per record).
    row_times: list[float] = field(default_factory=list)
    row_values: list[list[float]] = field(default_factory=list)

    def add_block(self, block: SampleBlock, offset: int) -> None:
        self._flush_rows()
        self.timestamps.append(block.timestamps)
        self.values.append(block.values)
        self.offsets.extend([offset] * len(block))

    def add_row(self, ts: float, values: list[float], offset: int) -> None:
        self.row_times.append(ts)
        self.row_values.append(values)
        self.offsets.append(offset)

    def arrays(self) -> tuple[npt.NDArray[np.float64], FloatArray]:
        self._flush_rows()
        timestamps = self.timestamps[0] if len(self.timestamps) == 1 else np.concatenate(self.timestamps)
        values = self.values[0] if len(self.values) == 1 else np.concatenate(self.values)
        return timestamps, values

    def _flush_rows(self) -> None:
        if not self.row_times:
            return
        self.timestamps.append(np.asarray(self.row_times, dtype=np.float64))
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: the windows refuse it, with a reason
            self.values.append(np.asarray(self.row_values, dtype=np.float32))
        self.row_times, self.row_values = [], []


def decoder_for(topic: KafkaTopicConfig) -> Decoder:
    if topic.format == "line":
        precision = topic.precision

        def line(raw: bytes) -> list[SampleBlock]:
            return [
                _one_row(sample.stream, sample.values, sample.ts)
                for sample in decode_line_protocol(raw, precision=precision)
            ]

        return line
    default_stream = topic.default_stream
    return lambda raw: decode_json_blocks(raw, default_stream=default_stream)


def _one_row(stream: str, values: Mapping[str, float], ts: float) -> SampleBlock:
    return SampleBlock(
        stream,
        tuple(values),
        np.array([ts], dtype=np.float64),
        np.array([list(values.values())], dtype=np.float32),
    )


class BatchDecoder:
    def __init__(self, source: KafkaSourceConfig) -> None:
        self._source = source
        self._decoders: dict[str, tuple[Decoder, bool]] = {}

    def decode(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> DecodedBatch:
        out = DecodedBatch(batch=batch)
        parts: dict[str, _Parts] = {}
        for tp, records in batch.items():
            if not records:
                continue
            decode, fast = self._decoder(tp.topic)
            out.offsets[tp] = records[-1].offset + 1
            out.records += len(records)
            for record in records:
                if not (fast and _add_plain_sample(record, tp, parts)):
                    self._add(record, tp, decode, parts, out)
        for stream, part in parts.items():
            timestamps, values = part.arrays()
            offsets = np.asarray(part.offsets, dtype=np.int64)
            out.streams.append(StreamRows(stream, part.origin, part.channels, timestamps, values, offsets))
            out.samples += len(timestamps)
        return out

    def _decoder(self, topic: str) -> tuple[Decoder, bool]:
        """The topic's decoder, and whether its single-sample JSON records may take the fast path."""
        known = self._decoders.get(topic)
        if known is None:
            config = self._source.topic(topic)
            known = self._decoders[topic] = (decoder_for(config), config.format == "json")
        return known

    @staticmethod
    def _add(
        record: ConsumerRecord,
        tp: TopicPartition,
        decode: Decoder,
        parts: dict[str, _Parts],
        out: DecodedBatch,
    ) -> None:
        if record.value is None:
            out.rejected.append((record, "empty record (null value)"))
            return
        try:
            blocks = decode(record.value)
        except DecodeError as error:
            out.rejected.append((record, error.reason))
            return
        for block in blocks:
            part = parts.get(block.stream)
            if part is None:
                part = parts[block.stream] = _Parts(tp, block.channels)
            elif block.channels != part.channels:
                aligned = _aligned(block, part.channels)
                if aligned is None:
                    out.rejected.append(
                        (
                            record,
                            f"stream {block.stream!r}: channels {list(block.channels)} differ from "
                            f"{list(part.channels)} earlier in the same stream",
                        )
                    )
                    continue
                block = aligned
            part.add_block(block, record.offset)


def _add_plain_sample(record: ConsumerRecord, tp: TopicPartition, parts: dict[str, _Parts]) -> bool:
    """The hot path for one sample per record, in the canonical form `{"stream": s, "ts": <epoch number>,
    "values": {channel: number}}`, for a new stream or one already seen with those channels in that order.
    Anything else (another form, a problem to report) returns False and takes the general decoder, which
    gives the same result or the reason."""
    value = record.value
    if value is None or value[:1] != b"{":
        return False
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if len(document) != 3:
        return False
    stream, ts, values = document.get("stream"), document.get("ts"), document.get("values")
    if type(stream) is not str or not stream or type(values) is not dict or not values:
        return False
    if type(ts) not in (float, int):
        return False
    part = parts.get(stream)
    channels = tuple(values)
    if part is not None and channels != part.channels:
        return False
    row = list(values.values())
    if not all(type(number) in (float, int) for number in row):
        return False
    seconds = epoch_seconds(ts)
    if not math.isfinite(seconds):
        return False
    if part is None:
        part = parts[stream] = _Parts(tp, channels)
    part.add_row(seconds, row, record.offset)
    return True


def _aligned(block: SampleBlock, channels: tuple[str, ...]) -> SampleBlock | None:
    """The block with its columns in `channels` order, or None if it has other channels."""
    if set(block.channels) != set(channels):
        return None
    order = [block.channels.index(name) for name in channels]
    return SampleBlock(block.stream, channels, block.timestamps, block.values[:, order])


def align(rows: StreamRows, channels: tuple[str, ...]) -> StreamRows | None:
    """A stream's rows in the column order the engine knows it by, or None if the channels differ."""
    if rows.channels == channels:
        return rows
    if set(rows.channels) != set(channels):
        return None
    order = [rows.channels.index(name) for name in channels]
    return StreamRows(
        rows.stream, rows.origin, channels, rows.timestamps, rows.values[:, order], rows.offsets
    )
