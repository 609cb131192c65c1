"""The daemon on Kafka: poll a batch, score it, and commit alerts, stream state and offsets together.

Exactly once (the default): every poll batch ends in one Kafka transaction holding the batch's alert events,
its dead letters, the changed per-stream state (on the compacted state changelog) and the consumer offsets.
After a crash the successor - the restarted daemon, or another member of the consumer group - restores the
streams of its partitions from the changelog and resumes from the committed offsets, which describe exactly
the same moment: a `read_committed` reader of the alert topic sees each alert once. At least once (for
clusters without transactions): the same records are written and flushed, then the offsets are committed;
a crash in between repeats events, with the same `alert_id`s.

Streams that are not scored yet wait in `Onboarding`; models are trained, and streams started under them,
on a background thread so that scoring never stops. Models are shared through the models topic.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from streamwatch.config import KafkaSourceConfig, StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel, StreamSeries, StreamStart, start_stream, train_group
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.core.onboarding import ChannelMismatchError, Onboarding
from streamwatch.core.profile import StreamProfile
from streamwatch.io.sinks import AlertStateSink, DeadLetterFile, Sink
from streamwatch.kafka import changelog, clients, topics, wire
from streamwatch.kafka.batch import BatchDecoder, DecodedBatch, StreamRows, align
from streamwatch.kafka.model_history import ModelsTopicHistory
from streamwatch.kafka.models_topic import ModelsTopic, Publication, version_number
from streamwatch.offline import configured_lifecycle, reconstructor_factory
from streamwatch.records import SourcePosition
from streamwatch.service.background import Background
from streamwatch.service.health import Readiness
from streamwatch.service.metrics import DaemonMetrics, HealthReporter, LifecycleCollector
from streamwatch.service.outputs import log_events
from streamwatch.service.reload import Reloader
from streamwatch.service.retrainer import Retrainer
from streamwatch.service.systemd import SystemdNotifier

log = logging.getLogger("streamwatch.kafka")
T = TypeVar("T")

_RETRY_S = 2.0
# How often (per stream, wall seconds) its recent-normal buffer is written to the changelog, and the largest
# record that is (Kafka's default message limit is 1 MiB).
_BUFFER_CHECKPOINT_S = 300.0
_MAX_BUFFER_RECORD = 900_000
# A training that failed (too little data for its windows, say) is not retried at once: it would fail again.
_JOB_RETRY_S = 60.0
# How often (seconds) the consumer lag is measured: one end-offsets request to the brokers.
_LAG_EVERY_S = 10.0
Block = tuple[str, Any, Any, Sequence[SourcePosition | None] | None]


@dataclass(slots=True)
class KafkaStats:
    batches: int = 0
    records: int = 0
    samples: int = 0
    windows: int = 0
    alerts: int = 0
    dead_letters: int = 0
    transactions: int = 0
    recoveries: int = 0
    restored_streams: int = 0
    models: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _BatchResult:
    """What one poll batch produced, for one commit: events, changed streams, dead letters, offsets."""

    out: EngineOutput
    changed: set[str]
    rejected: list[tuple[ConsumerRecord, str]]
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Job:
    """Background work for one group: train its first model, or start waiting streams under its model."""

    group: str
    series: dict[str, StreamSeries]
    future: Future[tuple[GroupModel, str | None, dict[str, StreamStart]]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes what the group coordinator moved. kafka-python calls this on its network thread, where no
    blocking consumer call may be made, so the daemon acts on it (restores state) right after the poll."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.revoked: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self._clock = clock
        # Since when a (re)join has been going on without an assignment (None: we have one, maybe empty).
        self.joining_since: float | None = clock()

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.revoked |= set(revoked)
        self.assigned -= set(revoked)
        if self.joining_since is None:
            self.joining_since = self._clock()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned |= set(assigned)
        self.joining_since = None

    def stuck_for(self) -> float:
        return 0.0 if self.joining_since is None else self._clock() - self.joining_since

    def take(self) -> tuple[set[TopicPartition], set[TopicPartition]]:
        revoked, assigned = self.revoked, self.assigned
        self.revoked, self.assigned = set(), set()
        return revoked, assigned


class _StopRequestedError(Exception):
    """Stop was asked for while waiting on Kafka: leave without committing (nothing is lost by that)."""


class KafkaDaemon:
    def __init__(
        self,
        config: StreamwatchConfig,
        *,
        sinks: Sequence[Sink],
        dead_letter_file: DeadLetterFile | None,
        clock: Callable[[], float],
        metrics: CollectorRegistry | None = None,
        notifier: SystemdNotifier | None = None,
        readiness: Readiness | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        if config.source.kind != "kafka":
            raise ValueError("KafkaDaemon needs source.kind: kafka")
        self._config = config
        self._source: KafkaSourceConfig = config.source
        self._instance = self._source.instance_id or socket.gethostname()
        self._exactly_once = self._source.delivery == "exactly_once"
        self._alert_topics = [sink.topic for sink in config.sinks if sink.kind == "kafka"]
        self._local_sinks = list(sinks)
        self._alert_state_sinks = [sink for sink in sinks if isinstance(sink, AlertStateSink)]
        self._dead_letter_topic = config.dead_letter.topic if config.dead_letter.kind == "kafka" else None
        self._dead_letter_file = dead_letter_file
        self._clock = clock
        self._engine = Engine(threshold=config.threshold_config(), alerts=config.alerts.build(), clock=clock)
        self._onboarding = Onboarding(
            config.detector.training.bootstrap_samples, lateness_s=config.detector.window.lateness_s
        )
        self._decoder = BatchDecoder(self._source)
        self._origin: dict[str, TopicPartition] = {}
        # Per input partition, one past the last record processed; records before it that arrive again
        # (the committed offset stays at samples still waiting) only refill the waiting streams.
        self._processed: dict[TopicPartition, int] = {}
        # Per waiting stream, the offset of its first waiting sample: offsets are committed no further, so
        # a crash or a rebalance before it starts delivers its samples again instead of losing them.
        self._held: dict[str, int] = {}
        self._carry: list[Block] = []
        self._overflowing: set[str] = set()
        self._dirty_profiles: set[str] = set()
        self._jobs: dict[str, _Job] = {}
        self._retry_after: dict[str, float] = {}  # group -> when failed background work may run again
        self._executor = Background("streamwatch-train")
        self._history = ModelsTopicHistory()
        self.lifecycle = configured_lifecycle(
            self._engine, config, self._history, clock=clock, install_on_accept=False
        )
        self._retrainer = Retrainer(self.lifecycle, config, self._executor)
        self._notifier = notifier or SystemdNotifier({})
        self.readiness = readiness or Readiness()
        self.readiness.sinks = lambda: self._local_sinks
        self._reloader = reloader
        self.metrics: DaemonMetrics | None = None
        if metrics is not None:
            metrics.register(LifecycleCollector(self.lifecycle))
            self.metrics = DaemonMetrics(metrics, self._engine, ready=lambda: self.readiness.check().ready)
        self._lag_measured_at = -_LAG_EVERY_S
        self._health = HealthReporter(self.lifecycle, self._local_sinks)
        # Per stream, when (monotonic) its recent-normal buffer last went to the changelog.
        self._buffer_saved: dict[str, float] = {}
        self._oversized_buffers: set[str] = set()
        self._state_partitions = 1
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._reader: KafkaConsumer | None = None
        self._models: ModelsTopic | None = None
        self._assigned: set[TopicPartition] = set()
        self._rebalance = _Rebalance(time.monotonic)
        self.stats = KafkaStats()
        self._stop = threading.Event()
        if config.detector.torch_threads is not None:
            from streamwatch.models import configure_torch

            configure_torch(config.detector.torch_threads)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        for sink in self._alert_state_sinks:
            sink.release_all()
        try:
            self._connect(stop)
            self._notifier.ready(f"consuming as {self._instance} in group {self._source.group_id}")
            while not stop.is_set():
                try:
                    self._step()
                    self._turn()
                except (KafkaError, TimeoutError) as error:
                    log.warning("Kafka failed us (%s); going back to the last committed state", error)
                    self._recover()
        except _StopRequestedError:
            log.warning("stopping with a batch not committed: it is processed again after the restart")
        finally:
            self._notifier.stopping()
            self.readiness.stopping()
            self._close()

    def _turn(self) -> None:
        """Between two batches: tell systemd and /readyz the loop is alive, measure the lag now and then,
        take a reload asked for."""
        self._notifier.watchdog(time.monotonic())
        waiting = [group for group in self._onboarding.groups() if self._engine.model(group) is None]
        self.readiness.loop(waiting)
        self._measure_lag()
        if self._reloader is not None:
            self._config = self._reloader.take(self._config, self._engine, self._use_sinks, self._clock())

    def _measure_lag(self) -> None:
        if self.metrics is None or self._consumer is None or not self._assigned:
            return
        now = time.monotonic()
        if now - self._lag_measured_at < _LAG_EVERY_S:
            return
        self._lag_measured_at = now
        owned = sorted(self._assigned)
        ends = self._consumer.end_offsets(owned)
        for tp in owned:
            end = ends.get(tp)
            if end is not None:
                lag = max(0, end - self._consumer.position(tp))
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def _use_sinks(self, sinks: Sequence[Sink]) -> None:
        self._local_sinks = list(sinks)
        self._alert_state_sinks = [sink for sink in sinks if isinstance(sink, AlertStateSink)]
        self._health = HealthReporter(self.lifecycle, self._local_sinks)

    def _connect(self, stop: threading.Event) -> None:
        """Set up the topics and clients, retrying while the cluster cannot be reached."""
        while not stop.is_set():
            try:
                self._setup()
                return
            except (KafkaError, TimeoutError, OSError) as error:
                log.warning("Kafka not ready (%s); retrying in %.0fs", error, _RETRY_S)
                self._notifier.status(f"waiting for Kafka: {error}")
                self._close_clients()
                stop.wait(_RETRY_S)

    def _setup(self) -> None:
        kafka = self._config.kafka
        admin = clients.admin(kafka)
        try:
            self._state_partitions = self._ensure_topics(admin)
        finally:
            admin.close()
        self._reader = clients.reader(kafka)
        self._models = ModelsTopic(
            clients.reader(kafka, isolation_level="read_uncommitted"),
            clients.plain_producer(kafka, large=True),
            self._source.models_topic,
            self._instance,
        )
        self._history.attach(self._models)
        self._register(self._models.catch_up())
        self._producer = self._new_producer()
        self._consumer = self._subscribed_consumer()
        log.info(
            "consuming %s as %s/%s, %s",
            self._subscription(),
            self._source.group_id,
            self._instance,
            self._source.delivery.replace("_", "-"),
        )

    def _subscribed_consumer(self) -> KafkaConsumer:
        consumer = clients.source_consumer(self._config.kafka, self._source, self._instance)
        self._await_input_metadata(consumer)
        self._rebalance = _Rebalance(time.monotonic)
        if self._source.topic_pattern is not None:
            consumer.subscribe(pattern=self._source.topic_pattern, listener=self._rebalance)
        else:
            consumer.subscribe(topics=[topic.name for topic in self._source.topics], listener=self._rebalance)
        return consumer

    def _unstick(self) -> bool:
        """kafka-python was seen (rarely, right after start) to complete a rejoin without ever handing out the
        assignment, leaving the daemon idle for good. A join that takes far longer than the session timeout
        is that: start over with a fresh consumer (same member id, so the group simply takes it back)."""
        limit = max(20.0, 3 * self._source.session_timeout_ms / 1000)
        if self._rebalance.stuck_for() < limit:
            return False
        log.warning(
            "no partition assignment for %.0fs: re-creating the consumer", self._rebalance.stuck_for()
        )
        assert self._consumer is not None
        self.release(set(self._assigned))
        self._consumer.close(autocommit=False)
        self._consumer = self._subscribed_consumer()
        return True

    def _await_input_metadata(self, consumer: KafkaConsumer, timeout_s: float = 30.0) -> None:
        """Join the group only once the input topics' partitions are known: kafka-python, joining while a
        fresh topic's metadata is still missing, was seen to end up with no partitions for minutes."""
        deadline = time.monotonic() + timeout_s
        for topic in self._source.topics:
            while not consumer.partitions_for_topic(topic.name):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"input topic {topic.name} has no partitions (does it exist?)")
                time.sleep(0.2)

    def _subscription(self) -> str:
        if self._source.topic_pattern is not None:
            return f"topics matching {self._source.topic_pattern!r}"
        return ", ".join(topic.name for topic in self._source.topics)

    def _ensure_topics(self, admin: Any) -> int:
        inputs = [topic.name for topic in self._source.topics]
        existing = set(admin.list_topics())
        partitions = max([topics.partition_count(admin, name) for name in inputs if name in existing] or [1])
        specs = [topics.models_topic(self._source.models_topic)]
        specs += [topics.TopicSpec(name, partitions) for name in self._alert_topics]
        if self._dead_letter_topic is not None:
            specs.append(topics.TopicSpec(self._dead_letter_topic, partitions))
        if self._source.state_topic not in existing:
            specs.append(topics.state_topic(self._source.state_topic, max(partitions, 1)))
        topics.ensure_topics(admin, specs)
        return topics.partition_count(admin, self._source.state_topic)

    def _new_producer(self) -> KafkaProducer:
        kafka = self._config.kafka
        if not self._exactly_once:
            return clients.plain_producer(kafka)
        producer = clients.transactional_producer(kafka, self._source, self._instance)
        # Fences a previous incarnation with the same transactional id and aborts what it left open.
        producer.init_transactions()
        return producer

    def _close(self) -> None:
        self._executor.stop()
        self._close_clients()
        for sink in self._local_sinks:
            sink.close()
        if self._dead_letter_file is not None:
            self._dead_letter_file.close()
        log.info(
            "stopped: %d records, %d samples, %d windows, %d alert events, %d dead letters, %d transactions",
            self.stats.records,
            self.stats.samples,
            self.stats.windows,
            self.stats.alerts,
            self.stats.dead_letters,
            self.stats.transactions,
        )

    def _close_clients(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except KafkaError as error:
                log.warning("closing the consumer: %s", error)
        for client in (self._producer, self._reader):
            if client is not None:
                client.close(timeout=5) if isinstance(client, KafkaProducer) else client.close()
        if self._models is not None:
            self._models.close()
        self._consumer = self._producer = self._reader = None
        self._models = None

    # -- one step ----------------------------------------------------------------------------------------
    def _step(self) -> None:
        assert self._consumer is not None and self._models is not None
        self._register(self._models.poll())
        self._collect_jobs()
        self._retrainer.step()
        batch = self._consumer.poll(
            timeout_ms=self._source.poll_timeout_ms, max_records=self._source.max_poll_records
        )
        revoked, assigned = self._rebalance.take()
        if self._unstick():
            return
        if revoked or assigned:
            self.release(revoked)
            claimed = self.claim(assigned)
            # What was fetched for a claimed partition predates its positioning: it is fetched again.
            batch = {
                tp: records for tp, records in batch.items() if tp in self._assigned and tp not in claimed
            }
        if not batch and not self._carry and not self._dirty_profiles:
            self._schedule_jobs()
            return
        started = time.perf_counter()
        result = self._apply(self._decoder.decode(batch))
        result.offsets = self._commit_points()
        # Local sinks first: the outbox behind webhooks and Alertmanager then holds the batch's events before
        # its offsets commit, so a crash in between repeats them (dropped there by idempotency key) rather
        # than losing them.
        self._emit_locally(result)
        self._commit(result)
        if self.metrics is not None:
            self.metrics.batch(result.out, result.out.alerts, time.perf_counter() - started)
        self._schedule_jobs()
        self._health.step(self._clock())

    def _apply(self, decoded: DecodedBatch) -> _BatchResult:
        self.stats.batches += 1
        self.stats.records += decoded.records
        self.stats.samples += decoded.samples
        if self.metrics is not None:
            self.metrics.records.inc(decoded.records)
            self.metrics.samples.inc(decoded.samples)
        rejected = [(record, reason) for record, reason in decoded.rejected if not self._seen(record)]
        blocks: list[Block] = []
        unusable: list[tuple[SourcePosition, str]] = []
        for rows in decoded.streams:
            self._origin[rows.stream] = rows.origin
            if self._engine.has_stream(rows.stream):
                fresh = rows.after(self._processed.get(rows.origin, 0) - 1)
                if fresh is not None:
                    unusable += self._score_rows(fresh, blocks)
            else:
                unusable += self._wait(rows)
        for tp, offset in decoded.offsets.items():
            self._processed[tp] = max(offset, self._processed.get(tp, 0))
        # Streams started since the last batch (or just now) first: their samples are older than the batch's.
        blocks = self._carry + blocks
        self._carry = []
        out = self._engine.process_blocks(blocks)
        # Detector-health events go out with the batch's alerts, in the same transaction.
        out.alerts.extend(self.lifecycle.observe([block[:3] for block in blocks], out))
        self.stats.windows += len(out.scores)
        self.stats.alerts += len(out.alerts)
        changed = {block[0] for block in blocks}
        positions: dict[SourcePosition, list[str]] = {}
        for position, reason in unusable:
            positions.setdefault(position, []).append(reason)
        unplaced: dict[str, list[str]] = {}
        for rejection in out.rejected:
            if rejection.source is not None:
                positions.setdefault(rejection.source, []).append(rejection.reason)
            else:
                unplaced.setdefault(rejection.sample.stream, []).append(rejection.reason)
        for stream, reasons in unplaced.items():
            log.warning(
                "%s: %d samples that waited for the stream to start were unusable (first: %s)",
                stream,
                len(reasons),
                reasons[0],
            )
        rejected += self._records_at(decoded, positions)
        return _BatchResult(out, changed, rejected)

    def _seen(self, record: ConsumerRecord) -> bool:
        """Whether a record was processed before (it arrives again because offsets are held back)."""
        return bool(record.offset < self._processed.get(TopicPartition(record.topic, record.partition), 0))

    def _score_rows(self, rows: StreamRows, blocks: list[Block]) -> list[tuple[SourcePosition, str]]:
        channels = self._engine.channels_of(rows.stream)
        aligned = align(rows, channels)
        if aligned is None:
            return self._all_rows(rows, self._channel_reason(rows, channels))
        blocks.append((rows.stream, aligned.timestamps, aligned.values, aligned.positions))
        return []

    def _wait(self, rows: StreamRows) -> list[tuple[SourcePosition, str]]:
        """Queue (or, if its model knows it, start) a stream that is not scored yet; returns the positions
        of records holding samples that cannot be used, with the reasons (only for records seen first)."""
        group = self._source.group_of(rows.stream, rows.origin.topic)
        model = self._engine.model(group)
        start = None if model is None else model.start_of(rows.stream)
        if model is not None and start is not None and not self._onboarding.is_waiting(rows.stream):
            # The live model was trained on this stream: it can be scored from its very first sample.
            self._engine.start_stream(rows.stream, group, start)
            self._dirty_profiles.add(rows.stream)
            self._held.pop(rows.stream, None)
            # Its samples are scored also where their records were processed before: a stream without
            # state was waiting then (a scored stream's state is restored with the offsets), so none of its
            # samples was scored yet; those the model was trained on only warm its windows up. Only the
            # dead letters of records seen before were sent already.
            live = self._warm_up_trained(rows, model)
            return [] if live is None else self._fresh_only(live, self._score_rows(live, self._carry))
        expected = self._onboarding.channels_of(group) or rows.channels
        aligned = align(rows, expected)
        if aligned is None:
            return self._fresh_only(rows, self._all_rows(rows, self._channel_reason(rows, expected)))
        try:
            refused = self._onboarding.add(group, rows.stream, expected, aligned.timestamps, aligned.values)
        except ChannelMismatchError as error:
            return self._fresh_only(rows, self._all_rows(rows, str(error)))
        self._held.setdefault(rows.stream, int(rows.offsets[0]))
        if self._onboarding.dropped(rows.stream) and rows.stream not in self._overflowing:
            self._overflowing.add(rows.stream)
            log.warning(
                "%s: more samples wait for its model than are kept (%d); the oldest beyond the training "
                "samples are not scored",
                rows.stream,
                self._onboarding.max_waiting,
            )
        return self._fresh_only(rows, [(rows.positions[row], reason) for row, reason in refused])

    def _warm_up_trained(self, rows: StreamRows, model: GroupModel) -> StreamRows | None:
        """Rows delivered again that the model was trained on (its first model, trained here while the stream
        waited) only warm the windows up; the rest is returned for scoring."""
        until = model.trained_until.get(rows.stream)
        if until is None:
            return rows
        warm = (rows.offsets < self._processed.get(rows.origin, 0)) & (rows.timestamps <= until)
        aligned = align(rows, model.channels)
        if aligned is not None and warm.any():
            self._engine.warm_up(rows.stream, aligned.timestamps[warm], aligned.values[warm])
        return rows.where(~warm)

    def _fresh_only(
        self, rows: StreamRows, problems: list[tuple[SourcePosition, str]]
    ) -> list[tuple[SourcePosition, str]]:
        """Problems of records not dead-lettered before (records arriving again were, the first time)."""
        seen_until = self._processed.get(rows.origin, 0)
        return [(position, reason) for position, reason in problems if position.offset >= seen_until]

    def _commit_points(self) -> dict[TopicPartition, int]:
        """Per owned partition, the offset to commit: what was processed, but never past a sample that still
        waits for its stream to start."""
        points = dict(self._processed)
        for stream, offset in self._held.items():
            origin = self._origin[stream]
            if origin in points:
                points[origin] = min(points[origin], offset)
        return points

    @staticmethod
    def _all_rows(rows: StreamRows, reason: str) -> list[tuple[SourcePosition, str]]:
        return [(position, reason) for position in rows.record_positions()]

    @staticmethod
    def _channel_reason(rows: StreamRows, expected: tuple[str, ...]) -> str:
        got = list(rows.channels)
        return f"wrong shape: stream {rows.stream!r} has channels {got}, expected {list(expected)}"

    @staticmethod
    def _records_at(
        decoded: DecodedBatch, positions: dict[SourcePosition, list[str]]
    ) -> list[tuple[ConsumerRecord, str]]:
        if not positions:
            return []
        found: list[tuple[ConsumerRecord, str]] = []
        for record in decoded.records_by_position(set(positions)):
            reasons = positions[SourcePosition(record.topic, record.partition, record.offset)]
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            found.append((record, reasons[0] + more))
        return found

    # -- committing --------------------------------------------------------------------------------------
    def _commit(self, result: _BatchResult) -> None:
        if self._exactly_once:
            self._commit_transaction(result)
        else:
            self._commit_at_least_once(result)
        self.stats.transactions += 1
        self.stats.dead_letters += len(result.rejected)
        if self.metrics is not None:
            self.metrics.dead_letters.inc(len(result.rejected))
        self._dirty_profiles.clear()

    def _commit_transaction(self, result: _BatchResult) -> None:
        assert self._producer is not None and self._consumer is not None
        self._producer.begin_transaction()
        self._send_outputs(result)
        if result.offsets:
            self._producer.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in result.offsets.items()},
                self._consumer.group_metadata(),
            )
        self._retry_timeouts(self._producer.commit_transaction)

    def _commit_at_least_once(self, result: _BatchResult) -> None:
        assert self._producer is not None and self._consumer is not None
        self._send_outputs(result)
        self._retry_timeouts(self._producer.flush)
        if result.offsets:
            self._consumer.commit(
                {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in result.offsets.items()}
            )

    def _retry_timeouts(self, action: Callable[[], object]) -> None:
        # A broker that is restarting makes these time out; what was sent is still in the producer, so waiting
        # longer loses nothing. Any other error is the caller's to recover from.
        while True:
            try:
                action()
                return
            except KafkaTimeoutError as error:
                if self._stop.is_set():
                    raise _StopRequestedError from error
                log.warning("Kafka is slow or down (%s); still trying", error)

    def _send_outputs(self, result: _BatchResult) -> None:
        producer = self._producer
        assert producer is not None
        for topic in self._alert_topics:
            for event in result.out.alerts:
                key, value, headers = wire.alert_record(event)
                producer.send(topic, key=key, value=value, headers=headers)
        if self._dead_letter_topic is not None:
            for record, reason in result.rejected:
                dead_key, dead_value, dead_headers = wire.dead_letter_record(record, reason)
                producer.send(self._dead_letter_topic, key=dead_key, value=dead_value, headers=dead_headers)
        for tp, offset in result.offsets.items():
            partition = changelog.changelog_partition(tp, self._state_partitions)
            producer.send(
                self._source.state_topic,
                key=changelog.checkpoint_key(tp),
                value=changelog.checkpoint_value(tp, offset, self._processed.get(tp, offset)),
                partition=partition,
            )
        # A stream started or moved to a new model since the last commit has new state even without samples.
        started = {stream for stream in self._dirty_profiles if self._engine.has_stream(stream)}
        for stream in result.changed | started:
            self._send_state(
                stream,
                changelog.STATE,
                changelog.state_value(self._origin[stream], self._engine.snapshot(stream)),
            )
        for stream in started:
            profile = self._engine.profile_of(stream).to_json()
            self._send_state(
                stream, changelog.PROFILE, changelog.profile_value(self._origin[stream], profile)
            )
        self._send_buffers(result.changed)

    def _send_buffers(self, changed: set[str]) -> None:
        """Recent-normal buffers go to the changelog every `_BUFFER_CHECKPOINT_S` per stream, not with every
        batch: they are large, and one lost after a crash only means a retrain learns from a little less."""
        now = time.monotonic()
        for stream in changed:
            if now - self._buffer_saved.get(stream, -_BUFFER_CHECKPOINT_S) < _BUFFER_CHECKPOINT_S:
                continue
            if stream not in self.lifecycle.buffer.streams():
                continue
            value = changelog.buffer_value(self._origin[stream], self.lifecycle.buffer.snapshot(stream))
            self._buffer_saved[stream] = now
            if len(value) > _MAX_BUFFER_RECORD:
                if stream not in self._oversized_buffers:
                    self._oversized_buffers.add(stream)
                    log.warning(
                        "%s: its recent-normal buffer (%d bytes) is too large for the changelog; after a "
                        "restart it fills again from live data",
                        stream,
                        len(value),
                    )
                continue
            self._send_state(stream, changelog.BUFFER, value)

    def _send_state(self, stream: str, kind: str, value: bytes) -> None:
        assert self._producer is not None
        partition = changelog.changelog_partition(self._origin[stream], self._state_partitions)
        self._producer.send(
            self._source.state_topic, key=(kind + stream).encode(), value=value, partition=partition
        )

    def _emit_locally(self, result: _BatchResult) -> None:
        out = result.out
        log_events(out.alerts)
        if out.alerts or out.quality or out.scores:
            for sink in self._local_sinks:
                sink.emit(out.alerts, out.quality, out.scores)
        if self._dead_letter_file is not None:
            for record, reason in result.rejected:
                source = SourcePosition(record.topic, record.partition, record.offset)
                self._dead_letter_file.put(record.value or b"", reason, source)

    def _recover(self) -> None:
        """After a failure: a fresh producer (fencing the old one's open transaction), then every owned
        stream back to its committed state and every partition back to its committed offset. Retries until
        Kafka answers again (or stop is asked for)."""
        self.stats.recoveries += 1
        while True:
            try:
                self._restart_from_commit()
                return
            except (KafkaError, TimeoutError) as error:
                log.warning("Kafka is not back yet (%s); retrying in %.0fs", error, _RETRY_S)
                # Waiting for the cluster is the loop working as meant, not a stuck one: the watchdog is fed
                # (a broker outage longer than WatchdogSec must not restart the daemon for nothing).
                self._notifier.watchdog(time.monotonic())
                self._notifier.status(f"waiting for Kafka to come back: {error}")
                if self._stop.wait(_RETRY_S):
                    raise _StopRequestedError from error

    def _restart_from_commit(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None
        self._producer = self._new_producer()
        owned = set(self._assigned)
        self.release(owned)
        self.claim(owned)

    # -- partitions --------------------------------------------------------------------------------------
    def release(self, revoked: set[TopicPartition]) -> None:
        """Partitions leave this daemon: forget their streams (the batch before was committed already)."""
        self._assigned -= revoked
        gone = [stream for stream, origin in self._origin.items() if origin in revoked]
        for stream in gone:
            self._engine.drop(stream)
            self._onboarding.drop(stream)
            self.lifecycle.drop(stream)
            self._buffer_saved.pop(stream, None)
            self._held.pop(stream, None)
            del self._origin[stream]
        for tp in revoked:
            self._processed.pop(tp, None)
        for sink in self._alert_state_sinks:
            sink.release(gone)
        if self.metrics is not None:
            self.metrics.forget(gone)
            for tp in revoked:
                with contextlib.suppress(KeyError):  # never measured while owned
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self._carry = [block for block in self._carry if block[0] not in gone]
        self._dirty_profiles.difference_update(gone)
        if revoked:
            log.info("released %d partitions (%d streams)", len(revoked), len(gone))

    def claim(self, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """Partitions arrive: restore their streams from the changelog and resume at the committed offsets
        (which the state is that of) before anything is scored. Returns the partitions claimed anew."""
        assert self._reader is not None and self._models is not None and self._consumer is not None
        new = assigned - self._assigned
        self._assigned |= assigned
        if not new:
            return new
        self._register(self._models.catch_up())
        # read_committed: the fetch waits for a pending transactional offset commit (KIP-447).
        committed = {tp: self._committed(tp) for tp in new}
        restored = changelog.restore(
            self._reader,
            self._source.state_topic,
            self._state_partitions,
            committed,
            exact=self._exactly_once,
        )
        self._processed.update(restored.processed)
        for tp, offset in committed.items():
            self._resume_at(tp, offset)
        back = [
            stream
            for stream, entry in restored.streams.items()
            if entry.state is not None and self._restore_stream(stream, entry)
        ]
        count = len(back)
        if self._alert_state_sinks:
            firing = self._engine.open_alerts(back, self._clock())
            for sink in self._alert_state_sinks:
                sink.adopt(firing)
        self.stats.restored_streams += count
        log.info(
            "claimed %d partitions: %d streams restored from %d changelog records",
            len(new),
            count,
            restored.records,
        )
        if restored.unreadable:
            log.warning("%d changelog records could not be read and were skipped", restored.unreadable)
        return new

    def _resume_at(self, tp: TopicPartition, committed: int | None) -> None:
        # kafka-python keeps a partition's fetch position across a rebalance that hands it back; the state
        # just restored belongs to the committed offset, so that is where reading must go on.
        assert self._consumer is not None
        if committed is not None:
            self._consumer.seek(tp, committed)
        elif self._source.auto_offset_reset == "earliest":
            self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek_to_end(tp)

    def _committed(self, tp: TopicPartition) -> int | None:
        assert self._consumer is not None
        offset = self._consumer.committed(tp)
        return None if offset is None else int(offset)

    def _restore_stream(self, stream: str, entry: changelog.RestoredStream) -> bool:
        assert entry.state is not None
        group = str(entry.state.get("group"))
        model = self._engine.model(group)
        if model is None:
            log.warning("state of %s is for group %s, which has no model: starting it afresh", stream, group)
            return False
        profile = None if entry.profile is None else StreamProfile.from_json(entry.profile)
        if profile is None and stream not in model.profiles:
            log.warning("no profile for %s in the changelog: starting it afresh", stream)
            return False
        self._engine.restore(stream, entry.state, profile)
        self._origin[stream] = entry.origin
        self._onboarding.drop(stream)
        if entry.buffer is not None:
            try:
                self.lifecycle.buffer.restore(stream, entry.buffer)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("%s: its recent-normal buffer could not be restored (%r)", stream, error)
        if model.version != entry.state.get("model_version"):
            # A newer model went live after this state was committed: carry the stream over to it as a swap
            # would (windows and alert state kept, threshold on the new model's scale).
            self._engine.start_stream(stream, group, self.lifecycle.start_of_stream(model, stream))
            self._dirty_profiles.add(stream)
        return True

    # -- models ------------------------------------------------------------------------------------------
    def _register(self, publications: list[Publication]) -> None:
        """Newer winning models go live. Streams scored under the group's previous model continue under the
        new one: windows and alert state carry over, thresholds are re-fitted on the new model's scale (see
        `Lifecycle.install`)."""
        newest: dict[str, Publication] = {}
        for publication in publications:
            self._history.seen(publication)
            number = version_number(publication.model.version)
            known = newest.get(publication.group)
            if known is None or number > version_number(known.model.version):
                newest[publication.group] = publication
        for publication in newest.values():
            group, model = publication.group, publication.model
            current = self._engine.model(group)
            if current is not None and version_number(model.version) <= version_number(current.version):
                continue
            self.lifecycle.install(group, model, swapped=current is not None)
            streams = self._engine.streams_of(group)
            self._dirty_profiles.update(streams)
            self.stats.models[group] = model.version
            log.info("group %s: %s is live (%d streams carried over)", group, model.version, len(streams))

    def _schedule_jobs(self) -> None:
        for group in self._onboarding.groups():
            if group in self._jobs or time.monotonic() < self._retry_after.get(group, 0.0):
                continue
            model = self._engine.model(group)
            if model is None:
                series = self._onboarding.take_training_set(group)
                if series:
                    log.info("training the first model of group %s on %d streams", group, len(series))
                    self._jobs[group] = _Job(group, series, self._executor.submit(self._train, group, series))
            else:
                series = self._onboarding.take_startable(group)
                if series:
                    self._jobs[group] = _Job(group, series, self._executor.submit(self._start, model, series))

    def _train(
        self, group: str, series: dict[str, StreamSeries]
    ) -> tuple[GroupModel, str | None, dict[str, StreamStart]]:
        detector = self._config.detector
        model = train_group(
            series,
            version=f"{detector.model}@1",
            shape=detector.window.shape(),
            plan=detector.training.plan(progress=False),
            factory=reconstructor_factory(detector),
        )
        assert self._models is not None
        key = self._models.publish(group, model)
        return model, key, {}

    def _start(
        self, model: GroupModel, series: dict[str, StreamSeries]
    ) -> tuple[GroupModel, str | None, dict[str, StreamStart]]:
        plan = self._config.detector.training.plan(progress=False)
        starts: dict[str, StreamStart] = {}
        for stream, item in series.items():
            start = model.start_of(stream)
            try:
                starts[stream] = start if start is not None else start_stream(model, item, plan)
            except ValueError as error:
                log.warning("cannot start %s yet: %s", stream, error)
        return model, None, starts

    def _collect_jobs(self) -> None:
        for group, job in list(self._jobs.items()):
            if not job.future.done():
                continue
            try:
                model, key, starts = job.future.result()
            except Exception:  # a failed training must not take the daemon down; the data waits for a retry
                log.exception("background work for group %s failed; retrying in %.0fs", group, _JOB_RETRY_S)
                del self._jobs[group]
                self._give_back(group, job.series)
                self._retry_after[group] = time.monotonic() + _JOB_RETRY_S
                continue
            if key is not None:
                # Trained here: wait until the models topic says whose model won (ours, or one published
                # before it), then start the streams under the winner like any others.
                if self._engine.model(group) is None:
                    continue
                del self._jobs[group]
                self._give_back(group, job.series)
                continue
            del self._jobs[group]
            if self._engine.model(group) is not model:
                self._give_back(group, job.series)
                continue
            self._start_streams(group, starts, job.series)

    def _give_back(self, group: str, series: dict[str, StreamSeries]) -> None:
        """Samples of an abandoned start wait again, unless their stream moved away or started meanwhile."""
        waiting = {
            stream: item
            for stream, item in series.items()
            if stream in self._origin and not self._engine.has_stream(stream)
        }
        self._onboarding.give_back(group, waiting)

    def _start_streams(
        self, group: str, starts: dict[str, StreamStart], series: dict[str, StreamSeries]
    ) -> None:
        started = 0
        for stream, item in series.items():
            start = starts.get(stream)
            if start is None:
                self._give_back(group, {stream: item})
                continue
            if stream not in self._origin or self._engine.has_stream(stream):
                continue  # its partition moved away meanwhile, or it was restored
            self._engine.start_stream(stream, group, start)
            self._engine.warm_up(stream, item.timestamps, item.values)
            self.lifecycle.buffer.seed(stream, self.lifecycle.shape_of(stream), item.timestamps, item.values)
            self._dirty_profiles.add(stream)
            self._held.pop(stream, None)
            started += 1
            newer = self._onboarding.take_stream(stream)
            if newer is not None and len(newer.timestamps):
                # Their records were checked on arrival (unusable ones dead-lettered then): no positions.
                self._carry.append((stream, newer.timestamps, newer.values, None))
        log.info("group %s: %d streams started", group, started)
