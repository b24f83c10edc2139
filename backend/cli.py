"""`ls-active-yolo`: the command line (serve, models, train, rank, worker, analytics,
weights)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from backend.analytics.report import read_report, render
from backend.config import Settings
from backend.errors import BackendError
from backend.files import atomic_write
from backend.jobs.ledger_sync import backfill
from backend.jobs.queues import chunk_queue
from backend.jobs.scheduler import BackgroundTrainer
from backend.jobs.worker import run_worker
from backend.logs import configure_logging
from backend.models.handout import FORMATS, live_file
from backend.models.pretrained import download_named, resolve_named_weights
from backend.ranking.job import rank_as_configured
from backend.ranking.progress import RankProgress
from backend.services import build_services
from backend.serving.server import serve
from backend.training.onnx_export import export_promoted, export_version, export_wanted


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Before gunicorn forks (its workers inherit the resolved path): a refused or failed
    # download is this command's one-line error, not a worker that fails to boot.
    settings = resolve_named_weights(settings)
    overrides = {"host": args.host, "port": args.port}
    overrides.update(workers=args.workers, threads=args.threads)
    serve(replace(settings, **{k: v for k, v in overrides.items() if v is not None}))
    return 0


def _models(args: argparse.Namespace, settings: Settings) -> int:
    registry = build_services(settings).registry
    promoted = None
    if args.action == "promote":
        promoted = registry.promote(
            args.project, args.version, reason="manual (ls-active-yolo models)"
        )
    elif args.action == "rollback":
        promoted = registry.rollback(args.project)
    if promoted is not None:  # checked on the project's cached training images
        images = settings.paths.project(args.project).image_cache
        wanted = export_wanted(settings, args.project)
        record = export_promoted(settings, registry, args.project, promoted.version, images, wanted)
        if record is not None:
            print(f"{promoted.version} ONNX export: {_export_outcome(record)}")
    live = registry.live(args.project)
    print(f"{'version':<9}{'live':<6}{'mAP50':>8}{'mAP50-95':>10}  {'gate':<9}parent")
    for version in registry.versions(args.project):
        meta = version.meta
        metrics = meta.get("metrics") or {}
        map50, map50_95 = metrics.get("map50", float("nan")), metrics.get("map50_95", float("nan"))
        marker = "*" if live and live.version == version.version else ""
        gate = "passed" if (meta.get("gate") or {}).get("passed") else "rejected"
        print(
            f"{version.version:<9}{marker:<6}{map50:>8.4f}{map50_95:>10.4f}"
            f"  {gate:<9}{meta.get('parent', '')}"
        )
    return 0


def _export_outcome(record: dict[str, object]) -> str:
    check = record.get("check")
    if not record.get("passed") or not isinstance(check, dict):
        return f"not handed out: {record.get('error')}"
    return (
        f"checked on {check['images']} images, {check['matched']}/{check['boxes_torch']} boxes "
        f"matched at IoU >= {check['iou_required']}"
    )


def _models_export(args: argparse.Namespace, settings: Settings) -> int:
    registry = build_services(settings).registry
    live = registry.live(args.project)
    if args.format == "onnx" and live is not None and live.onnx is None:
        images = settings.paths.project(args.project).image_cache
        record = export_version(settings, registry, args.project, live.version, images)
        print(f"{live.version} ONNX export: {_export_outcome(record)}", file=sys.stderr)
    found = live_file(registry, args.project, args.format)
    target = args.out or Path(found.filename)
    atomic_write(target, found.path.read_bytes())
    meta = atomic_write(
        target.with_name(target.name + ".json"),
        (json.dumps(found.metadata, indent=2, sort_keys=True) + "\n").encode(),
    )
    print(
        f"project {args.project} {found.version} ({args.format}): wrote {target} "
        f"({found.metadata['bytes']} bytes, sha256 {found.sha256}) and {meta}"
    )
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    if args.cancel:
        flag = settings.paths.project(args.project).cancel_flag
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        print(f"cancel requested for project {args.project}'s running job")
        return 0
    events = build_services(settings).events
    event_id = events.append(args.project, "START_TRAINING", (), {"source": "cli"})
    print(f"training requested for project {args.project} (event {event_id})")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        runs = [r for r in events.runs(args.project) if r["max_event_id"] >= event_id]
        if runs and runs[-1]["state"] != "running":
            run = runs[-1]
            print(f"run {run['id']}: {run['state']} {run['version'] or ''}".rstrip())
            return 0 if run["state"] in ("promoted", "rejected", "skipped") else 1
        time.sleep(1.0)
    print("timed out waiting: is a trainer running (`ls-active-yolo serve` or `worker`)?")
    return 2


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.redis_url is not None:  # scale-out: run queued training jobs
        return run_worker(settings)
    trainer = BackgroundTrainer(build_services(settings))
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    trainer.start()
    stopped.wait()
    trainer.stop()
    return 0


def _rank(args: argparse.Namespace, settings: Settings) -> int:
    overrides: dict[str, object] = {}
    for key, value in (
        ("al_strategy", args.strategy),
        ("al_lambda", args.lam),
        ("al_batch_size", args.batch_size),
        ("al_queue_length", args.queue_length),
    ):
        if value is not None:
            overrides[key] = value

    def progress(step: RankProgress) -> None:
        eta = f", eta {step.eta_s:.0f}s" if step.eta_s is not None else ""
        print(f"\r{step.stage}: {step.done}/{step.total}{eta}   ", end="", file=sys.stderr)

    summary = rank_as_configured(
        build_services(settings),
        args.project,
        overrides=overrides,
        progress=progress,
        offload=chunk_queue(settings),
    )
    print(file=sys.stderr)
    print(
        f"project {summary.project_id}: ranked {summary.n_ranked} unlabeled tasks "
        f"({summary.n_labeled} labeled, {summary.n_failed} failed) with {summary.strategy} "
        f"on model {summary.model_version} in {summary.timings.get('total', 0.0):.1f}s; "
        f"queue {summary.queue_version}: its first {summary.imported} tasks imported; "
        f"removed {', '.join(summary.removed_versions) or 'no old queue version'}"
    )
    print("top of the queue: " + ", ".join(str(t) for t in summary.top_task_ids[:10]))
    return 0


def _analytics(args: argparse.Namespace, settings: Settings) -> int:
    services = build_services(settings)
    if args.action == "backfill":
        summary = backfill(services, args.project)
        print(
            f"project {args.project}: {summary.recorded} annotations recorded"
            + (
                f", {summary.without_prediction} left out (their prediction is gone)"
                if summary.without_prediction
                else ""
            )
        )
        return 0
    report = read_report(services.ledger, args.project)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report), end="")
    return 0


def _weights(args: argparse.Namespace, settings: Settings) -> int:
    into = args.into or settings.paths.pretrained
    for name in args.names:
        present = into / name
        print(present if present.is_file() else download_named(name, settings, into))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ls-active-yolo",
        description="Label Studio ML backend: YOLO pre-annotations, retraining, active learning.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the ML backend under gunicorn",
        description="Run the ML backend under gunicorn (tornado workers: a slow client holds no "
        "thread). Options override the environment (HOST, PORT, WORKERS, THREADS); every "
        "other setting comes from the environment (see README).",
    )
    serve.add_argument("--host", help="interface to bind (default: HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 9090)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS or 1)")
    serve.add_argument("--threads", type=int, help="threads per worker (default: THREADS or 4)")
    serve.set_defaults(handler=_serve)

    models = commands.add_parser(
        "models",
        help="list, promote, roll back or export a project's model versions",
        description="Manage the model registry under MODEL_DIR. list, promote and rollback "
        "print the project's versions afterwards; '*' marks the live one. A promotion or "
        "rollback also exports the version to ONNX when the project exports (EXPORT_ONNX or "
        "its export_onnx param) and the version has no checked export yet.",
    )
    actions = models.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "list the project's versions"),
        ("promote", "make a version live"),
        ("rollback", "make the previously live version live again"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--project", type=int, required=True, help="Label Studio project id")
        if name == "promote":
            action.add_argument("version", help="the version to promote, e.g. v3")
        action.set_defaults(handler=_models)
    export = actions.add_parser(
        "export",
        help="write the project's live model and its metadata to files",
        description="Write the live model (--format pt: its weights; onnx: its ONNX export) "
        "to --out, and its metadata (version, SHA-256, classes, image size, metrics; for "
        "ONNX its input, output and check figures) to --out plus '.json', as GET "
        "/models/<project>/live and .../live/meta hand them out. With --format onnx, a live "
        "model without a checked ONNX export is exported and checked first (on the "
        "project's cached training images), whatever EXPORT_ONNX says.",
    )
    export.add_argument("--project", type=int, required=True, help="Label Studio project id")
    export.add_argument("--format", choices=FORMATS, default="pt", help="default: pt")
    export.add_argument(
        "--out", type=Path, help="the file to write (default: project-<id>-<version>.<format>)"
    )
    export.set_defaults(handler=_models_export)

    train = commands.add_parser(
        "train",
        help="request (or cancel) a training run for a project",
        description="Queue a training run, as Label Studio's 'Start Training' does; the "
        "trainer of a running `serve` or `worker` picks it up. --cancel stops the running "
        "job at its next batch.",
    )
    train.add_argument("--project", type=int, required=True, help="Label Studio project id")
    train.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    train.add_argument("--timeout", type=float, default=3600, help="seconds to wait (--wait)")
    train.add_argument("--cancel", action="store_true", help="cancel the running job instead")
    train.set_defaults(handler=_train)

    rank = commands.add_parser(
        "rank",
        help="rank a project's unlabeled tasks and write the queue to Label Studio",
        description="Score every unlabeled task with the live model and the project's "
        "strategy (its extra params / tag attributes; the options below override them), then "
        "import the queue as a new model version (predictions with queue scores), switch the "
        "project to it with uncertainty sampling, keep the 'Active learning queue' tab and "
        "remove older queue versions. Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY.",
    )
    rank.add_argument("--project", type=int, required=True, help="Label Studio project id")
    rank.add_argument("--strategy", help="e.g. hybrid, entropy, kcenter, dua, random")
    rank.add_argument("--lam", type=float, help="hybrid: weight of uncertainty (0..1)")
    rank.add_argument("--batch-size", type=int, help="tasks picked by the full strategy")
    rank.add_argument(
        "--queue-length", type=int, help="tasks written to Label Studio, the queue's head (0: all)"
    )
    rank.set_defaults(handler=_rank)

    worker = commands.add_parser(
        "worker",
        help="run the background trainer without serving HTTP",
        description="Run only the trainer (one per MODEL_DIR: a file lock elects it). Use it "
        "with TRAINING=0 on the serving processes to keep training off them. With REDIS_URL, "
        "run queued training jobs instead (any number of workers, sharing MODEL_DIR); the "
        "serving process's trainer then only queues them.",
    )
    worker.set_defaults(handler=_worker)

    analytics = commands.add_parser(
        "analytics",
        help="what the pre-annotations saved: fill the annotation ledger, print the report",
        description="The annotation ledger (MODEL_DIR/annotations.sqlite3) records, per "
        "annotation, which predicted boxes the annotator accepted, adjusted, relabeled or "
        "deleted and which they drew, with Label Studio's lead_time. The running backend "
        "fills it from webhooks; `backfill` reads a project's existing annotations from Label "
        "Studio (LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY); `report` prints the figures per "
        "model version and annotator.",
    )
    analytics_actions = analytics.add_subparsers(dest="action", required=True)
    for name, text in (
        ("backfill", "record a project's existing annotations from Label Studio"),
        ("report", "print a project's figures from the ledger"),
    ):
        action = analytics_actions.add_parser(name, help=text, description=text)
        action.add_argument("--project", type=int, required=True, help="Label Studio project id")
        if name == "report":
            action.add_argument("--json", action="store_true", help="JSON instead of tables")
        action.set_defaults(handler=_analytics)

    weights = commands.add_parser(
        "weights",
        help="download pretrained weights by name, for MODEL_PATH=<name>",
        description="Pretrained weights by name (MODEL_PATH=yolo11n.pt). `fetch` downloads "
        "them now, from WEIGHTS_URL (default: ultralytics' GitHub release), whatever "
        "ALLOW_WEIGHT_DOWNLOADS says: running it is the consent. A name already in the folder "
        "is not downloaded again. The Docker image's WEIGHTS build argument runs it.",
    )
    weights_actions = weights.add_subparsers(dest="action", required=True)
    fetch = weights_actions.add_parser(
        "fetch", help="download named weights", description="Download named weights."
    )
    fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. yolo11n.pt")
    fetch.add_argument(
        "--into",
        type=Path,
        help="folder to put them in (default: MODEL_DIR/pretrained; for an image, the "
        "PRETRAINED_DIR it reads)",
    )
    fetch.set_defaults(handler=_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        return int(args.handler(args, settings))
    except (BackendError, LookupError, FileNotFoundError, ValueError) as exc:
        print(f"ls-active-yolo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
