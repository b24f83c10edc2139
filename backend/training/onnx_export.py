"""ONNX copies of promoted models, checked against PyTorch before anything hands them out.

Why: a device that runs a project's model away from this backend (an edge box, a browser, a
phone) runs ONNX through onnxruntime, not PyTorch, and an export that changes the boxes (an
operator exported differently, a wrong input size) would put a model on the device that the
promotion gate never judged. So an export counts only once it is checked: PyTorch and
onnxruntime get the same letterboxed images (the run's validation split; after a manual
promotion, a sample of the project's image cache), their raw outputs go through the same NMS
at the same confidence (DETECT_CONF_FLOOR), and every box of either must have a partner of
the same class at IoU >= CHECK_IOU (Hungarian matching, `analytics.matching`), with every
class score of every anchor within SCORE_TOLERANCE.

It runs after the promotion and never blocks or undoes it: a failed export or check is logged
with project and version and recorded in the version's meta (`onnx_export`); the version stays
live and only its `.pt` is handed out (`models.handout`). The file is written and checked in a
scratch folder and moved into the version folder whole, so a crash never leaves a half
model.onnx, and a model.onnx without a passing record is never handed out. Opt-in:
EXPORT_ONNX, or a project's `export_onnx` extra param.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from backend.analytics.matching import Edit, LabeledBox, match_boxes
from backend.config import Settings
from backend.files import exclusive_lock, file_sha256
from backend.models.detector import INFERENCE_IMAGE_SIZE, trained_image_size
from backend.models.registry import ONNX_EXPORT, ModelRegistry, ModelVersion
from backend.project_params import TrainParams, load_project_params

logger = logging.getLogger(__name__)

CHECK_IOU = 0.95  # a box and its partner from the other runtime overlap at least this much
SCORE_TOLERANCE = 0.01  # the most any class score of any anchor may differ between runtimes
MAX_CHECK_IMAGES = 50  # images the check runs on at most (an even sample of the folder)
NMS_IOU = 0.7  # ultralytics' predict default, which the detector runs with
LOCK_WAIT_S = 900.0  # how long an export waits for another export of the project
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class CheckFigures:
    """What the check found, summed over its images. A box is `borderline` when it has no
    partner but its score is within SCORE_TOLERANCE of `conf`: the other runtime may have
    scored it just under the threshold, so it does not fail the check."""

    images: int
    unreadable: int  # images left out: they could not be decoded
    boxes_torch: int
    boxes_onnx: int
    matched: int  # pairs of the same class at IoU >= CHECK_IOU
    unmatched: int  # boxes (of either runtime) without such a partner, borderline ones aside
    borderline: int
    min_iou: float | None  # over the same-class pairs the matching made
    mean_iou: float | None
    max_score_diff: float  # the largest class-score difference over every anchor
    conf: float
    torch_s: float  # inference seconds, all images
    onnxruntime_s: float

    @property
    def passed(self) -> bool:
        return self.images > 0 and self.unmatched == 0 and self.max_score_diff <= SCORE_TOLERANCE

    def failure(self) -> str | None:
        """Why the check failed, in words; None when it passed."""
        if self.images == 0:
            return "no image to check on"
        reasons = []
        if self.unmatched:
            reasons.append(
                f"{self.unmatched} boxes without a same-class partner at IoU >= {CHECK_IOU}"
            )
        if self.max_score_diff > SCORE_TOLERANCE:
            reasons.append(
                f"class scores differ by up to {self.max_score_diff:.4f} "
                f"(tolerance {SCORE_TOLERANCE})"
            )
        return "; ".join(reasons) or None


def export_wanted(settings: Settings, project_id: int) -> bool:
    """Whether the project's promotions export ONNX: EXPORT_ONNX, or its `export_onnx` param."""
    params = load_project_params(settings.paths, project_id)
    return TrainParams.resolve(settings, params).export_onnx


def export_promoted(
    settings: Settings,
    registry: ModelRegistry,
    project_id: int,
    name: str,
    images: Path,
    enabled: bool,
) -> dict[str, Any] | None:
    """The one call after a promotion: export version `name` to ONNX and check it on the
    pictures in the folder `images`, when `enabled`; returns its record (None when not
    enabled). Never raises: the promotion stands whatever happens here. A failure outside the
    export and its check (the export lock not had within LOCK_WAIT_S, MODEL_DIR refusing the
    record) is logged and answered but not recorded: writing it could overwrite the record of
    the export that held the lock."""
    if not enabled:
        return None
    try:
        return export_version(settings, registry, project_id, name, images)
    except Exception as exc:  # the promotion must stand: logged and answered, never raised
        logger.exception("project=%s version=%s ONNX export failed", project_id, name)
        return {"passed": False, "error": f"{type(exc).__name__}: {exc}", "at": time.time()}


