"""Line protocol for streamwatch's records: exact lines for each measurement, awkward names escaped so that
they parse back unchanged, and what line protocol cannot carry refused rather than altered."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.codecs import decode_line_protocol
from streamwatch.io.line_protocol import (
    UnwritableValueError,
    alert_line,
    encode_point,
    escape_key,
    escape_measurement,
    health_line,
    nanoseconds,
    quality_line,
    quote_string,
    score_line,
)
from streamwatch.io.sinks import GroupHealth
from streamwatch.records import AlertEvent, DataQualityEvent, WindowScore

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
START_NS = 1_767_225_600_000_000_000


def _score(
    stream: str = "pmu-1/voltage", *, score: float = 0.5, threshold: float = 2.5, end: float = START
) -> WindowScore:
    return WindowScore(stream, 7, end - 10.0, end, score, threshold, {"v": 1.0}, "pca@3")


def _alert(stream: str = "pmu-1/voltage", status: str = "firing") -> AlertEvent:
    return AlertEvent(
        alert_id="a1b2c3d4e5f60718",
        stream=stream,
        status=status,  # type: ignore[arg-type]
        severity="warning",
        window_start=START - 10.0,
        window_end=START,
        score=4.25,
        threshold=2.5,
        model_version="pca@3",
        channels={"v": 1.0},
        detected_at=START + 1.0,
    )


def test_a_score_is_one_line_with_stream_and_model_version_tags_at_the_window_end() -> None:
    assert score_line(_score()) == (
        "streamwatch_score,model_version=pca@3,stream=pmu-1/voltage "
        f"score=0.5,threshold=2.5,exceeds=false {START_NS}"
    )
    assert score_line(_score(score=3.0)).split(" ")[1].endswith("exceeds=true")


def test_awkward_stream_names_are_escaped() -> None:
    line = score_line(_score('site 4,bay=2 "north" C:\\logs'))
    assert line.startswith(
        'streamwatch_score,model_version=pca@3,stream=site\\ 4\\,bay\\=2\\ "north"\\ C:\\logs '
    )


def test_a_non_finite_score_or_threshold_is_left_out_but_the_point_stays() -> None:
    assert score_line(_score(score=math.nan)) == (
        f"streamwatch_score,model_version=pca@3,stream=pmu-1/voltage threshold=2.5,exceeds=false {START_NS}"
    )
    assert score_line(_score(score=1.0, threshold=math.inf)) == (
        f"streamwatch_score,model_version=pca@3,stream=pmu-1/voltage score=1.0,exceeds=false {START_NS}"
    )


def test_a_point_with_no_finite_field_is_skipped_and_empty_tags_are_left_out() -> None:
    assert encode_point("m", [("stream", "s")], [("x", math.nan), ("y", -math.inf)], START) is None
    assert encode_point("m", [("a", ""), ("b", "x")], [("v", 1)], START) == f"m,b=x v=1i {START_NS}"


def test_an_alert_carries_its_state_as_tags_and_firing_as_an_integer() -> None:
    assert alert_line(_alert()) == (
        "streamwatch_alert,kind=anomaly,severity=warning,status=firing,stream=pmu-1/voltage "
        f'alert_id="a1b2c3d4e5f60718",score=4.25,threshold=2.5,firing=1i {START_NS}'
    )
    assert ",firing=0i " in alert_line(_alert(status="resolved"))


def test_a_data_quality_event_is_a_point_at_its_end_with_its_span_and_detail() -> None:
    event = DataQualityEvent("pmu-1/voltage", "gap", START - 30.5, START, 'no data for 30.5s ("max" 10s)')
    assert quality_line(event) == (
        "streamwatch_data_quality,kind=gap,stream=pmu-1/voltage "
        f'start=1767225569.5,end=1767225600.0,detail="no data for 30.5s (\\"max\\" 10s)" {START_NS}'
    )


def test_detector_health_leaves_out_figures_not_known_yet() -> None:
    known = GroupHealth("grid", "pca@3", START, 0.75, 3600.0, False, 2, 1, 0)
    assert health_line(known) == (
        "streamwatch_health,group=grid,version=pca@3 canary_hit_rate=0.75,seconds_since_retrain=3600.0,"
        f"degraded=false,retrains_accepted=2i,retrains_rejected=1i,rollbacks=0i {START_NS}"
    )
    unknown = GroupHealth("grid", "pca@1", START, None, None, True, 0, 0, 0)
    assert health_line(unknown) == (
        "streamwatch_health,group=grid,version=pca@1 "
        f"degraded=true,retrains_accepted=0i,retrains_rejected=0i,rollbacks=0i {START_NS}"
    )


def test_timestamps_are_nanoseconds_rounded_to_the_microsecond() -> None:
    # 0.1 s is not exact in binary: without rounding the float noise would reach the stored timestamp.
    assert nanoseconds(START + 0.1) == START_NS + 100_000_000
    assert nanoseconds(START + 0.0000012) == START_NS + 1_000
    with pytest.raises(UnwritableValueError, match="not finite"):
        nanoseconds(math.nan)


def test_keys_measurements_and_strings_escape_what_their_position_needs() -> None:
    assert escape_measurement("cpu load,x=1") == "cpu\\ load\\,x=1"
    assert escape_key("a b,c=d") == "a\\ b\\,c\\=d"
    assert quote_string('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'


@pytest.mark.parametrize(
    "text",
    [
        "line\nbreak",
        "carriage\rreturn",
        "undecodable \udce9",
        "trailing\\",
        "double\\\\backslash",
        "before\\,comma",
        "a\\ b",
        "a\\=b",
        "",
    ],
)
def test_names_that_influxdb_cannot_read_back_unchanged_are_refused(text: str) -> None:
    with pytest.raises(UnwritableValueError):
        escape_key(text)
    with pytest.raises(UnwritableValueError):
        escape_measurement(text)


@pytest.mark.parametrize("text", ["two\nlines", "not utf-8: \udcff"])
def test_a_string_field_with_a_line_break_or_a_lone_surrogate_is_refused(text: str) -> None:
    with pytest.raises(UnwritableValueError, match="cannot carry"):
        quote_string(text)


def test_integers_beyond_int64_are_refused() -> None:
    with pytest.raises(UnwritableValueError, match="int64"):
        encode_point("m", [], [("n", 2**63)], START)


# Names built from the characters line protocol treats specially, plus ordinary and non-ASCII ones. A
# backslash is followed by an ordinary character: the only place every InfluxDB reads it back literally.
_ORDINARY = st.sampled_from(["a", "Z", "7", "/", "-", "_", ":", '"', "'", "#", "\t", "é", "電", "🔥", "ü"])
_SPECIAL = st.sampled_from([" ", ",", "="])
_BACKSLASHED = st.builds(lambda char: "\\" + char, _ORDINARY)
_NAMES = st.lists(st.one_of(_ORDINARY, _SPECIAL, _BACKSLASHED), min_size=1, max_size=12).map("".join)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_TIMES = st.floats(min_value=0.0, max_value=4e9, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(stream=_NAMES, version=_NAMES, score=_FLOATS, threshold=_FLOATS, end=_TIMES)
def test_score_lines_parse_back_to_the_same_tags_fields_and_time(
    stream: str, version: str, score: float, threshold: float, end: float
) -> None:
    [sample] = decode_line_protocol(
        score_line(WindowScore(stream, 0, end - 1, end, score, threshold, {}, version)).encode()
    )
    # The decoder names a series by its unescaped key with the tags sorted.
    assert sample.stream == f"streamwatch_score,model_version={version},stream={stream}"
    assert sample.values == {"score": score, "threshold": threshold, "exceeds": float(score > threshold)}
    assert sample.ts == pytest.approx(end, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    group=_NAMES,
    version=_NAMES,
    rate=st.one_of(st.none(), _FLOATS),
    counts=st.lists(st.integers(0, 2**40), min_size=3, max_size=3),
)
def test_health_lines_parse_back_with_integer_counts(
    group: str, version: str, rate: float | None, counts: list[int]
) -> None:
    figures = GroupHealth(group, version, START, rate, None, True, *counts)
    [sample] = decode_line_protocol(health_line(figures).encode())
    assert sample.stream == f"streamwatch_health,group={group},version={version}"
    expected = {
        "degraded": 1.0,
        "retrains_accepted": counts[0],
        "retrains_rejected": counts[1],
        "rollbacks": counts[2],
    }
    if rate is not None:
        expected["canary_hit_rate"] = rate
    assert sample.values == expected


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])))
def test_a_quoted_string_never_breaks_the_fields_after_it(text: str) -> None:
    [sample] = decode_line_protocol(f"m detail={quote_string(text)},after=1i 0".encode())
    assert sample.values == {"after": 1.0}
