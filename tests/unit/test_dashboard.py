"""deploy/grafana-dashboard.json: importable as is, laid out cleanly, and naming only Prometheus metrics and
InfluxDB measurements, tags and fields that streamwatch really produces (a renamed metric or field fails
here rather than leaving an empty panel)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
from prometheus_client import CollectorRegistry

from streamwatch.config import parse_config
from streamwatch.core.engine import Engine
from streamwatch.core.model_history import MemoryHistory
from streamwatch.core.retraining import GroupStats
from streamwatch.delivery.metrics import sink_metrics
from streamwatch.io.line_protocol import (
    ALERT,
    DATA_QUALITY,
    HEALTH,
    SCORE,
    alert_line,
    health_line,
    quality_line,
    score_line,
)
from streamwatch.io.sinks import GroupHealth
from streamwatch.offline import configured_lifecycle
from streamwatch.records import AlertEvent, AlertKind, AlertStatus, DataQualityEvent, WindowScore
from streamwatch.service.metrics import DaemonMetrics, LifecycleCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"

INPUTS = {"DS_PROMETHEUS": "prometheus", "DS_INFLUXDB": "influxdb"}
PROMETHEUS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
INFLUXDB = {"type": "influxdb", "uid": "${DS_INFLUXDB}"}
GRID_COLUMNS = 24

# The series the dashboard may name, with their labels, as issue 8 lists them; a histogram is named by its
# base name and queried through its series. test_the_known_metrics_are_the_ones_the_code_serves holds this
# list to what the code serves.
METRICS: dict[str, frozenset[str]] = {
    # The retraining lifecycle (service/metrics.py: LifecycleCollector).
    "streamwatch_retrains_total": frozenset({"group", "result"}),
    "streamwatch_rollbacks_total": frozenset({"group"}),
    "streamwatch_model_info": frozenset({"group", "version"}),
    "streamwatch_seconds_since_retrain": frozenset({"group"}),
    "streamwatch_canary_hit_rate": frozenset({"group", "version"}),
    "streamwatch_stream_canary_hit_rate": frozenset({"group", "stream"}),
    "streamwatch_detector_degraded": frozenset({"group"}),
    # Delivery (delivery/metrics.py).
    "streamwatch_sink_delivered_total": frozenset({"sink", "receiver"}),
    "streamwatch_sink_retries_total": frozenset({"sink", "receiver"}),
    "streamwatch_sink_dead_letters_total": frozenset({"sink", "receiver"}),
    "streamwatch_sink_dropped_total": frozenset({"sink", "receiver"}),
    "streamwatch_sink_queued": frozenset({"sink", "receiver"}),
    # The daemon's pipeline (service/metrics.py: DaemonMetrics).
    "streamwatch_records_total": frozenset(),
    "streamwatch_samples_total": frozenset(),
    "streamwatch_dead_letters_total": frozenset(),
    "streamwatch_windows_scored_total": frozenset(),
    "streamwatch_alert_events_total": frozenset({"status", "kind"}),
    "streamwatch_stream_alert_events_total": frozenset({"stream", "status"}),
    "streamwatch_consumer_lag": frozenset({"topic", "partition"}),
    "streamwatch_score_drift": frozenset({"group"}),
    "streamwatch_ready": frozenset(),
}
HISTOGRAMS: dict[str, frozenset[str]] = {"streamwatch_batch_seconds": frozenset()}


def _histogram_series(histograms: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    series: dict[str, frozenset[str]] = {}
    for name, labels in histograms.items():
        series |= {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
    return series


KNOWN_METRICS = METRICS | _histogram_series(HISTOGRAMS)
# What a label matcher on an alert metric, or a tag comparison on the alert measurement, may compare with.
ALERT_VALUES = {"status": frozenset(get_args(AlertStatus)), "kind": frozenset(get_args(AlertKind))}
# Grafana's own variables a query may use, besides the dashboard's.
GRAFANA_VARIABLES = frozenset({"timeFilter", "__interval", "__rate_interval", "__range"})

_METRIC = re.compile(r"streamwatch_[a-z_]+")
_SELECTOR = re.compile(r"(streamwatch_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_LABEL_VALUES = re.compile(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)")
_FROM = re.compile(r"\bFROM\s+\"([^\"]+)\"")
_QUOTED = re.compile(r"\"([^\"]+)\"")
_ALIAS = re.compile(r"\bAS\s+\"([^\"]+)\"")
_TAG_COMPARISON = re.compile(r"\"(\w+)\"\s*(?:=|!=|<>)\s*'([^']*)'")
_ALIAS_TAG = re.compile(r"\$tag_(\w+)")
_VARIABLE = re.compile(r"\$(\w+)")


# -- reading the dashboard ---------------------------------------------------------------------------------
@cache
def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _all_panels() -> list[dict[str, Any]]:
    """Every panel and row, including those inside a collapsed row."""
    found: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _data_panels() -> list[dict[str, Any]]:
    return [panel for panel in _all_panels() if panel["type"] != "row"]


def _variables() -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = _dashboard()["templating"]["list"]
    return variables


def _queries(datasource: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(where, query, legend or alias) for every target and variable on `datasource`."""
    text_key = "expr" if datasource == PROMETHEUS else "query"
    label_key = "legendFormat" if datasource == PROMETHEUS else "alias"
    for panel in _data_panels():
        if panel["datasource"] == datasource:
            for target in panel["targets"]:
                where = f"panel {panel['title']!r} {target['refId']}"
                yield where, target[text_key], target.get(label_key, "")
    for variable in _variables():
        if variable["datasource"] == datasource:
            yield f"variable {variable['name']!r}", variable["query"], ""


