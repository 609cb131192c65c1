"""The model registry: each group's live, previous, retired, rejected and rolled-back versions, on disk."""

from __future__ import annotations

import fcntl
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.core.bootstrap import GroupModel, StreamSeries, TrainingPlan, WindowShape, train_group
from streamwatch.core.detector import model_input
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.models import build_reconstructor
from streamwatch.models.registry import (
    LOCK_FILE,
    REGISTRY_FILE,
    STATUSES,
    ModelRecord,
    ModelRegistry,
    parse_version,
)
from streamwatch.models.store import ModelFileError
from streamwatch.records import FloatArray, iso_utc

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
LENGTH = 16
GROUP = "pumps"


def _pca(length: int, channels: int) -> Reconstructor:
    return build_reconstructor("pca", length=length, channels=channels)


def trained(version: str, seed: int) -> GroupModel:
    """A small real group model; each seed has its own rhythm, so different seeds give different weights."""
    rng = np.random.default_rng(seed)
    t = np.arange(600, dtype=np.float64)
    values = (np.sin(2 * np.pi * t / (11 + 3 * seed)) + 0.1 * rng.normal(size=len(t))).astype(np.float32)
    series = StreamSeries(("v",), START + t, values[:, None])
    shape = WindowShape(length=LENGTH, hop=2)
    return train_group({"s": series}, version=version, shape=shape, plan=TrainingPlan(), factory=_pca)


def outputs(model: GroupModel) -> tuple[FloatArray, FloatArray]:
    """What the model makes of fixed windows: scores and reconstructions."""
    windows = np.random.default_rng(99).standard_normal((8, LENGTH, 1)).astype(np.float32)
    reconstructed = model.detector.reconstructor.reconstruct(model_input(windows))
    return model.detector.score(windows).score, reconstructed


