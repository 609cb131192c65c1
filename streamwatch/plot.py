"""Pictures for people: a stream with its scores, threshold and alerts; a model's latent space.

Drawing goes through matplotlib's object-oriented API on the Agg canvas (no pyplot state, no display needed),
and matplotlib is imported inside the drawing functions only, so the daemon never loads it. Everything the
pictures rest on (decimation, reading `detect` outputs, the latent projection and its separation figure) is
plain numpy and testable without pixels.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamwatch.codecs import CsvFrame
from streamwatch.evaluate.events import Span, alert_spans
from streamwatch.generate.inject import read_labels
from streamwatch.records import AlertEvent, FloatArray, SourcePosition, WindowScore, parse_iso_utc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from streamwatch.core.bootstrap import GroupModel
    from streamwatch.core.profile import StreamProfile
    from streamwatch.core.reconstructor import Reconstructor
    from streamwatch.offline import DetectResult

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

# Data rows drawn, one panel each; a wider stream gets a note saying how many channels are not shown.
MAX_CHANNEL_PANELS = 4
DEFAULT_WIDTH_PX = 1200
_DPI = 100
_CHANNEL_PANEL_IN = 1.5
_SCORE_PANEL_IN = 2.4
_TITLE_IN = 0.7
# A score axis spanning more than this ratio (top over the low percentile) is drawn log-scaled: scores of
# quiet windows sit near 1 while a spike's reach 1e6, and a linear axis would show only the spike.
_LOG_SCALE_RATIO = 100.0
# Shaded spans are widened to at least this many pixel columns, so a one-sample spike's label stays visible
# on a plot of hours.
_MIN_SPAN_PX = 2.0
_ALERT_COLOUR = "tab:red"
_LABEL_COLOUR = "tab:green"
# Alerts are filled, labels hatched over them: where the two overlap both stay readable (two fills would mix
# into a third colour the legend does not show).
_ALERT_STYLE: dict[str, Any] = {"facecolor": _ALERT_COLOUR, "alpha": 0.22, "linewidth": 0}
_LABEL_STYLE: dict[str, Any] = {
    "facecolor": "none",
    "edgecolor": _LABEL_COLOUR,
    "hatch": "////",
    "linewidth": 0,
}
_SCORE_COLOUR = "tab:blue"
_THRESHOLD_COLOUR = "tab:orange"
_DATA_COLOUR = "0.2"

# Latent view: at most this many windows are encoded (the stride grows on longer files), and at most this
# many normal windows are drawn (all of them count in the separation figure).
MAX_LATENT_WINDOWS = 50_000
_MAX_DRAWN_NORMAL = 5_000
DEFAULT_COVERAGE = 0.99
# Anomalous windows further out than this many ellipse half-widths switch that axis to symmetric-log.
_FAR_POINTS_RATIO = 20.0
# How wide the linear part of such an axis is, in decades of the log part: the normal cloud gets room.
_LINEAR_DECADES = 3.0


# --------------------------------------------------------------------------------------------------------
# Decimation


def min_max_decimate(x: F64, y: F64, buckets: int) -> tuple[F64, F64]:
    """At most `2 * buckets` points of (x, y) that draw the same envelope at `buckets` pixel columns.

    Consecutive points are grouped into at most `buckets` runs of equal length (the last may be shorter);
    each run keeps its lowest and its highest point, in their original order, so a one-sample spike
    survives in a plot of a million samples.
    Input that already fits is returned as is.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if x.shape != y.shape or y.ndim != 1:
        raise ValueError(f"x and y must be 1-D and the same length, got {x.shape} and {y.shape}")
    count = len(y)
    if count <= 2 * buckets:
        return x, y
    run = math.ceil(count / buckets)
    runs = math.ceil(count / run)
    # Padding repeats the last value, so a padded slot never beats a real point (argmin/argmax take the
    # first of equals) and an index into the padding is clamped back onto that same last point.
    padded = np.concatenate([y, np.full(runs * run - count, y[-1])]).reshape(runs, run)
    first = np.arange(runs) * run
    lows, highs = first + padded.argmin(axis=1), first + padded.argmax(axis=1)
    keep = np.minimum(np.sort(np.stack([lows, highs], axis=1), axis=1).ravel(), count - 1)
    return x[keep], y[keep]