# -- what streamwatch produces -----------------------------------------------------------------------------
def _engine() -> Engine:
    config = parse_config({})
    return Engine(threshold=config.threshold_config(), alerts=config.alerts.build())


def _lifecycle_collector() -> LifecycleCollector:
    """A collector over a lifecycle that knows one group with one canary outcome, so that each family it
    serves has a sample to read the labels off (all but seconds_since_retrain, which needs scored data)."""
    engine = _engine()
    lifecycle = configured_lifecycle(engine, parse_config({}), MemoryHistory(), clock=lambda: 0.0)
    lifecycle.stats["g"] = GroupStats(version="pca@1")
    lifecycle.canaries.went_live("g", "pca@1", swapped=False)
    lifecycle.canaries.record("g", "pmu-1/voltage", [True])
    return LifecycleCollector(lifecycle)


def _count_once_each(registry: CollectorRegistry) -> None:
    """The daemon's and the sinks' metrics on `registry`, each labelled family counted once so that a
    scrape shows its labels (score drift needs a live model: it shows its name only)."""
    daemon = DaemonMetrics(registry, _engine(), ready=lambda: True)
    for counter in (daemon.records, daemon.samples, daemon.dead_letters, daemon.windows):
        counter.inc()
    daemon.alert_events.labels("firing", "anomaly").inc()
    daemon.stream_alert_events.labels("pmu-1/voltage", "firing").inc()
    daemon.batch_seconds.observe(0.02)
    daemon.consumer_lag.labels("samples", "0").set(3)
    receiver = sink_metrics(registry).receiver("influxdb", "http://influxdb:8086")
    receiver.delivered()
    receiver.retried()
    receiver.dead_lettered()
    receiver.dropped()
    receiver.queued(1)


# The series a scrape shows for each kind of family (`_created` left out: no dashboard wants it).
_FAMILY_SERIES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def _served_metrics() -> dict[str, frozenset[str] | None]:
    """Series name -> label names as a scrape shows them (None: the family had no sample to show them)."""
    registry = CollectorRegistry()
    _count_once_each(registry)
    registry.register(_lifecycle_collector())
    served: dict[str, frozenset[str] | None] = {}
    for family in registry.collect():
        for suffix in _FAMILY_SERIES[family.type]:
            name = family.name + suffix
            samples = [sample for sample in family.samples if sample.name == name]
            served[name] = frozenset(samples[0].labels) if samples else None
    return served


START = 1_767_225_600.0


def _written_lines() -> list[str]:
    """One point of each measurement the InfluxDB sink writes, every optional field present."""
    return [
        score_line(WindowScore("pmu-1/voltage", 7, START - 10, START, 0.5, 2.5, {"v": 1.0}, "pca@3")),
        alert_line(
            AlertEvent(
                alert_id="a1b2c3",
                stream="pmu-1/voltage",
                status="firing",
                severity="warning",
                window_start=START - 10,
                window_end=START,
                score=4.25,
                threshold=2.5,
                model_version="pca@3",
                channels={"v": 1.0},
                detected_at=START,
            )
        ),
        quality_line(DataQualityEvent("pmu-1/voltage", "gap", START - 60, START, "missing")),
        health_line(GroupHealth("g", "pca@3", START, 0.8, 3600.0, False, 2, 1, 0)),
    ]


@cache
def _written_series() -> dict[str, tuple[set[str], set[str]]]:
    """Measurement -> (tag keys, field keys), parsed back from the lines the sink writes. The sample values
    hold no spaces, commas or escapes, so splitting on those is the whole grammar here."""
    written: dict[str, tuple[set[str], set[str]]] = {}
    for line in _written_lines():
        assert line.count(" ") == 2 and "\\" not in line, line
        series, field_set, _ = line.split(" ")
        measurement, *tags = series.split(",")
        fields = field_set.split(",")
        written[measurement] = (
            {tag.partition("=")[0] for tag in tags},
            {field.partition("=")[0] for field in fields},
        )
    return written