def assert_same_outputs(first: GroupModel, second: GroupModel) -> None:
    for mine, theirs in zip(outputs(first), outputs(second), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def accept_new(
    registry: ModelRegistry, *, seed: int, group: str = GROUP, at: float = START
) -> tuple[ModelRecord, GroupModel]:
    model = trained(registry.next_version(group, "pca"), seed)
    record = registry.accept(
        group,
        model,
        trained_at=at,
        data_span=(at - DAY, at),
        validation={"recall": 1.0, "fa_per_day": seed / 7},
    )
    return record, model


def reject_new(registry: ModelRegistry, *, group: str = GROUP, at: float = START) -> ModelRecord:
    version = registry.next_version(group, "pca")
    return registry.reject(
        group, version, trained_at=at, data_span=(at - DAY, at), validation={"recall": 0.25}, reason="misses"
    )


def group_directory(root: Path) -> Path:
    (directory,) = [entry for entry in root.iterdir() if entry.is_dir()]
    return directory


def versions_with_weights(root: Path) -> set[str]:
    return {
        unquote(path.name.removesuffix(".safetensors"))
        for path in group_directory(root).glob("*.safetensors")
    }


def statuses(registry: ModelRegistry, group: str = GROUP) -> list[str]:
    return [record.status for record in registry.history(group)]


def test_accepting_makes_the_new_version_live_and_the_one_before_previous(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, first_model = accept_new(registry, seed=1)
    second, second_model = accept_new(registry, seed=2)
    assert statuses(registry) == ["previous", "live"]
    assert registry.live(GROUP) == second
    assert registry.live_version(GROUP) == second.version
    live = registry.load_live(GROUP)
    assert live is not None
    assert_same_outputs(live, second_model)
    assert_same_outputs(registry.load(GROUP, first.version), first_model)


@pytest.mark.parametrize("keep", [2, 3])
def test_versions_beyond_keep_are_retired_and_lose_their_weights(tmp_path: Path, keep: int) -> None:
    registry = ModelRegistry(tmp_path, keep=keep)
    accepted = [accept_new(registry, seed=seed)[0] for seed in range(keep + 2)]
    assert statuses(registry) == ["retired"] * 2 + ["previous"] * (keep - 1) + ["live"]
    kept = {record.version for record in registry.history(GROUP) if record.status in ("live", "previous")}
    assert versions_with_weights(tmp_path) == kept
    with pytest.raises(ModelFileError, match="retired"):
        registry.load(GROUP, accepted[0].version)
    assert registry.load_live(GROUP) is not None


def test_the_live_version_keeps_its_weights_however_small_keep_is(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, keep=2)
    for seed in range(4):
        record, model = accept_new(registry, seed=seed)
        assert record.version in versions_with_weights(tmp_path)
        assert_same_outputs(registry.load(GROUP, record.version), model)


def test_next_version_rises_past_rejections_rollbacks_and_other_kinds(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.next_version(GROUP, "pca") == "pca@1"
    accept_new(registry, seed=1)
    reject_new(registry)
    accept_new(registry, seed=2)
    registry.roll_back(GROUP, reason="noisy", at=START)
    reject_new(registry)
    numbers = [parse_version(record.version)[1] for record in registry.history(GROUP)]
    assert numbers == sorted(set(numbers))  # strictly increasing: no number is ever reused
    for kind in ("pca", "conv"):
        assert registry.next_version(GROUP, kind) == f"{kind}@{max(numbers) + 1}"


def test_a_version_already_taken_or_older_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, model = accept_new(registry, seed=1)
    with pytest.raises(ValueError, match="already in the history"):
        registry.accept(GROUP, model, trained_at=START, data_span=(START, START), validation={})
    # A rejection may skip numbers; a version below it is still refused, though no record has it.
    skipped = parse_version(first.version)[1] + 3
    registry.reject(
        GROUP, f"pca@{skipped}", trained_at=START, data_span=(START, START), validation={}, reason="x"
    )
    older = trained(f"pca@{skipped - 1}", 2)
    with pytest.raises(ValueError, match="not newer"):
        registry.accept(GROUP, older, trained_at=START, data_span=(START, START), validation={})


def test_a_rejection_is_history_only(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    live, _ = accept_new(registry, seed=1)
    before = versions_with_weights(tmp_path)
    rejected = reject_new(registry)
    assert registry.history(GROUP)[-1] == rejected
    assert rejected.status == "rejected"
    assert versions_with_weights(tmp_path) == before
    assert registry.live(GROUP) == live
    with pytest.raises(ModelFileError, match="rejected"):
        registry.load(GROUP, rejected.version)


def test_roll_back_republishes_the_previous_weights_under_a_new_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    old, old_model = accept_new(registry, seed=1, at=START)
    bad, bad_model = accept_new(registry, seed=2, at=START + DAY)
    at = START + 2 * DAY + 0.25
    restored, model = registry.roll_back(GROUP, reason="too many alerts", at=at)

    assert restored.status == "live"
    assert restored.restored_from == old.version
    assert parse_version(restored.version)[1] > parse_version(bad.version)[1]
    assert restored.trained_at == at
    assert (restored.data_start, restored.data_end, restored.validation) == (
        old.data_start,
        old.data_end,
        old.validation,
    )
    assert model.version == model.detector.version == restored.version
    assert_same_outputs(model, old_model)
    assert not np.array_equal(outputs(model)[1], outputs(bad_model)[1])

    history = {record.version: record for record in registry.history(GROUP)}
    assert history[bad.version].status == "rolled_back"
    assert history[bad.version].reason == "too many alerts"
    assert history[old.version].status == "retired"  # its weights live on under the new version
    assert registry.live(GROUP) == restored
    live = registry.load_live(GROUP)
    assert live is not None and live.version == restored.version
    assert_same_outputs(live, old_model)


def test_a_rolled_back_version_keeps_its_weights_until_keep_newer_versions_went_live(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, keep=3)
    accept_new(registry, seed=1)
    bad, bad_model = accept_new(registry, seed=2)
    registry.roll_back(GROUP, reason="noisy", at=START)  # one newer version went live: the restored one
    assert_same_outputs(registry.load(GROUP, bad.version), bad_model)
    reject_new(registry)  # rejections never went live: they do not count
    accept_new(registry, seed=3)
    assert_same_outputs(registry.load(GROUP, bad.version), bad_model)
    accept_new(registry, seed=4)  # the third newer one
    assert bad.version not in versions_with_weights(tmp_path)
    with pytest.raises(ModelFileError):
        registry.load(GROUP, bad.version)


def test_a_second_roll_back_reaches_further_back(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    models = [accept_new(registry, seed=seed) for seed in range(3)]
    first, first_model = registry.roll_back(GROUP, reason="bad", at=START)
    second, second_model = registry.roll_back(GROUP, reason="still bad", at=START)
    assert (first.restored_from, second.restored_from) == (models[1][0].version, models[0][0].version)
    assert_same_outputs(first_model, models[1][1])
    assert_same_outputs(second_model, models[0][1])
    assert registry.history(GROUP)[-2].status == "rolled_back"
    with pytest.raises(ValueError, match=f"no earlier version of group {GROUP} to roll back to"):
        registry.roll_back(GROUP, reason="again", at=START)


def test_roll_back_passes_over_a_previous_version_whose_weights_are_broken(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    oldest, oldest_model = accept_new(registry, seed=1)
    broken, _ = accept_new(registry, seed=2)
    accept_new(registry, seed=3)
    (weights,) = group_directory(tmp_path).glob(f"{broken.version}.safetensors")
    weights.write_bytes(b"not a tensor file")
    restored, model = registry.roll_back(GROUP, reason="bad", at=START)
    assert restored.restored_from == oldest.version
    assert_same_outputs(model, oldest_model)


@pytest.mark.parametrize("history", ["unknown group", "one accepted version", "rejections only"])
def test_roll_back_without_an_earlier_version_says_so(tmp_path: Path, history: str) -> None:
    registry = ModelRegistry(tmp_path)
    if history == "one accepted version":
        accept_new(registry, seed=1)
    if history == "rejections only":
        reject_new(registry)
        reject_new(registry)
    before = registry.history(GROUP)
    with pytest.raises(ValueError, match=f"no earlier version of group {GROUP} to roll back to"):
        registry.roll_back(GROUP, reason="bad", at=START)
    assert registry.history(GROUP) == before


versions = st.builds(lambda kind, number: f"{kind}@{number}", st.text(min_size=1), st.integers(1, 10**9))
times = st.floats(min_value=0.0, max_value=4e9)
records = st.builds(
    lambda group, version, status, trained_at, span, validation, reason, restored_from: ModelRecord(
        group, version, status, trained_at, min(span), max(span), validation, reason, restored_from
    ),
    st.text(min_size=1),
    versions,
    st.sampled_from(STATUSES),
    times,
    st.tuples(times, times),
    st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False)),
    st.text(),
    st.none() | versions,
)


@given(records)
def test_a_record_round_trips_through_json(record: ModelRecord) -> None:
    text = json.dumps(record.to_json(), ensure_ascii=False, allow_nan=False)
    assert ModelRecord.from_json(json.loads(text)) == record


@given(times)
def test_a_record_keeps_times_to_the_millisecond(at: float) -> None:
    record = ModelRecord(GROUP, "pca@1", "live", at, at, at, {})
    assert abs(record.trained_at - at) <= 0.0005 + 1e-6
    assert ModelRecord.from_json(record.to_json()).trained_at == record.trained_at


def _valid_record_json() -> dict[str, Any]:
    return ModelRecord(GROUP, "pca@2", "previous", START, START - DAY, START, {"recall": 0.9}).to_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "pca-2"),
        ("version", 2),
        ("status", "gone"),
        ("trained_at", 1767225600),
        ("data_end", "yesterday"),
        ("validation", {"recall": "high"}),
        ("validation", [0.9]),
        ("restored_from", "pca"),
        ("reason", None),
    ],
)
def test_a_malformed_record_names_the_field(field: str, value: Any) -> None:
    data = _valid_record_json() | {field: value}
    with pytest.raises(ValueError, match=field):
        ModelRecord.from_json(data)


def test_a_record_missing_or_with_unknown_fields_names_them() -> None:
    missing = {key: value for key, value in _valid_record_json().items() if key != "data_start"}
    with pytest.raises(ValueError, match="data_start"):
        ModelRecord.from_json(missing)
    with pytest.raises(ValueError, match="colour"):
        ModelRecord.from_json(_valid_record_json() | {"colour": "blue"})


def test_a_record_refuses_a_backwards_span_and_non_finite_figures() -> None:
    with pytest.raises(ValueError, match="data_start"):
        ModelRecord(GROUP, "pca@1", "live", START, START, START - 1, {})
    with pytest.raises(ValueError, match="'recall'"):
        ModelRecord(GROUP, "pca@1", "live", START, START, START, {"recall": float("nan")})


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"group": "pumps", "records": [{"version": 1}]}'])
def test_a_corrupted_registry_json_is_named(tmp_path: Path, content: bytes) -> None:
    accept_new(ModelRegistry(tmp_path), seed=1)
    path = group_directory(tmp_path) / REGISTRY_FILE
    path.write_bytes(content)
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelFileError, match=str(path)):
        registry.history(GROUP)
    with pytest.raises(ModelFileError, match=str(path)):
        registry.live_version(GROUP)
    with pytest.raises(ModelFileError, match=str(path)):
        accept_new(registry, seed=2)


