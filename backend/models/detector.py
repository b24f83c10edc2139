"""Loading and running YOLO detectors.

A `Detector` wraps one ultralytics model, loaded once and shared by every request and thread
of a process (its one inference thread serialises the forward passes: ultralytics predictors
are not thread-safe). One forward pass yields, per image, the kept boxes WITH their full per-class
score vectors (for margin/entropy uncertainty) and an image embedding pooled from the neck
(for diversity), so active learning needs no extra passes.

`DetectorPool` decides which weights serve a project and keeps a few detectors loaded; it
checks the registry's live pointer on every call, so a promoted model is served by every
worker on its next request (hot swap without restart).

Weights are code: ultralytics unpickles a checkpoint, so loading one runs whatever it holds.
A label config's `model_path` therefore names weights only inside MODELS_ROOT (see
`weights_under_root`); the operator's MODEL_PATH and the registry's own versions are trusted.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.config import Settings
from backend.errors import LabelConfigError, ModelError
from backend.files import file_sha256
from backend.models.offline import prepare_ultralytics
from backend.models.registry import ModelRegistry

logger = logging.getLogger(__name__)

INFERENCE_IMAGE_SIZE = 640  # for weights that do not record the size they were trained at


@dataclass(frozen=True)
class Box:
    """One detection in original-image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    conf: float
    class_scores: np.ndarray = field(repr=False)  # (n_classes,) independent sigmoids


@dataclass(frozen=True)
class ImageDetections:
    """Everything one forward pass says about one image."""

    boxes: tuple[Box, ...]
    embedding: np.ndarray = field(repr=False)  # (d,) float32, L2-normalised


@dataclass(frozen=True)
class ModelSource:
    """Where a detector's weights come from, and the version string Label Studio sees."""

    version: str
    weights: Path | None  # None: randomly initialised from `yaml`
    yaml: str = ""  # the architecture of a random init (MODEL_YAML); unused with weights
    class_names: tuple[str, ...] = ()  # for a random init: the head's classes
    kind: str = "weights"  # "model_path" (tag), "registry", "MODEL_PATH" or "random-init"
    display_threshold: float | None = None  # a registry version's calibrated threshold

    def shown_from(self, control_threshold: float | None, default: float) -> float:
        """The confidence from which boxes are shown: the control's model_score_threshold if
        the label config sets one, else the version's calibrated threshold, else `default`
        (MODEL_SCORE_THRESHOLD)."""
        if control_threshold is not None:
            return control_threshold
        return self.display_threshold if self.display_threshold is not None else default

    @property
    def key(self) -> tuple[object, ...]:
        if self.weights is None:
            return ("random", self.yaml, self.class_names)
        stat = self.weights.stat()
        return ("weights", str(self.weights), stat.st_mtime_ns, stat.st_size)


class Detector:
    """One loaded model. `predict` is thread-safe."""

    def __init__(self, source: ModelSource, settings: Settings) -> None:
        prepare_ultralytics(settings.paths.ultralytics)
        from backend.models.scoring_predictor import ScoringPredictor  # noqa: PLC0415  (ultralytics: after prepare_ultralytics)

        self._predictor_cls = ScoringPredictor
        self.source = source
        self.version = source.version
        self._settings = settings
        started = time.perf_counter()
        self._yolo = _load_yolo(source)
        self.names: tuple[str, ...] = _class_names(self._yolo, source)
        self.image_size = (
            settings.image_size or trained_image_size(self._yolo) or INFERENCE_IMAGE_SIZE
        )
        threads = settings.torch_threads or max(1, os.cpu_count() or 1)
        # Every forward pass runs on this one thread. OpenMP keeps a thread team (and its
        # spinning workers) per calling thread, so inference from gunicorn's several request
        # threads would start competing teams on the same cores; one thread also serialises
        # the model, which ultralytics predictors need.
        self._inference = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"inference-{source.version}",
            initializer=_set_threads,
            initargs=(threads,),
        )
        logger.info(
            "loaded model version=%s kind=%s classes=%d imgsz=%d in %.2fs",
            self.version,
            source.kind,
            len(self.names),
            self.image_size,
            time.perf_counter() - started,
        )

    def predict(self, images: Sequence[np.ndarray]) -> list[ImageDetections]:
        """Detect on BGR images, in chunks of PREDICT_BATCH; one result per image, in order.

        Thread-safe: chunks run one at a time on the detector's inference thread.
        """
        out: list[ImageDetections] = []
        size = self._settings.predict_batch
        for start in range(0, len(images), size):
            chunk = list(images[start : start + size])
            out.extend(self._inference.submit(self._predict_chunk, chunk).result())
        return out

    def _predict_chunk(self, images: list[np.ndarray]) -> list[ImageDetections]:
        import torch  # noqa: PLC0415

        with torch.inference_mode():
            results = self._yolo.predict(
                source=images,
                predictor=self._predictor_cls,
                conf=self._settings.detect_conf_floor,
                imgsz=self.image_size,
                device=self._settings.device,
                batch=self._settings.predict_batch,
                verbose=False,
            )
        detections = []
        for result in results:
            boxes = result.boxes
            xyxy = boxes.xyxy.cpu().numpy()
            conf = boxes.conf.cpu().numpy()
            cls = boxes.cls.cpu().numpy().astype(int)
            scores = result.class_scores
            detections.append(
                ImageDetections(
                    boxes=tuple(
                        Box(*map(float, xyxy[i]), int(cls[i]), float(conf[i]), scores[i])
                        for i in range(len(conf))
                    ),
                    embedding=result.embedding,
                )
            )
        return detections


def _set_threads(threads: int) -> None:
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)


