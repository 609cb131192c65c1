"""Command line: run, train, detect, generate, check-config, replay, publish-model, tail, evaluate, plot.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration (the message says which key and how
to fix it).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from streamwatch import __version__, logs
from streamwatch.config import ConfigError, StreamwatchConfig, load_config
from streamwatch.evaluate import command as evaluate_command
from streamwatch.models import command as models_command
from streamwatch.records import iso_utc

if TYPE_CHECKING:
    import numpy as np

    from streamwatch.codecs import DecodeError
    from streamwatch.generate.inject import Label
    from streamwatch.generate.simulate import Series
    from streamwatch.service.health import Readiness
    from streamwatch.service.reload import Reloader
    from streamwatch.service.systemd import SystemdNotifier

log = logging.getLogger("streamwatch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(verbose=args.verbose, format=args.log_format)
    try:
        code: int = args.handler(args)
    except ConfigError as error:
        print(f"streamwatch: configuration error: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"streamwatch: {error}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch",
        description="Streaming anomaly monitor: windows, autoencoder scoring, per-stream thresholds, alerts.",
    )
    parser.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="log lines as JSON objects or text; auto: JSON under systemd's journal, text elsewhere",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser(
        "run", help="start the daemon", description="Start the daemon until SIGINT/SIGTERM."
    )
    run.add_argument("-c", "--config", type=Path, help="YAML config (default: the embedded simulated demo)")
    run.add_argument("--progress", action="store_true", help="show training progress bars")
    run.set_defaults(handler=_run)

    detect = verbs.add_parser(
        "detect",
        help="train on a file's normal prefix and detect anomalies in the rest",
        description="Offline path: the daemon's engine over a recorded file, in event time.",
    )
    _file_arguments(detect)
    detect.add_argument("--alerts", type=Path, required=True, help="write alert events here (JSON lines)")
    detect.add_argument("--scores", type=Path, help="write per-window scores here (CSV)")
    detect.add_argument("--model", type=Path, help="use this trained model instead of training on the prefix")
    detect.add_argument(
        "--dead-letter",
        type=Path,
        help="where unusable input lines go with their reasons (default: ALERTS with .deadletter.jsonl)",
    )
    detect.add_argument(
        "--retrain",
        action="store_true",
        help=(
            "run the daemon's retraining lifecycle over the file in event time (schedule, validation gate, "
            "threshold re-fit, swap, canaries; the config's `retraining` section); models are not saved"
        ),
    )
    detect.set_defaults(handler=_detect)

    train = verbs.add_parser(
        "train",
        help="train a model on a file's normal prefix and save it",
        description="Train once, then `detect --model` or the daemon can use it.",
    )
    _file_arguments(train)
    train.add_argument(
        "--out", type=Path, required=True, help="model path (writes PATH.safetensors + PATH.json)"
    )
    train.set_defaults(handler=_train)

    publish = verbs.add_parser(
        "publish-model",
        help="put a trained model on the models topic for Kafka daemons",
        description=(
            "Publish a model (from `streamwatch train`) for a stream group on the configured models topic. "
            "Every daemon of the consumer group scores the group's streams with it; a daemon running "
            "already switches to it when its version number is higher than the live one."
        ),
    )
    publish.add_argument("model", type=Path, help="model path given to `train --out`")
    publish.add_argument("--group", required=True, help="stream group (by default a stream's topic name)")
    publish.add_argument("-c", "--config", type=Path, required=True, help="the daemons' YAML config")
    publish.add_argument("--version", type=_positive_int, help="publish as version N (default: the model's)")
    publish.set_defaults(handler=_publish_model)

    tail = verbs.add_parser(
        "tail",
        help="print the alert events (or dead letters) a Kafka daemon publishes",
        description=(
            "Follow the configured alert topic as its subscribers see it (read_committed), one JSON line "
            "per event; --dead-letters follows the dead-letter topic (headers give the reason and origin)."
        ),
    )
    tail.add_argument("-c", "--config", type=Path, required=True, help="the daemon's YAML config")
    tail.add_argument("--dead-letters", action="store_true", help="follow the dead-letter topic")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    tail.add_argument(
        "--idle-exit", type=_positive_float, help="exit after this many seconds without records"
    )
    tail.set_defaults(handler=_tail)

    generate = verbs.add_parser(
        "generate",
        help="simulate normal data and inject labelled anomalies",
        description=(
            "Writes a CSV (timestamp,<channel>,...) and a labels JSON. The normal data is simulated "
            "(--domain) or read (--base); anomalies are injected by rule, or drawn from a trained conv or "
            "lstm model (--from-model) by perturbing its encoder weights or latent code."
        ),
    )
    from streamwatch.generate.inject import KINDS
    from streamwatch.generate.simulate import DOMAINS

    model_kinds = "encoder_weights,latent_noise,latent_offset"
    generate.add_argument("--domain", choices=DOMAINS, help="domain to simulate (required without --base)")
    generate.add_argument(
        "--base", type=Path, help="CSV of normal data to put the anomalies into, instead of simulating"
    )
    generate.add_argument(
        "--from-model",
        type=Path,
        help="draw anomalies from this model (a `streamwatch train --out` path); its channels must match",
    )
    generate.add_argument("--samples", type=int, help="number of simulated samples (default 20000)")
    generate.add_argument("--rate", type=float, help="simulated sampling rate in Hz (default: the domain's)")
    generate.add_argument("--anomalies", type=int, default=6, help="how many anomalies to inject (default 6)")
    generate.add_argument(
        "--kinds",
        help=(
            f"comma-separated kinds: {','.join(KINDS)}, and with --from-model also {model_kinds} "
            "(default: all classic kinds, or all model kinds with --from-model)"
        ),
    )
    generate.add_argument(
        "--severity",
        type=float,
        default=1.0,
        help="1.0 = clearly anomalous to a human; with --from-model 0 changes nothing but still labels",
    )
    generate.add_argument(
        "--normal-fraction", type=float, default=0.3, help="leading share kept anomaly-free (default 0.3)"
    )
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--start", help="time of the first simulated sample (default 2026-01-01T00:00:00Z)")
    generate.add_argument("--out", type=Path, required=True, help="CSV to write")
    generate.add_argument(
        "--log-lines",
        action="store_true",
        help="logs domain only: write raw application log lines (for detect --format log) instead of a CSV",
    )
    generate.add_argument("--labels", type=Path, help="labels JSON to write (default: OUT with .labels.json)")
    generate.set_defaults(handler=_generate)

    check = verbs.add_parser(
        "check-config", help="validate a config file", description="Exit 0 when valid; else name key and fix."
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check_config)
    _replay_parser(verbs)
    _plot_parser(verbs)
    evaluate_command.add_parser(verbs)
    models_command.add_parser(verbs)
    return parser


def _file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, help="CSV (timestamp,<channel>,...) or a log file with --format log"
    )
    parser.add_argument("--format", choices=("csv", "log"), default="csv")
    parser.add_argument(
        "--log-interval", type=float, default=60.0, help="with --format log: seconds per count (default 60)"
    )
    parser.add_argument("--stream", help="stream id (default: the file name without extension)")
    parser.add_argument("--train-until", help="last training timestamp (ISO-8601 or epoch seconds)")
    parser.add_argument(
        "--train-fraction", type=float, help="leading share of rows to train on (default 0.3)"
    )
    parser.add_argument(
        "-c", "--config", type=Path, help="YAML config (detector, threshold, alerts sections)"
    )
    parser.add_argument("--progress", action="store_true", help="show a training progress bar")


def _config(path: Path | None) -> StreamwatchConfig:
    return StreamwatchConfig() if path is None else load_config(path)


def _detect(args: argparse.Namespace) -> int:
    from streamwatch.offline import Split, detect, detect_with_model, load_frame, write_alerts, write_scores

    config = _config(args.config)
    frame, errors = load_frame(
        args.file, fmt=args.format, stream=args.stream or args.file.stem, log_interval_s=args.log_interval
    )
    if errors:
        _dead_letter(errors, args.dead_letter or args.alerts.with_suffix(".deadletter.jsonl"))
    split = Split.parse(args.train_until, args.train_fraction)
    started = time.perf_counter()
    if args.model is not None and args.retrain:
        raise ValueError("--retrain trains its own models; leave out --model")
    if args.model is not None:
        result = detect_with_model(frame, split, config, args.model)
    else:
        result = detect(frame, split, config, progress=args.progress, retrain=args.retrain)
    write_alerts(args.alerts, result.alerts)
    if args.scores is not None:
        with args.scores.open("w", encoding="utf-8", newline="") as target:
            write_scores(target, result.scores)
    firing = sum(1 for event in result.alerts if event.status == "firing")
    log.info(
        "%s: trained on %d rows, scored %d rows in %d windows (%s, window %d, hop %d): "
        "%d firing / %d resolved events in %.1fs",
        args.file,
        result.train_rows,
        result.scored_rows,
        len(result.scores),
        result.model.version,
        result.model.spec.length,
        result.model.spec.hop,
        firing,
        len(result.alerts) - firing,
        time.perf_counter() - started,
    )
    if result.history is not None:
        for record in result.history.records:
            log.info(
                "model %s: %s at %s%s",
                record["version"],
                record["status"],
                iso_utc(record["trained_at"]) if record["trained_at"] else "the start",
                f" ({record['reason']})" if record["reason"] else "",
            )
    return 0


def _dead_letter(errors: Sequence[DecodeError], path: Path) -> None:
    from streamwatch.io.sinks import DeadLetterFile

    dead = DeadLetterFile(path)
    for error in errors:
        dead.put(error.raw, error.reason)
    dead.close()
    log.warning("%d unusable input lines written to %s (first: %s)", len(errors), path, errors[0].reason)


def _train(args: argparse.Namespace) -> int:
    from streamwatch.models.group_store import save_group_model
    from streamwatch.offline import Split, load_frame, train_on_prefix

    config = _config(args.config)
    frame, errors = load_frame(
        args.file, fmt=args.format, stream=args.stream or args.file.stem, log_interval_s=args.log_interval
    )
    if errors:
        log.warning("%s: %d unusable lines skipped (first: %s)", args.file, len(errors), errors[0].reason)
    model, cut = train_on_prefix(
        frame, Split.parse(args.train_until, args.train_fraction), config, progress=args.progress
    )
    save_group_model(args.out, model)
    log.info(
        "trained %s on %d rows (window %d, hop %d, %d epochs, %.1fs); saved %s",
        model.version,
        cut,
        model.spec.length,
        model.spec.hop,
        model.fit_report.epochs,
        model.fit_report.seconds,
        args.out,
    )
    return 0


def _publish_model(args: argparse.Namespace) -> int:
    from streamwatch.kafka.clients import KafkaSetupError
    from streamwatch.kafka.models_topic import publish_model
    from streamwatch.models.group_store import load_group_model

    config = _config(args.config)
    if config.source.kind != "kafka":
        print(f"streamwatch: {args.config} has no Kafka source (source.kind: kafka)", file=sys.stderr)
        return 2
    model = load_group_model(args.model)
    if args.version is not None:
        model.version = f"{model.version.partition('@')[0]}@{args.version}"
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        publish_model(config.kafka, config.source.models_topic, args.group, model)
    except (KafkaSetupError, ValueError) as error:
        print(f"streamwatch: {error}", file=sys.stderr)
        return 1
    print(f"published {model.version} for group {args.group} on {config.source.models_topic}")
    return 0


def _tail(args: argparse.Namespace) -> int:
    from streamwatch.kafka.tail import describe, follow

    config = _config(args.config)
    if args.dead_letters:
        if config.dead_letter.kind != "kafka":
            print(f"streamwatch: {args.config} writes dead letters to a file, not Kafka", file=sys.stderr)
            return 2
        topic = config.dead_letter.topic
    else:
        topics = [sink.topic for sink in config.sinks if sink.kind == "kafka"]
        if not topics:
            print(f"streamwatch: {args.config} has no Kafka alert sink", file=sys.stderr)
            return 2
        topic = topics[0]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        for record in follow(
            config.kafka,
            topic,
            from_beginning=args.from_beginning,
            keep_going=lambda: not stop.is_set(),
            idle_timeout_s=args.idle_exit,
        ):
            sys.stdout.buffer.write(describe(record) + b"\n")
            sys.stdout.buffer.flush()
    except ValueError as error:
        print(f"streamwatch: {error}", file=sys.stderr)
        return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    import numpy as np

    from streamwatch.generate.inject import KINDS, write_csv, write_labels
    from streamwatch.generate.scenario import inject_spread, levels_only

    problem = _generate_usage_problem(args)
    if problem is not None:
        print(f"streamwatch: {problem}", file=sys.stderr)
        return 2
    if not 0.0 <= args.normal_fraction < 1.0:
        raise ValueError(f"--normal-fraction must be in [0, 1), got {args.normal_fraction}")
    rng = np.random.default_rng(args.seed)
    series = _generate_base(args, rng)
    if args.log_lines:
        if args.domain != "logs":
            raise ValueError("--log-lines renders the logs domain; use --domain logs")
        series = levels_only(series)
    kinds = [kind.strip() for kind in (args.kinds or "").split(",") if kind.strip()]
    if args.from_model is not None:
        series, labels = _anomalies_from_model(args, series, kinds, rng)
    else:
        series, labels = inject_spread(
            series,
            rng=rng,
            kinds=kinds or KINDS,
            count=args.anomalies,
            severity=args.severity,
            normal_fraction=args.normal_fraction,
        )
    labels_path = args.labels or args.out.with_suffix(".labels.json")
    if args.log_lines:
        from streamwatch.generate.logs import render_log_lines

        with args.out.open("w", encoding="utf-8") as target:
            target.writelines(line + "\n" for line in render_log_lines(series, rng))
    else:
        write_csv(args.out, series)
    write_labels(labels_path, labels)
    log.info("wrote %s (%d samples, %d anomalies) and %s", args.out, len(series), len(labels), labels_path)
    return 0


def _generate_usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with how generate's options combine, or None."""
    if args.base is None:
        if args.domain is None:
            return "generate needs --domain (data to simulate) or --base (a CSV of normal data)"
        return None
    simulated = [
        option
        for option, value in (
            ("--domain", args.domain),
            ("--samples", args.samples),
            ("--rate", args.rate),
            ("--start", args.start),
        )
        if value is not None
    ]
    if simulated:
        return f"leave out {', '.join(simulated)} with --base (those options describe simulated data)"
    if args.log_lines:
        return "--log-lines renders simulated logs; it cannot be combined with --base"
    return None


