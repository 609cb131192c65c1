"""The only module that knows YAML: typed, validated, environment-expanded configuration.

Every mistake is reported as `ConfigError` with the dotted key, what was wrong and how to fix it, e.g.
``detector.model: got 'cnn'; use one of 'conv', 'lstm', 'pca'``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamwatch.core.alerts import AlertConfig, SeverityLevel
from streamwatch.core.bootstrap import TrainingPlan, WindowShape
from streamwatch.core.canaries import CanaryConfig
from streamwatch.core.gate import GateConfig
from streamwatch.core.normal_buffer import BufferConfig
from streamwatch.core.retraining import RetrainPolicy
from streamwatch.core.thresholds import ThresholdConfig, threshold_from_dict
from streamwatch.generate.simulate import DOMAINS


class ConfigError(ValueError):
    """A configuration mistake; the message names the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedStreamConfig(_Strict):
    id: str = Field(min_length=1)
    domain: str
    rate_hz: float | None = Field(default=None, gt=0)
    anomalies_per_hour: float = Field(default=1.0, ge=0)
    # Streams of one group share a model; by default the domain is the group.
    group: str | None = None

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        if value not in DOMAINS:
            raise ValueError(f"unknown domain {value!r}; use one of {', '.join(DOMAINS)}")
        return value


DEMO_STREAMS = (
    SimulatedStreamConfig(id="pmu-1/frequency", domain="grid_frequency", anomalies_per_hour=2.0),
    SimulatedStreamConfig(id="pmu-1/voltage", domain="voltage", anomalies_per_hour=2.0),
    SimulatedStreamConfig(id="ward-3/ecg", domain="ecg", rate_hz=125.0, anomalies_per_hour=2.0),
    SimulatedStreamConfig(id="web-1/metrics", domain="server", anomalies_per_hour=0.5),
)


class SimulateSourceConfig(_Strict):
    kind: Literal["simulate"] = "simulate"
    seed: int = 7
    # Event-time seconds per wall-clock second once live; history is replayed as fast as the engine allows.
    speed: float = Field(default=60.0, gt=0)
    # Anomaly-free samples per stream before live data starts: what the daemon bootstraps on.
    history_samples: int = Field(default=5000, ge=64)
    poll_interval_s: float = Field(default=0.5, gt=0)
    streams: tuple[SimulatedStreamConfig, ...] = Field(default=DEMO_STREAMS, min_length=1)


class FileSourceConfig(_Strict):
    kind: Literal["file"] = "file"
    path: Path
    format: Literal["csv", "log", "jsonl"] = "csv"
    stream: str | None = None
    log_interval_s: float = Field(default=60.0, gt=0)


class KafkaSecurityConfig(_Strict):
    """TLS and SASL for every Kafka client. Secrets never sit in the YAML: passwords are read from the named
    environment variable or file when the clients are built."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password_env: str | None = None
    ssl_password_file: Path | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurityConfig:
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None or self.sasl_username is None:
                raise ValueError(
                    f"protocol {self.protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) "
                    "and sasl_username"
                )
            if (self.sasl_password_env is None) == (self.sasl_password_file is None):
                raise ValueError("give exactly one of sasl_password_env and sasl_password_file")
        elif self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism needs protocol SASL_PLAINTEXT or SASL_SSL, not {self.protocol}")
        if self.ssl_password_env is not None and self.ssl_password_file is not None:
            raise ValueError("give at most one of ssl_password_env and ssl_password_file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
        return self


class KafkaConfig(_Strict):
    """The cluster every Kafka part (source, alert sink, dead letters) talks to."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    client_id: str = Field(default="streamwatch", min_length=1)
    security: KafkaSecurityConfig = KafkaSecurityConfig()


class KafkaTopicConfig(_Strict):
    name: str = Field(min_length=1)
    format: Literal["json", "line"] = "json"
    # For JSON samples without a "stream" field.
    default_stream: str | None = None
    # Line protocol timestamp unit.
    precision: Literal["ns", "us", "ms", "s"] = "ns"


class StreamGroupRule(_Strict):
    """Streams whose id matches the glob `match` share the model of `group`."""

    match: str = Field(min_length=1)
    group: str = Field(min_length=1)


