"""Where model versions are recorded: the seam between the retraining lifecycle and the registry (on disk,
`streamwatch.models.registry`; on the models topic, `streamwatch.kafka.model_history`), and an in-memory
history for offline runs and tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from streamwatch.core.bootstrap import GroupModel
from streamwatch.core.detector import WindowDetector


class ModelHistory(Protocol):
    """Where model versions are recorded (the registry on disk, or memory for offline runs)."""

    def next_version(self, group: str, kind: str) -> str: ...

    def live_version(self, group: str) -> str | None: ...

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
    ) -> Any: ...

    def reject(
        self,
        group: str,
        version: str,
        *,
        trained_at: float,
        data_span: tuple[float, float],
        validation: Mapping[str, float],
        reason: str,
    ) -> Any: ...

    def roll_back(self, group: str, *, reason: str, at: float) -> tuple[Any, GroupModel]: ...


def with_version(model: GroupModel, version: str) -> GroupModel:
    """The same model under another version string (a rollback re-publishes old weights as a new version)."""
    detector = WindowDetector(model.detector.reconstructor, model.detector.calibration, version)
    return replace(model, version=version, detector=detector)


@dataclass(slots=True)
class MemoryHistory:
    """Model versions kept in memory: for offline runs and tests (the daemon uses the on-disk registry)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    _models: dict[tuple[str, str], GroupModel] = field(default_factory=dict)

    def live_version(self, group: str) -> str | None:
        live = [record for record in self.records if record["group"] == group and record["status"] == "live"]
        return str(live[-1]["version"]) if live else None

    def next_version(self, group: str, kind: str) -> str:
        numbers = [
            int(record["version"].rpartition("@")[2])
            for record in self.records
            if record["group"] == group and record["version"].rpartition("@")[2].isdigit()
        ]
        return f"{kind}@{max(numbers, default=1) + 1}"

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
    ) -> dict[str, Any]:
        for record in self.records:
            if record["group"] == group and record["status"] == "live":
                record["status"] = "previous"
        record = {
            "group": group,
            "version": model.version,
            "status": "live",
            "trained_at": trained_at,
            "data_span": data_span,
            "validation": dict(validation),
            "reason": reason,
            "restored_from": restored_from,
        }
        self.records.append(record)
        self._models[(group, model.version)] = model
        return record

    def adopt(self, group: str, model: GroupModel) -> None:
        """Record the model a group started with (so there is something to roll back to)."""
        if (group, model.version) not in self._models:
            self.accept(group, model, trained_at=0.0, data_span=(0.0, 0.0), validation={}, reason="first")

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
        record = {
            "group": group,
            "version": version,
            "status": "rejected",
            "trained_at": trained_at,
            "data_span": data_span,
            "validation": dict(validation),
            "reason": reason,
            "restored_from": None,
        }
        self.records.append(record)
        return record

    def roll_back(self, group: str, *, reason: str, at: float) -> tuple[dict[str, Any], GroupModel]:
        mine = [record for record in self.records if record["group"] == group]
        previous = [record for record in mine if record["status"] == "previous"]
        if not previous:
            raise ValueError(f"no earlier version of group {group} to roll back to")
        target = previous[-1]
        version = self.next_version(group, _kind(target))
        model = with_version(self._models[(group, target["version"])], version)
        for record in mine:
            if record["status"] == "live":
                record["status"] = "rolled_back"
                record["reason"] = reason
        record = self.accept(
            group,
            model,
            trained_at=at,
            data_span=target["data_span"],
            validation=target["validation"],
            reason=reason,
            restored_from=target["version"],
        )
        target["status"] = "retired"
        return record, model


def _kind(record: Mapping[str, Any]) -> str:
    return str(record["version"]).rpartition("@")[0] or "model"