def _generate_base(args: argparse.Namespace, rng: np.random.Generator) -> Series:
    """The normal data anomalies go into: the --base CSV, or the simulated --domain."""
    if args.base is not None:
        from streamwatch.generate.from_model import read_base

        return read_base(args.base)
    from streamwatch.generate.simulate import simulate
    from streamwatch.records import parse_iso_utc

    start = parse_iso_utc(args.start or "2026-01-01T00:00:00Z")
    samples = 20_000 if args.samples is None else args.samples
    return simulate(args.domain, n=samples, start=start, rng=rng, rate_hz=args.rate)


def _anomalies_from_model(
    args: argparse.Namespace, series: Series, kinds: list[str], rng: np.random.Generator
) -> tuple[Series, list[Label]]:
    from streamwatch.generate.from_model import generate_from_model
    from streamwatch.generate.inject import MODEL_KINDS
    from streamwatch.models.group_store import load_group_model

    model = load_group_model(args.from_model)
    # The stream names the model's profile to normalise with; a stream it does not know gets its own.
    stream = args.base.stem if args.base is not None else args.domain
    return generate_from_model(
        model,
        series,
        stream=stream,
        rng=rng,
        kinds=kinds or MODEL_KINDS,
        count=args.anomalies,
        severity=args.severity,
        normal_fraction=args.normal_fraction,
    )


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(f"{args.file}: invalid: {error}", file=sys.stderr)
        return 2
    source = config.source
    if source.kind == "simulate":
        detail = f"{len(source.streams)} simulated streams"
    elif source.kind == "file":
        detail = f"file {source.path}"
    else:
        detail = f"Kafka {config.kafka.bootstrap_servers}, group {source.group_id}"
    print(
        f"{args.file}: ok (source {source.kind}: {detail}; model {config.detector.model}; "
        f"threshold {config.threshold.get('kind')}; {len(config.sinks)} sinks)"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    """The daemon, as systemd runs it: sinks built (and rebuilt on SIGHUP), the HTTP endpoints served,
    systemd told when it is ready, alive and stopping."""
    import prometheus_client

    from streamwatch.service.health import Readiness
    from streamwatch.service.outputs import build_outputs
    from streamwatch.service.reload import Reloader
    from streamwatch.service.status_server import StatusServer
    from streamwatch.service.systemd import SystemdNotifier

    # A watchdog's SIGABRT (or a crash in native code) then leaves every thread's traceback in the journal.
    faulthandler.enable()
    config = _config(args.config)
    registry = prometheus_client.REGISTRY
    readiness = Readiness(
        loop_stuck_after_s=config.http.loop_stuck_after_s, sink_stuck_after_s=config.http.sink_stuck_after_s
    )
    reloader = Reloader(
        args.config,
        build_outputs(config, metrics=registry),
        lambda new: build_outputs(new, metrics=registry, start=False),
    )
    notifier = SystemdNotifier()
    server = None
    try:
        if config.http.enabled:
            server = StatusServer(config.http.address(), registry, readiness).start()
        return _run_daemon(args, config, _Service(readiness, reloader, notifier))
    finally:
        if server is not None:
            server.close()
        reloader.outputs.close()
        notifier.close()


@dataclass(frozen=True)
class _Service:
    readiness: Readiness
    reloader: Reloader
    notifier: SystemdNotifier


def _run_daemon(args: argparse.Namespace, config: StreamwatchConfig, service: _Service) -> int:
    import prometheus_client

    from streamwatch.io.sinks import DeadLetterFile

    dead_letter = DeadLetterFile(config.dead_letter.path) if config.dead_letter.kind == "jsonl" else None
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in flight and stopping", signal.Signals(signum).name)
        stop.set()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading %s between two batches", args.config or "(no config file)")
        service.reloader.request()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    sinks, registry = service.reloader.outputs.sinks, prometheus_client.REGISTRY
    if config.source.kind == "kafka":
        from streamwatch.kafka.clients import KafkaSetupError
        from streamwatch.service.kafka_daemon import KafkaDaemon

        kafka_daemon = KafkaDaemon(
            config,
            sinks=sinks,
            dead_letter_file=dead_letter,
            clock=time.time,
            metrics=registry,
            notifier=service.notifier,
            readiness=service.readiness,
            reloader=service.reloader,
        )
        try:
            kafka_daemon.run(stop)
        except KafkaSetupError as error:
            print(f"streamwatch: {error}", file=sys.stderr)
            return 2
        return 0
    from streamwatch.service.daemon import Daemon

    assert dead_letter is not None  # the configuration refuses Kafka dead letters without a Kafka source
    daemon = Daemon(
        config,
        sinks=sinks,
        dead_letter=dead_letter,
        clock=time.time,
        progress=args.progress,
        metrics=registry,
        notifier=service.notifier,
        readiness=service.readiness,
        reloader=service.reloader,
    )
    daemon.run(stop)
    return 0


def _replay_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from streamwatch.replay import BOOTSTRAP_ENV, CONNECT_TIMEOUT_S, DEFAULT_BOOTSTRAP, DEFAULT_PARTITIONS

    replay = verbs.add_parser(
        "replay",
        help="produce a CSV's samples to a Kafka topic as JSON messages",
        description="Replay a recorded CSV into Kafka as the JSON the Kafka source reads, keyed by stream.",
    )
    replay.add_argument("file", type=Path, help="CSV (timestamp,<channel>,...)")
    replay.add_argument("--topic", required=True, help="topic to produce to (created if missing)")
    replay.add_argument("--stream", help="stream id (default: the file name without extension)")
    pacing = replay.add_mutually_exclusive_group()
    pacing.add_argument("--rate", type=_positive_float, help="samples per second")
    pacing.add_argument("--as-fast-as-possible", action="store_true", help="no pacing (the default)")
    replay.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        help="samples per message: 1 sends sample objects, more the columnar form (default 1)",
    )
    replay.add_argument(
        "--bootstrap", help=f"Kafka host:port (default: ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})"
    )
    replay.add_argument(
        "--partitions",
        type=_positive_int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions if the topic has to be created (default {DEFAULT_PARTITIONS}; replication 1)",
    )
    replay.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=CONNECT_TIMEOUT_S,
        help=f"seconds to wait for the broker before giving up (default {CONNECT_TIMEOUT_S:g})",
    )
    replay.set_defaults(handler=_replay)


