"""streamwatch's records as InfluxDB line protocol: one point per record, the stream (or model group) as a
tag, event time in nanoseconds.

Hand-formatted rather than built with influxdb_client.Point: every scored window becomes a point, and an
f-string with cached tag escaping takes about 1.7 µs a point where a Point takes about 11 µs.

Escaping follows InfluxDB's own parser (1.x and 2.x, checked against 1.8): a backslash escapes a comma,
space or equals sign in names and tag values and is literal anywhere else; string field values escape
double quotes and backslashes. Text that cannot be stored as it is, or that line-protocol parsers read back
differently (a line break, a lone surrogate; a backslash before a separator, another backslash or the end),
raises `UnwritableValueError` rather than being altered: the caller counts the point as dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

from streamwatch.io.sinks import GroupHealth
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

FieldValue = float | int | bool | str

SCORE = "streamwatch_score"
ALERT = "streamwatch_alert"
DATA_QUALITY = "streamwatch_data_quality"
HEALTH = "streamwatch_health"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
# Backslashes parsers disagree on: InfluxDB 1.8 keeps `\\` as two, other parsers (streamwatch's own
# decoder among them) read one; before a separator or at the end one swallows what follows.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?:[\\, =]|$)")
# Line breaks end a point; lone surrogates (undecodable input kept by surrogateescape) are not UTF-8.
_UNWRITABLE_CHARACTER = re.compile("[\r\n\ud800-\udfff]")
_CANNOT_CARRY = "holds a line break or a lone surrogate, which line protocol cannot carry"
# Distinct stream ids, model versions and the like: enough to keep every live one escaped once.
_TAG_CACHE_SIZE = 65_536


class UnwritableValueError(ValueError):
    """A value line protocol cannot carry exactly; the point holding it cannot be written."""


def escape_measurement(name: str) -> str:
    return _checked_name(name, "measurement").translate(_MEASUREMENT_ESCAPES)


@lru_cache(maxsize=_TAG_CACHE_SIZE)
def escape_key(text: str) -> str:
    """A tag key, tag value or field key, escaped (cached: the same few values recur on every point)."""
    return _checked_name(text, "tag or field").translate(_KEY_ESCAPES)


def _checked_name(text: str, what: str) -> str:
    if not text:
        raise UnwritableValueError(f"empty {what} name")
    if _UNWRITABLE_CHARACTER.search(text):
        raise UnwritableValueError(f"{what} {text!r} {_CANNOT_CARRY}")
    if "\\" in text and _AMBIGUOUS_BACKSLASH.search(text):
        raise UnwritableValueError(
            f"{what} {text!r} has a backslash before a separator, another backslash or the end, "
            "which line-protocol parsers read back differently"
        )
    return text


def quote_string(value: str) -> str:
    if _UNWRITABLE_CHARACTER.search(value):
        raise UnwritableValueError(f"string {value!r} {_CANNOT_CARRY}")
    return f'"{value.translate(_STRING_ESCAPES)}"'


def nanoseconds(ts: float) -> int:
    """Epoch seconds as integer nanoseconds, rounded to the microsecond: a float of epoch seconds holds no
    finer digits, and the rounding keeps float noise out of the stored timestamps."""
    if not math.isfinite(ts):
        raise UnwritableValueError(f"timestamp {ts!r} is not finite")
    return round(ts * 1_000_000) * 1_000


def format_field(value: FieldValue) -> str | None:
    """A field value in line protocol; None for a non-finite float, which line protocol cannot carry (the
    field is left out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise UnwritableValueError(f"integer {value} is outside int64")
        return f"{value}i"
    if isinstance(value, str):
        return quote_string(value)
    number = float(value)
    return repr(number) if math.isfinite(number) else None


def encode_point(
    measurement: str,
    tags: Sequence[tuple[str, str]],
    fields: Sequence[tuple[str, FieldValue]],
    at: float,
) -> str | None:
    """One line: tags with an empty value are left out (InfluxDB cannot store them), as are non-finite
    fields; None when no field is left, since a point needs one. Tags should come sorted by key (InfluxDB
    sorts them otherwise)."""
    formatted = [(key, text) for key, value in fields if (text := format_field(value)) is not None]
    if not formatted:
        return None
    series = escape_measurement(measurement) + "".join(
        f",{escape_key(key)}={escape_key(value)}" for key, value in tags if value
    )
    field_set = ",".join(f"{escape_key(key)}={text}" for key, text in formatted)
    return f"{series} {field_set} {nanoseconds(at)}"


def score_line(score: WindowScore) -> str:
    """A scored window at its end. The common all-finite case is formatted in one go (it is the hot path:
    one per window); the rest goes through `encode_point`, which leaves out what is not finite."""
    value, threshold = float(score.score), float(score.threshold)
    if not (math.isfinite(value) and math.isfinite(threshold) and score.stream and score.model_version):
        line = encode_point(
            SCORE,
            (("model_version", score.model_version), ("stream", score.stream)),
            (("score", value), ("threshold", threshold), ("exceeds", score.exceeds)),
            score.end,
        )
        assert line is not None  # `exceeds` is always there
        return line
    exceeds = "true" if value > threshold else "false"
    return (
        f"{SCORE},model_version={escape_key(score.model_version)},stream={escape_key(score.stream)} "
        f"score={value!r},threshold={threshold!r},exceeds={exceeds} {nanoseconds(score.end)}"
    )


def alert_line(event: AlertEvent) -> str:
    """An alert transition at the end of the window that caused it; `firing` is 1 or 0 so that it can be
    summed and graphed as a state."""
    line = encode_point(
        ALERT,
        (
            ("kind", event.kind),
            ("severity", event.severity),
            ("status", event.status),
            ("stream", event.stream),
        ),
        (
            ("alert_id", event.alert_id),
            ("score", float(event.score)),
            ("threshold", float(event.threshold)),
            ("firing", 1 if event.status == "firing" else 0),
        ),
        event.window_end,
    )
    assert line is not None  # `alert_id` and `firing` are always there
    return line


def quality_line(event: DataQualityEvent) -> str:
    """A data-quality event at its end; `start` and `end` (epoch seconds) bound what it is about."""
    line = encode_point(
        DATA_QUALITY,
        (("kind", event.kind), ("stream", event.stream)),
        (("start", float(event.start)), ("end", float(event.end)), ("detail", event.detail)),
        event.end,
    )
    assert line is not None  # `detail` is always there
    return line


def health_line(figures: GroupHealth) -> str:
    """A model group's detector health; figures not known yet (no canaries run, never retrained) are left
    out rather than written as zero."""
    fields: list[tuple[str, FieldValue]] = []
    if figures.canary_hit_rate is not None:
        fields.append(("canary_hit_rate", float(figures.canary_hit_rate)))
    if figures.seconds_since_retrain is not None:
        fields.append(("seconds_since_retrain", float(figures.seconds_since_retrain)))
    fields += [
        ("degraded", figures.degraded),
        ("retrains_accepted", figures.retrains_accepted),
        ("retrains_rejected", figures.retrains_rejected),
        ("rollbacks", figures.rollbacks),
    ]
    line = encode_point(HEALTH, (("group", figures.group), ("version", figures.version)), fields, figures.at)
    assert line is not None  # `degraded` is always there
    return line
