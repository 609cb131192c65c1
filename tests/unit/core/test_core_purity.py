"""The core must stay pure: no torch, no Kafka, no HTTP, no wall clock."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import streamwatch.core

CORE = Path(streamwatch.core.__file__).parent
FORBIDDEN_MODULES = (
    "torch",
    "kafka",
    "http",
    "urllib",
    "requests",
    "httpx",
    "urllib3",
    "influxdb_client",
    "socket",
)
# At run time the check is on what actually got loaded; urllib.parse is string handling that the standard
# library itself pulls in, so only the modules that talk to a network count there.
LOADED_FORBIDDEN = (
    "torch",
    "kafka",
    "requests",
    "httpx",
    "urllib3",
    "influxdb_client",
    "http.client",
    "urllib.request",
)
FORBIDDEN_CALLS = ("time.time", "time.monotonic", "time.perf_counter", "datetime.now", "datetime.utcnow")


def _sources() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_sources_import_nothing_forbidden() -> None:
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
                assert name != "time", f"{path.name} imports the time module (inject a clock instead)"


def test_core_sources_never_read_the_wall_clock() -> None:
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for call in FORBIDDEN_CALLS:
            assert f"{call}(" not in text, f"{path.name} calls {call}"


def test_importing_the_core_loads_no_forbidden_module() -> None:
    probe = (
        "import sys, importlib, pkgutil, streamwatch.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('streamwatch.core.' + m.name)\n"
        f"forbidden = {LOADED_FORBIDDEN!r}\n"
        "bad = [m for m in sys.modules if m in forbidden or m.split('.')[0] in forbidden]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