def _plot_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plot = verbs.add_parser(
        "plot",
        help="draw a stream with its scores and alerts, or a model's latent space, as a PNG",
        description="Pictures for people: `plot stream` and `plot latent` (see each one's --help).",
    )
    views = plot.add_subparsers(dest="view", required=True, metavar="VIEW")
    stream = views.add_parser(
        "stream",
        help="data, window scores, threshold, alerts and labels over time",
        description=(
            "Draw a stream: its channels (the first 4), then window score and threshold, with alerts "
            "(firing to resolved) shaded and labelled anomalies hatched. Either plot an earlier detect run "
            "(give its --scores CSV and, for the alerts, its --alerts file) or let this run detect on FILE "
            "with the same options as `streamwatch detect` (--train-fraction, --train-until, --model, -c). "
            "Long files are decimated per pixel column (min and max), so spikes stay visible."
        ),
    )
    _file_arguments(stream)
    stream.add_argument("--model", type=Path, help="detect with this trained model instead of training")
    stream.add_argument("--scores", type=Path, help="per-window scores of an earlier `detect --scores` run")
    stream.add_argument("--alerts", type=Path, help="alert events of that run (`detect --alerts`)")
    stream.add_argument("--labels", type=Path, help="labelled anomalies to hatch (a labels JSON)")
    stream.add_argument(
        "--from", dest="time_from", metavar="TIME", help="draw from this time (ISO-8601 or epoch seconds)"
    )
    stream.add_argument(
        "--to", dest="time_to", metavar="TIME", help="draw up to this time (ISO-8601 or epoch seconds)"
    )
    _plot_output_arguments(stream)
    stream.set_defaults(handler=_plot_stream)
    latent = views.add_parser(
        "latent",
        help="normal against labelled windows in the model's latent space (2-D PCA)",
        description=(
            "Encode every window of FILE with a trained model (from `streamwatch train --out`), project the "
            "latent codes onto the two leading principal axes of the normal windows, and draw normal and "
            "anomalous windows (those overlapping a label) in two colours. Prints the share of anomalous "
            "windows outside the ellipse that holds 99% of the normal ones."
        ),
    )
    latent.add_argument("file", type=Path, help="CSV (timestamp,<channel>,...)")
    latent.add_argument("--model", type=Path, required=True, help="model path given to `train --out`")
    latent.add_argument("--labels", type=Path, required=True, help="labels JSON: which windows are anomalous")
    latent.add_argument("--stream", help="stream id (default: the file name without extension)")
    _plot_output_arguments(latent)
    latent.set_defaults(handler=_plot_latent)