# -- the checks --------------------------------------------------------------------------------------------
def promql_problems(expr: str, legend: str = "") -> list[str]:
    """Metric and label names in a PromQL expression (and its legend) that no known series has."""
    names = set(_METRIC.findall(expr))
    problems = [f"unknown metric {name}" for name in sorted(names - KNOWN_METRICS.keys())]
    # Labels the result can have: those of the series named (`by` and legends may use no others).
    labels = {label for name in names & KNOWN_METRICS.keys() for label in KNOWN_METRICS[name]}
    for name, matchers in _SELECTOR.findall(expr):
        problems += _matcher_problems(name, matchers)
    grouped = [label for grouping in _GROUPING.findall(expr) for label in _names(grouping)]
    problems += [f"no series here has label {label!r}" for label in grouped if label not in labels]
    legend_labels = _LEGEND_LABEL.findall(legend)
    problems += [
        f"legend names {label!r}, not in the result" for label in legend_labels if label not in labels
    ]
    for name, label in _LABEL_VALUES.findall(expr):
        if label not in KNOWN_METRICS.get(name, frozenset()):
            problems.append(f"label_values: {name} has no label {label!r}")
    return problems


def _matcher_problems(name: str, matchers: str) -> list[str]:
    problems = []
    for label, operator, value in _MATCHER.findall(matchers):
        allowed = ALERT_VALUES.get(label) if "alert" in name else None
        if label not in KNOWN_METRICS.get(name, frozenset()):
            problems.append(f"{name} has no label {label!r}")
        elif operator == "=" and allowed is not None and value not in allowed:
            problems.append(f"{name}: no {label} is {value!r}")
    return problems


def _names(listed: str) -> list[str]:
    return [name.strip() for name in listed.split(",") if name.strip()]


def influxql_problems(query: str, alias: str = "") -> list[str]:
    """Measurement, tag and field names in an InfluxQL query (and its alias) the sink does not write."""
    measurements = _FROM.findall(query)
    if len(measurements) != 1:
        return [f"expected one measurement, found {measurements}"]
    [measurement] = measurements
    if measurement not in _written_series():
        return [f"unknown measurement {measurement}"]
    tags, fields = _written_series()[measurement]
    aliases = set(_ALIAS.findall(query))
    problems = [
        f"{measurement} has no tag or field {name!r}"
        for name in _QUOTED.findall(query)
        if name not in tags | fields | aliases | {measurement}
    ]
    for tag in _ALIAS_TAG.findall(alias):
        if tag not in tags:
            problems.append(f"alias names {tag!r}, not a tag of {measurement}")
    if measurement == ALERT:
        for key, value in _TAG_COMPARISON.findall(query):
            if key in ALERT_VALUES and value not in ALERT_VALUES[key]:
                problems.append(f"{measurement}: no {key} is {value!r}")
    if query.lstrip().upper().startswith("SELECT") and "$timeFilter" not in query:
        problems.append("a SELECT without $timeFilter reads all of time")
    return problems


