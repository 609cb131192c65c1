from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.alerts import AlertConfig, AlertMachine, SeverityLevel, alert_id_for
from streamwatch.records import AlertEvent, SourcePosition, WindowScore, iso_utc

STREAM = "plant-7/pump"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WINDOW_S = 10.0
SHARES = {"flow": 3.0, "pressure": 1.0}


def window(
    seq: int,
    score: float,
    threshold: float = 1.0,
    *,
    shares: dict[str, float] | None = None,
    version: str = "conv@1",
) -> WindowScore:
    start = T0 + seq * WINDOW_S
    return WindowScore(
        STREAM,
        seq,
        start,
        start + WINDOW_S,
        score,
        threshold,
        SHARES if shares is None else shares,
        version,
        SourcePosition("metrics", 0, 1000 + seq),
    )


def feed(
    machine: AlertMachine, windows: Sequence[WindowScore], first_step: int = 0
) -> list[tuple[int, AlertEvent]]:
    """Events with the index of the window that produced them; now = window end + 1 s."""
    events: list[tuple[int, AlertEvent]] = []
    for offset, item in enumerate(windows):
        events.extend((first_step + offset, event) for event in machine.step(item, now=item.end + 1.0))
    return events


def independent_id(start: float) -> str:
    """The documented id recipe, computed here without the module under test."""
    return hashlib.sha256(f"{STREAM}|{iso_utc(start)}".encode()).hexdigest()[:16]


def windows_of(scores: Sequence[float]) -> list[WindowScore]:
    return [window(seq, score) for seq, score in enumerate(scores)]


QUICK = AlertConfig(for_windows=2, resolve_windows=3, resolve_ratio=0.9, cooldown_windows=3)


# -- lifecycle, hand-worked ------------------------------------------------------------------------------
def test_pending_needs_for_windows_consecutive_exceeding_windows_to_fire() -> None:
    machine = AlertMachine(STREAM, QUICK)
    states = []
    for item in windows_of([0.5, 2.0, 0.5, 2.0, 1.5]):
        machine.step(item, now=item.end)
        states.append(machine.state)
    assert states == ["idle", "pending", "idle", "pending", "firing"]


def test_a_score_equal_to_the_threshold_does_not_exceed() -> None:
    events = feed(AlertMachine(STREAM, QUICK), windows_of([1.0] * 10))
    assert events == []


def test_firing_event_fields() -> None:
    machine = AlertMachine(STREAM, QUICK)
    items = [window(0, 0.2), window(1, 1.5), window(2, 3.0, 1.2, shares={"flow": 1.0, "pressure": 3.0})]
    events = feed(machine, items)
    assert len(events) == 1
    step, event = events[0]
    assert step == 2
    assert event.alert_id == independent_id(items[1].start) == alert_id_for(STREAM, items[1].start)
    assert event.status == "firing"
    assert event.stream == STREAM
    assert event.window_start == items[1].start  # the first anomalous window
    assert event.window_end == items[2].end  # the window that made it fire
    assert (event.score, event.threshold) == (3.0, 1.2)  # the peak (ratio 2.5 beats 1.5)
    assert event.severity == "critical"
    assert event.channels == {"flow": 0.25, "pressure": 0.75}
    assert event.model_version == "conv@1"
    assert event.detected_at == items[2].end + 1.0
    assert event.source == items[2].source
    assert machine.first_source == items[1].source


def test_severity_rises_with_the_same_alert_id_and_never_downgrades() -> None:
    levels = (SeverityLevel("minor", 0.5), SeverityLevel("major", 2.0), SeverityLevel("page", 4.0))
    config = AlertConfig(for_windows=2, resolve_windows=2, cooldown_windows=0, severities=levels)
    events = feed(AlertMachine(STREAM, config), windows_of([1.5, 1.5, 2.5, 1.2, 5.0, 6.0, 1.1, 0.1, 0.1]))
    assert [(step, e.status, e.severity, e.score) for step, e in events] == [
        (1, "firing", "minor", 1.5),
        (2, "firing", "major", 2.5),
        (4, "firing", "page", 5.0),
        (8, "resolved", "page", 6.0),
    ]
    assert len({e.alert_id for _, e in events}) == 1


