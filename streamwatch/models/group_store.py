"""Saving and loading a whole stream-group model: reconstructor weights plus the core's calibration.

The reconstructor goes through the safetensors store; window spec, stream profiles, feature calibration and
the held-out scores that initialise thresholds travel in the same JSON document as extra metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamwatch.core.bootstrap import GroupModel
from streamwatch.core.detector import WindowDetector
from streamwatch.core.profile import StreamProfile
from streamwatch.core.reconstructor import FitReport
from streamwatch.core.windows import WindowSpec
from streamwatch.models.store import ModelFileError, load_model, model_from_bytes, model_to_bytes, save_model


def save_group_model(path: Path, model: GroupModel) -> None:
    save_model(path, model.detector.reconstructor, extra_metadata=_extra(model))


def load_group_model(path: Path) -> GroupModel:
    reconstructor, extra = load_model(path)
    return _checked_rebuild(reconstructor, extra, str(path))


def group_model_to_bytes(model: GroupModel) -> bytes:
    """The whole group model as one blob (the models topic's record value)."""
    return model_to_bytes(model.detector.reconstructor, extra_metadata=_extra(model))


def group_model_from_bytes(blob: bytes, *, where: str) -> GroupModel:
    reconstructor, extra = model_from_bytes(blob, where=where)
    return _checked_rebuild(reconstructor, extra, where)


def _extra(model: GroupModel) -> dict[str, Any]:
    extra = model.metadata()
    extra["level_references"] = {stream: level.tolist() for stream, level in model.level_references.items()}
    # Full precision: a reloaded model must fit exactly the thresholds the original did.
    extra["initial_scores"] = {stream: scores.tolist() for stream, scores in model.initial_scores.items()}
    extra["trained_until"] = dict(model.trained_until)
    return extra


def _checked_rebuild(reconstructor: Any, extra: dict[str, Any], where: str) -> GroupModel:
    try:
        return _rebuild(reconstructor, extra)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{where}: not a streamwatch group model ({error!r})") from None


def _rebuild(reconstructor: Any, extra: dict[str, Any]) -> GroupModel:
    spec = extra["spec"]
    fit = extra["fit"]
    detector = WindowDetector(
        reconstructor, WindowDetector.calibration_from(extra["detector"]), str(extra["version"])
    )
    return GroupModel(
        version=str(extra["version"]),
        spec=WindowSpec(
            int(spec["length"]), int(spec["hop"]), float(spec["lateness_s"]), float(spec["max_gap_s"])
        ),
        channels=tuple(extra["channels"]),
        profiles={stream: StreamProfile.from_json(item) for stream, item in extra["profiles"].items()},
        detector=detector,
        fit_report=FitReport(
            int(fit["epochs"]), float(fit["train_loss"]), float(fit["validation_loss"]), float(fit["seconds"])
        ),
        initial_scores={
            stream: np.asarray(scores, dtype=np.float32) for stream, scores in extra["initial_scores"].items()
        },
        level_references={
            stream: np.asarray(level, dtype=np.float32) for stream, level in extra["level_references"].items()
        },
        # Absent from models saved before it was recorded.
        trained_until={stream: float(ts) for stream, ts in extra.get("trained_until", {}).items()},
    )
