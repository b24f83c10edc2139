"""The training child: `python -m backend.jobs.child --project N --run R` runs one recorded
run (and the ranking after it) in its own process, started by `ChildProcessLauncher`."""

from __future__ import annotations

import argparse
import os

from backend.config import Settings
from backend.events import RunState
from backend.jobs.pipeline import run_job
from backend.logs import configure_logging
from backend.services import build_services

SETTINGS_ENV = "LS_ACTIVE_YOLO_SETTINGS"  # the parent's Settings, as JSON
MODULE = "backend.jobs.child"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one recorded training run (internal).")
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--run", type=int, required=True)
    args = parser.parse_args(argv)
    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.from_json(raw) if raw else Settings.from_env()
    configure_logging(settings.log_level)
    state = run_job(build_services(settings), args.project, args.run)
    return 0 if state != RunState.FAILED else 1


if __name__ == "__main__":
    raise SystemExit(main())
