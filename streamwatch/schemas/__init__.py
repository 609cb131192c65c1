"""JSON Schemas shipped with the package (the alert contract)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def alert_event_schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("alert-event.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