def test_resolve_after_resolve_windows_clearing_windows_reports_the_last_exceeding_window() -> None:
    machine = AlertMachine(STREAM, QUICK)
    items = windows_of([2.0, 2.5, 1.5, 0.3, 0.3, 0.3, 0.3])
    events = feed(machine, items)
    assert [(step, e.status) for step, e in events] == [(1, "firing"), (5, "resolved")]
    resolved = events[1][1]
    assert resolved.alert_id == events[0][1].alert_id
    assert resolved.window_start == items[0].start
    assert resolved.window_end == items[2].end  # end of the last exceeding window, not of the resolving one
    assert (resolved.score, resolved.threshold, resolved.severity) == (2.5, 1.0, "critical")
    assert resolved.detected_at == items[5].end + 1.0
    assert resolved.source == items[5].source
    assert machine.state == "cooldown"


def test_hysteresis_band_neither_clears_nor_resets_the_clear_count() -> None:
    # resolve_ratio 0.9: 0.95 sits in the band. Two clears, a band window, then the third clear resolves.
    events = feed(AlertMachine(STREAM, QUICK), windows_of([2.0, 2.0, 0.5, 0.5, 0.95, 0.95, 0.5]))
    assert [(step, e.status) for step, e in events] == [(1, "firing"), (6, "resolved")]


def test_an_exceeding_window_resets_the_clear_count() -> None:
    events = feed(AlertMachine(STREAM, QUICK), windows_of([2.0, 2.0, 0.5, 0.5, 1.1, 0.5, 0.5, 0.5]))
    assert [(step, e.status) for step, e in events] == [(1, "firing"), (7, "resolved")]
    assert events[1][1].window_end == window(4, 0.0).end


def test_cooldown_blocks_firing_then_fires_at_once_when_the_run_is_long_enough() -> None:
    machine = AlertMachine(STREAM, QUICK)
    # fire at 1, resolve at 4; cooldown covers windows 5, 6, 7; the run 6, 7 continues into 8 and fires there.
    scores = [2.0, 2.0, 0.1, 0.1, 0.1, 0.1, 2.0, 2.0, 2.0]
    items = windows_of(scores)
    events = feed(machine, items[:8])
    assert [(step, e.status) for step, e in events] == [(1, "firing"), (4, "resolved")]
    assert machine.state == "pending"  # the cooldown is over, the run from window 6 remains
    late = feed(machine, items[8:], first_step=8)
    assert [(step, e.status) for step, e in late] == [(8, "firing")]
    assert late[0][1].window_start == items[6].start
    assert late[0][1].alert_id != events[0][1].alert_id


def test_states_through_a_cooldown() -> None:
    machine = AlertMachine(STREAM, QUICK)
    states = []
    for item in windows_of([2.0, 2.0, 0.1, 0.1, 0.1, 2.0, 0.1, 0.1, 0.1]):
        machine.step(item, now=item.end)
        states.append(machine.state)
    assert states == [
        "pending", "firing", "firing", "firing", "cooldown", "cooldown", "cooldown", "idle", "idle",
    ]  # fmt: skip


def test_a_run_broken_right_after_the_cooldown_does_not_fire() -> None:
    scores = [2.0, 2.0, 0.1, 0.1, 0.1, 2.0, 2.0, 2.0, 0.1, 2.0]
    events = feed(AlertMachine(STREAM, QUICK), windows_of(scores))
    assert [(step, e.status) for step, e in events] == [(1, "firing"), (4, "resolved")]


def test_no_cooldown_allows_an_immediate_new_alert() -> None:
    config = AlertConfig(for_windows=1, resolve_windows=1, cooldown_windows=0)
    events = feed(AlertMachine(STREAM, config), windows_of([2.0, 0.1, 2.0]))
    assert [(step, e.status) for step, e in events] == [(0, "firing"), (1, "resolved"), (2, "firing")]


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ({}, {}),
        ({"a": 0.0, "b": 0.0}, {"a": 0.5, "b": 0.5}),
        ({"a": -1.0, "b": 2.0, "c": float("nan")}, {"a": 0.0, "b": 1.0, "c": 0.0}),
        ({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 0.25, "b": 0.25, "c": 0.5}),
    ],
)
def test_channels_are_normalised_shares_of_the_peak_window(
    shares: dict[str, float], expected: dict[str, float]
) -> None:
    config = AlertConfig(for_windows=1)
    events = feed(AlertMachine(STREAM, config), [window(0, 2.0, shares=shares)])
    assert events[0][1].channels == expected


