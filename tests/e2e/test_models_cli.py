"""`streamwatch models list|rollback` over a registry built on disk, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamwatch.cli import main
from streamwatch.core.bootstrap import GroupModel, StreamSeries, TrainingPlan, WindowShape, train_group
from streamwatch.core.reconstructor import Reconstructor
from streamwatch.models import build_reconstructor
from streamwatch.models.command import DEFAULT_REASON, format_figures
from streamwatch.models.registry import ModelRegistry
from streamwatch.records import iso_utc

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
PUMPS = "plant 1/pumps"
FANS = "fans"


def _pca(length: int, channels: int) -> Reconstructor:
    return build_reconstructor("pca", length=length, channels=channels)


def trained(version: str, seed: int) -> GroupModel:
    rng = np.random.default_rng(seed)
    t = np.arange(600, dtype=np.float64)
    values = (np.sin(2 * np.pi * t / (11 + 3 * seed)) + 0.1 * rng.normal(size=len(t))).astype(np.float32)
    series = StreamSeries(("v",), START + t, values[:, None])
    shape = WindowShape(length=16, hop=2)
    return train_group({"s": series}, version=version, shape=shape, plan=TrainingPlan(), factory=_pca)


def accept(registry: ModelRegistry, group: str, seed: int) -> None:
    at = START + seed * DAY
    model = trained(registry.next_version(group, "pca"), seed)
    registry.accept(
        group,
        model,
        trained_at=at,
        data_span=(at - DAY, at),
        validation={"recall": 1 / (seed + 2), "f1": 0.8},
    )


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """Pumps: two accepted versions and a rejected one; fans: one version, nothing to roll back to."""
    built = ModelRegistry(tmp_path / "models")
    accept(built, PUMPS, 1)
    accept(built, PUMPS, 2)
    at = START + 3 * DAY
    version = built.next_version(PUMPS, "pca")
    span = (at - DAY, at)
    built.reject(
        PUMPS, version, trained_at=at, data_span=span, validation={"recall": 0.1}, reason="misses all"
    )
    accept(built, FANS, 4)
    return built


def models(*args: str, registry: ModelRegistry) -> int:
    return main(["models", *args, "--model-dir", str(registry.root)])


def test_list_prints_a_table_per_group(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("list", registry=registry) == 0
    tables = {
        table.splitlines()[0]: table.splitlines()[1:] for table in capsys.readouterr().out.split("\n\n")
    }
    assert list(tables) == [f"group {group}" for group in registry.groups()]
    for group in registry.groups():
        lines = tables[f"group {group}"]
        assert len(lines) == 1 + len(registry.history(group))  # a header, then a line per version
        for record in registry.history(group):
            (line,) = [line for line in lines if line.startswith(f"{record.version} ")]
            assert line.split()[1] == record.status
            assert iso_utc(record.trained_at) in line
            assert f"{iso_utc(record.data_start)} – {iso_utc(record.data_end)}" in line
            assert format_figures(record.validation) in line
            assert record.reason in line


def test_list_json_is_every_record(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("list", "--json", registry=registry) == 0
    listed = json.loads(capsys.readouterr().out)
    expected = {
        group: [record.to_json() for record in registry.history(group)] for group in registry.groups()
    }
    assert listed == {"groups": expected}


def test_list_one_group(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("list", "--group", FANS, "--json", registry=registry) == 0
    assert list(json.loads(capsys.readouterr().out)["groups"]) == [FANS]
    assert models("list", "--group", "pumsp", registry=registry) == 1
    error = capsys.readouterr().err
    assert "no group 'pumsp'" in error and repr(PUMPS) in error


def test_list_finds_the_registry_through_the_config(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "streamwatch.yaml"
    config.write_text(json.dumps({"detector": {"model_dir": str(registry.root)}}), encoding="utf-8")
    assert main(["models", "list", "--json", "-c", str(config)]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["groups"]) == registry.groups()


def test_list_of_an_empty_registry_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-models-here"
    assert main(["models", "list", "--model-dir", str(missing)]) == 0
    assert f"no models in {missing}" in capsys.readouterr().out
    assert main(["models", "list", "--json", "--model-dir", str(missing)]) == 0
    assert json.loads(capsys.readouterr().out) == {"groups": {}}


def test_rollback_makes_the_earlier_weights_live_under_a_new_version(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    replaced = registry.live_version(PUMPS)
    earlier = [record.version for record in registry.history(PUMPS) if record.status == "previous"][-1]
    assert models("rollback", "--group", PUMPS, "--reason", "alert storm", registry=registry) == 0
    live = registry.live(PUMPS)
    assert live is not None and live.restored_from == earlier
    printed = capsys.readouterr().out.strip()
    assert (
        printed == f"group {PUMPS}: {live.version} is live (the weights of {earlier}); {replaced} rolled back"
    )

    assert models("list", "--group", PUMPS, "--json", registry=registry) == 0
    listed = {item["version"]: item for item in json.loads(capsys.readouterr().out)["groups"][PUMPS]}
    assert listed[live.version]["status"] == "live"
    assert listed[live.version]["restored_from"] == earlier
    assert (listed[replaced]["status"], listed[replaced]["reason"]) == ("rolled_back", "alert storm")
    assert models("list", registry=registry) == 0
    assert f"restored from {earlier}" in capsys.readouterr().out


def test_rollback_gives_a_default_reason(registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    replaced = registry.live_version(PUMPS)
    assert models("rollback", "--group", PUMPS, registry=registry) == 0
    (record,) = [record for record in registry.history(PUMPS) if record.version == replaced]
    assert record.reason == DEFAULT_REASON


def test_rollback_with_nothing_earlier_fails_with_the_reason(
    registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    before = registry.history(FANS)
    assert models("rollback", "--group", FANS, registry=registry) == 1
    assert f"no earlier version of group {FANS} to roll back to" in capsys.readouterr().err
    assert registry.history(FANS) == before


def test_rollback_help_says_a_running_daemon_follows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "rollback", "--help"])
    assert exit_info.value.code == 0
    assert "daemon" in capsys.readouterr().out
