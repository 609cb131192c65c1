"""The seam between the pure core and the learned models.

A reconstructor learns what normal windows look like and reconstructs any window from that knowledge; the
core turns the reconstruction error into scores. The core depends only on this protocol, never on torch.
Windows are float32 arrays shaped (batch, length, channels), already normalised per stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Batch = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FitReport:
    """What training did: enough to judge a model and to log it."""

    epochs: int
    train_loss: float
    validation_loss: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Reconstructor(Protocol):
    """Two verbs: `fit` on normal windows, `reconstruct` any windows (same shape in, same shape out)."""

    kind: str

    def fit(self, windows: Batch, *, seed: int, progress: bool = False) -> FitReport: ...

    def reconstruct(self, windows: Batch) -> Batch: ...

    def tensors(self) -> dict[str, npt.NDArray[np.float32]]:
        """Learned parameters by name, for the model store (safetensors)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters needed to rebuild the model before loading `tensors`."""
        ...
