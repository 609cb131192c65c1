"""Logging set-up shared by the verbs: readable text on a terminal, one JSON object a line under systemd.

Text is for a person at a terminal; JSON is for the journal and whatever ships it on, where a stream id or
an alert id passed with `extra=` must stay a field one can filter on rather than words inside a message.
`configure` picks JSON on its own when stderr goes to the journal (or, with `INVOCATION_ID` set, anywhere
but a terminal: a service whose output a unit redirected to a file or socket).

kafka-python logs every failed connection attempt and metadata refresh; a broker that is down for a minute
produced hundreds of identical ERROR lines. `RepeatFilter` lets the first of a kind through and then one
summary per interval, so an outage reads as a handful of lines that still say how often it happened.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

import orjson

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LogFormat = Literal["auto", "json", "text"]

# Attributes every LogRecord has, and the two formatters add: any other attribute came in through `extra=`.
# Read off a real record so that attributes new Python versions add (3.12's taskName) are known too.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
# Characters that would make a text-mode `key=value` ambiguous to read back: such a value is quoted.
_NEEDS_QUOTES = frozenset(' ="\\\n')
_QUOTED_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


class RepeatFilter(logging.Filter):
    """Pass a (logger, level, message template) once per `interval_s`; the next one passed says how many
    were held back meanwhile. Only loggers under `prefixes` are limited."""

    def __init__(
        self,
        prefixes: tuple[str, ...],
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held and last is not None:
            record.msg = f"{record.msg} ({held} more like this in the last {now - last:.0f}s)"
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed with `extra=`, in the order given."""
    return {key: value for key, value in vars(record).items() if key not in STANDARD_ATTRIBUTES}


def message_of(record: logging.LogRecord) -> str:
    """The formatted message; a call whose arguments do not fit its template (`log.info("%d", "x")`) still
    logs, as the template and the arguments, rather than losing the event to a traceback on stderr."""
    try:
        return record.getMessage()
    except Exception:
        return f"{_text(record.msg)} (arguments that do not fit the message: {_text(record.args)})"


def _text(value: object) -> str:
    """`str(value)`, or its type and address if even that fails: a log line must never raise."""
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _utc_timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, milliseconds), level, logger, message, then exc and stack when there
    are any, then the `extra=` fields (which cannot replace the ones before them). Values JSON has no type
    for are written as their text."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message_of(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        for key, value in extra_fields(record).items():
            event.setdefault(key, value)
        return _json_line(event)


def _json_line(event: dict[str, Any]) -> str:
    try:
        return _dumps(event)
    except TypeError:  # orjson.JSONEncodeError: an int past 64 bits, a lone surrogate, a dict keyed by tuples
        return _dumps({_plain(key): _encodable(value) for key, value in event.items()})


def _dumps(value: object) -> str:
    return orjson.dumps(value, default=_text, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _encodable(value: object) -> object:
    """`value` itself if orjson can write it, else its text: the fallback goes field by field, so that one
    odd field does not turn the numbers of the others into strings."""
    try:
        _dumps(value)
    except TypeError:
        return _plain(value)
    return value


def _plain(value: object) -> str:
    # Lone surrogates (undecodable bytes kept by surrogateescape) are not UTF-8: written as \udcxx escapes.
    return _text(value).encode("utf-8", "backslashreplace").decode("utf-8")


class TextFormatter(logging.Formatter):
    """FORMAT, with the `extra=` fields appended as key=value so a reader at a terminal sees them too."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with a message that cannot fail and the extra fields after it.
        record.message = message_of(record)
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record) + _key_values(extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _key_values(fields: Mapping[str, Any]) -> str:
    return "".join(f" {key}={_text_value(value)}" for key, value in fields.items())


def _text_value(value: object) -> str:
    text = _text(value)
    if text and _NEEDS_QUOTES.isdisjoint(text):
        return text
    return f'"{text.translate(_QUOTED_ESCAPES)}"'


def choose_format(
    requested: LogFormat, stream: TextIO, environ: Mapping[str, str]
) -> Literal["json", "text"]:
    """`requested`, or for "auto": JSON when `stream` is the journal, or when a service manager started us
    (`INVOCATION_ID`) and `stream` is not a terminal; text otherwise."""
    if requested != "auto":
        return requested
    if writes_to_journal(stream, environ):
        return "json"
    if environ.get("INVOCATION_ID") and not _is_terminal(stream):
        return "json"
    return "text"


def writes_to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether `stream` is the one systemd connected to the journal: it sets JOURNAL_STREAM to that file's
    "device:inode", which a child inheriting the variable but not the stream (a pipe into something else)
    no longer matches (systemd.exec(5))."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):  # no variable, not a number, or a stream with no file (io.StringIO)
        return False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed
        return False


class _ConfiguredHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure` installs, the one a later `configure` replaces. Given no stream it writes
    to whatever sys.stderr is at the time, as logging.lastResort does: where something swaps sys.stderr (a
    test capturing it), records go to the current one, never to one closed since."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(sys.stderr if stream is None else stream)
        self._follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr  # under the handler's lock, which `handle` holds around `emit`
        super().emit(record)


def configure(
    *,
    verbose: bool,
    format: LogFormat = "auto",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Log to `stream` (sys.stderr when None) in `format`, at DEBUG when `verbose`, else INFO with
    kafka-python's chatter held back. Calling it again replaces the handler it installed (basicConfig would
    keep the first one); handlers others put on the root logger (pytest's capture, an embedding program's)
    are left alone."""
    handler = _ConfiguredHandler(stream)
    chosen = choose_format(format, handler.stream, os.environ if environ is None else environ)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    if not verbose:
        handler.addFilter(RepeatFilter(("kafka",)))
    root = logging.getLogger()
    for previous in [known for known in root.handlers if isinstance(known, _ConfiguredHandler)]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # kafka-python narrates every connection and rebalance at INFO; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(logging.NOTSET if verbose else logging.WARNING)
    return handler
