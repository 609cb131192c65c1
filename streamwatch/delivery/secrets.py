"""Reading a secret named by the configuration (an environment variable or a file), with errors that say
which setting to fix."""

from __future__ import annotations

import os

from streamwatch.config import ConfigError, SecretConfig


def read_secret(secret: SecretConfig, *, key: str) -> str:
    """The secret's value, without a trailing newline; `key` is its dotted config key, for the message."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if value is None:
            raise ConfigError(f"{key}.env: environment variable {secret.env} is not set; export it")
        return value
    assert secret.file is not None
    try:
        value = secret.file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"{key}.file: cannot read {secret.file} ({error.strerror}); check the path and its permissions"
        ) from None
    return value.rstrip("\r\n")