# --------------------------------------------------------------------------------------------------------
# Inputs: time ranges, detect's outputs, labels


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The stretch of event time to draw (epoch seconds); unbounded by default."""

    start: float = -math.inf
    end: float = math.inf

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("--from must be earlier than --to")

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> TimeRange:
        """From the command line: ISO-8601 (naive means UTC) or epoch seconds, either end optional."""
        return cls(
            -math.inf if start is None else _parse_moment(start),
            math.inf if end is None else _parse_moment(end),
        )

    def covers(self, times: F64) -> Mask:
        return (times >= self.start) & (times <= self.end)


def _parse_moment(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_iso_utc(text)


@dataclass(frozen=True, slots=True)
class ScoreTrack:
    """Per-window verdicts as columns: each window's span, its score and the threshold it was held to."""

    start: F64
    end: F64
    score: F64
    threshold: F64

    @classmethod
    def of(cls, scores: Sequence[WindowScore]) -> ScoreTrack:
        return cls(
            np.asarray([item.start for item in scores], dtype=np.float64),
            np.asarray([item.end for item in scores], dtype=np.float64),
            np.asarray([item.score for item in scores], dtype=np.float64),
            np.asarray([item.threshold for item in scores], dtype=np.float64),
        )

    @property
    def middle(self) -> F64:
        """Where each score is drawn: a window's verdict is about all of it, so its middle lines the score
        up with the data that caused it (its end would trail a spike by a whole window)."""
        middle: F64 = (self.start + self.end) / 2.0
        return middle

    def within(self, view: TimeRange) -> ScoreTrack:
        keep = view.covers(self.middle)
        return ScoreTrack(self.start[keep], self.end[keep], self.score[keep], self.threshold[keep])

    def __len__(self) -> int:
        return int(self.score.size)


def read_scores(path: Path) -> ScoreTrack:
    """The per-window scores CSV that `detect --scores` writes (see `offline.write_scores`)."""
    columns: dict[str, list[float]] = {"start": [], "end": [], "score": [], "threshold": []}
    with path.open(encoding="utf-8", newline="") as source:
        rows = csv.DictReader(source)
        missing = {"window_start", "window_end", "score", "threshold"} - set(rows.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: not a scores CSV from `detect --scores` (no {', '.join(sorted(missing))})"
            )
        for row in rows:
            try:
                columns["start"].append(parse_iso_utc(row["window_start"]))
                columns["end"].append(parse_iso_utc(row["window_end"]))
                columns["score"].append(float(row["score"]))
                columns["threshold"].append(float(row["threshold"]))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{rows.line_num}: {error}") from None
    return ScoreTrack(*(np.asarray(columns[name], dtype=np.float64) for name in columns))


def read_alert_events(path: Path) -> list[AlertEvent]:
    """The alert events JSON lines that `detect --alerts` writes; data-quality lines are skipped."""
    events: list[AlertEvent] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                body = json.loads(line)
                if body.get("type") == "data_quality":
                    continue
                events.append(_alert_event(body))
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{number}: not an alert event ({error!r})") from None
    return events


def _alert_event(body: dict[str, Any]) -> AlertEvent:
    status = body["status"]
    if status not in ("firing", "resolved"):
        raise ValueError(f"unknown status {status!r}")
    source = body.get("source")
    return AlertEvent(
        alert_id=str(body["alert_id"]),
        stream=str(body["stream"]),
        status=status,
        severity=str(body["severity"]),
        window_start=parse_iso_utc(body["window_start"]),
        window_end=parse_iso_utc(body["window_end"]),
        score=float(body["score"]),
        threshold=float(body["threshold"]),
        model_version=str(body["model_version"]),
        channels={str(name): float(share) for name, share in body["channels"].items()},
        detected_at=parse_iso_utc(body["detected_at"]),
        source=None if source is None else SourcePosition(**source),
    )


def read_label_spans(path: Path) -> list[Span]:
    """The labelled anomalies of a labels JSON (as `generate` writes it), as spans of event time."""
    return [Span(label.start, label.end) for label in read_labels(path)]


