"""`streamwatch plot`: decimation, reading detect's outputs, the latent projection maths, and real PNGs."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamwatch import plot
from streamwatch.cli import main
from streamwatch.codecs import CsvFrame
from streamwatch.config import DetectorConfig, StreamwatchConfig, TrainingConfig, WindowConfig
from streamwatch.evaluate.events import Span
from streamwatch.generate.inject import Label, write_csv, write_labels
from streamwatch.generate.scenario import inject_spread
from streamwatch.generate.simulate import simulate
from streamwatch.offline import DetectResult, Split, detect, train_on_prefix, write_alerts, write_scores
from streamwatch.records import AlertEvent, AlertStatus, iso_utc

F64 = npt.NDArray[np.float64]
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PCA_CONFIG = StreamwatchConfig(detector=DetectorConfig(model="pca"))


@dataclass(frozen=True)
class Generated:
    frame: CsvFrame
    labels: list[Label]
    csv: Path
    labels_json: Path
    pca_yaml: Path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """A grid-frequency stream with three labelled anomalies after an anomaly-free 40%, also on disk."""
    rng = np.random.default_rng(11)
    series = simulate("grid_frequency", n=6000, start=START, rng=rng)
    series, labels = inject_spread(
        series,
        rng=rng,
        kinds=("spike", "level_shift", "flatline"),
        count=3,
        severity=1.0,
        normal_fraction=0.4,
    )
    folder = tmp_path_factory.mktemp("plot")
    write_csv(folder / "grid.csv", series)
    write_labels(folder / "grid.labels.json", labels)
    (folder / "pca.yaml").write_text("detector:\n  model: pca\n", encoding="utf-8")
    frame = CsvFrame("grid", series.timestamps, series.channels, series.values)
    return Generated(frame, labels, folder / "grid.csv", folder / "grid.labels.json", folder / "pca.yaml")


@pytest.fixture(scope="module")
def detected(generated: Generated) -> DetectResult:
    return detect(generated.frame, Split(fraction=0.4), PCA_CONFIG)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _spans(labels: list[Label]) -> list[Span]:
    return [Span(label.start, label.end) for label in labels]


# -- decimation ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    y=arrays(np.float64, st.integers(1, 400), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    buckets=st.integers(1, 60),
)
def test_decimation_keeps_each_runs_extremes_in_order(y: F64, buckets: int) -> None:
    x = np.arange(len(y), dtype=np.float64)
    kept_x, kept_y = plot.min_max_decimate(x, y, buckets)
    assert len(kept_x) <= max(2 * buckets, len(y))
    indices = kept_x.astype(np.int64)
    assert np.array_equal(kept_y, y[indices])  # every kept point is an input point
    assert np.all(np.diff(indices) >= 0)  # in time order
    assert kept_y.min() == y.min() and kept_y.max() == y.max()
    run = math.ceil(len(y) / buckets) if len(y) > 2 * buckets else 1
    for first in range(0, len(y), run):
        in_run = kept_y[(indices >= first) & (indices < first + run)]
        assert in_run.min() == y[first : first + run].min()
        assert in_run.max() == y[first : first + run].max()


def test_a_one_sample_spike_survives_a_million_samples() -> None:
    y = np.zeros(1_000_000)
    y[654_321] = 5.0
    y[123_456] = -3.0
    x, kept = plot.min_max_decimate(np.arange(y.size, dtype=np.float64), y, 1200)
    assert len(kept) <= 2400
    assert 654_321.0 in x and 5.0 in kept
    assert 123_456.0 in x and -3.0 in kept


def test_decimation_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="buckets"):
        plot.min_max_decimate(np.zeros(3), np.zeros(3), 0)
    with pytest.raises(ValueError, match="same length"):
        plot.min_max_decimate(np.zeros(3), np.zeros(4), 2)


# -- inputs ----------------------------------------------------------------------------------------------


def test_time_range_reads_iso_and_epoch_and_refuses_a_reversed_range() -> None:
    both = plot.TimeRange.parse("2026-01-01T00:10:00Z", str(START + 1200))
    assert (both.start, both.end) == (START + 600, START + 1200)
    assert plot.TimeRange.parse(None, "2026-01-01T01:00:00").start == -math.inf
    with pytest.raises(ValueError, match="earlier"):
        plot.TimeRange.parse("2026-01-01T01:00:00Z", "2026-01-01T00:00:00Z")


def test_files_of_a_detect_run_give_the_same_picture(
    generated: Generated, detected: DetectResult, tmp_path: Path
) -> None:
    with (tmp_path / "scores.csv").open("w", encoding="utf-8", newline="") as target:
        write_scores(target, detected.scores)
    write_alerts(tmp_path / "alerts.jsonl", detected.alerts)
    fresh = plot.picture_from_detection(generated.frame, detected)
    stored = plot.picture_from_files(
        generated.frame, scores=tmp_path / "scores.csv", alerts=tmp_path / "alerts.jsonl"
    )
    assert detected.alerts, "the generated anomalies should raise alerts"
    np.testing.assert_allclose(stored.scores.score, fresh.scores.score, rtol=1e-5)
    np.testing.assert_allclose(stored.scores.threshold, fresh.scores.threshold, rtol=1e-5)
    np.testing.assert_allclose(stored.scores.middle, fresh.scores.middle, atol=1e-3)  # ISO keeps milliseconds
    assert len(stored.alerts) == len(fresh.alerts) > 0
    for kept, original in zip(stored.alerts, fresh.alerts, strict=True):
        assert kept.start == pytest.approx(original.start, abs=1e-3)
        assert kept.end == pytest.approx(original.end, abs=1e-3)
    assert fresh.scoring_starts == generated.frame.timestamps[detected.train_rows]


def _event(status: AlertStatus, start: float, end: float) -> AlertEvent:
    return AlertEvent("a1", "grid", status, "warning", start, end, 5.0, 1.0, "pca@1", {"f": 1.0}, end)


def test_a_still_firing_alert_lasts_to_the_end_of_data(generated: Generated, tmp_path: Path) -> None:
    write_alerts(tmp_path / "alerts.jsonl", [_event("firing", START + 4000, START + 4064)])
    with (tmp_path / "alerts.jsonl").open("a", encoding="utf-8") as lines:
        quality = {"type": "data_quality", "stream": "grid", "kind": "gap", "start": iso_utc(START)}
        lines.write(json.dumps(quality) + "\n")
    (tmp_path / "scores.csv").write_text("window_start,window_end,score,threshold,exceeds,model_version\n")
    picture = plot.picture_from_files(
        generated.frame, scores=tmp_path / "scores.csv", alerts=tmp_path / "alerts.jsonl"
    )
    assert picture.alerts == (Span(START + 4000, float(generated.frame.timestamps[-1])),)
    assert len(picture.scores) == 0


def test_unreadable_inputs_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "alerts.jsonl").write_text('{"alert_id": "x", "status": "firing"}\n')
    with pytest.raises(ValueError, match=r"alerts\.jsonl:1"):
        plot.read_alert_events(tmp_path / "alerts.jsonl")
    (tmp_path / "scores.csv").write_text(
        "window_start,window_end,score,threshold\n2026-01-01T00:00:00Z,x,1,2\n"
    )
    with pytest.raises(ValueError, match=r"scores\.csv:2"):
        plot.read_scores(tmp_path / "scores.csv")
    (tmp_path / "other.csv").write_text("timestamp,value\n")
    with pytest.raises(ValueError, match="not a scores CSV"):
        plot.read_scores(tmp_path / "other.csv")


def test_windows_overlapping_a_span_are_found() -> None:
    start = np.array([0.0, 10.0, 20.0, 30.0])
    hit = plot.overlapping(start, start + 5.0, [Span(4.0, 12.0), Span(35.0, 40.0)])
    assert hit.tolist() == [True, True, False, True]


# -- the stream picture ----------------------------------------------------------------------------------


def test_stream_png_of_a_detect_run(generated: Generated, detected: DetectResult, tmp_path: Path) -> None:
    picture = plot.picture_from_detection(generated.frame, detected, labels=_spans(generated.labels))
    plot.plot_stream(picture, tmp_path / "stream.png")
    width, height = _png_size(tmp_path / "stream.png")
    assert width == plot.DEFAULT_WIDTH_PX
    assert 300 <= height <= 800


def test_zooming_draws_only_the_range_and_refuses_an_empty_one(
    generated: Generated, detected: DetectResult, tmp_path: Path
) -> None:
    picture = plot.picture_from_detection(generated.frame, detected)
    zoom = plot.TimeRange(START + 3000, START + 3600)
    zoomed = picture.scores.within(zoom).middle
    assert 0 < len(zoomed) < len(picture.scores)
    assert zoomed.min() >= zoom.start and zoomed.max() <= zoom.end
    plot.plot_stream(picture, tmp_path / "zoom.png", view=zoom, width_px=600)
    assert _png_size(tmp_path / "zoom.png")[0] == 600
    with pytest.raises(ValueError, match="fewer than two samples"):
        plot.plot_stream(picture, tmp_path / "none.png", view=plot.TimeRange(START - 100, START - 10))


def test_many_channels_draw_the_first_few_panels(tmp_path: Path) -> None:
    rows = 50_000
    times = START + np.arange(rows, dtype=np.float64)
    values = np.random.default_rng(0).normal(size=(rows, 7)).astype(np.float32)
    frame = CsvFrame("wide", times, tuple(f"c{i}" for i in range(7)), values)
    empty = plot.ScoreTrack(*(np.zeros(0) for _ in range(4)))
    for name, count in (("seven", 7), ("four", 4), ("one", 1)):
        narrowed = CsvFrame(name, times, frame.channels[:count], values[:, :count].copy())
        plot.plot_stream(plot.StreamPicture(narrowed, empty, ()), tmp_path / f"{name}.png")
    seven, four, one = (_png_size(tmp_path / f"{name}.png") for name in ("seven", "four", "one"))
    assert seven == four  # panels for the first four channels only
    assert four[1] > one[1] and four[0] == one[0]


# -- the latent view -------------------------------------------------------------------------------------


def test_projection_is_an_orthonormal_plane_of_normal_variation() -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(300, 6)) * np.array([5.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    projection = plot.fit_projection(codes)
    assert projection.axes.shape == (2, 6)
    np.testing.assert_allclose(projection.axes @ projection.axes.T, np.eye(2), atol=1e-9)
    assert projection.apply(codes).shape == (300, 2)
    assert projection.explained > 0.95
    flat = plot.fit_projection(rng.normal(size=(50, 1)))
    assert flat.axes.shape == (2, 1) and not flat.axes[1].any()


def test_separation_is_high_for_distinct_clouds_and_chance_for_one_cloud() -> None:
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(4000, 2)) * np.array([2.0, 0.5])
    far = rng.normal(size=(300, 2)) * np.array([2.0, 0.5]) + np.array([0.0, 6.0])
    same = rng.normal(size=(3000, 2)) * np.array([2.0, 0.5])
    assert plot.separation(normal, far).outside > 0.95
    assert plot.separation(normal, same).outside < 0.03
    found = plot.separation(normal, far)
    assert np.mean(found.distances2(normal) <= found.radius2) == pytest.approx(0.99, abs=0.002)
    assert np.allclose(found.distances2(found.outline()), found.radius2)


def test_separation_of_a_degenerate_normal_cloud() -> None:
    normal = np.zeros((20, 2))
    assert plot.separation(normal, np.array([[1.0, 1.0]])).outside == 1.0
    assert plot.separation(normal, np.zeros((3, 2))).outside == 0.0


def test_latent_view_of_a_tiny_conv_autoencoder(generated: Generated, tmp_path: Path) -> None:
    from streamwatch.models.runtime import TorchReconstructor

    config = StreamwatchConfig(
        detector=DetectorConfig(
            model="conv",
            window=WindowConfig(length=32, hop=8),
            training=TrainingConfig(max_epochs=2, max_seconds=10.0, max_train_windows=500),
        )
    )
    model, _ = train_on_prefix(generated.frame, Split(fraction=0.4), config, progress=False)
    view = plot.latent_view(model, generated.frame, _spans(generated.labels))
    reconstructor = model.detector.reconstructor
    assert isinstance(reconstructor, TorchReconstructor)
    assert view.latent_size == reconstructor.encode(np.zeros((1, 32, 1), np.float32)).size
    assert len(view.normal) + len(view.anomalous) == (len(generated.frame) - 32) // 8 + 1
    assert len(view.anomalous) > 0 and 0.0 <= view.separation.outside <= 1.0
    plot.plot_latent(view, tmp_path / "latent.png")
    assert _png_size(tmp_path / "latent.png") == (800, 700)


def test_latent_view_needs_labelled_windows(generated: Generated) -> None:
    model, _ = train_on_prefix(generated.frame, Split(fraction=0.4), PCA_CONFIG, progress=False)
    with pytest.raises(ValueError, match="no window overlaps"):
        plot.latent_view(model, generated.frame, [Span(START - 100, START - 50)])


# -- the command line ------------------------------------------------------------------------------------


def test_plot_stream_verb_runs_detect_or_reads_its_files(generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "by-detect.png"
    args = [str(generated.csv), "-c", str(generated.pca_yaml), "--train-fraction", "0.4"]
    assert main(["plot", "stream", *args, "--labels", str(generated.labels_json), "--out", str(out)]) == 0
    assert _png_size(out)[0] == plot.DEFAULT_WIDTH_PX
    detect_args = ["--alerts", str(tmp_path / "a.jsonl"), "--scores", str(tmp_path / "s.csv")]
    assert main(["detect", *args, *detect_args]) == 0
    zoomed = tmp_path / "zoom" / "files.png"
    files = ["--scores", str(tmp_path / "s.csv"), "--alerts", str(tmp_path / "a.jsonl")]
    window = ["--from", "2026-01-01T01:00:00Z", "--to", "2026-01-01T01:30:00Z", "--title", "zoomed"]
    assert main(["plot", "stream", str(generated.csv), *files, *window, "--out", str(zoomed)]) == 0
    assert zoomed.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_stream_verb_refuses_mixed_inputs(generated: Generated, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    assert main(["plot", "stream", str(generated.csv), "--alerts", "a.jsonl", "--out", out]) == 1
    mixed = ["--scores", "s.csv", "--train-fraction", "0.4", "--out", out]
    assert main(["plot", "stream", str(generated.csv), *mixed]) == 1
    assert not (tmp_path / "x.png").exists()


def test_plot_latent_verb_prints_the_separation(
    generated: Generated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "models" / "grid"
    trained = ["train", str(generated.csv), "-c", str(generated.pca_yaml), "--train-fraction", "0.4"]
    assert main([*trained, "--out", str(model)]) == 0
    capsys.readouterr()
    out = tmp_path / "latent.png"
    latent = ["--model", str(model), "--labels", str(generated.labels_json), "--out", str(out)]
    assert main(["plot", "latent", str(generated.csv), *latent]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("latent separation: ") and "anomalous windows lie outside" in line
    assert _png_size(out) == (800, 700)


def test_the_daemon_and_the_parser_never_import_matplotlib() -> None:
    probe = (
        "import sys, streamwatch.cli, streamwatch.plot, streamwatch.service.daemon; "
        "streamwatch.cli._parser(); print('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
