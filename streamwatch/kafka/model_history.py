"""Model versions of a consumer group, kept on the models topic: the retraining lifecycle's history when the
daemons run on Kafka. Every daemon reads the topic, so a version one daemon publishes (a retrain, or a
rollback re-publishing older weights under a new number) goes live on all of them; versions only grow."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from streamwatch.config import StreamwatchConfig
from streamwatch.core.bootstrap import GroupModel
from streamwatch.core.model_history import with_version
from streamwatch.kafka.models_topic import ModelsTopic, Publication, version_number
from streamwatch.models.registry import ModelRecord, Status

log = logging.getLogger("streamwatch.models_topic")

# Published versions a daemon remembers per group: the live one and those a rollback can go back to.
_KEEP = 3


@dataclass(slots=True)
class ModelsTopicHistory:
    topic: ModelsTopic | None = None
    keep: int = _KEEP
    _published: dict[str, list[Publication]] = field(default_factory=dict)
    _numbers: dict[str, int] = field(default_factory=dict)  # highest version number used per group
    rolled_back: set[tuple[str, str]] = field(default_factory=set)

    def attach(self, topic: ModelsTopic) -> None:
        self.topic = topic

    def seen(self, publication: Publication) -> None:
        """A winning publication read from the topic (the daemon passes every one on)."""
        kept = self._published.setdefault(publication.group, [])
        kept.append(publication)
        kept.sort(key=lambda item: version_number(item.model.version))
        del kept[: -self.keep]
        self._bump(publication.group, publication.model.version)
        restored = publication.notes.get("rolled_back")
        if isinstance(restored, str):
            self.rolled_back.add((publication.group, restored))

    def live_version(self, group: str) -> str | None:
        kept = self._published.get(group)
        return kept[-1].model.version if kept else None

    def next_version(self, group: str, kind: str) -> str:
        return f"{kind}@{self._numbers.get(group, 0) + 1}"

    def accept(
        self,
        group: str,
        model: GroupModel,
        *,
        trained_at: float,
        data_span: tuple[float, float],
        validation: Mapping[str, float],
        reason: str = "",
        restored_from: str | None = None,
        rolled_back: str | None = None,
    ) -> dict[str, Any]:
        notes = {
            "trained_at": trained_at,
            "data_span": list(data_span),
            "validation": dict(validation),
            "reason": reason,
            "restored_from": restored_from,
            "rolled_back": rolled_back,
        }
        if self.topic is None:
            raise OSError("the models topic is not connected")
        try:
            self.topic.publish(group, model, notes)
        except KafkaError as error:
            raise OSError(f"publishing {model.version} to the models topic failed: {error}") from error
        self._bump(group, model.version)
        return notes

    def reject(
        self,
        group: str,
        version: str,
        *,
        trained_at: float,
        data_span: tuple[float, float],
        validation: Mapping[str, float],
        reason: str,
    ) -> dict[str, Any]:
        # Rejected challengers are not published (nobody would run them); their number is not reused.
        self._bump(group, version)
        return {"version": version, "reason": reason, "validation": dict(validation)}

    def roll_back(self, group: str, *, reason: str, at: float) -> tuple[dict[str, Any], GroupModel]:
        kept = self._published.get(group, [])
        live = kept[-1].model.version if kept else None
        earlier = [
            item
            for item in kept[:-1]
            if (group, item.model.version) not in self.rolled_back and item.model.version != live
        ]
        if live is None or not earlier:
            raise ValueError(f"no earlier version of group {group} to roll back to")
        target = earlier[-1]
        kind = target.model.version.rpartition("@")[0] or "model"
        model = with_version(target.model, self.next_version(group, kind))
        notes = self.accept(
            group,
            model,
            trained_at=at,
            data_span=_span(target.notes.get("data_span"), at),
            validation=target.notes.get("validation", {}),
            reason=reason,
            restored_from=target.model.version,
            rolled_back=live,
        )
        self.rolled_back.add((group, live))
        return notes, model

    def _bump(self, group: str, version: str) -> None:
        self._numbers[group] = max(self._numbers.get(group, 0), version_number(version))


def _span(value: Any, default: float) -> tuple[float, float]:
    if isinstance(value, list) and len(value) == 2:
        return float(value[0]), float(value[1])
    return default, default


def topic_records(config: StreamwatchConfig) -> dict[str, list[ModelRecord]]:
    """Every group's versions on the configured models topic, as the registry lists them."""
    with _opened(config) as (publications, history):
        records: dict[str, list[ModelRecord]] = {}
        for item in publications:
            live = history.live_version(item.group)
            version = item.model.version
            status: Status = "live" if version == live else "previous"
            if (item.group, version) in history.rolled_back:
                status = "rolled_back"
            records.setdefault(item.group, []).append(_record(item, status))
        return records


def roll_back_on_topic(config: StreamwatchConfig, group: str, *, reason: str, at: float) -> tuple[str, str]:
    """Publish the version before the live one again under a new number; (new version, restored one)."""
    with _opened(config) as (publications, history):
        if group not in {item.group for item in publications}:
            groups = ", ".join(sorted({item.group for item in publications})) or "none"
            raise ValueError(f"no group {group!r} on the models topic; its groups: {groups}")
        notes, model = history.roll_back(group, reason=reason, at=at)
        return model.version, str(notes["restored_from"])


@contextmanager
def _opened(config: StreamwatchConfig) -> Iterator[tuple[list[Publication], ModelsTopicHistory]]:
    from streamwatch.kafka import clients

    source = config.source
    if source.kind != "kafka":
        raise ValueError("the models topic needs a config with source.kind: kafka")
    topic = ModelsTopic(
        clients.reader(config.kafka, isolation_level="read_uncommitted"),
        clients.plain_producer(config.kafka, large=True),
        source.models_topic,
        "cli",
    )
    try:
        publications = topic.catch_up()
        history = ModelsTopicHistory(topic, keep=len(publications) + 1)
        for publication in publications:
            history.seen(publication)
        yield publications, history
    finally:
        topic.close()


def _record(item: Publication, status: Status) -> ModelRecord:
    notes = item.notes
    at = float(notes.get("trained_at") or 0.0)
    start, end = _span(notes.get("data_span"), at)
    validation = notes.get("validation") if isinstance(notes.get("validation"), dict) else {}
    return ModelRecord(
        group=item.group,
        version=item.model.version,
        status=status,
        trained_at=at,
        data_start=start,
        data_end=end,
        validation={str(key): float(value) for key, value in (validation or {}).items()},
        reason=str(notes.get("reason") or ""),
        restored_from=notes.get("restored_from") if isinstance(notes.get("restored_from"), str) else None,
    )
