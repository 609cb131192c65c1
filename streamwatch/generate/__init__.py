"""Synthetic normal data for the supported domains and labelled anomaly injection."""

from __future__ import annotations

from streamwatch.generate.inject import (
    KINDS,
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
