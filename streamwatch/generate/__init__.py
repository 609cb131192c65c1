"""Synthetic normal data for the supported domains, labelled anomaly injection, and (`from_model`, which
needs torch and is not imported here) anomalies drawn from a trained autoencoder."""

from __future__ import annotations

from streamwatch.generate.inject import (
    KINDS,
    MODEL_KINDS,
    Label,
    inject,
    inject_many,
    max_injections,
    read_csv,
    read_labels,
    write_csv,
    write_labels,
)
from streamwatch.generate.simulate import DOMAINS, Series, SimulatedStream, simulate

__all__ = [
    "DOMAINS",
    "KINDS",
    "MODEL_KINDS",
    "Label",
    "Series",
    "SimulatedStream",
    "inject",
    "inject_many",
    "max_injections",
    "read_csv",
    "read_labels",
    "simulate",
    "write_csv",
    "write_labels",
]