class KafkaSourceConfig(_Strict):
    kind: Literal["kafka"] = "kafka"
    topics: tuple[KafkaTopicConfig, ...] = ()
    # Subscribe by regular expression instead (new matching topics are picked up), decoded as
    # `pattern_format`.
    topic_pattern: str | None = None
    pattern_format: Literal["json", "line"] = "json"
    group_id: str = Field(default="streamwatch", min_length=1)
    # Static group membership (KIP-345): a restarted daemon gets its partitions back at once instead of after
    # the session timeout. Must be unique per daemon; None uses the host name.
    instance_id: str | None = None
    delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    state_topic: str = Field(default="streamwatch.state", min_length=1)
    models_topic: str = Field(default="streamwatch.models", min_length=1)
    # Streams not matched by any rule share one model per topic.
    groups: tuple[StreamGroupRule, ...] = ()
    # Records per poll, and so at most per transaction. Larger batches cost less per record when busy (every
    # stream a batch touches writes its state once per transaction: 20,000 gave 1.2-1.6x the throughput of
    # 5,000 here) but a busy daemon's alerts then wait for a longer batch (p99 2.2 s vs 1.3 s near
    # saturation): time to alert comes first.
    max_poll_records: int = Field(default=5000, ge=1)
    poll_timeout_ms: int = Field(default=100, ge=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    transaction_timeout_ms: int = Field(default=10_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    @model_validator(mode="after")
    def _one_subscription(self) -> KafkaSourceConfig:
        if bool(self.topics) == (self.topic_pattern is not None):
            raise ValueError("give either topics (a list) or topic_pattern (a regular expression)")
        if self.topic_pattern is not None:
            try:
                re.compile(self.topic_pattern)
            except re.error as error:
                raise ValueError(f"topic_pattern is not a valid regular expression: {error}") from None
        return self

    def topic(self, name: str) -> KafkaTopicConfig:
        """How to decode records of topic `name` (any topic the pattern matched uses the pattern's format)."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        return KafkaTopicConfig(name=name, format=self.pattern_format)

    def group_of(self, stream: str, topic: str) -> str:
        for rule in self.groups:
            if fnmatch.fnmatchcase(stream, rule.match):
                return rule.group
        return topic


SourceConfig = Annotated[
    SimulateSourceConfig | FileSourceConfig | KafkaSourceConfig, Field(discriminator="kind")
]


class WindowConfig(_Strict):
    length: int | Literal["auto"] = "auto"
    hop: int | Literal["auto"] = "auto"
    lateness_s: float = Field(default=0.0, ge=0)
    max_gap_intervals: float = Field(default=10.0, gt=1)

    def shape(self) -> WindowShape:
        return WindowShape(
            length=None if self.length == "auto" else self.length,
            hop=None if self.hop == "auto" else self.hop,
            lateness_s=self.lateness_s,
            max_gap_intervals=self.max_gap_intervals,
        )


class TrainingConfig(_Strict):
    seed: int = 0
    max_epochs: int = Field(default=40, ge=1)
    max_seconds: float = Field(default=120.0, gt=0)
    held_out_share: float = Field(default=0.2, gt=0, lt=0.9)
    max_train_windows: int = Field(default=8000, ge=16)
    # Samples per stream the daemon collects before a group's first model.
    bootstrap_samples: int = Field(default=4096, ge=64)

    def plan(self, *, progress: bool) -> TrainingPlan:
        return TrainingPlan(
            seed=self.seed,
            held_out_share=self.held_out_share,
            max_train_windows=self.max_train_windows,
            progress=progress,
        )


class DetectorConfig(_Strict):
    model: Literal["conv", "lstm", "pca"] = "conv"
    window: WindowConfig = WindowConfig()
    training: TrainingConfig = TrainingConfig()
    torch_threads: int | None = Field(default=None, ge=1)
    model_dir: Path = Path("streamwatch-models")


class BufferSettings(_Strict):
    capacity_samples: int = Field(default=8192, ge=64)
    margin_windows: float = Field(default=2.0, ge=0)
    new_normal_after_windows: int = Field(default=360, ge=1)


class GateSettings(_Strict):
    max_error_ratio: float = Field(default=1.25, ge=1)
    max_detection_drop: float = Field(default=0.05, ge=0, le=1)
    probes_per_stream: int = Field(default=40, ge=1)
    severity: float = Field(default=1.0, gt=0)


class CanarySettings(_Strict):
    enabled: bool = True
    every_s: float = Field(default=600.0, gt=0)
    per_stream: int = Field(default=8, ge=1)
    max_streams: int = Field(default=16, ge=1)
    memory: int = Field(default=48, ge=1)
    min_canaries: int = Field(default=32, ge=1)
    floor: float = Field(default=0.0, ge=0, le=1)
    relative_floor: float = Field(default=0.7, ge=0, le=1)
    rollback: bool = True
    severity: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _enough_memory(self) -> CanarySettings:
        if self.memory < self.min_canaries:
            raise ValueError(f"memory ({self.memory}) must be at least min_canaries ({self.min_canaries})")
        return self


class RetrainingConfig(_Strict):
    """The retraining lifecycle (see README "Retraining"): schedule, buffer, gate, canaries."""

    enabled: bool = True
    every_s: float = Field(default=6 * 3600.0, gt=0)
    fresh_share: float = Field(default=0.5, gt=0, le=1)
    every_windows: int | None = Field(default=None, ge=1)
    min_interval_s: float = Field(default=3600.0, ge=0)
    min_fresh_windows: int = Field(default=64, ge=0)
    min_samples: int = Field(default=1024, ge=64)
    held_back_share: float = Field(default=0.2, ge=0.05, le=0.5)
    buffer: BufferSettings = BufferSettings()
    gate: GateSettings = GateSettings()
    canaries: CanarySettings = CanarySettings()
    # Model versions kept on disk with their weights (the live one and those a rollback can return to).
    keep_versions: int = Field(default=5, ge=2)

    def policy(self) -> RetrainPolicy:
        return RetrainPolicy(
            enabled=self.enabled,
            every_s=self.every_s,
            fresh_share=self.fresh_share,
            every_windows=self.every_windows,
            min_interval_s=self.min_interval_s,
            min_fresh_windows=self.min_fresh_windows,
            min_samples=self.min_samples,
            held_back_share=self.held_back_share,
            buffer=BufferConfig(**self.buffer.model_dump()),
            gate=GateConfig(**self.gate.model_dump()),
            canaries=CanaryConfig(**self.canaries.model_dump()),
        )


class SeverityConfig(_Strict):
    name: str = Field(min_length=1)
    ratio: float = Field(gt=0)


class AlertsConfig(_Strict):
    for_windows: int = Field(default=2, ge=1)
    resolve_windows: int = Field(default=8, ge=1)
    resolve_ratio: float = Field(default=0.9, gt=0, le=1)
    cooldown_windows: int = Field(default=8, ge=0)
    severities: tuple[SeverityConfig, ...] = (
        SeverityConfig(name="warning", ratio=1.0),
        SeverityConfig(name="critical", ratio=2.0),
    )

    @model_validator(mode="after")
    def _valid_alerts(self) -> AlertsConfig:
        self.build()
        return self

    def build(self) -> AlertConfig:
        return AlertConfig(
            for_windows=self.for_windows,
            resolve_windows=self.resolve_windows,
            resolve_ratio=self.resolve_ratio,
            cooldown_windows=self.cooldown_windows,
            severities=tuple(SeverityLevel(level.name, level.ratio) for level in self.severities),
        )


class StdoutSinkConfig(_Strict):
    kind: Literal["stdout"] = "stdout"
    include_quality: bool = True


class JsonlSinkConfig(_Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: Path
    include_quality: bool = False


class KafkaSinkConfig(_Strict):
    """Alert events to a topic (key = stream id). With a Kafka source they are written in the same
    transaction as the offsets and the stream state: exactly once for read_committed readers."""

    kind: Literal["kafka"] = "kafka"
    topic: str = Field(default="streamwatch.alerts", min_length=1)


class KafkaDeadLetterConfig(_Strict):
    """Unusable records to a topic, unchanged, with the reason and origin in headers."""

    kind: Literal["kafka"] = "kafka"
    topic: str = Field(default="streamwatch.deadletter", min_length=1)


class SecretConfig(_Strict):
    """Where a secret is read from when the sink is built: an environment variable or a file (systemd's
    LoadCredential= puts it under $CREDENTIALS_DIRECTORY). Never the secret itself: the YAML is not secret."""

    env: str | None = Field(default=None, min_length=1)
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretConfig:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) and file (a path)")
        return self


class AlertmanagerSinkConfig(_Strict):
    """Alerts to Prometheus Alertmanager's v2 API, the way Prometheus sends them: every alert to each URL
    (an HA pair gets both), active alerts re-sent every `resend_interval_s`."""

    kind: Literal["alertmanager"] = "alertmanager"
    urls: tuple[str, ...] = Field(min_length=1)
    alertname: str = Field(default="StreamwatchAnomaly", min_length=1)
    # Static labels on every alert, e.g. {team: grid, env: prod}.
    labels: dict[str, str] = Field(default_factory=dict)
    # Link in each alert back to where it came from (e.g. a Grafana dashboard of the stream); {stream} (URL
    # encoded), {alert_id} and {host} (the daemon's host name) are filled in.
    generator_url: str = "streamwatch://{host}/streams/{stream}?alert_id={alert_id}"
    resend_interval_s: float = Field(default=60.0, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    # Bearer token for an Alertmanager behind an authenticating proxy.
    bearer_token: SecretConfig | None = None

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            _check_http_url(url)
        bases = tuple(url.rstrip("/") for url in urls)
        if len(set(bases)) != len(bases):
            raise ValueError("an Alertmanager URL is listed twice")
        return bases

    @field_validator("generator_url")
    @classmethod
    def _uri_template(cls, template: str) -> str:
        # Alertmanager refuses an alert whose generatorURL is not a URI (HTTP 422), so a bad template is
        # caught here rather than at the first alert.
        try:
            url = template.format(stream="a%2Fb", alert_id="0123456789abcdef", host="host")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"use only {{stream}}, {{alert_id}} and {{host}} as placeholders ({error})"
            ) from None
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+", url):
            raise ValueError(
                f"{template!r} is not a URI template (like https://grafana.example/d/x?stream={{stream}})"
            )
        return template

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(
                    f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting __)"
                )
        reserved = set(labels) & {"alertname", "stream", "group", "severity", "alert_id"}
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))} are set by streamwatch; remove them from labels")
        return labels


class WebhookSinkConfig(_Strict):
    """Alert events POSTed to one URL as JSON (the alert contract), signed, retried, in order per stream."""

    kind: Literal["webhook"] = "webhook"
    url: str
    # Only these events (globs on the stream id; severity and status names); empty = all.
    streams: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    statuses: tuple[Literal["firing", "resolved"], ...] = ()
    # HMAC-SHA256 key for the X-Streamwatch-Signature header; None sends unsigned requests.
    secret: SecretConfig | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        _check_http_url(url)
        return url


class InfluxSinkConfig(_Strict):
    """Scores, thresholds, alert states and detector health to InfluxDB (1.8 through its v2 API, 2.x, 3.x),
    batched and buffered through outages."""

    kind: Literal["influxdb"] = "influxdb"
    url: str = "http://127.0.0.1:8086"
    # 2.x/3.x: the organisation (3.x ignores it); 1.8: "-".
    org: str = Field(default="-", min_length=1)
    # 2.x: the bucket; 3.x: the database; 1.8: "database/retention_policy", e.g. streamwatch/autogen.
    bucket: str = Field(default="streamwatch", min_length=1)
    # API token (1.8: "user:password", or none with auth off).
    token: SecretConfig | None = None
    # Write every scored window (the score and threshold series); false writes alerts and health only.
    scores: bool = True
    batch_points: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    # Points held while InfluxDB is unreachable; beyond this the oldest are dropped (and counted).
    buffer_points: int = Field(default=1_000_000, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    # Seconds `close` waits for the buffer to drain before counting the rest as dropped.
    close_timeout_s: float = Field(default=10.0, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        _check_http_url(url)
        return url.rstrip("/")


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_http_url(url: str) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")


class RetryConfig(_Strict):
    """Redelivery of webhook and Alertmanager requests: exponential backoff with full jitter."""

    initial_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=300.0, gt=0)
    # An event still undelivered this long after it was queued goes to the dead-letter file.
    give_up_after_s: float = Field(default=24 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


class DeliveryConfig(_Strict):
    """The persistent outbox behind the webhook and Alertmanager sinks."""

    # Outbox database: events wait here (surviving restarts) until every receiver has them.
    dir: Path = Path("streamwatch-outbox")
    # Events that exhausted their retries, with the receiver and the last error.
    dead_letter: Path = Path("streamwatch-undelivered.jsonl")
    retry: RetryConfig = RetryConfig()
    # Delivered idempotency keys are remembered this long, so a replayed event is not sent twice.
    remember_delivered_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # At shutdown, how long receivers that answer get to take what is due; the rest waits for the next start.
    close_timeout_s: float = Field(default=5.0, ge=0)


SinkConfig = Annotated[
    StdoutSinkConfig
    | JsonlSinkConfig
    | KafkaSinkConfig
    | AlertmanagerSinkConfig
    | WebhookSinkConfig
    | InfluxSinkConfig,
    Field(discriminator="kind"),
]
DeadLetterConfig = Annotated[JsonlSinkConfig | KafkaDeadLetterConfig, Field(discriminator="kind")]


class HttpConfig(_Strict):
    """The daemon's own HTTP endpoints: /metrics (Prometheus), /healthz (alive), /readyz (ready)."""

    enabled: bool = True
    # host:port; loopback by default (the metrics say which streams exist). Port 0 picks a free one.
    listen: str = "127.0.0.1:9180"
    # /readyz reports a sink stuck when its receiver has been failing this long.
    sink_stuck_after_s: float = Field(default=300.0, gt=0)
    # ... and the daemon stuck when its main loop has not come round for this long.
    loop_stuck_after_s: float = Field(default=60.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:9180, or 0.0.0.0:9180 for all)")
        return listen

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


# Robust z (EW median + 8 x EW MAD of the stream's own normal scores), never below 2.5: window scores are
# calibrated so that 1 is the 99.5th percentile of each kind of evidence on normal training windows, and the
# window score is the largest of several kinds over all channels, so normal windows routinely reach 1-2.
# Chosen on generated data of every domain (bench/quality_generated.py): POT's tail fit drifted upwards on
# the slow domains and went blind; floors of 2, 2.5 and 3 were compared: 2 doubled the false alarms, 3 missed
# weak anomalies in sparse log levels.
DEFAULT_THRESHOLD: dict[str, Any] = {"kind": "robust_z", "floor": 2.5}


class StreamwatchConfig(_Strict):
    source: SourceConfig = SimulateSourceConfig()
    detector: DetectorConfig = DetectorConfig()
    threshold: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLD))
    alerts: AlertsConfig = AlertsConfig()
    sinks: tuple[SinkConfig, ...] = (StdoutSinkConfig(),)
    dead_letter: DeadLetterConfig = JsonlSinkConfig(path=Path("streamwatch-deadletter.jsonl"))
    kafka: KafkaConfig = KafkaConfig()
    retraining: RetrainingConfig = RetrainingConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    http: HttpConfig = HttpConfig()

    @field_validator("dead_letter", mode="before")
    @classmethod
    def _dead_letter_file_by_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "jsonl", **value}
        return value

    @field_validator("threshold")
    @classmethod
    def _valid_threshold(cls, value: dict[str, Any]) -> dict[str, Any]:
        threshold_from_dict(value)
        return value

    def threshold_config(self) -> ThresholdConfig:
        return threshold_from_dict(self.threshold)

    @model_validator(mode="after")
    def _distinct_receivers(self) -> StreamwatchConfig:
        # The outbox keys queued events by receiver URL, so one URL in two sinks would share (and split) a
        # queue.
        urls: list[str] = []
        for sink in self.sinks:
            if sink.kind == "webhook":
                urls.append(sink.url)
            elif sink.kind == "alertmanager":
                urls.extend(sink.urls)
        repeated = sorted({url for url in urls if urls.count(url) > 1})
        if repeated:
            raise ValueError(
                f"{', '.join(repeated)} appears in more than one sink; give each receiver URL once "
                "(one webhook sink per URL, with its filters)"
            )
        return self

    @model_validator(mode="after")
    def _kafka_outputs_with_kafka_source(self) -> StreamwatchConfig:
        # Alerts and dead letters of a Kafka source go through its transaction; with another source they would
        # need a separate producer, which the simulated and file sources do not have.
        uses_kafka = any(sink.kind == "kafka" for sink in self.sinks) or self.dead_letter.kind == "kafka"
        if uses_kafka and self.source.kind != "kafka":
            raise ValueError(
                f"Kafka sinks and dead letters need source.kind: kafka (the source is {self.source.kind}); "
                "use stdout/jsonl sinks and a jsonl dead_letter instead"
            )
        return self


