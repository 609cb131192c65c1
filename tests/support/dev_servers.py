"""Throwaway instances of the development servers (deploy/dev-alertmanager, deploy/dev-influxdb) for tests
that stop and restart a server: each in its own directory on its own free port pair."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Script, and its environment variables for the instance directory and port.
SERVERS = {
    "alertmanager": (
        "deploy/dev-alertmanager",
        "STREAMWATCH_ALERTMANAGER_DIR",
        "STREAMWATCH_ALERTMANAGER_PORT",
    ),
    "influx": ("deploy/dev-influxdb", "STREAMWATCH_INFLUX_DIR", "STREAMWATCH_INFLUX_PORT"),
}


def free_port_pair() -> int:
    """A port P with P+1 also free (both servers use the next port: a receiver, an RPC listener)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as successor:
            try:
                successor.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of adjacent loopback ports")


@dataclass
class DevServer:
    kind: str
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, verb: str) -> None:
        script, dir_env, port_env = SERVERS[self.kind]
        env = {**os.environ, dir_env: str(self.directory), port_env: str(self.port)}
        subprocess.run(
            ["bash", str(REPO / script), verb], env=env, check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._call("start")

    def stop(self) -> None:
        self._call("stop")


@contextmanager
def dev_server(kind: str, directory: Path) -> Iterator[DevServer]:
    """A started instance of `kind` ("alertmanager" or "influx"), stopped at the end whatever happens."""
    server = DevServer(kind, directory, free_port_pair())
    server.start()
    try:
        yield server
    finally:
        server.stop()
