"""The retraining lifecycle: what is learned, when a retrain is due, whether its model goes live, and
watching the live model's eyesight afterwards. One implementation for the daemons (which train in the
background) and for `detect --retrain` (which trains inline), so both decide the same way.

Per stream group:
1. Samples and verdicts feed the recent-normal buffer (`core.normal_buffer`).
2. A retrain is due every `every_s` of event time, or sooner (but not within `min_interval_s`) once
   `fresh_share` of the buffered normal data is new (or, if set, once the streams gained `every_windows`
   new normal windows each), never with less than `min_fresh_windows` of new data;
   and at once when a stream's change has lasted long enough to be its new normal. Every stream must hold
   enough normal data; the newest `held_back_share` of it is kept back from training for the gate.
3. `run_job` trains the challenger with the live window shape and judges it with the validation gate.
4. `complete` swaps an accepted challenger in between two batches; each stream's threshold is re-fitted on
   the challenger's own scores of its recent normal windows, and alert state and windows carry over.
5. Canaries test the live model every `canaries.every_s`; a group below the floor raises a
   `detector-degraded` event, and if that followed a swap from a model that saw, the swap is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from streamwatch.core.alerts import alert_id_for
from streamwatch.core.bootstrap import (
    GroupModel,
    ReconstructorFactory,
    StreamSeries,
    StreamStart,
    TrainingPlan,
    WindowShape,
    start_stream,
    train_group,
)
from streamwatch.core.canaries import CanaryConfig, CanaryTracker
from streamwatch.core.engine import Engine, EngineOutput
from streamwatch.core.gate import GateConfig, GateReport, judge
from streamwatch.core.model_history import ModelHistory, with_version
from streamwatch.core.normal_buffer import BufferConfig, NormalBuffer, StreamShape
from streamwatch.core.probes import draw_probes
from streamwatch.core.profile import StreamProfile
from streamwatch.core.thresholds import ThresholdConfig
from streamwatch.records import AlertEvent, AlertStatus, FloatArray

log = logging.getLogger("streamwatch.retraining")

Block = tuple[str, npt.NDArray[np.float64], FloatArray]
# Canaries are cut from the newest normal data, at most this many windows of it: they test today's data,
# but from a stretch long enough that one odd minute cannot decide a verdict.
_CANARY_RECENT_WINDOWS = 64


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    enabled: bool = True
    # A retrain is due every `every_s` of event time, or sooner once `fresh_share` of the streams' normal
    # data is new since the last one, but never sooner than `min_interval_s` (except for a new normal), and
    # never with fewer than `min_fresh_windows` new normal windows per stream.
    every_s: float = 6 * 3600.0
    fresh_share: float = 0.5
    # Or, when set, once the streams gained this many new normal windows each (on average).
    every_windows: int | None = None
    min_interval_s: float = 3600.0
    min_fresh_windows: int = 64
    min_samples: int = 1024
    held_back_share: float = 0.2
    buffer: BufferConfig = field(default_factory=BufferConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    canaries: CanaryConfig = field(default_factory=CanaryConfig)

    def __post_init__(self) -> None:
        if not self.every_s > 0:
            raise ValueError(f"every_s must be > 0, got {self.every_s}")
        if not 0.0 < self.fresh_share <= 1.0:
            raise ValueError(f"fresh_share must be in (0, 1], got {self.fresh_share}")
        if not 0.0 <= self.min_interval_s <= self.every_s:
            raise ValueError(f"min_interval_s must be in [0, every_s], got {self.min_interval_s}")
        if self.every_windows is not None and self.every_windows < 1:
            raise ValueError(f"every_windows must be >= 1 (or null), got {self.every_windows}")
        if self.min_fresh_windows < 0 or self.min_samples < 64:
            raise ValueError("min_fresh_windows must be >= 0 and min_samples >= 64")
        if not 0.05 <= self.held_back_share <= 0.5:
            raise ValueError(f"held_back_share must be in [0.05, 0.5], got {self.held_back_share}")

    def required_samples(self, length: int) -> int:
        """Normal samples a stream needs for a retrain: enough for training, calibration and the gate."""
        return max(self.min_samples, int(np.ceil(8 * length / (1 - self.held_back_share))))


@dataclass(frozen=True, slots=True)
class RetrainJob:
    group: str
    version: str
    seed: int
    due_at: float
    reason: str
    champion: GroupModel
    champion_profiles: dict[str, StreamProfile]
    train: dict[str, StreamSeries]
    held_back: dict[str, StreamSeries]
    new_normal: frozenset[str] = frozenset()

    @property
    def data_span(self) -> tuple[float, float]:
        starts = [float(item.timestamps[0]) for item in self.train.values() if len(item.timestamps)]
        ends = [float(item.timestamps[-1]) for item in self.held_back.values() if len(item.timestamps)]
        return (min(starts, default=self.due_at), max(ends, default=self.due_at))


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    job: RetrainJob
    challenger: GroupModel | None
    report: GateReport | None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.challenger is not None and self.report is not None and self.report.accepted


def run_job(
    job: RetrainJob,
    *,
    factory: ReconstructorFactory,
    plan: TrainingPlan,
    gate: GateConfig,
    threshold: ThresholdConfig,
) -> RetrainOutcome:
    """Train the challenger and judge it: the heavy part, safe to run on another thread."""
    spec = job.champion.spec
    try:
        challenger = train_group(
            job.train,
            version=job.version,
            shape=WindowShape(spec.length, spec.hop, spec.lateness_s),
            plan=replace(plan, seed=job.seed, progress=False),
            factory=factory,
            spec=spec,
        )
    except ValueError as error:
        return RetrainOutcome(job, None, None, f"training failed: {error}")
    report = judge(
        job.champion,
        job.champion_profiles,
        challenger,
        job.held_back,
        config=gate,
        threshold=threshold,
        seed=job.seed,
        new_normal=job.new_normal,
    )
    return RetrainOutcome(job, challenger, report)


@dataclass(slots=True)
class GroupStats:
    version: str
    attempted: int = 0
    accepted: int = 0
    rejected: int = 0
    rollbacks: int = 0
    last_accepted_at: float | None = None  # event time
    last_reason: str = ""


@dataclass(slots=True)
class _Group:
    watched_since: float
    last_attempt: float
    next_canary: float
    now: float
    canary_rounds: int = 0
    next_stream: int = 0  # round-robin position for canaries in large groups
    waiting_logged: bool = False
    degraded: AlertEvent | None = None
    # Right after a swap the next round draws enough canaries to judge the new version at once.
    judge_now: bool = False


@dataclass(slots=True)
class Lifecycle:
    engine: Engine
    policy: RetrainPolicy
    kind: str
    threshold: ThresholdConfig
    plan: TrainingPlan
    history: ModelHistory
    clock: Callable[[], float] | None = None  # wall clock for event stamps; None: event time
    seed: int = 0
    # False where the history distributes models to every daemon (the models topic): an accepted or
    # restored model then goes live when it comes back from there, on all daemons alike.
    install_on_accept: bool = True
    buffer: NormalBuffer = field(init=False)
    canaries: CanaryTracker = field(init=False)
    stats: dict[str, GroupStats] = field(init=False, default_factory=dict)
    _groups: dict[str, _Group] = field(init=False, default_factory=dict)
    _in_flight: set[str] = field(init=False, default_factory=set)
    _attempts: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.buffer = NormalBuffer(self.policy.buffer)
        self.canaries = CanaryTracker(self.policy.canaries)

    # -- feeding -----------------------------------------------------------------------------------------
    def observe(self, blocks: Iterable[Block], out: EngineOutput) -> list[AlertEvent]:
        """What one batch fed the engine and what it said; returns detector-health events to publish."""
        for stream, timestamps, values in blocks:
            if self.engine.has_stream(stream) and len(timestamps):
                self.buffer.add(stream, self.shape_of(stream), timestamps, values)
        self.buffer.judge(out.scores, out.alerts, out.alert_windows)
        # Per stream first, then per group: a batch holds thousands of windows but few streams.
        spans: dict[str, tuple[float, float]] = {}
        for verdict in out.scores:
            first, last = spans.get(verdict.stream, (verdict.end, verdict.end))
            spans[verdict.stream] = (min(first, verdict.end), max(last, verdict.end))
        touched: set[str] = set()
        for stream, (first, last) in spans.items():
            group = self.engine.group_of(stream)
            state = self._watch(group, first)
            state.now = max(state.now, last)
            touched.add(group)
        events: list[AlertEvent] = []
        if self.policy.canaries.enabled:
            for group in sorted(touched):
                events += self._canary_round(group)
        return events

    def _watch(self, group: str, now: float) -> _Group:
        state = self._groups.get(group)
        if state is None:
            every = self.policy.canaries.every_s
            state = _Group(now, now, now + every, now)
            self._groups[group] = state
            model = self.engine.model(group)
            version = "" if model is None else model.version
            self.stats.setdefault(group, GroupStats(version))
            self.canaries.went_live(group, version, swapped=False)
        return state

    def shape_of(self, stream: str) -> StreamShape:
        model = self.engine.model(self.engine.group_of(stream))
        assert model is not None
        interval = self.engine.profile_of(stream).interval_s
        window_s = model.spec.length * interval
        return StreamShape(self.engine.channels_of(stream), window_s, model.spec.max_gap_s)

    # -- retraining --------------------------------------------------------------------------------------
    def due(self) -> list[RetrainJob]:
        """Retrains that are due now (each group at most one at a time); the caller runs each with
        `run_job` and hands the outcome to `complete`."""
        if not self.policy.enabled:
            return []
        jobs = []
        for group in sorted(self._groups):
            if group in self._in_flight:
                continue
            job = self._job_for(group)
            if job is not None:
                self._in_flight.add(group)
                jobs.append(job)
        return jobs

    def _job_for(self, group: str) -> RetrainJob | None:
        model = self.engine.model(group)
        streams = self.engine.streams_of(group)
        if model is None or not streams:
            return None
        state = self._groups[group]
        reason = self._reason(group, model, streams)
        if reason is None:
            return None
        required = self.policy.required_samples(model.spec.length)
        short = [stream for stream in streams if self.buffer.size(stream) < required]
        if short:
            if not state.waiting_logged:
                log.info(
                    "group %s: retrain due (%s) but %d streams hold fewer than %d normal samples (%s)",
                    group,
                    reason,
                    len(short),
                    required,
                    ", ".join(short[:3]),
                )
                state.waiting_logged = True
            return None
        state.waiting_logged = False
        state.last_attempt = state.now
        self._attempts += 1
        train: dict[str, StreamSeries] = {}
        held_back: dict[str, StreamSeries] = {}
        for stream in streams:
            series = self.buffer.series(stream)
            assert series is not None
            cut = int(len(series.timestamps) * (1 - self.policy.held_back_share))
            train[stream], held_back[stream] = series.rows(0, cut), series.rows(cut)
            self.buffer.mark_trained(stream)
        stats = self.stats[group]
        stats.attempted += 1
        version = self.history.next_version(group, self.kind)
        log.info("group %s: retraining %s (%s)", group, version, reason)
        return RetrainJob(
            group,
            version,
            self.seed + self._attempts,
            state.now,
            reason,
            model,
            {stream: self.engine.profile_of(stream) for stream in streams},
            train,
            held_back,
            frozenset(stream for stream in streams if self.buffer.in_new_normal(stream)),
        )

    def _reason(self, group: str, model: GroupModel, streams: list[str]) -> str | None:
        new_normal = [stream for stream in streams if self.buffer.asks_retrain(stream)]
        if new_normal:
            return f"new normal on {', '.join(new_normal[:3])}"
        hop = model.spec.hop
        fresh = [self.buffer.fresh_samples(stream) for stream in streams]
        if np.mean(fresh) / hop < self.policy.min_fresh_windows:
            return None
        state = self._groups[group]
        elapsed = state.now - state.last_attempt
        if elapsed >= self.policy.every_s:
            return f"{elapsed / 3600:.1f} h since the last retrain"
        if elapsed < self.policy.min_interval_s:
            return None
        capacity = self.policy.buffer.capacity_samples
        share = float(np.mean([min(1.0, count / capacity) for count in fresh]))
        if share >= self.policy.fresh_share:
            return f"{share:.0%} of the normal data is new"
        windows = float(np.mean(fresh)) / hop
        if self.policy.every_windows is not None and windows >= self.policy.every_windows:
            return f"{windows:.0f} new normal windows per stream"
        return None

    def complete(self, outcome: RetrainOutcome) -> None:
        """Apply a finished retrain: swap the challenger in, or record why not."""
        job = outcome.job
        self._in_flight.discard(job.group)
        stats = self.stats[job.group]
        figures = {} if outcome.report is None else outcome.report.figures()
        if not outcome.accepted or outcome.challenger is None:
            why = outcome.error or (outcome.report.reason if outcome.report else "unknown")
            self._reject(job, figures, why)
            return
        live = self.history.live_version(job.group)
        if self.engine.model(job.group) is not job.champion or live not in (None, job.champion.version):
            # The live model changed while this one trained (a rollback, or another daemon's model).
            stats.rejected += 1
            stats.last_reason = "the live model changed while it trained"
            log.info("group %s: %s dropped: the live model changed meanwhile", job.group, job.version)
            return
        challenger = outcome.challenger
        version = self.history.next_version(job.group, self.kind)
        if version != challenger.version:  # another version was recorded meanwhile: never reuse a number
            challenger = with_version(challenger, version)
        try:
            self.history.accept(
                job.group,
                challenger,
                trained_at=job.due_at,
                data_span=job.data_span,
                validation=figures,
                reason=job.reason,
            )
        except (OSError, ValueError) as error:
            # Not recorded means a restart would not find it: it does not go live.
            log.error("group %s: %s not recorded (%s); the champion stays", job.group, version, error)
            stats.rejected += 1
            stats.last_reason = f"could not be recorded: {error}"
            return
        if self.install_on_accept:
            self.install(job.group, challenger, swapped=True)
        stats.accepted += 1
        stats.last_accepted_at = self._groups[job.group].now
        stats.last_reason = job.reason
        log.info(
            "group %s: %s %s (%s; error ratio %.2f, detection %.0f%% vs %.0f%%; %d epochs in %.1fs)",
            job.group,
            version,
            "is live" if self.install_on_accept else "accepted and published",
            job.reason,
            figures.get("error_ratio", float("nan")),
            100 * figures.get("challenger_detection", float("nan")),
            100 * figures.get("champion_detection", float("nan")),
            challenger.fit_report.epochs,
            challenger.fit_report.seconds,
        )

    def _reject(self, job: RetrainJob, figures: Mapping[str, float], why: str) -> None:
        stats = self.stats[job.group]
        stats.rejected += 1
        stats.last_reason = why
        log.warning("group %s: %s rejected: %s", job.group, job.version, why)
        try:
            self.history.reject(
                job.group,
                self.history.next_version(job.group, self.kind),
                trained_at=job.due_at,
                data_span=job.data_span,
                validation=figures,
                reason=why,
            )
        except (OSError, ValueError) as error:
            log.error("group %s: the rejection could not be recorded (%s)", job.group, error)

    # -- going live --------------------------------------------------------------------------------------
    def install(self, group: str, model: GroupModel, *, swapped: bool, refit: bool = False) -> None:
        """Make `model` live for `group` between two batches. Streams keep their windows and alert state;
        each threshold is re-fitted on the model's own scores of that stream's recent normal windows
        (with `refit`, or for streams the model was not trained on, from the buffer)."""
        self.engine.register(group, model)
        pooled = np.concatenate([*model.initial_scores.values(), np.empty(0, dtype=np.float32)])
        for stream in self.engine.streams_of(group):
            start = self.start_of_stream(model, stream, refit=refit, pooled=pooled)
            self.engine.start_stream(stream, group, start)
        self.canaries.went_live(group, model.version, swapped=swapped)
        stats = self.stats.setdefault(group, GroupStats(model.version))
        stats.version = model.version
        state = self._groups.get(group)
        if state is not None and swapped:
            # A new version is checked with the next batch, before it can page anyone for long.
            state.next_canary = state.now
            state.judge_now = True

    def start_of_stream(
        self, model: GroupModel, stream: str, *, refit: bool = False, pooled: FloatArray | None = None
    ) -> StreamStart:
        """How `stream`, scored now, continues under `model`: the model's own start for a stream it was
        trained on (unless `refit`), else one calibrated on the stream's recent normal data, else the
        stream's profile with the model's pooled normal scores."""
        if pooled is None:
            pooled = np.concatenate([*model.initial_scores.values(), np.empty(0, dtype=np.float32)])
        start = model.start_of(stream)
        if start is not None and not refit:
            return start
        series = self.buffer.series(stream)
        if series is not None:
            try:
                return start_stream(model, series, self.plan)
            except ValueError:
                pass
        if start is not None:
            return start
        # Nothing recent to calibrate on: keep the stream's profile, and the model's pooled normal scores.
        channels = len(self.engine.channels_of(stream))
        return StreamStart(self.engine.profile_of(stream), pooled, np.zeros(channels, dtype=np.float32))

    def roll_back(self, group: str, reason: str) -> bool:
        """Put the version before the live one back (as a new version number); False if there is none."""
        now = self._groups[group].now if group in self._groups else 0.0
        try:
            _, model = self.history.roll_back(group, reason=reason, at=now)
        except (OSError, ValueError) as error:
            log.error("group %s: cannot roll back: %s", group, error)
            return False
        if self.install_on_accept:
            self.install(group, model, swapped=True, refit=True)
        self.stats[group].rollbacks += 1
        log.warning("group %s: rolled back to %s (%s)", group, model.version, reason)
        return True

    # -- canaries ----------------------------------------------------------------------------------------
    def _canary_round(self, group: str) -> list[AlertEvent]:
        state = self._groups[group]
        config = self.policy.canaries
        if state.now < state.next_canary:
            return []
        state.next_canary = state.now + config.every_s
        state.canary_rounds += 1
        model = self.engine.model(group)
        streams = self.engine.streams_of(group)
        if model is None or not streams:
            return []
        count = min(config.max_streams, len(streams))
        chosen = [streams[(state.next_stream + i) % len(streams)] for i in range(count)]
        state.next_stream = (state.next_stream + len(chosen)) % len(streams)
        per_stream = config.per_stream
        if state.judge_now:
            per_stream = max(per_stream, -(-config.min_canaries // len(chosen)))
            state.judge_now = False
        for index, stream in enumerate(chosen):
            series = self.buffer.series(stream)
            if series is None or self.buffer.in_new_normal(stream):
                # A stream whose new normal is not learned yet has no normal data the live model knows.
                continue
            recent = series.rows(len(series.timestamps) - _CANARY_RECENT_WINDOWS * model.spec.length)
            probes = draw_probes(
                recent,
                length=model.spec.length,
                count=per_stream,
                rng=np.random.default_rng([self.seed, state.canary_rounds, index]),
                kinds=config.kinds,
                severity=config.severity,
            )
            if not len(probes):
                continue
            clean, threshold = self.engine.probe(stream, probes.starts, probes.clean)
            anomalous, _ = self.engine.probe(stream, probes.starts, probes.injected)
            caught = ((anomalous > threshold) & (clean <= threshold)).tolist()
            self.canaries.record(group, stream, caught)
        return self._judge_eyesight(group, model)

    def _judge_eyesight(self, group: str, model: GroupModel) -> list[AlertEvent]:
        state = self._groups[group]
        eyesight = self.canaries.group(group)
        assert eyesight is not None
        if not self.canaries.judged(group):
            return []
        rate = eyesight.rate or 0.0
        if self.canaries.below_floor(group):
            events: list[AlertEvent] = []
            if state.degraded is None:
                state.degraded = self._health_event(group, "firing", rate, model.version, state.now)
                events.append(state.degraded)
                log.warning(
                    "group %s: %s catches %.0f%% of canaries (floor %.0f%%): detector degraded",
                    group,
                    model.version,
                    100 * rate,
                    100 * self.canaries.floor_of(group),
                )
            if self.canaries.should_roll_back(group):
                self.roll_back(group, f"canaries caught {rate:.0%} after the swap to {model.version}")
            return events
        if state.degraded is not None:
            resolved = self._health_event(group, "resolved", rate, model.version, state.now)
            state.degraded = None
            log.info("group %s: canaries back to %.0f%% with %s", group, 100 * rate, model.version)
            return [resolved]
        return []

    def _health_event(
        self, group: str, status: AlertStatus, rate: float, version: str, now: float
    ) -> AlertEvent:
        state = self._groups[group]
        since = now if state.degraded is None else state.degraded.window_start
        return AlertEvent(
            alert_id=alert_id_for(f"detector-degraded\x1f{group}", since),
            stream=group,
            status=status,
            severity="warning",
            window_start=since,
            window_end=now,
            score=rate,
            threshold=max(self.canaries.floor_of(group), 1e-9),
            model_version=version,
            channels={},
            detected_at=self.clock() if self.clock is not None else now,
            kind="detector-degraded",
        )

    # -- figures -----------------------------------------------------------------------------------------
    def seconds_since_retrain(self, group: str) -> float | None:
        """Event time since the group's last accepted retrain, or since it was first scored."""
        state = self._groups.get(group)
        if state is None:
            return None
        stats = self.stats.get(group)
        accepted = None if stats is None else stats.last_accepted_at
        return max(0.0, state.now - (state.watched_since if accepted is None else accepted))

    def is_degraded(self, group: str) -> bool:
        state = self._groups.get(group)
        return state is not None and state.degraded is not None

    # -- state -------------------------------------------------------------------------------------------
    def drop(self, stream: str) -> None:
        self.buffer.drop(stream)