# -- validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"for_windows": 0}, "for_windows"),
        ({"for_windows": 1.5}, "for_windows"),
        ({"resolve_windows": 0}, "resolve_windows"),
        ({"resolve_ratio": 0.0}, "resolve_ratio"),
        ({"resolve_ratio": 1.2}, "resolve_ratio"),
        ({"cooldown_windows": -1}, "cooldown_windows"),
        ({"severities": ()}, "severities"),
        ({"severities": (SeverityLevel("a", 1.0), SeverityLevel("a", 2.0))}, "severities"),
        ({"severities": (SeverityLevel("a", 2.0), SeverityLevel("b", 1.0))}, "severities"),
        ({"severities": (SeverityLevel("a", 1.5),)}, "severities"),
        ({"severities": (SeverityLevel("", 1.0),)}, "severities"),
    ],
)
def test_config_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AlertConfig(**changes)  # type: ignore[arg-type]


def test_step_rejects_foreign_and_invalid_windows() -> None:
    machine = AlertMachine(STREAM, QUICK)
    foreign = WindowScore("other", 0, T0, T0 + 1, 2.0, 1.0, {}, "v")
    with pytest.raises(ValueError, match="other"):
        machine.step(foreign, now=T0)
    with pytest.raises(ValueError, match="threshold"):
        machine.step(window(0, 2.0, threshold=0.0), now=T0)
    with pytest.raises(ValueError, match="score"):
        machine.step(window(0, float("nan")), now=T0)


@pytest.mark.parametrize(
    "snapshot",
    [
        {},
        {"run": -1, "cooldown": 0},
        {"run": 2, "cooldown": 0},  # pending without its start and peak
        {"run": 0, "cooldown": 0, "firing": {"level": 0, "clear": 0, "last_end": 1.0}},
    ],
)
def test_restore_rejects_malformed_snapshots(snapshot: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="malformed alert snapshot"):
        AlertMachine.restore(STREAM, QUICK, snapshot)


def test_snapshot_is_compact_while_firing() -> None:
    machine = AlertMachine(STREAM, QUICK)
    shares = {"flow": 0.31, "pressure": 0.22, "temperature": 0.27, "vibration": 0.2}
    feed(machine, [window(0, 2.0, shares=shares), window(1, 2.7, shares=shares), window(2, 0.5)])
    assert machine.state == "firing"
    assert len(json.dumps(machine.snapshot()).encode()) < 512


# -- properties over random score sequences --------------------------------------------------------------
RATIOS = [0.0, 0.3, 0.85, 0.92, 1.0, 1.01, 1.5, 2.0, 2.5, 6.0]
THRESHOLDS = [0.5, 1.0, 3.0]

configs = st.builds(
    AlertConfig,
    for_windows=st.integers(1, 4),
    resolve_windows=st.integers(1, 4),
    resolve_ratio=st.sampled_from([0.5, 0.9, 1.0]),
    cooldown_windows=st.integers(0, 4),
    severities=st.sampled_from(
        [
            (SeverityLevel("warning", 1.0), SeverityLevel("critical", 2.0)),
            (SeverityLevel("info", 0.5), SeverityLevel("warning", 1.5), SeverityLevel("page", 5.0)),
        ]
    ),
)


def expand(bursts: list[tuple[float, float, int]]) -> list[tuple[float, float]]:
    return [(ratio, threshold) for ratio, threshold, repeat in bursts for _ in range(repeat)][:150]


# Scores come in bursts in practice (an anomaly lasts, a calm spell lasts); bursts of 1-6 equal verdicts
# reach every state, including fire -> resolve -> cooldown -> fire again, within a short sequence.
verdicts = st.lists(
    st.tuples(st.sampled_from(RATIOS), st.sampled_from(THRESHOLDS), st.integers(1, 6)), max_size=50
).map(expand)


def scored(pairs: Sequence[tuple[float, float]]) -> list[WindowScore]:
    return [window(seq, ratio * threshold, threshold) for seq, (ratio, threshold) in enumerate(pairs)]


@settings(max_examples=150, deadline=None)
@given(config=configs, pairs=verdicts)
def test_every_firing_is_backed_by_a_long_enough_run_of_exceeding_windows(
    config: AlertConfig, pairs: list[tuple[float, float]]
) -> None:
    items = scored(pairs)
    exceeds = [item.exceeds for item in items]
    seen: set[str] = set()
    for step, event in feed(AlertMachine(STREAM, config), items):
        if event.status != "firing":
            continue
        assert exceeds[step]
        if event.alert_id in seen:
            continue  # a severity rise; the opening firing was checked
        seen.add(event.alert_id)
        first = next(i for i, item in enumerate(items) if item.start == event.window_start)
        assert all(exceeds[first : step + 1])
        assert first == 0 or not exceeds[first - 1]
        assert step - first + 1 >= config.for_windows


