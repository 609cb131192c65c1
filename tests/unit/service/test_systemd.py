"""sd_notify over a real datagram socket standing in for systemd's: what arrives, how often, and that a
missing or vanished socket never reaches the daemon."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamwatch.service.systemd import SystemdNotifier


class _Systemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.setblocking(False)

    def received(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.socket.recv(4096).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[_Systemd, str]]:
    path = str(tmp_path / "notify")
    receiver = _Systemd(path)
    yield receiver, path
    receiver.socket.close()


def _watched(notify_socket: str, *, watchdog_pid: int | None = None) -> dict[str, str]:
    """The environment systemd gives a Type=notify service with WatchdogSec=10."""
    return {
        "NOTIFY_SOCKET": notify_socket,
        "WATCHDOG_USEC": "10000000",
        "WATCHDOG_PID": str(os.getpid() if watchdog_pid is None else watchdog_pid),
    }


def test_ready_status_and_stopping_arrive_as_datagrams(systemd: tuple[_Systemd, str]) -> None:
    receiver, path = systemd
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.ready()
    notifier.ready(status="consuming 3 topics")
    notifier.status("training group voltage\n(2 streams)")
    notifier.stopping()
    notifier.close()
    assert receiver.received() == [
        "READY=1",
        "READY=1\nSTATUS=consuming 3 topics",
        "STATUS=training group voltage (2 streams)",
        "STOPPING=1",
    ]


def test_an_abstract_namespace_socket_is_reached_through_its_at_name() -> None:
    name = f"streamwatch-test-{uuid.uuid4().hex}"
    receiver = _Systemd("\0" + name)
    try:
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receiver.received() == ["READY=1"]
    finally:
        receiver.socket.close()


def test_watchdog_pings_at_most_every_half_interval_of_the_injected_clock(
    systemd: tuple[_Systemd, str],
) -> None:
    receiver, path = systemd
    notifier = SystemdNotifier(_watched(path))
    assert notifier.watchdog_interval_s == 10.0
    pinged_at = []
    for now in (100.0, 101.0, 104.9, 105.0, 106.0, 109.99, 110.0, 130.0):
        notifier.watchdog(now)
        if receiver.received() == ["WATCHDOG=1"]:
            pinged_at.append(now)
    assert pinged_at == [100.0, 105.0, 110.0, 130.0]


def test_a_watchdog_meant_for_another_process_is_not_pinged(systemd: tuple[_Systemd, str]) -> None:
    # A child that inherited the environment must not keep a hung parent alive.
    receiver, path = systemd
    notifier = SystemdNotifier(_watched(path, watchdog_pid=os.getpid() + 1))
    assert notifier.watchdog_interval_s is None
    notifier.watchdog(100.0)
    notifier.ready()
    assert receiver.received() == ["READY=1"]


@pytest.mark.parametrize("usec", ["0", "ten", "-5"])
def test_an_unusable_watchdog_interval_disables_the_pings(systemd: tuple[_Systemd, str], usec: str) -> None:
    receiver, path = systemd
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval_s is None
    notifier.watchdog(100.0)
    assert receiver.received() == []


def test_the_watchdog_interval_alone_without_a_pid_is_honoured(systemd: tuple[_Systemd, str]) -> None:
    _receiver, path = systemd
    assert SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "500000"}).watchdog_interval_s == 0.5


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/notify"}, {"WATCHDOG_USEC": "10000000"}],
    ids=["unset", "empty", "relative", "watchdog-without-socket"],
)
def test_without_a_usable_notify_socket_every_call_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = SystemdNotifier(environ)
    assert notifier.watchdog_interval_s is None
    notifier.ready("up")
    notifier.status("busy")
    notifier.watchdog(1.0)
    notifier.stopping()
    notifier.close()


def test_a_vanished_socket_is_logged_once_and_never_raises(
    systemd: tuple[_Systemd, str], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, path = systemd
    notifier = SystemdNotifier(_watched(path))
    notifier.ready()
    assert receiver.received() == ["READY=1"]
    receiver.socket.close()
    Path(path).unlink()
    with caplog.at_level(logging.WARNING, logger="streamwatch.service.systemd"):
        notifier.watchdog(100.0)
        notifier.status("still scoring")
        notifier.stopping()
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert f"cannot notify systemd at {path}" in warnings[0]