# -- importable as is --------------------------------------------------------------------------------------
def test_the_dashboard_is_an_export_with_inputs_for_both_datasources() -> None:
    dashboard = _dashboard()
    assert {item["name"]: item["pluginId"] for item in dashboard["__inputs"]} == INPUTS
    assert all(item["type"] == "datasource" for item in dashboard["__inputs"])
    required = {(item["type"], item["id"]) for item in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus"), ("datasource", "influxdb")} <= required
    used_panel_types = {panel["type"] for panel in _data_panels()}
    assert used_panel_types <= {item_id for kind, item_id in required if kind == "panel"}
    assert dashboard["uid"] == "streamwatch" and dashboard["id"] is None
    assert dashboard["tags"] and dashboard["refresh"] and 36 <= dashboard["schemaVersion"] <= 41


def test_every_datasource_reference_names_a_declared_input() -> None:
    referenced = set(re.findall(r"\$\{(\w+)\}", DASHBOARD.read_text(encoding="utf-8")))
    assert referenced == set(INPUTS)


def test_every_panel_queries_one_of_the_two_datasources() -> None:
    for panel in _data_panels():
        assert panel["datasource"] in (PROMETHEUS, INFLUXDB), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            if panel["datasource"] == INFLUXDB:
                # Raw InfluxQL: what InfluxDB 1.8 and 3.x both answer.
                assert target["rawQuery"] is True and target["query"], panel["title"]
            else:
                assert target["expr"], panel["title"]


def test_stream_and_group_variables_come_from_the_data() -> None:
    variables = {variable["name"]: variable for variable in _variables()}
    assert set(variables) == {"stream", "group"}
    assert variables["stream"]["datasource"] == INFLUXDB
    assert variables["stream"]["query"] == 'SHOW TAG VALUES FROM "streamwatch_score" WITH KEY = "stream"'
    assert variables["group"]["datasource"] == PROMETHEUS
    assert variables["group"]["query"] == "label_values(streamwatch_model_info, group)"
    assert all(variable["multi"] and variable["includeAll"] for variable in variables.values())


def test_queries_use_only_declared_variables() -> None:
    allowed = GRAFANA_VARIABLES | {variable["name"] for variable in _variables()}
    for datasource in (PROMETHEUS, INFLUXDB):
        for where, query, _ in _queries(datasource):
            assert set(_VARIABLE.findall(query)) <= allowed, where


# -- naming only what exists -------------------------------------------------------------------------------
def test_the_known_metrics_are_the_ones_the_code_serves() -> None:
    served = _served_metrics()
    assert set(served) == set(KNOWN_METRICS)
    for name, labels in served.items():
        if labels is not None:
            assert labels == KNOWN_METRICS[name], name


def test_every_prometheus_query_names_known_metrics_and_labels() -> None:
    queries = list(_queries(PROMETHEUS))
    assert queries
    for where, expr, legend in queries:
        assert promql_problems(expr, legend) == [], f"{where}: {expr}"


def test_every_influxql_query_names_what_the_sink_writes() -> None:
    queries = list(_queries(INFLUXDB))
    assert queries
    for where, query, alias in queries:
        assert influxql_problems(query, alias) == [], f"{where}: {query}"


def test_the_sinks_measurements_are_the_expected_ones() -> None:
    # A guard on the parsing above: were it to find nothing, every query would fail for the wrong reason.
    written = _written_series()
    assert set(written) == {SCORE, ALERT, DATA_QUALITY, HEALTH}
    assert written[SCORE] == ({"stream", "model_version"}, {"score", "threshold", "exceeds"})
    assert written[ALERT][1] == {"alert_id", "score", "threshold", "firing"}


def test_every_known_metric_has_a_panel() -> None:
    named = {name for _, expr, _ in _queries(PROMETHEUS) for name in _METRIC.findall(expr)}
    assert set(KNOWN_METRICS) <= named


@pytest.mark.parametrize(
    ("expr", "legend"),
    [
        ("sum(rate(streamwatch_sampels_total[5m]))", ""),
        ("streamwatch_samples_count", ""),  # not a histogram
        ("streamwatch_batch_seconds", ""),  # a histogram is queried through its series
        ('streamwatch_sink_queued{sinc="x"}', ""),
        ("sum by (grp) (streamwatch_rollbacks_total)", ""),
        ("streamwatch_canary_hit_rate", "{{stream}}"),
        ('streamwatch_alert_events_total{status="fired"}', ""),
        ("label_values(streamwatch_model_info, stream)", ""),
    ],
)
def test_a_promql_name_that_does_not_exist_is_caught(expr: str, legend: str) -> None:
    assert promql_problems(expr, legend)


@pytest.mark.parametrize(
    ("query", "alias"),
    [
        ('SELECT max("scroe") FROM "streamwatch_score" WHERE $timeFilter', ""),
        ('SELECT max("score") FROM "streamwatch_scores" WHERE $timeFilter', ""),
        ('SELECT max("score") FROM "streamwatch_score" WHERE $timeFilter GROUP BY "group"', ""),
        ('SELECT max("score") FROM "streamwatch_score" WHERE $timeFilter GROUP BY "stream"', "$tag_steam"),
        ('SELECT last("firing") FROM "streamwatch_alert" WHERE "kind" = \'anomalie\' AND $timeFilter', ""),
        ('SELECT max("score") FROM "streamwatch_score"', ""),
    ],
)
def test_an_influxql_name_that_does_not_exist_is_caught(query: str, alias: str) -> None:
    assert influxql_problems(query, alias)


# -- layout ------------------------------------------------------------------------------------------------
def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in _all_panels()]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping() -> None:
    placed: list[tuple[str, int, int, int, int]] = []
    for panel in _dashboard()["panels"]:  # top level: a collapsed row's panels are laid out when opened
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= GRID_COLUMNS, panel["title"]
        for title, other_x, other_y, other_w, other_h in placed:
            apart = x + w <= other_x or other_x + other_w <= x or y + h <= other_y or other_y + other_h <= y
            assert apart, f"{panel['title']!r} overlaps {title!r}"
        placed.append((panel["title"], x, y, w, h))
