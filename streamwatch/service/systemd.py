"""systemd's service notifications (sd_notify(3)) sent straight to its datagram socket.

Under `Type=notify` systemd passes NOTIFY_SOCKET (a path, or `@name` in the abstract namespace) and, with
`WatchdogSec=`, WATCHDOG_USEC and WATCHDOG_PID. The protocol is newline-separated `KEY=value` lines in one
datagram, so a few lines here spare the daemon a dependency on python-systemd and its C library.

Notifications are a courtesy to the supervisor, never a reason to stop scoring: a failed send is logged once
and the daemon goes on (systemd, if it is still there, restarts a daemon whose watchdog pings stop).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Tells systemd the daemon is ready, alive, what it does and that it stops; without NOTIFY_SOCKET in
    `environ` every method does nothing, so the daemon calls them unconditionally."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._address = _notify_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval_s = _watchdog_interval_s(environ) if self._address is not None else None
        self._last_ping: float | None = None
        self._socket: socket.socket | None = None
        self._send_failed = False

    @property
    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout (WatchdogSec=) in seconds; None when no watchdog watches this process."""
        return self._watchdog_interval_s

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete: systemd moves the unit from `activating` to `active`."""
        self._send("READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        """A line `systemctl status` shows."""
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self, now: float) -> None:
        """Called on every loop iteration with a monotonic clock reading; pings at most every half timeout,
        as sd_watchdog_enabled(3) advises, so one late iteration does not get the daemon killed."""
        if self._watchdog_interval_s is None:
            return
        if self._last_ping is not None and now - self._last_ping < self._watchdog_interval_s / 2:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            if not self._send_failed:
                self._send_failed = True
                log.warning(
                    "cannot notify systemd at %s (%s); going on without (further failures are not logged)",
                    self._address.replace("\0", "@"),
                    error,
                )


def _notify_address(value: str) -> str | None:
    """The socket address NOTIFY_SOCKET names: an absolute path, or `@name` for Linux's abstract namespace
    (the leading NUL). Anything else (e.g. systemd 253's vsock: addresses) is not spoken here."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value:
        log.warning("NOTIFY_SOCKET=%s is not a unix socket path; systemd will not be notified", value)
    return None


def _watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """WatchdogSec= as systemd passes it; WATCHDOG_PID names the process it watches, which a child that
    inherited the environment is not."""
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    usec = environ.get("WATCHDOG_USEC")
    if usec is None:
        return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("WATCHDOG_USEC=%s is not a positive number of microseconds; no watchdog pings", usec)
        return None
    return int(usec) / 1e6


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.splitlines())
