"""Logging set-up for entry points only (library modules just get a logger)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """One stderr handler with timestamps, process id and logger name."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    for noisy in ("ultralytics", "urllib3", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