def _plot_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", help="figure title (default: the stream id or model version)")


def _plot_stream(args: argparse.Namespace) -> int:
    from streamwatch import plot
    from streamwatch.offline import Split, detect, detect_with_model, load_frame

    view = plot.TimeRange.parse(args.time_from, args.time_to)
    frame, errors = load_frame(
        args.file, fmt=args.format, stream=args.stream or args.file.stem, log_interval_s=args.log_interval
    )
    if errors:
        log.warning("%s: %d unusable lines skipped (first: %s)", args.file, len(errors), errors[0].reason)
    labels = [] if args.labels is None else plot.read_label_spans(args.labels)
    if args.scores is not None:
        if args.model is not None or args.train_until is not None or args.train_fraction is not None:
            raise ValueError("--model and --train-* run detect here; with --scores nothing is detected")
        picture = plot.picture_from_files(
            frame, scores=args.scores, alerts=args.alerts, labels=labels, title=args.title
        )
    elif args.alerts is not None:
        raise ValueError("--alerts needs the --scores of the same detect run")
    else:
        config = _config(args.config)
        split = Split.parse(args.train_until, args.train_fraction)
        if args.model is not None:
            result = detect_with_model(frame, split, config, args.model)
        else:
            result = detect(frame, split, config, progress=args.progress)
        picture = plot.picture_from_detection(frame, result, labels=labels, title=args.title)
    plot.plot_stream(picture, args.out, view=view)
    log.info("wrote %s", args.out)
    return 0


