"""Every ultralytics offline setting in one place.

ultralytics reads its environment at import time and looks things up on the internet (fonts,
weights, analytics). `prepare_ultralytics()` must run before the first `import ultralytics`;
`backend.models.detector` and `backend.trainer` call it, nothing else imports ultralytics directly.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

_lock = threading.Lock()
_done = False


def prepare_ultralytics(config_dir: Path) -> None:
    """Point ultralytics at a writable config dir with its fonts in place; no downloads.

    Idempotent and thread-safe; the first caller's `config_dir` wins for the process.
    """
    global _done
    with _lock:
        if _done:
            return
        config_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "0")
        os.environ.setdefault("YOLO_VERBOSE", "False")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
        _place_fonts(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")
        from ultralytics.utils import SETTINGS  # noqa: PLC0415  (must follow the env set-up)

        if SETTINGS.get("sync", True):
            SETTINGS.update({"sync": False})
        _done = True


def _place_fonts(folder: Path) -> None:
    """ultralytics' check_font fetches Arial from the internet unless a TTF is already there."""
    import matplotlib  # noqa: PLC0415  (ships DejaVuSans, a free TTF)

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = folder / name
        if not target.exists():
            shutil.copyfile(source, target)


def set_torch_threads(threads: int = 0) -> None:
    """Give torch `threads` intra-op threads (0 = every core).

    ultralytics sets OMP_NUM_THREADS=1 when imported, which would leave inference on one core.
    Call once at start-up, never per request.
    """
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))
