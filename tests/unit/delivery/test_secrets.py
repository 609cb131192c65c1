from __future__ import annotations

from pathlib import Path

import pytest

from streamwatch.config import ConfigError, SecretConfig
from streamwatch.delivery.secrets import read_secret


def test_a_secret_comes_from_the_environment_or_a_file_without_its_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_TEST_SECRET", "from-env")
    assert read_secret(SecretConfig(env="SW_TEST_SECRET"), key="sinks[0].secret") == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert read_secret(SecretConfig(file=tmp_path / "token"), key="sinks[0].secret") == "from-file"


def test_a_missing_secret_names_the_key_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SW_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.token\.env: environment variable SW_TEST_SECRET"):
        read_secret(SecretConfig(env="SW_TEST_SECRET"), key="sinks[1].token")
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.token\.file: cannot read .*nope.*check the path"):
        read_secret(SecretConfig(file=tmp_path / "nope"), key="sinks[1].token")