def trained_image_size(yolo: Any) -> int | None:
    """The square image size a YOLO's weights were trained at, if recorded."""
    size = (getattr(yolo, "overrides", None) or {}).get("imgsz")
    return int(size) if isinstance(size, int) and size >= 32 else None


def _load_yolo(source: ModelSource) -> Any:
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    try:
        if source.weights is not None:
            return YOLO(str(source.weights), task="detect")
        from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

        yolo = YOLO(source.yaml, task="detect")
        if source.class_names:
            model = DetectionModel(source.yaml, nc=len(source.class_names), verbose=False)
            model.names = dict(enumerate(source.class_names))
            yolo.model = model
        return yolo
    except Exception as exc:  # ultralytics raises many types for bad or missing weights
        raise ModelError(f"cannot load model {source.weights or source.yaml}: {exc}") from exc


def _class_names(yolo: Any, source: ModelSource) -> tuple[str, ...]:
    """The model's class names in class-id order; ModelError when it is no detector."""
    try:
        names = yolo.names
        return tuple(str(names[i]) for i in sorted(names))
    except Exception as exc:  # a checkpoint that loaded but holds no usable YOLO model
        raise ModelError(f"{source.weights or source.yaml} is not a YOLO detector: {exc}") from exc


WEIGHTS_SUFFIX = ".pt"
OUTSIDE_ROOT = f"model_path must name a {WEIGHTS_SUFFIX} weights file under MODELS_ROOT"


def weights_under_root(model_path: str, root: Path | None) -> Path:
    """The weights file a label config's `model_path` names, resolved, if it lies in `root`.

    Relative paths are taken from `root`. `..` is collapsed lexically first, so the file
    system is consulted only from `root` down; symlinks are then followed and the target must
    still lie under `root`. Every refusal of a path outside `root` (or without the weights
    suffix) raises LabelConfigError with the one message OUTSIDE_ROOT, whether or not the
    path exists, so the answer says nothing about files elsewhere. Under `root`, a missing
    file is named as such.
    """
    if root is None:
        raise LabelConfigError(
            "model_path in a label config is refused: the backend has no MODELS_ROOT "
            "(set it to the folder that holds the weights label configs may name)"
        )
    if not model_path or "\0" in model_path or not _encodable(model_path):
        raise LabelConfigError(OUTSIDE_ROOT)
    root_real = Path(os.path.realpath(root))
    lexical = Path(os.path.normpath(os.path.join(root_real, model_path)))
    if not lexical.is_relative_to(root_real):
        raise LabelConfigError(OUTSIDE_ROOT)
    resolved = Path(os.path.realpath(lexical))
    if (
        resolved == root_real
        or not resolved.is_relative_to(root_real)
        or resolved.suffix != WEIGHTS_SUFFIX
    ):
        raise LabelConfigError(OUTSIDE_ROOT)
    if not os.path.isfile(resolved):
        raise LabelConfigError(
            f"model_path {model_path!r}: no weights file at {resolved.relative_to(root_real)} "
            "under MODELS_ROOT"
        )
    return resolved


def _encodable(path: str) -> bool:
    """Whether the OS can take `path` (a lone surrogate from JSON cannot be encoded)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


def file_version(path: Path) -> str:
    """A stable version string for a weights file: its stem and a content hash."""
    stat = path.stat()
    return _hashed_version(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _hashed_version(path: Path, _mtime_ns: int, _size: int) -> str:
    """Cached by path, mtime and size: a changed file is hashed again."""
    return f"{path.stem}-{file_sha256(path)[:8]}"


class DetectorPool:
    """Which detector serves a project, with at most MAX_LOADED_MODELS kept loaded."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[object, ...], Detector] = OrderedDict()
        self._base: ModelSource | None = None
        if settings.model_path is not None:
            self._base = ModelSource(
                version=file_version(settings.model_path),
                weights=settings.model_path,
                kind="MODEL_PATH",
            )

    def source_for(
        self, project_id: int | None, class_names: Sequence[str], model_path: str | None = None
    ) -> ModelSource:
        """Resolution order: the tag's model_path, the project's live registry version,
        MODEL_PATH, else a randomly initialised model with the config's classes.

        The tag's model_path must name a weights file under MODELS_ROOT (LabelConfigError
        otherwise, see `weights_under_root`).
        """
        if model_path:
            path = weights_under_root(model_path, self._settings.models_root)
            try:
                version = file_version(path)
            except OSError as exc:
                raise ModelError(f"cannot read weights {path}: {exc.strerror}") from exc
            return ModelSource(version=version, weights=path, kind="model_path")
        if project_id is not None:
            live = self._registry.live(project_id)
            if live is not None:
                return ModelSource(
                    version=live.version,
                    weights=live.weights,
                    kind="registry",
                    display_threshold=live.display_threshold,
                )
        if self._base is not None:
            return self._base
        return ModelSource(
            version=f"random-init-{Path(self._settings.model_yaml).stem}",
            weights=None,
            yaml=self._settings.model_yaml,
            class_names=tuple(class_names),
            kind="random-init",
        )

    def get(self, source: ModelSource) -> Detector:
        """The loaded detector for `source`, loading it (once) if needed."""
        try:
            key = source.key
        except OSError as exc:  # the weights went away since `source_for`
            raise ModelError(f"cannot read weights {source.weights}: {exc.strerror}") from exc
        with self._lock:
            detector = self._loaded.get(key)
            if detector is not None:
                self._loaded.move_to_end(key)
                return detector
            detector = Detector(source, self._settings)
            self._loaded[key] = detector
            while len(self._loaded) > self._settings.max_loaded_models:
                self._loaded.popitem(last=False)
            return detector

    @property
    def base_source(self) -> ModelSource | None:
        return self._base
