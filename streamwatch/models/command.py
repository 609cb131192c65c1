"""`streamwatch models`: what the model registry holds for each stream group, and rolling a group back.

`models list` prints each group's history (one JSON object with --json); `models rollback` re-publishes the
newest earlier version of a group as its new live version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from streamwatch.config import StreamwatchConfig, load_config
from streamwatch.models.registry import ModelRecord, ModelRegistry
from streamwatch.records import iso_utc

DEFAULT_REASON = "rolled back by an operator"
COLUMNS = ("version", "status", "trained at", "data span", "validation", "note")


def add_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = verbs.add_parser(
        "models",
        help="list the model versions of each stream group, or roll a group back",
        description=(
            "The model registry (detector.model_dir): every version of each stream group's model, which one "
            "is live, which were rejected or rolled back and why. See each action's --help."
        ),
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="print each group's versions: status, training time, data span, validation, reason",
        description="Print each stream group's model versions, oldest first.",
    )
    _registry_arguments(listing)
    listing.add_argument("--group", help="only this stream group")
    listing.add_argument(
        "--json", action="store_true", help='print one JSON object {"groups": {GROUP: [record, ...]}}'
    )
    listing.set_defaults(handler=list_models)
    rollback = actions.add_parser(
        "rollback",
        help="make a group's newest earlier version live again, under a new version",
        description=(
            "Re-publish the newest earlier (previous) version of GROUP whose weights load as a new live "
            "version, and mark the version that was live rolled back. Versions are never reused, so alerts "
            "name the restored model by its new version. A running daemon notices the change on its own and "
            "switches to the restored model; nothing needs restarting."
        ),
    )
    rollback.add_argument("--group", required=True, help="the stream group to roll back")
    _registry_arguments(rollback)
    rollback.add_argument(
        "--reason", default=DEFAULT_REASON, help=f"why, kept in the history (default: {DEFAULT_REASON!r})"
    )
    rollback.set_defaults(handler=roll_back)


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML config whose detector.model_dir to use")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="the registry's directory (default: the config's detector.model_dir, else "
        f"{StreamwatchConfig().detector.model_dir})",
    )


def model_dir(args: argparse.Namespace) -> Path:
    """--model-dir, else the config's detector.model_dir, else the default one."""
    if args.model_dir is not None:
        directory: Path = args.model_dir
        return directory
    config = StreamwatchConfig() if args.config is None else load_config(args.config)
    return config.detector.model_dir


def _kafka_config(args: argparse.Namespace) -> StreamwatchConfig | None:
    """The config, when its source is Kafka and no --model-dir overrides: the models topic is the registry."""
    if args.model_dir is not None or args.config is None:
        return None
    config = load_config(args.config)
    return config if config.source.kind == "kafka" else None


def list_models(args: argparse.Namespace) -> int:
    kafka = _kafka_config(args)
    if kafka is not None:
        from streamwatch.kafka.model_history import topic_records

        all_histories = topic_records(kafka)
        assert kafka.source.kind == "kafka"
        where = f"the models topic {kafka.source.models_topic}"
    else:
        directory = model_dir(args)
        registry = ModelRegistry(directory)
        all_histories = {group: registry.history(group) for group in registry.groups()}
        where = str(directory)
    groups = sorted(all_histories)
    if args.group is not None:
        _check_known(args.group, groups, where)
        groups = [group for group in groups if group == args.group]
    histories = {group: all_histories[group] for group in groups}
    if args.json:
        document = {
            "groups": {
                group: [record.to_json() for record in records] for group, records in histories.items()
            }
        }
        print(json.dumps(document, ensure_ascii=False))
    if not groups:
        # With --json the line goes to stderr, so stdout stays one JSON object.
        print(f"no models in {where}", file=sys.stderr if args.json else sys.stdout)
    elif not args.json:
        print("\n\n".join(format_history(group, records) for group, records in histories.items()))
    return 0


def roll_back(args: argparse.Namespace) -> int:
    kafka = _kafka_config(args)
    if kafka is not None:
        from streamwatch.kafka.model_history import roll_back_on_topic

        version, restored = roll_back_on_topic(kafka, args.group, reason=args.reason, at=time.time())
        print(f"group {args.group}: {version} (the weights of {restored}) published; daemons switch to it")
        return 0
    directory = model_dir(args)
    registry = ModelRegistry(directory)
    _check_known(args.group, registry.groups(), directory)
    # Wall time: the operator decides now (the daemon stamps its own decisions in event time).
    record, _ = registry.roll_back(args.group, reason=args.reason, at=time.time())
    replaced = rolled_back_by(registry.history(args.group), record)
    print(
        f"group {args.group}: {record.version} is live (the weights of {record.restored_from}); "
        f"{replaced.version if replaced is not None else 'the previous live version'} rolled back"
    )
    return 0


def _check_known(group: str, groups: Sequence[str], directory: Path | str) -> None:
    """An empty registry is not an error (nothing trained yet); a group it lacks is most likely a typo."""
    if groups and group not in groups:
        raise ValueError(f"no group {group!r} in {directory}; its groups: {', '.join(map(repr, groups))}")


def rolled_back_by(history: Sequence[ModelRecord], restored: ModelRecord) -> ModelRecord | None:
    """The version `restored` replaced: the newest rolled-back one before it (each live version is the newest
    accepted one, so the one it replaced is the last rolled back before it)."""
    position = next(index for index, record in enumerate(history) if record.version == restored.version)
    return next((record for record in reversed(history[:position]) if record.status == "rolled_back"), None)


def format_history(group: str, records: Sequence[ModelRecord]) -> str:
    """A group's history as an aligned table under a `group NAME` line."""
    rows = [COLUMNS, *(_row(record) for record in records)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS) - 1)]
    lines = [f"group {group}"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _row(record: ModelRecord) -> tuple[str, ...]:
    return (
        record.version,
        record.status,
        iso_utc(record.trained_at),
        f"{iso_utc(record.data_start)} – {iso_utc(record.data_end)}",
        format_figures(record.validation) or "-",
        _note(record) or "-",
    )


def format_figures(figures: dict[str, float]) -> str:
    """`name=value` pairs, three significant digits each."""
    return " ".join(f"{name}={value:.3g}" for name, value in figures.items())


def _note(record: ModelRecord) -> str:
    restored = "" if record.restored_from is None else f"restored from {record.restored_from}"
    return ": ".join(part for part in (restored, record.reason) if part)