def _plot_latent(args: argparse.Namespace) -> int:
    from streamwatch import plot
    from streamwatch.models.group_store import load_group_model
    from streamwatch.offline import load_frame

    frame, _ = load_frame(args.file, fmt="csv", stream=args.stream or args.file.stem)
    view = plot.latent_view(load_group_model(args.model), frame, plot.read_label_spans(args.labels))
    plot.plot_latent(view, args.out, title=args.title)
    print(view.summary())
    log.info("wrote %s", args.out)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _replay(args: argparse.Namespace) -> int:
    import os

    from streamwatch.replay import ReplayError, bootstrap_from_env, replay_csv

    if not args.verbose:
        # kafka-python logs every retry against an unreachable broker; the outcome is reported in one line.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        report = replay_csv(
            args.file,
            topic=args.topic,
            stream=args.stream or args.file.stem,
            bootstrap=args.bootstrap or bootstrap_from_env(os.environ),
            batch=args.batch,
            rate=args.rate,
            partitions=args.partitions,
            connect_timeout_s=args.connect_timeout,
            clock=time.monotonic,
            sleep=time.sleep,
        )
    except ReplayError as error:
        print(f"streamwatch: replay failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamwatch: replay interrupted", file=sys.stderr)
        return 130
    print(f"streamwatch: {report.summary(args.topic)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