@settings(max_examples=150, deadline=None)
@given(config=configs, pairs=verdicts)
def test_lifecycle_order_one_open_alert_and_monotone_severity(
    config: AlertConfig, pairs: list[tuple[float, float]]
) -> None:
    rank = {level.name: index for index, level in enumerate(config.severities)}
    open_alert: str | None = None
    open_severity = -1
    finished: set[str] = set()
    for _, event in feed(AlertMachine(STREAM, config), scored(pairs)):
        assert event.alert_id not in finished  # nothing after a resolve
        if event.status == "firing":
            assert open_alert in (None, event.alert_id)  # at most one open alert
            if open_alert == event.alert_id:
                assert rank[event.severity] > open_severity  # a repeat firing only ever raises severity
            open_alert, open_severity = event.alert_id, rank[event.severity]
        else:
            assert open_alert == event.alert_id  # resolved follows a firing of the same alert
            assert rank[event.severity] == open_severity
            finished.add(event.alert_id)
            open_alert, open_severity = None, -1


@settings(max_examples=150, deadline=None)
@given(config=configs, pairs=verdicts)
def test_no_firing_within_cooldown_and_resolves_need_enough_clearing_windows(
    config: AlertConfig, pairs: list[tuple[float, float]]
) -> None:
    items = scored(pairs)
    events = feed(AlertMachine(STREAM, config), items)
    firing_steps = {step for step, event in events if event.status == "firing"}
    for step, event in events:
        if event.status != "resolved":
            continue
        assert not firing_steps & set(range(step + 1, step + 1 + config.cooldown_windows))
        last_exceeding = max(i for i in range(step) if items[i].exceeds)
        assert event.window_end == items[last_exceeding].end
        clearing = [
            i
            for i in range(last_exceeding + 1, step + 1)
            if items[i].score <= items[i].threshold * config.resolve_ratio
        ]
        assert len(clearing) == config.resolve_windows and clearing[-1] == step


@settings(max_examples=100, deadline=None)
@given(config=configs, pairs=verdicts)
def test_alert_ids_are_deterministic(config: AlertConfig, pairs: list[tuple[float, float]]) -> None:
    items = scored(pairs)
    first = feed(AlertMachine(STREAM, config), items)
    again = feed(AlertMachine(STREAM, config), items)
    assert first == again
    for _, event in first:
        assert event.alert_id == independent_id(event.window_start)


@settings(max_examples=200, deadline=None)
@given(config=configs, pairs=verdicts, data=st.data())
def test_snapshot_restore_at_any_point_gives_the_same_remaining_events(
    config: AlertConfig, pairs: list[tuple[float, float]], data: st.DataObject
) -> None:
    items = scored(pairs)
    split = data.draw(st.integers(0, len(items)), label="split")
    uninterrupted = AlertMachine(STREAM, config)
    expected = [event for step, event in feed(uninterrupted, items) if step >= split]
    before = AlertMachine(STREAM, config)
    feed(before, items[:split])
    snapshot = json.loads(json.dumps(before.snapshot()))
    restored = AlertMachine.restore(STREAM, config, snapshot)
    assert restored.state == before.state
    assert restored.snapshot() == snapshot
    assert [event for _, event in feed(restored, items[split:], split)] == expected
    assert restored.snapshot() == uninterrupted.snapshot()


@settings(max_examples=80, deadline=None)
@given(scores=st.lists(st.sampled_from([0.2, 0.95, 1.5, 3.0]), min_size=1, max_size=60))
def test_the_open_alert_is_the_last_firing_event_while_firing_and_survives_a_restore(
    scores: list[float],
) -> None:
    """What a daemon taking a stream over re-announces: exactly the alert its last firing event described."""
    machine = AlertMachine(STREAM, AlertConfig(for_windows=2, resolve_windows=3, cooldown_windows=2))
    last_firing: AlertEvent | None = None
    for item in windows_of(scores):
        for event in machine.step(item, now=item.end):
            last_firing = event if event.status == "firing" else None
        restored = AlertMachine.restore(STREAM, machine.config, json.loads(json.dumps(machine.snapshot())))
        for candidate in (machine, restored):
            announced = candidate.open_alert("conv@1", now=T0)
            if last_firing is None:
                assert announced is None
            else:
                assert announced is not None
                assert announced.alert_id == last_firing.alert_id
                assert announced.severity == last_firing.severity
                assert (announced.window_start, announced.score) == (
                    last_firing.window_start,
                    last_firing.score,
                )
                assert announced.status == "firing" and announced.window_end >= last_firing.window_end