def overlapping(start: F64, end: F64, spans: Sequence[Span]) -> Mask:
    """Which of the intervals [start, end] (inclusive) overlap any of `spans`."""
    hit = np.zeros(start.shape, dtype=bool)
    for span in spans:
        hit |= (start <= span.end) & (span.start <= end)
    return hit


# --------------------------------------------------------------------------------------------------------
# The stream picture


@dataclass(frozen=True, slots=True)
class StreamPicture:
    """What `plot_stream` draws: a stream's data, the verdicts on it and the spans to shade."""

    frame: CsvFrame
    scores: ScoreTrack
    alerts: tuple[Span, ...]
    labels: tuple[Span, ...] = ()
    title: str = ""
    # Where scoring began when the plot ran detect itself (the rows before trained or warmed up the model).
    scoring_starts: float | None = None


def picture_from_detection(
    frame: CsvFrame, result: DetectResult, *, labels: Sequence[Span] = (), title: str | None = None
) -> StreamPicture:
    """A picture of a `detect` run made just now on `frame`."""
    end_of_data = float(frame.timestamps[-1])
    spans = alert_spans(result.alerts, end_of_data=end_of_data)
    return StreamPicture(
        frame,
        ScoreTrack.of(result.scores),
        tuple(span for span, _ in spans),
        tuple(labels),
        title or frame.stream,
        float(frame.timestamps[result.train_rows]) if result.scored_rows else None,
    )


def picture_from_files(
    frame: CsvFrame,
    *,
    scores: Path,
    alerts: Path | None = None,
    labels: Sequence[Span] = (),
    title: str | None = None,
) -> StreamPicture:
    """A picture of an earlier `detect` run on `frame`, from its --scores CSV and --alerts JSON lines."""
    events = [] if alerts is None else read_alert_events(alerts)
    spans = alert_spans(events, end_of_data=float(frame.timestamps[-1]))
    return StreamPicture(
        frame,
        read_scores(scores),
        tuple(span for span, _ in spans),
        tuple(labels),
        title or frame.stream,
    )


def plot_stream(
    picture: StreamPicture, out: Path, *, view: TimeRange | None = None, width_px: int = DEFAULT_WIDTH_PX
) -> None:
    """Write a PNG: one panel per channel (the first few), then score and threshold, spans shaded."""
    shown = view or TimeRange()
    frame = picture.frame
    rows = shown.covers(frame.timestamps)
    if rows.sum() < 2:
        raise ValueError(f"{frame.stream}: fewer than two samples in the requested time range")
    times = frame.timestamps[rows]
    channels = min(len(frame.channels), MAX_CHANNEL_PANELS)
    figure = _new_figure(width_px, _TITLE_IN + channels * _CHANNEL_PANEL_IN + _SCORE_PANEL_IN)
    axes = figure.subplots(
        channels + 1,
        1,
        sharex=True,
        squeeze=False,
        height_ratios=[_CHANNEL_PANEL_IN] * channels + [_SCORE_PANEL_IN],
    )[:, 0]
    for panel, index in zip(axes[:-1], range(channels), strict=True):
        _draw_channel(panel, times, frame.values[rows, index], frame.channels[index], width_px)
    _draw_scores(axes[-1], picture.scores.within(shown), width_px)
    limits = (float(times[0]), float(times[-1]))
    min_width = (limits[1] - limits[0]) * _MIN_SPAN_PX / width_px
    for panel in axes:
        _shade(panel, picture.alerts, _ALERT_STYLE, limits, min_width)
        _shade(panel, picture.labels, _LABEL_STYLE, limits, min_width)
        if picture.scoring_starts is not None and limits[0] < picture.scoring_starts <= limits[1]:
            panel.axvline(_as_datetimes(picture.scoring_starts), color="0.4", linestyle=":", linewidth=1.0)
    axes[-1].set_xlim(_as_datetimes(limits[0]), _as_datetimes(limits[1]))
    _format_time_axis(axes[-1])
    _legend(figure, picture)
    _titles(figure, axes[0], picture, len(times), limits)
    _save(figure, out)