def test_registry_json_is_readable_by_people(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    accept_new(registry, seed=1)
    reject_new(registry)
    path = group_directory(tmp_path) / REGISTRY_FILE
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    assert len(text.splitlines()) > 10  # indented, one field a line
    assert document["group"] == GROUP
    assert document["records"] == [record.to_json() for record in registry.history(GROUP)]
    assert document["records"][0]["trained_at"] == iso_utc(START)


NAMES = ["plant 1/pump a", "..", ".", ".hidden", "a%2Fb", "über/√ ünits", "x" * 70]


def test_any_group_name_gets_its_own_directory_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    registry = ModelRegistry(root)
    for seed, name in enumerate(NAMES):
        accept_new(registry, seed=seed, group=name)
    assert registry.groups() == sorted(NAMES)
    directories = list(root.iterdir())
    assert len(directories) == len(NAMES)
    assert all(directory.is_dir() and not directory.name.startswith(".") for directory in directories)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["models"]
    reopened = ModelRegistry(root)
    for name in NAMES:
        (record,) = reopened.history(name)
        assert record.group == name
        model = reopened.load_live(name)
        assert model is not None and model.version == record.version


def test_a_group_name_too_long_for_the_file_system_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        ModelRegistry(tmp_path).history("é" * 100)


def test_a_registry_reopened_from_disk_sees_the_same_history(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _, first_model = accept_new(registry, seed=1)
    accept_new(registry, seed=2)
    reject_new(registry)
    registry.roll_back(GROUP, reason="noisy", at=START + DAY)
    reopened = ModelRegistry(tmp_path)
    assert reopened.groups() == [GROUP]
    assert reopened.history(GROUP) == registry.history(GROUP)
    assert reopened.live_version(GROUP) == registry.live_version(GROUP)
    live = reopened.load_live(GROUP)
    assert live is not None
    assert_same_outputs(live, first_model)


def test_an_empty_or_missing_root_has_no_groups(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "nowhere")
    assert registry.groups() == []
    assert registry.history(GROUP) == []
    assert registry.live_version(GROUP) is None
    assert registry.load_live(GROUP) is None
    with pytest.raises(ValueError, match="no model version"):
        registry.load(GROUP, "pca@1")


def test_keep_below_two_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be at least 2"):
        ModelRegistry(tmp_path, keep=1)


def test_a_change_waits_for_the_group_lock(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    accept_new(registry, seed=1)
    done = threading.Event()

    def reject_in_background() -> None:
        reject_new(registry)
        done.set()

    with (group_directory(tmp_path) / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as another process (the daemon, the CLI) would
        worker = threading.Thread(target=reject_in_background)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()
        assert statuses(registry) == ["live"]
    worker.join(timeout=10)
    assert done.is_set()
    assert statuses(registry) == ["live", "rejected"]