def export_version(
    settings: Settings, registry: ModelRegistry, project_id: int, name: str, images: Path
) -> dict[str, Any]:
    """Export and check `name` now, unless it already has a passing export; record the outcome
    in its meta and return the record. A failed export or check is recorded, not raised; an
    OSError from recording it is raised."""
    paths = settings.paths.project(project_id)
    deadline = time.monotonic() + LOCK_WAIT_S
    with exclusive_lock(paths.export_lock, wait=_sleeping_until(deadline)) as locked:
        if not locked:
            raise TimeoutError(f"another ONNX export of project {project_id} held the lock")
        version = registry.get(project_id, name)
        if version.onnx is not None:
            return dict(version.meta[ONNX_EXPORT])
        for stale in paths.export_scratches():  # an export killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        scratch = paths.export_scratch(uuid.uuid4().hex)
        scratch.mkdir(parents=True)
        try:
            onnx: Path | None
            try:
                record, onnx = _export_and_check(settings, version, images, scratch)
            except Exception as exc:  # recorded in the version's meta, and logged
                logger.exception("project=%s version=%s ONNX export failed", project_id, name)
                record = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
                onnx = None
            record["at"] = time.time()
            registry.record_onnx(project_id, name, record, onnx if record["passed"] else None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return record


def _sleeping_until(deadline: float) -> Callable[[], bool]:
    def wait() -> bool:
        time.sleep(0.5)
        return time.monotonic() < deadline

    return wait


def _export_and_check(
    settings: Settings, version: ModelVersion, images: Path, scratch: Path
) -> tuple[dict[str, Any], Path]:
    """Export into `scratch`, check, and describe: (the record, the exported file)."""
    pictures = check_images(images)
    started = time.perf_counter()
    onnx, size = export_onnx(version.weights, _recorded_size(version), scratch)
    export_s = time.perf_counter() - started
    figures, io = compare(
        version.weights, onnx, pictures, size, settings.detect_conf_floor, settings.torch_threads
    )
    root = settings.paths.project(version.project_id).root
    record: dict[str, Any] = {
        "passed": figures.passed,
        "image_size": size,
        "export_s": round(export_s, 3),
        "bytes": onnx.stat().st_size,
        "sha256": file_sha256(onnx),
        **io,
        "check": {
            **asdict(figures),
            "images_from": str(images.relative_to(root) if images.is_relative_to(root) else images),
            "iou_required": CHECK_IOU,
            "score_tolerance": SCORE_TOLERANCE,
            "nms_iou": NMS_IOU,
        },
        "packages": {name: package_version(name) for name in _PACKAGES},
    }
    failure = figures.failure()
    if failure is None:
        logger.info(
            "project=%s version=%s ONNX export checked: %d images, %d/%d boxes matched "
            "(min IoU %s), max score difference %.2g, %.1fs, %d bytes",
            version.project_id,
            version.version,
            figures.images,
            figures.matched,
            figures.boxes_torch,
            figures.min_iou,
            figures.max_score_diff,
            export_s,
            record["bytes"],
        )
    else:
        record["error"] = f"check failed: {failure}"
        logger.error(
            "project=%s version=%s ONNX export not handed out, check failed: %s (%s)",
            version.project_id,
            version.version,
            failure,
            asdict(figures),
        )
    return record, onnx


_PACKAGES = ("ultralytics", "torch", "onnx", "onnxruntime")


def _recorded_size(version: ModelVersion) -> int | None:
    size = (version.meta.get("params") or {}).get("image_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 32 else None


def check_images(folder: Path, limit: int = MAX_CHECK_IMAGES) -> list[Path]:
    """Up to `limit` pictures of `folder` (by name, evenly spaced), none when it is missing."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) <= limit:
        return files
    return [files[i * len(files) // limit] for i in range(limit)]


def export_onnx(weights: Path, image_size: int | None, workdir: Path) -> tuple[Path, int]:
    """ultralytics' ONNX export of `weights` in `workdir`: fp32, a fixed 1 x 3 x size x size
    input, onnxslim applied, no NMS inside; at `image_size`, else the size the weights were
    trained at. Returns the file and the size."""
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    copy = workdir / "weights.pt"
    shutil.copyfile(weights, copy)
    yolo = YOLO(str(copy), task="detect")
    size = image_size or trained_image_size(yolo) or INFERENCE_IMAGE_SIZE
    exported = yolo.export(
        format="onnx",
        imgsz=size,
        dynamic=False,
        simplify=True,
        half=False,
        nms=False,
        batch=1,
        device="cpu",
        verbose=False,
    )
    path = Path(str(exported))
    if not path.is_file():
        raise RuntimeError(f"ultralytics reported {exported} but wrote no file")
    return path, size


def compare(
    weights: Path,
    onnx: Path,
    images: Sequence[Path],
    image_size: int,
    conf: float,
    threads: int = 0,
) -> tuple[CheckFigures, dict[str, Any]]:
    """Run `weights` (PyTorch, fused as the detector runs it) and `onnx` (onnxruntime, CPU)
    on the same letterboxed `images` and compare; returns the figures and the ONNX model's
    input and output (name and shape), which a device needs to feed it."""
    import onnxruntime  # noqa: PLC0415  (loaded only by a process that exports)
    import torch  # noqa: PLC0415
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)
    from ultralytics.data.augment import LetterBox  # noqa: PLC0415
    from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415

    model = YOLO(str(weights), task="detect").model.float().fuse(verbose=False).eval()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(0, threads)
    session = onnxruntime.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    feed, fetched = session.get_inputs()[0], session.get_outputs()[0]
    io = {
        "input": {"name": feed.name, "shape": list(feed.shape)},
        "output": {"name": fetched.name, "shape": list(fetched.shape)},
    }
    letterbox = LetterBox(new_shape=(image_size, image_size), auto=False)
    tally = BoxTally(conf)
    torch_s = onnx_s = 0.0
    for path in images:
        try:
            with Image.open(path) as picture:
                rgb = np.asarray(picture.convert("RGB"))
        except (OSError, ValueError) as exc:  # PIL's errors for a file it cannot decode
            logger.warning("ONNX check: %s left out: %s", path.name, exc)
            tally.unreadable += 1
            continue
        boxed = letterbox(image=rgb)
        batch = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        started = time.perf_counter()
        with torch.inference_mode():
            out = model(torch.from_numpy(batch))
        out = out[0] if isinstance(out, list | tuple) else out
        middle = time.perf_counter()
        raw = session.run([fetched.name], {feed.name: batch})[0]
        onnx_s += time.perf_counter() - middle
        torch_s += middle - started
        both = torch.cat([out.float(), torch.from_numpy(raw).float()])
        kept = non_max_suppression(both, conf, NMS_IOU, max_time_img=1.0)
        scores = both[:, 4:]
        tally.add(kept[0].numpy(), kept[1].numpy(), float((scores[0] - scores[1]).abs().max()))
    return tally.figures(torch_s, onnx_s), io


class BoxTally:
    """The figures of `compare`, added up image by image."""

    def __init__(self, conf: float) -> None:
        self.conf = conf
        self.images = self.unreadable = 0
        self.boxes_torch = self.boxes_onnx = self.matched = self.unmatched = 0
        self.borderline = 0
        self.ious: list[float] = []
        self.max_score_diff = 0.0

    def add(self, torch_boxes: npt.NDArray[Any], onnx_boxes: npt.NDArray[Any], diff: float) -> None:
        """One image: (n, 6) x1, y1, x2, y2, score, class of each runtime after NMS."""
        self.images += 1
        self.boxes_torch += len(torch_boxes)
        self.boxes_onnx += len(onnx_boxes)
        self.max_score_diff = max(self.max_score_diff, diff)
        alone = [*(float(b[4]) for b in torch_boxes), *(float(b[4]) for b in onnx_boxes)]
        for edit in match_boxes(_labeled(torch_boxes), _labeled(onnx_boxes)):
            if edit.shown is None or edit.submitted is None or edit.edit == Edit.RELABELED:
                continue
            self.ious.append(edit.iou)
            if edit.iou >= CHECK_IOU:
                self.matched += 1
                alone[edit.shown] = alone[len(torch_boxes) + edit.submitted] = math.nan
        for score in alone:
            if math.isnan(score):
                continue
            if score < self.conf + SCORE_TOLERANCE:
                self.borderline += 1
            else:
                self.unmatched += 1

    def figures(self, torch_s: float, onnx_s: float) -> CheckFigures:
        return CheckFigures(
            images=self.images,
            unreadable=self.unreadable,
            boxes_torch=self.boxes_torch,
            boxes_onnx=self.boxes_onnx,
            matched=self.matched,
            unmatched=self.unmatched,
            borderline=self.borderline,
            min_iou=round(min(self.ious), 6) if self.ious else None,
            mean_iou=round(sum(self.ious) / len(self.ious), 6) if self.ious else None,
            max_score_diff=self.max_score_diff,
            conf=self.conf,
            torch_s=round(torch_s, 3),
            onnxruntime_s=round(onnx_s, 3),
        )


def _labeled(boxes: npt.NDArray[Any]) -> list[LabeledBox]:
    return [LabeledBox(*map(float, row[:4]), label=str(int(row[5]))) for row in boxes]
