"""The systemd unit (deploy/streamwatch.service) as systemd reads it, the settings it must keep, and the
production configuration (deploy/streamwatch.yaml) it hands its credentials to."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamwatch.config import StreamwatchConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "streamwatch.service"
CONFIG = ROOT / "deploy" / "streamwatch.yaml"
INSTALLED_ENTRY_POINT = "/opt/streamwatch/venv/bin/streamwatch"
# Where systemd puts a system service's credentials (the value of $CREDENTIALS_DIRECTORY).
CREDENTIALS_DIRECTORY = Path("/run/credentials/streamwatch.service")

UnitSettings = dict[str, dict[str, list[str]]]


def unit_settings(text: str) -> UnitSettings:
    """Section -> key -> every value assigned, in order (LoadCredential= and friends repeat, which
    configparser cannot hold)."""
    settings: UnitSettings = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: continuation lines are not parsed here"
        if line.startswith("[") and line.endswith("]"):
            section = settings.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"line {number}: a setting before any [Section]"
        key, separator, value = line.partition("=")
        assert separator, f"line {number}: not KEY=VALUE: {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit() -> UnitSettings:
    return unit_settings(UNIT.read_text(encoding="utf-8"))


def _credential_names(unit: UnitSettings) -> dict[str, str]:
    """LoadCredential= as name -> the file systemd reads it from."""
    return dict(value.split(":", 1) for value in unit["Service"]["LoadCredential"])


def test_systemd_analyze_verify_accepts_the_unit_without_a_word(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's binary exists; this environment's own entry point stands in for the
    # installed venv's, everything else is the unit as shipped.
    entry_point = Path(sys.executable).parent / "streamwatch"
    assert entry_point.is_file(), f"no streamwatch entry point next to {sys.executable}"
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_ENTRY_POINT} " in text
    copy = tmp_path / "streamwatch.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_ENTRY_POINT} ", f"ExecStart={entry_point} "))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and unparsable values are only warnings (exit status 0): any output is a finding.
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


REQUIRED = [
    ("Service", "Type", "notify"),
    ("Service", "NotifyAccess", "main"),
    ("Service", "ExecStart", f"{INSTALLED_ENTRY_POINT} run -c /etc/streamwatch/config.yaml"),
    ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service", "User", "streamwatch"),
    ("Service", "Group", "streamwatch"),
    ("Service", "StateDirectory", "streamwatch"),
    ("Service", "WorkingDirectory", "/var/lib/streamwatch"),
    ("Service", "ConfigurationDirectory", "streamwatch"),
    ("Service", "Environment", "PYTHONUNBUFFERED=1"),
    ("Service", "KillMode", "mixed"),
    ("Service", "Restart", "on-failure"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "CapabilityBoundingSet", ""),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "PrivateDevices", "yes"),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectKernelLogs", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "RestrictNamespaces", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Service", "UMask", "0027"),
    ("Install", "WantedBy", "multi-user.target"),
]


@pytest.mark.parametrize(
    ("section", "key", "value"), REQUIRED, ids=[f"{key}={value}" for _, key, value in REQUIRED]
)
def test_the_unit_keeps_its_notify_and_sandbox_settings(
    unit: UnitSettings, section: str, key: str, value: str
) -> None:
    assert unit.get(section, {}).get(key) == [value]


@pytest.mark.parametrize("key", ["WatchdogSec", "TimeoutStartSec", "TimeoutStopSec", "RestartSec"])
def test_the_unit_bounds_its_waits(unit: UnitSettings, key: str) -> None:
    (value,) = unit["Service"][key]
    assert value not in ("", "0", "infinity")


def test_only_the_socket_families_the_daemon_uses_are_allowed(unit: UnitSettings) -> None:
    # AF_UNIX carries sd_notify; AF_INET/AF_INET6 reach Kafka and the receivers.
    (families,) = unit["Service"]["RestrictAddressFamilies"]
    assert sorted(families.split()) == ["AF_INET", "AF_INET6", "AF_UNIX"]


def test_memory_deny_write_execute_stays_off_for_pytorch(unit: UnitSettings) -> None:
    assert "MemoryDenyWriteExecute" not in unit["Service"]


def test_secrets_come_from_root_only_credential_files(unit: UnitSettings) -> None:
    credentials = _credential_names(unit)
    assert set(credentials) == {"kafka-sasl-password", "webhook-hmac-secret", "influxdb-token"}
    for name, source in credentials.items():
        assert source == f"/etc/streamwatch/credentials/{name}"


def _secret_files(config: StreamwatchConfig) -> set[Path]:
    files = {config.kafka.security.sasl_password_file}
    for sink in config.sinks:
        if sink.kind == "webhook" and sink.secret is not None:
            files.add(sink.secret.file)
        elif sink.kind == "influxdb" and sink.token is not None:
            files.add(sink.token.file)
        elif sink.kind == "alertmanager" and sink.bearer_token is not None:
            files.add(sink.bearer_token.file)
    return {file for file in files if file is not None}


def test_the_production_config_reads_exactly_the_credentials_the_unit_loads(
    unit: UnitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(CREDENTIALS_DIRECTORY))
    config = load_config(CONFIG)
    assert config.source.kind == "kafka"
    assert {sink.kind for sink in config.sinks} == {"kafka", "alertmanager", "webhook", "influxdb"}
    assert _secret_files(config) == {CREDENTIALS_DIRECTORY / name for name in _credential_names(unit)}


def test_check_config_accepts_the_production_config_only_under_systemds_credentials(tmp_path: Path) -> None:
    def check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamwatch.cli", "check-config", str(CONFIG)],
            cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    base = {name: value for name, value in os.environ.items() if name != "CREDENTIALS_DIRECTORY"}
    accepted = check({**base, "CREDENTIALS_DIRECTORY": str(CREDENTIALS_DIRECTORY)})
    assert accepted.returncode == 0, accepted.stderr
    assert "ok (source kafka" in accepted.stdout
    refused = check(base)
    assert refused.returncode == 2
    assert "environment variable CREDENTIALS_DIRECTORY is not set" in refused.stderr
