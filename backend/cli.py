"""`ls-active-yolo`: the command line (serve; more sub-commands join as features land)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from backend.config import Settings
from backend.logs import configure_logging


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415

    from backend.app import create_app  # noqa: PLC0415

    settings = replace(
        settings,
        **{
            k: v
            for k, v in (
                ("host", args.host),
                ("port", args.port),
                ("workers", args.workers),
                ("threads", args.threads),
            )
            if v is not None
        },
    )

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", 180)  # Label Studio allows /predict 100 s
            self.cfg.set("graceful_timeout", 30)

        def load(self) -> Any:
            return create_app(settings)

    _Gunicorn().run()
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
        description="Run the ML backend under gunicorn (gthread workers). Options override the "
        "environment (HOST, PORT, WORKERS, THREADS); every other setting comes from the "
        "environment (see README).",
    )
    serve.add_argument("--host", help="interface to bind (default: HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 9090)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS or 1)")
    serve.add_argument("--threads", type=int, help="threads per worker (default: THREADS or 4)")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return int(args.handler(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
