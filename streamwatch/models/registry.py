"""The model registry: every version of each stream group's model, which one is live, and why.

Layout under the root directory (`detector.model_dir`):

    <root>/<group>/registry.json           the group's history, oldest first, human-readable
    <root>/<group>/<version>.safetensors   weights of each version that keeps them (with <version>.json)
    <root>/<group>/.lock                   taken (flock) by every change: a daemon and the CLI may both act

`<group>` and `<version>` are percent-encoded (`urllib.parse.quote`, a leading dot encoded too), so any
group name maps to exactly one directory right inside the root and back; registry.json also holds the plain
group name.

Versions are `KIND@N`. N grows with every version a group ever had, accepted, rejected or restored, so the
`model_version` of an alert event names exactly one model. Weights are written before the registry.json that
names them, and registry.json is replaced atomically: a reader always sees a whole history.

Which versions keep their weights: the live one, the newest `keep - 1` previous ones, and a rolled-back one
until `keep` newer versions have gone live (someone will want to look at what went wrong). Retired and
rejected versions have none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote, unquote

from streamwatch.core.bootstrap import GroupModel
from streamwatch.core.detector import WindowDetector
from streamwatch.models.group_store import load_group_model, save_group_model
from streamwatch.models.store import ModelFileError, model_paths, write_atomically
from streamwatch.records import iso_utc, parse_iso_utc

Status = Literal["live", "previous", "retired", "rejected", "rolled_back"]
STATUSES: tuple[Status, ...] = get_args(Status)
_STATUS_BY_NAME: dict[str, Status] = {status: status for status in STATUSES}
_ACCEPTED: frozenset[Status] = frozenset({"live", "previous"})

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1

# registry.json holds times as ISO-8601 with milliseconds; records keep them to that resolution so that a
# record read back is equal to the one written.
_TIME_DECIMALS = 3
_LATEST_TIME = 253_402_300_800.0  # 10000-01-01T00:00:00Z: ISO-8601 years have four digits
# Common file systems allow 255 bytes per name; the rest is room for ".safetensors" and the temporary name
# an atomic write uses beside it.
_MAX_ENCODED_NAME = 255 - 32

_REQUIRED_FIELDS = ("group", "version", "status", "trained_at", "data_start", "data_end", "validation")
_OPTIONAL_FIELDS = ("reason", "restored_from")

log = logging.getLogger("streamwatch.registry")


def parse_version(version: str) -> tuple[str, int]:
    """`conv@3` -> ("conv", 3); ValueError naming the expected form for anything else."""
    kind, at, number = version.rpartition("@")
    if not at or not kind or not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise ValueError(f"model version {version!r} is not KIND@NUMBER with NUMBER >= 1 (e.g. conv@3)")
    return kind, int(number)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One version of a group's model in the registry's history. Times are event-time epoch seconds, kept to
    the millisecond."""

    group: str
    version: str
    status: Status
    trained_at: float
    data_start: float
    data_end: float
    validation: dict[str, float]
    reason: str = ""
    restored_from: str | None = None

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("model record field 'group': must be a non-empty stream group name")
        _check_version_field("version", self.version)
        if self.restored_from is not None:
            _check_version_field("restored_from", self.restored_from)
        if self.status not in STATUSES:
            raise ValueError(f"model record field 'status': {self.status!r} is not one of {list(STATUSES)}")
        # Frozen: normalising in place goes around the dataclass's own __setattr__.
        for name in ("trained_at", "data_start", "data_end"):
            object.__setattr__(self, name, _millisecond_time(name, getattr(self, name)))
        if self.data_start > self.data_end:
            raise ValueError(
                f"model record fields 'data_start'/'data_end': the span starts at "
                f"{iso_utc(self.data_start)}, after its end {iso_utc(self.data_end)}"
            )
        object.__setattr__(self, "validation", _finite_figures(self.validation))

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "version": self.version,
            "status": self.status,
            "trained_at": iso_utc(self.trained_at),
            "data_start": iso_utc(self.data_start),
            "data_end": iso_utc(self.data_end),
            "validation": dict(self.validation),
            "reason": self.reason,
            "restored_from": self.restored_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRecord:
        """Inverse of `to_json`; ValueError naming the field when one is missing, unknown or malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a model record must be a JSON object, got {type(data).__name__}")
        _check_field_names(data)
        return cls(
            group=_text_field(data, "group"),
            version=_text_field(data, "version"),
            status=_status_field(data),
            trained_at=_time_field(data, "trained_at"),
            data_start=_time_field(data, "data_start"),
            data_end=_time_field(data, "data_end"),
            validation=_figures_field(data),
            reason=_text_field(data, "reason") if "reason" in data else "",
            restored_from=None if data.get("restored_from") is None else _text_field(data, "restored_from"),
        )


class ModelRegistry:
    """The registry under `root`. `keep` is how many accepted versions (live and previous) keep weights; a
    rolled-back version keeps its weights until `keep` newer versions have gone live.

    Every change holds the group's lock; reads go without it (registry.json is replaced atomically)."""

    def __init__(self, root: Path, *, keep: int = 5) -> None:
        if keep < 2:
            raise ValueError(
                f"keep must be at least 2 (the live version and one to roll back to), got {keep}"
            )
        self.root = root
        self.keep = keep

    def groups(self) -> list[str]:
        """Plain names of the groups that have a history, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            unquote(entry.name)
            for entry in self.root.iterdir()
            if _is_group_directory_name(entry.name) and (entry / REGISTRY_FILE).is_file()
        )

    def history(self, group: str) -> list[ModelRecord]:
        """The group's records, oldest first; [] for a group the registry has never seen."""
        return _read_history(self._registry_path(group), group)

    def live(self, group: str) -> ModelRecord | None:
        return _live_of(self.history(group))

    def live_version(self, group: str) -> str | None:
        """The live version alone (reads registry.json only): what a running daemon polls to notice a
        rollback made from the CLI."""
        record = self.live(group)
        return None if record is None else record.version

    def load(self, group: str, version: str) -> GroupModel:
        """The model of one version; ValueError if the group never had it, ModelFileError if its weights are
        gone (retired, rejected) or cannot be trusted."""
        records = self.history(group)
        matching = [record for record in records if record.version == version]
        if not matching:
            known = ", ".join(record.version for record in records) or "none"
            raise ValueError(f"group {group!r} has no model version {version!r} (its versions: {known})")
        return self._load_weights(matching[0])

    def load_live(self, group: str) -> GroupModel | None:
        record = self.live(group)
        return None if record is None else self._load_weights(record)

    def next_version(self, group: str, kind: str) -> str:
        """`KIND@N` with N above every version the group ever had. Advisory: `accept` checks again under the
        lock, so a version taken meanwhile (by a rollback, say) is refused rather than reused."""
        if not kind or "@" in kind:
            raise ValueError(f"model kind {kind!r} must be a non-empty name without '@' (e.g. conv)")
        return f"{kind}@{_highest_number(self.history(group)) + 1}"

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
    ) -> ModelRecord:
        """Make `model` the group's live version: its weights are saved, the live version becomes previous,
        and previous versions beyond `keep` are retired (their weights deleted)."""
        start, end = data_span
        record = ModelRecord(
            group, model.version, "live", trained_at, start, end, dict(validation), reason, restored_from
        )
        with self._locked(group):
            records = self.history(group)
            _check_new_version(group, records, record.version)
            save_group_model(self._weights_path(group, record.version), model)
            demoted = [
                replace(item, status="previous") if item.status == "live" else item for item in records
            ]
            self._commit(group, _retire_beyond([*demoted, record], self.keep))
        return record

    def reject(
        self,
        group: str,
        version: str,
        *,
        trained_at: float,
        data_span: tuple[float, float],
        validation: Mapping[str, float],
        reason: str,
    ) -> ModelRecord:
        """Record a version the validation gate turned down (history only: no weights are kept)."""
        start, end = data_span
        record = ModelRecord(group, version, "rejected", trained_at, start, end, dict(validation), reason)
        with self._locked(group):
            records = self.history(group)
            _check_new_version(group, records, version)
            self._commit(group, [*records, record])
        return record

    def roll_back(self, group: str, *, reason: str, at: float) -> tuple[ModelRecord, GroupModel]:
        """Re-publish the newest previous version whose weights load as a new live version (restored_from
        names it; it is retired, its weights now living on under the new version) and mark the version that
        was live rolled back with `reason`. ValueError if there is no such earlier version."""
        nothing = f"no earlier version of group {group} to roll back to"
        if not self._registry_path(group).is_file():
            raise ValueError(nothing)
        with self._locked(group):
            records = self.history(group)
            current = _live_of(records)
            found = self._newest_loadable_previous(records)
            if current is None or found is None:
                raise ValueError(nothing)
            source, old_model = found
            version = f"{parse_version(source.version)[0]}@{_highest_number(records) + 1}"
            record = replace(
                source,
                status="live",
                trained_at=at,
                reason=reason,
                restored_from=source.version,
                version=version,
            )
            model = _renamed(old_model, version)
            save_group_model(self._weights_path(group, version), model)
            self._commit(group, [*_after_roll_back(records, current, source, reason), record])
        return record, model

    def _newest_loadable_previous(
        self, records: Sequence[ModelRecord]
    ) -> tuple[ModelRecord, GroupModel] | None:
        for record in reversed(records):
            if record.status != "previous":
                continue
            try:
                return record, self._load_weights(record)
            except ModelFileError as error:
                # An operator rolling back wants a working model now; the broken one stays listed.
                log.warning(
                    "cannot restore %s of group %s, trying an older version: %s",
                    record.version,
                    record.group,
                    error,
                )
        return None

    def _load_weights(self, record: ModelRecord) -> GroupModel:
        if record.status in ("retired", "rejected"):
            raise ModelFileError(
                f"{record.version} of group {record.group!r} is {record.status}: the registry keeps no "
                "weights for it; load a live or previous version"
            )
        path = self._weights_path(record.group, record.version)
        model = load_group_model(path)
        if model.version != record.version:
            raise ModelFileError(
                f"{path}: holds model {model.version}, the registry expects {record.version}"
            )
        return model

    def _commit(self, group: str, records: Sequence[ModelRecord]) -> None:
        """Write the history, then delete the weights it no longer keeps (a crash in between leaves only
        files that the next commit deletes)."""
        document = {
            "format_version": FORMAT_VERSION,
            "group": group,
            "records": [record.to_json() for record in records],
        }
        text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        write_atomically(self._registry_path(group), text.encode("utf-8"))
        kept = _versions_keeping_weights(records, self.keep)
        for record in records:
            if record.version not in kept:
                for path in model_paths(self._weights_path(group, record.version)):
                    path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, group: str) -> Iterator[None]:
        directory = self._group_directory(group)
        directory.mkdir(parents=True, exist_ok=True)
        # Append mode creates the lock file without truncating it; closing the file releases the lock.
        with (directory / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def _group_directory(self, group: str) -> Path:
        return self.root / _encoded_name(group, what="stream group name")

    def _registry_path(self, group: str) -> Path:
        return self._group_directory(group) / REGISTRY_FILE

    def _weights_path(self, group: str, version: str) -> Path:
        # '@' is kept as is so that the files read like the versions they hold.
        return self._group_directory(group) / _encoded_name(version, what="model version", safe="@")


def _encoded_name(name: str, *, what: str, safe: str = "") -> str:
    """`name` as one file name: percent-encoded, and never '.', '..' or hidden."""
    if not name:
        raise ValueError(f"a {what} must not be empty")
    encoded = quote(name, safe=safe)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > _MAX_ENCODED_NAME:
        raise ValueError(
            f"{what} {name!r} is too long: encoded for the file system it takes {len(encoded)} bytes, "
            f"at most {_MAX_ENCODED_NAME} fit; use a shorter name"
        )
    return encoded


def _is_group_directory_name(name: str) -> bool:
    """Whether `name` is exactly how some group is encoded (anything else in the root is not ours)."""
    try:
        return _encoded_name(unquote(name), what="stream group name") == name
    except ValueError:
        return False


def _read_history(path: Path, group: str) -> list[ModelRecord]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error}); restore it from a backup") from None
    return _records_of(document, path, group)