def _new_figure(width_px: int, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / _DPI, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: the Agg renderer, chosen explicitly rather than by default
    return figure


def _as_datetimes(seconds: F64 | float) -> Any:
    """Epoch seconds -> numpy datetimes (microseconds), which matplotlib puts on a date axis as is."""
    return (np.asarray(seconds, dtype=np.float64) * 1e6).astype("datetime64[us]")


def _draw_channel(panel: Axes, times: F64, values: FloatArray, name: str, width_px: int) -> None:
    x, y = min_max_decimate(times, values.astype(np.float64), width_px)
    panel.plot(_as_datetimes(x), y, color=_DATA_COLOUR, linewidth=0.7)
    panel.set_ylabel(name, fontsize=8)
    panel.tick_params(labelsize=8)
    panel.margins(x=0)


def _draw_scores(panel: Axes, track: ScoreTrack, width_px: int) -> None:
    panel.set_ylabel("window score", fontsize=8)
    panel.tick_params(labelsize=8)
    if len(track) == 0:
        panel.text(0.5, 0.5, "no scored windows here", transform=panel.transAxes, ha="center", color="0.4")
        return
    score, threshold = _finite(track.score), _finite(track.threshold)
    if _wide_range(np.concatenate([score, threshold])):
        panel.set_yscale("log")
        # A log axis cannot show zero: a score of 0 is drawn at the smallest positive value instead.
        floor = _smallest_positive(np.concatenate([score, threshold]))
        score, threshold = np.maximum(score, floor), np.maximum(threshold, floor)
    middle = track.middle
    for values, colour, width in ((score, _SCORE_COLOUR, 0.7), (threshold, _THRESHOLD_COLOUR, 1.2)):
        x, y = min_max_decimate(middle, values, width_px)
        panel.plot(_as_datetimes(x), y, color=colour, linewidth=width)


def _finite(values: F64) -> F64:
    """Infinite scores (a window of impossible values) drawn at the largest finite one, so axes stay sane."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 1.0
    bottom = float(finite.min()) if finite.size else 0.0
    return np.nan_to_num(values, nan=bottom, posinf=top, neginf=bottom)


def _wide_range(values: F64) -> bool:
    positive = values[values > 0]
    if positive.size < 2:
        return False
    return float(positive.max()) > _LOG_SCALE_RATIO * float(np.percentile(positive, 1))


def _smallest_positive(values: F64) -> float:
    return float(values[values > 0].min())


def _shade(
    panel: Axes, spans: Sequence[Span], style: dict[str, Any], limits: tuple[float, float], min_width: float
) -> None:
    for span in spans:
        visible = _visible_part(span, limits, min_width)
        if visible is not None:
            panel.axvspan(_as_datetimes(visible[0]), _as_datetimes(visible[1]), **style)


def _visible_part(span: Span, limits: tuple[float, float], min_width: float) -> tuple[float, float] | None:
    """The part of `span` inside `limits`, widened about its middle to at least `min_width`; None if none."""
    start, end = max(span.start, limits[0]), min(span.end, limits[1])
    if start > end:
        return None
    middle, half = (start + end) / 2.0, max(end - start, min_width) / 2.0
    return middle - half, middle + half


def _format_time_axis(panel: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    # matplotlib ships these two constructors without annotations.
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    panel.xaxis.set_major_locator(locator)
    panel.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    panel.set_xlabel("event time (UTC)", fontsize=8)


def _legend(figure: Figure, picture: StreamPicture) -> None:
    """Below the time axis, where it hides no score."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D([], [], color=_SCORE_COLOUR, linewidth=1.0, label="score"),
        Line2D([], [], color=_THRESHOLD_COLOUR, linewidth=1.2, label="threshold"),
        Patch(**_ALERT_STYLE, label="alert (firing → resolved)"),
    ]
    if picture.labels:
        handles.append(Patch(**_LABEL_STYLE, label="labelled anomaly"))
    if picture.scoring_starts is not None:
        handles.append(Line2D([], [], color="0.4", linestyle=":", label="scoring starts"))
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=len(handles), frameon=False)


