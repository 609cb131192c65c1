"""deploy/install-debian.sh staged into a temporary root (--prefix): the tree it lays out, what it keeps on a
rerun, the credentials it writes without printing them, and a dry run that changes nothing.

The package is installed from a wheel of this checkout without its dependencies and without an index
(PIP_NO_DEPS, PIP_NO_INDEX): torch is a multi-GB download, and what is under test is the layout, not pip.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import streamwatch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install-debian.sh"
UNIT = ROOT / "deploy" / "streamwatch.service"
CONFIG = ROOT / "deploy" / "streamwatch.yaml"
SECRETS = {
    "kafka-sasl-password": ("STREAMWATCH_KAFKA_SASL_PASSWORD", "kafka-pw-7Qe"),
    "webhook-hmac-secret": ("STREAMWATCH_WEBHOOK_HMAC_SECRET", "hmac-key-x9"),
    "influxdb-token": ("STREAMWATCH_INFLUXDB_TOKEN", "influx-token-Zk"),
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="the script checks the unit with systemd-analyze"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built from a copy so the checkout gains no build/ or egg-info."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "streamwatch", source / "streamwatch", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--wheel-dir", str(work), str(source)],
        check=True, timeout=300,
    )  # fmt: skip
    (built,) = work.glob("streamwatch-*.whl")
    return built


def _install(
    *options: str, secrets: dict[str, str] | None = None, source: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("STREAMWATCH_")}
    environ.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_DEPS="1")
    environ.update(secrets or {})
    command = ["bash", str(SCRIPT), *options]
    if source is not None:
        command += ["--source", str(source)]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=300)


def _secret_environment(*names: str) -> dict[str, str]:
    return {SECRETS[name][0]: SECRETS[name][1] for name in names}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _laid_out(root: Path) -> set[str]:
    """Every path under `root` except the venv's contents."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if not path.is_relative_to(root / "opt/streamwatch/venv") or path == root / "opt/streamwatch/venv"
    }


def _printed_secrets(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [value for _variable, value in SECRETS.values() if value in result.stdout + result.stderr]


def test_a_staged_install_lays_out_the_service_and_a_rerun_keeps_what_is_there(
    tmp_path: Path, wheel: Path
) -> None:
    root = tmp_path / "root"
    # First run without the InfluxDB token: everything else is laid out, the service is not started.
    without_influxdb = _secret_environment("kafka-sasl-password", "webhook-hmac-secret")
    first = _install("--prefix", str(root), source=wheel, secrets=without_influxdb)
    assert first.returncode == 1, first.stderr
    assert "not started: missing credentials" in first.stderr
    assert "influxdb-token" in first.stderr and "STREAMWATCH_INFLUXDB_TOKEN" in first.stderr
    assert "systemctl" not in first.stdout
    assert _printed_secrets(first) == []

    second = _install("--prefix", str(root), source=wheel, secrets=_secret_environment(*SECRETS))
    assert second.returncode == 0, second.stderr
    assert _printed_secrets(second) == []
    assert "keeping credential kafka-sasl-password" in second.stdout
    assert f"systemd-analyze verify {root}/etc/systemd/system/streamwatch.service: ok" in second.stdout
    assert "this step runs: systemctl daemon-reload && systemctl enable --now streamwatch" in second.stdout

    assert _laid_out(root) == {
        "etc", "etc/streamwatch", "etc/streamwatch/config.yaml", "etc/streamwatch/credentials",
        *(f"etc/streamwatch/credentials/{name}" for name in SECRETS),
        "etc/systemd", "etc/systemd/system", "etc/systemd/system/streamwatch.service",
        "opt", "opt/streamwatch", "opt/streamwatch/venv",
    }  # fmt: skip
    etc = root / "etc/streamwatch"
    assert (_mode(etc), _mode(etc / "credentials")) == (0o755, 0o700)
    for name, (_variable, value) in SECRETS.items():
        assert (etc / "credentials" / name).read_text() == value
        assert _mode(etc / "credentials" / name) == 0o600
    assert (etc / "config.yaml").read_bytes() == CONFIG.read_bytes()
    assert _mode(etc / "config.yaml") == 0o640
    unit = root / "etc/systemd/system/streamwatch.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert _mode(unit) == 0o644
    venv = root / "opt/streamwatch/venv"
    assert os.access(venv / "bin/streamwatch", os.X_OK)
    query = "import importlib.metadata as m; d = m.distribution('streamwatch')"
    where = f"{query}; print(d.version, d.locate_file(''))"
    installed = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", where], capture_output=True, text=True, check=True, timeout=60
    )
    version, location = installed.stdout.split()
    assert version == streamwatch.__version__
    assert Path(location).is_relative_to(venv)

    # The operator's edits and secrets survive a rerun, whatever the environment says now.
    (etc / "config.yaml").write_text("# edited by the operator\n")
    changed = {variable: "changed" for variable, _value in SECRETS.values()}
    third = _install("--prefix", str(root), source=wheel, secrets=changed)
    assert third.returncode == 0, third.stderr
    assert f"keeping {etc}/config.yaml" in third.stdout
    assert (etc / "config.yaml").read_text() == "# edited by the operator\n"
    assert {(etc / "credentials" / name).read_text() for name in SECRETS} == {v for _k, v in SECRETS.values()}


def test_a_dry_run_shows_every_step_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _install("--prefix", str(root), "--dry-run", secrets=_secret_environment(*SECRETS))
    assert result.returncode == 0, result.stderr
    assert not root.exists()
    assert _printed_secrets(result) == []
    steps = [line.removeprefix("install-debian (dry run): ") for line in result.stdout.splitlines()]
    assert f"/usr/bin/python3 -I -m venv {root}/opt/streamwatch/venv" in steps
    assert f"install -m 0640 {CONFIG} {root}/etc/streamwatch/config.yaml" in steps
    assert f"install -d -m 0700 {root}/etc/streamwatch/credentials" in steps
    assert f"install -m 0644 {UNIT} {root}/etc/systemd/system/streamwatch.service" in steps
    for name, (variable, _value) in SECRETS.items():
        credential = root / "etc/streamwatch/credentials" / name
        assert f"writing credential {name} to {credential} from ${variable}" in steps


def test_an_unknown_option_prints_the_usage_and_changes_nothing(tmp_path: Path) -> None:
    result = _install("--prefix", str(tmp_path / "root"), "--no-such-option")
    assert result.returncode == 2
    assert "--prefix DIR" in result.stderr
    assert not (tmp_path / "root").exists()