def _records_of(document: Any, path: Path, group: str) -> list[ModelRecord]:
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise ModelFileError(f"{path}: expected an object with a 'records' list; restore it from a backup")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format_version {document.get('format_version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    if document.get("group") != group:
        raise ModelFileError(f"{path}: is the history of group {document.get('group')!r}, not {group!r}")
    records: list[ModelRecord] = []
    for index, item in enumerate(document["records"]):
        try:
            record = ModelRecord.from_json(item)
        except ValueError as error:
            raise ModelFileError(f"{path}: record {index}: {error}") from None
        if record.group != group:
            raise ModelFileError(f"{path}: record {index} belongs to group {record.group!r}, not {group!r}")
        records.append(record)
    _check_consistent(records, path)
    return records


def _check_consistent(records: Sequence[ModelRecord], path: Path) -> None:
    versions = [record.version for record in records]
    if len(set(versions)) != len(versions):
        raise ModelFileError(f"{path}: lists a model version twice ({versions})")
    live = [record.version for record in records if record.status == "live"]
    if len(live) > 1:
        raise ModelFileError(f"{path}: has more than one live version ({live})")


def _live_of(records: Sequence[ModelRecord]) -> ModelRecord | None:
    return next((record for record in records if record.status == "live"), None)


def _highest_number(records: Sequence[ModelRecord]) -> int:
    return max((parse_version(record.version)[1] for record in records), default=0)


def _check_new_version(group: str, records: Sequence[ModelRecord], version: str) -> None:
    if any(record.version == version for record in records):
        raise ValueError(
            f"model version {version} is already in the history of group {group}; versions are never "
            "reused: take a new one from next_version()"
        )
    highest = _highest_number(records)
    if parse_version(version)[1] <= highest:
        raise ValueError(
            f"model version {version} is not newer than version number {highest} of group {group}; "
            "versions only increase: take a new one from next_version()"
        )


def _retire_beyond(records: Sequence[ModelRecord], keep: int) -> list[ModelRecord]:
    """Retire the oldest previous versions until at most `keep` accepted versions (live included) remain."""
    previous = [index for index, record in enumerate(records) if record.status == "previous"]
    room = keep - sum(1 for record in records if record.status == "live")
    surplus = set(previous[: max(0, len(previous) - room)])
    return [
        replace(record, status="retired") if index in surplus else record
        for index, record in enumerate(records)
    ]


def _after_roll_back(
    records: Sequence[ModelRecord], current: ModelRecord, source: ModelRecord, reason: str
) -> list[ModelRecord]:
    """The history once `source` is re-published: the live version rolled back, the source retired (its
    weights live on under the new version, and a second rollback should reach further back)."""
    statuses: dict[str, tuple[Status, str]] = {
        current.version: ("rolled_back", reason),
        source.version: ("retired", source.reason),
    }
    return [
        replace(record, status=statuses[record.version][0], reason=statuses[record.version][1])
        if record.version in statuses
        else record
        for record in records
    ]


def _versions_keeping_weights(records: Sequence[ModelRecord], keep: int) -> set[str]:
    """Live and previous versions, and rolled-back ones among the `keep` newest versions that went live."""
    went_live = [record.version for record in records if record.status != "rejected"]
    recent = set(went_live[-keep:])
    return {
        record.version
        for record in records
        if record.status in _ACCEPTED or (record.status == "rolled_back" and record.version in recent)
    }


def _renamed(model: GroupModel, version: str) -> GroupModel:
    """The same weights and calibration under another version (alerts carry the detector's version)."""
    detector = WindowDetector(model.detector.reconstructor, model.detector.calibration, version)
    return replace(model, version=version, detector=detector)


# -- record fields ------------------------------------------------------------------------------------------


def _check_version_field(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"model record field {name!r}: expected a version string, got {value!r}")
    try:
        parse_version(value)
    except ValueError as error:
        raise ValueError(f"model record field {name!r}: {error}") from None


def _millisecond_time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"model record field {name!r}: expected epoch seconds, got {value!r}")
    if not 0.0 <= value < _LATEST_TIME:  # also false for NaN
        raise ValueError(
            f"model record field {name!r}: {value!r} is not an epoch time between 1970 and the year 9999"
        )
    return round(float(value), _TIME_DECIMALS)


def _finite_figures(figures: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(figures, Mapping):
        raise ValueError(f"model record field 'validation': expected name -> number, got {figures!r}")
    checked: dict[str, float] = {}
    for name, value in figures.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"model record field 'validation': {name!r}: {value!r} is not a named number")
        if not math.isfinite(value):
            raise ValueError(
                f"model record field 'validation': figure {name!r} is {value}; record only finite figures"
            )
        checked[name] = float(value)
    return checked


def _check_field_names(data: Mapping[str, Any]) -> None:
    missing = [name for name in _REQUIRED_FIELDS if name not in data]
    if missing:
        raise ValueError(f"model record misses field(s) {missing}")
    unknown = sorted(set(data) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(
            f"model record has unknown field(s) {unknown}; known: {[*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS]}"
        )


def _text_field(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"model record field {name!r}: expected a string, got {value!r}")
    return value


def _status_field(data: Mapping[str, Any]) -> Status:
    value = data["status"]
    if not isinstance(value, str) or value not in _STATUS_BY_NAME:
        raise ValueError(f"model record field 'status': {value!r} is not one of {list(STATUSES)}")
    return _STATUS_BY_NAME[value]


def _time_field(data: Mapping[str, Any], name: str) -> float:
    text = _text_field(data, name)
    try:
        return parse_iso_utc(text)
    except ValueError:
        raise ValueError(
            f"model record field {name!r}: {text!r} is not an ISO-8601 time (e.g. 2026-01-01T00:00:00.000Z)"
        ) from None


def _figures_field(data: Mapping[str, Any]) -> dict[str, float]:
    value = data["validation"]
    if not isinstance(value, dict):
        raise ValueError(f"model record field 'validation': expected an object of numbers, got {value!r}")
    return _finite_figures(value)