def _titles(
    figure: Figure, top: Axes, picture: StreamPicture, samples: int, limits: tuple[float, float]
) -> None:
    """The title, and what the panels show (counted in the drawn range, which may be a zoom)."""
    figure.suptitle(picture.title, fontsize=11)
    alerts = sum(1 for span in picture.alerts if _visible_part(span, limits, 0.0) is not None)
    details = f"{samples:,} samples, {alerts} alerts"
    if picture.labels:
        labels = sum(1 for span in picture.labels if _visible_part(span, limits, 0.0) is not None)
        details += f", {labels} labelled anomalies"
    hidden = len(picture.frame.channels) - MAX_CHANNEL_PANELS
    if hidden > 0:
        details += f"; first {MAX_CHANNEL_PANELS} of {len(picture.frame.channels)} channels shown"
    top.set_title(details, fontsize=8, color="0.3", loc="right")


def _save(figure: Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")


# --------------------------------------------------------------------------------------------------------
# The latent view


@dataclass(frozen=True, slots=True)
class LatentCodes:
    """What a model compresses each window of a stream to, flattened to one row per window."""

    codes: F64  # (windows, latent size)
    start: F64  # (windows,) first sample time of each window
    end: F64  # (windows,) last sample time of each window


def encode_stream(
    model: GroupModel, frame: CsvFrame, *, max_windows: int = MAX_LATENT_WINDOWS
) -> LatentCodes:
    """Slide the model's windows over the whole file (one hop apart, further on long files), prepare them as
    the detector does, and encode them."""
    from streamwatch.core.bootstrap import sliding
    from streamwatch.core.detector import model_input

    if model.channels != frame.channels:
        raise ValueError(
            f"the model expects channels {list(model.channels)}, the file has {list(frame.channels)}"
        )
    length = model.spec.length
    available = len(frame) - length + 1
    if available < 1:
        raise ValueError(f"{frame.stream}: {len(frame)} samples are fewer than one window ({length})")
    stride = max(model.spec.hop, math.ceil(available / max_windows))
    windows = sliding(frame.values, length, stride)
    firsts = np.arange(0, available, stride)
    start, end = frame.timestamps[firsts], frame.timestamps[firsts + length - 1]
    # The level reference the engine subtracts is constant over a window, and model_input removes each
    # window's mean anyway, so the profile alone prepares the windows exactly as the model sees them.
    normalised = _profile_for(model, frame.stream).normalise_windows(start, windows)
    codes = latent_codes(model.detector.reconstructor, model_input(normalised))
    return LatentCodes(codes, start, end)


def _profile_for(model: GroupModel, stream: str) -> StreamProfile:
    # One file is one stream: a model trained on another file applies its own stream's profile (as
    # `detect --model` does).
    return model.profiles.get(stream) or next(iter(model.profiles.values()))


def latent_codes(reconstructor: Reconstructor, inputs: FloatArray) -> F64:
    """Model inputs (B, L, C) -> latent codes flattened to (B, D).

    An autoencoder's latent is its encoder's output; PCA's is a window's coefficients on its principal
    components (its `tensors()`: the mean and the components as rows), the linear counterpart.
    """
    from streamwatch.models.pca import PcaReconstructor

    if isinstance(reconstructor, PcaReconstructor):
        weights = reconstructor.tensors()
        flat = inputs.reshape(len(inputs), -1).astype(np.float64)
        coefficients: F64 = (flat - weights["mean"]) @ weights["components"].T.astype(np.float64)
        return coefficients
    # Only torch models get here, and loading one imported torch already.
    from streamwatch.models.runtime import TorchReconstructor

    if isinstance(reconstructor, TorchReconstructor):
        return reconstructor.encode(inputs).reshape(len(inputs), -1).astype(np.float64)
    raise ValueError(f"a {reconstructor.kind} model has no latent space to draw (conv, lstm and pca do)")


@dataclass(frozen=True, slots=True)
class Projection:
    """The plane of the two leading principal axes of normal windows' latent codes."""

    mean: F64  # (D,)
    axes: F64  # (2, D); a zero row where the codes have fewer than two dimensions of variance
    explained: float  # share of the normal codes' variance the plane keeps

    def apply(self, codes: F64) -> F64:
        """(B, D) codes -> (B, 2) coordinates in the plane."""
        projected: F64 = (codes - self.mean) @ self.axes.T
        return projected


def fit_projection(normal: F64) -> Projection:
    """PCA of normal codes (B, D), B >= 2: fitted on normal windows so the plane shows normal variation,
    and anomalous windows show up where they leave it."""
    from streamwatch.models.pca import principal_axes

    if normal.ndim != 2 or len(normal) < 2:
        raise ValueError(f"need at least two normal windows' codes shaped (B, D), got {normal.shape}")
    mean = normal.mean(axis=0)
    energy, axes = principal_axes(normal - mean)
    plane = np.zeros((2, normal.shape[1]), dtype=np.float64)
    plane[: min(2, len(axes))] = axes[:2]
    total = float(energy.sum())
    return Projection(mean, plane, float(energy[:2].sum()) / total if total > 0 else 1.0)


@dataclass(frozen=True, slots=True)
class Separation:
    """The Mahalanobis ellipse that holds `coverage` of the normal points, and what share of the anomalous
    points lies outside it (about 1 - coverage by chance, near 1 when the latent separates them)."""

    centre: F64  # (2,)
    covariance: F64  # (2, 2), slightly regularised so a degenerate cloud still has an inverse
    radius2: float  # squared Mahalanobis radius of the ellipse
    coverage: float
    outside: float

    def distances2(self, points: F64) -> F64:
        offsets = points - self.centre
        inverse = np.linalg.inv(self.covariance)
        distances: F64 = np.einsum("ij,jk,ik->i", offsets, inverse, offsets)
        return distances

    def outline(self, points: int = 200) -> F64:
        """(points, 2) on the ellipse, for drawing it."""
        angles = np.linspace(0.0, 2.0 * math.pi, points)
        circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        shape = np.linalg.cholesky(self.covariance)
        outline: F64 = self.centre + math.sqrt(self.radius2) * circle @ shape.T
        return outline


def separation(normal: F64, anomalous: F64, *, coverage: float = DEFAULT_COVERAGE) -> Separation:
    """How many anomalous points (B, 2) fall outside the ellipse holding `coverage` of the normal ones.

    The radius is the normal points' own quantile, not a chi-squared value: latent clouds are seldom
    Gaussian, and the figure should mean "beyond where 99% of normal windows lie" whatever their shape.
    """
    if len(normal) < 2 or len(anomalous) < 1:
        raise ValueError("need at least two normal and one anomalous point")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    centre = normal.mean(axis=0)
    covariance = np.cov(normal, rowvar=False).reshape(2, 2)
    # Identical normal codes have no spread at all; a tiny ridge keeps the ellipse defined (a point).
    covariance += np.eye(2) * (1e-9 * float(np.trace(covariance)) + 1e-30)
    ellipse = Separation(centre, covariance, 0.0, coverage, 0.0)
    radius2 = float(np.quantile(ellipse.distances2(normal), coverage))
    outside = float(np.mean(ellipse.distances2(anomalous) > radius2))
    return Separation(centre, covariance, radius2, coverage, outside)


@dataclass(frozen=True, slots=True)
class LatentView:
    """Normal and anomalous windows in the projection plane, with the separation between them."""

    normal: F64  # (N, 2)
    anomalous: F64  # (M, 2)
    projection: Projection
    separation: Separation
    latent_size: int
    model_version: str

    def summary(self) -> str:
        """One line with the number that goes beside the picture."""
        found = self.separation
        return (
            f"latent separation: {found.outside:.1%} of {len(self.anomalous)} anomalous windows lie outside "
            f"the ellipse holding {found.coverage:.0%} of {len(self.normal)} normal windows "
            f"({1 - found.coverage:.0%} expected by chance); the 2-D PCA of the {self.latent_size}-D "
            f"{self.model_version} latent keeps {self.projection.explained:.0%} of the normal variance"
        )


def latent_view(model: GroupModel, frame: CsvFrame, labels: Sequence[Span]) -> LatentView:
    """Encode every window of `frame`; windows overlapping a label are the anomalous ones."""
    encoded = encode_stream(model, frame)
    anomalous = overlapping(encoded.start, encoded.end, labels)
    if not anomalous.any():
        raise ValueError(f"{frame.stream}: no window overlaps a labelled anomaly; check the labels file")
    if (~anomalous).sum() < 2:
        raise ValueError(f"{frame.stream}: fewer than two windows overlap no labelled anomaly")
    projection = fit_projection(encoded.codes[~anomalous])
    normal_2d = projection.apply(encoded.codes[~anomalous])
    anomalous_2d = projection.apply(encoded.codes[anomalous])
    return LatentView(
        normal_2d,
        anomalous_2d,
        projection,
        separation(normal_2d, anomalous_2d),
        encoded.codes.shape[1],
        model.version,
    )


def plot_latent(view: LatentView, out: Path, *, title: str = "") -> None:
    """Write a PNG: normal and anomalous windows in the plane, with the normal windows' ellipse."""
    figure = _new_figure(800, 7.0)
    panel = figure.subplots()
    _draw_windows(panel, view)
    _draw_ellipse(panel, view.separation)
    _keep_normal_cloud_visible(panel, view)
    panel.legend(loc="best", fontsize=8)
    panel.set_title(
        f"{view.separation.outside:.1%} of anomalous windows outside the ellipse", fontsize=9, color="0.3"
    )
    figure.suptitle(title or f"latent space of {view.model_version}", fontsize=11)
    _save(figure, out)


def _draw_windows(panel: Axes, view: LatentView) -> None:
    normal = _evenly_spaced(view.normal, _MAX_DRAWN_NORMAL)
    label = f"normal windows ({len(view.normal):,})"
    panel.scatter(normal[:, 0], normal[:, 1], s=6, color="tab:blue", alpha=0.35, linewidths=0, label=label)
    label = f"windows overlapping a label ({len(view.anomalous):,})"
    anomalous = view.anomalous
    panel.scatter(
        anomalous[:, 0], anomalous[:, 1], s=10, color=_ALERT_COLOUR, alpha=0.7, linewidths=0, label=label
    )


def _draw_ellipse(panel: Axes, found: Separation) -> None:
    outline = found.outline()
    label = f"{found.coverage:.0%} of normal windows"
    panel.plot(outline[:, 0], outline[:, 1], color="0.2", linestyle="--", linewidth=1.0, label=label)


def _keep_normal_cloud_visible(panel: Axes, view: LatentView) -> None:
    """Label the axes; make an axis symmetric-log, linear across the normal ellipse, where far anomalies
    would shrink the ellipse to a dot (a dropout to zero lands thousands of ellipse widths away)."""
    found = view.separation
    half_x, half_y = np.sqrt(found.radius2 * np.diag(found.covariance)).tolist()
    far_x, far_y = np.abs(np.concatenate([view.normal, view.anomalous]) - found.centre).max(axis=0).tolist()
    log_x = half_x > 0 and far_x > _FAR_POINTS_RATIO * half_x
    log_y = half_y > 0 and far_y > _FAR_POINTS_RATIO * half_y
    # Decade ticks start at the linear limit; a power of ten there keeps them from crowding round zero.
    linear_x, linear_y = _power_of_ten_above(half_x), _power_of_ten_above(half_y)
    if log_x:
        panel.set_xscale("symlog", linthresh=linear_x, linscale=_LINEAR_DECADES)
    if log_y:
        panel.set_yscale("symlog", linthresh=linear_y, linscale=_LINEAR_DECADES)
    panel.set_xlabel(_component_label(1, linear_x, log_x), fontsize=9)
    panel.set_ylabel(_component_label(2, linear_y, log_y), fontsize=9)


def _power_of_ten_above(value: float) -> float:
    return float(10.0 ** math.ceil(math.log10(value))) if value > 0 else 1.0


def _component_label(number: int, linear_up_to: float, log: bool) -> str:
    label = f"latent PC {number}"
    return f"{label} (log scale beyond ±{linear_up_to:g})" if log else label


def _evenly_spaced(points: F64, limit: int) -> F64:
    """At most `limit` rows, spread evenly over `points` (drawing 50 000 dots adds nothing to 5 000)."""
    if len(points) <= limit:
        return points
    chosen: F64 = points[np.linspace(0, len(points) - 1, limit).astype(np.int64)]
    return chosen