# -- loading ---------------------------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, *, where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; a missing variable without default is an error."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{where or 'value'}: environment variable {name} is not set; export it or write "
                f"${{{name}:-default}}"
            )

        return _ENV.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand_env(item, where=_join(where, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def parse_config(data: Any) -> StreamwatchConfig:
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping with at least a `source` key")
    try:
        return StreamwatchConfig.model_validate(expand_env(data))
    except ValidationError as error:
        raise ConfigError(_explain(error)) from None


def load_config(path: Path) -> StreamwatchConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_UNION_TAGS = ("simulate", "file", "kafka", "stdout", "jsonl", "alertmanager", "webhook", "influxdb")


def _yaml_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the YAML keys, without the union-branch names it inserts after
    `source`, `dead_letter` and each `sinks` item (a top-level `kafka` key stays)."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        before = loc[index - 1] if index > 0 else None
        after_union = before in ("source", "dead_letter") or isinstance(before, int)
        if part in _UNION_TAGS and after_union:
            continue
        parts.append(str(part))
    return ".".join(parts)


def _explain(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        path = _yaml_path(problem["loc"]) or "(top level)"
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"{path}: unknown key; remove it or check its spelling against config.example.yaml")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing; add it (see config.example.yaml)")
        elif kind == "union_tag_invalid":
            lines.append(f"{path}: {problem['msg']}")
        else:
            got = problem.get("input")
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {message} (got {got!r})")
    return "; ".join(lines)
