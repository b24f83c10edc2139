"""One training run: export -> fine-tune -> evaluate -> register -> promote or reject.

Where it runs is the jobs' business (backend.jobs: a child process by default, since training
is CPU-heavy and mutates ultralytics/torch process state; in-process in tests; RQ workers).
The serving model is never touched: training uses its own YOLO instance, and a candidate
becomes live only through the registry's atomic promotion.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from backend.config import Settings
from backend.encoder.backbone import pretrain_backbone, square_images
from backend.errors import BackendError, ImageError
from backend.events import RunState
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.label_config import BoxControl, parse_label_config
from backend.models.detector import INFERENCE_IMAGE_SIZE, file_version, trained_image_size
from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.models.registry import DISPLAY_THRESHOLD, ModelRegistry
from backend.project_params import TrainParams, load_project_params
from backend.services import Services
from backend.training.calibration import calibrate
from backend.training.classes import (
    ClassChange,
    class_change,
    grow_head,
    label_aliases,
    model_class_names,
    restricted_dataset,
)
from backend.training.dataset import (
    ExportStats,
    LabeledImage,
    NotEnoughData,
    fetch_annotated_tasks,
    fetch_unlabeled_refs,
    task_to_labeled,
    write_dataset,
)
from backend.training.gate import gate_decision
from backend.training.onnx_export import export_promoted

logger = logging.getLogger(__name__)


class TrainingCancelled(BackendError):
    """The run was cancelled (`ls-active-yolo train cancel`)."""

    code = "training_cancelled"


def execute_run(services: Services, project_id: int, run_id: int) -> RunState:
    """Run a recorded training run to its end and record the outcome; returns the state.

    Events up to the run's snapshot are consumed unless the run failed (then they stay
    pending and the scheduler retries with back-off): nothing is lost either way.
    """
    settings, events = services.settings, services.events
    cancel_flag = settings.paths.project(project_id).cancel_flag
    started = time.time()
    try:
        details = _train(
            settings,
            services.registry,
            services.label_studio,
            services.images,
            project_id,
            run_id,
        )
    except TrainingCancelled:
        events.finish_run(run_id, RunState.CANCELLED, {"duration_s": time.time() - started})
        logger.warning("project=%s run=%s cancelled", project_id, run_id)
        return RunState.CANCELLED
    except NotEnoughData as exc:
        events.finish_run(run_id, RunState.SKIPPED, {"reason": str(exc)})
        logger.info("project=%s run=%s skipped: %s", project_id, run_id, exc)
        return RunState.SKIPPED
    except Exception as exc:
        logger.exception("project=%s run=%s failed", project_id, run_id)
        details = {"error": f"{type(exc).__name__}: {exc}", "duration_s": time.time() - started}
        events.finish_run(run_id, RunState.FAILED, details, consume_events=False)
        return RunState.FAILED
    finally:
        cancel_flag.unlink(missing_ok=True)
    state = RunState.PROMOTED if details["gate"]["passed"] else RunState.REJECTED
    events.finish_run(run_id, state, details, version=details["version"])
    return state


def _train(
    settings: Settings,
    registry: ModelRegistry,
    ls: LabelStudioClient,
    loader: ImageLoader,
    project_id: int,
    run_id: int,
) -> dict[str, Any]:
    params = TrainParams.resolve(settings, load_project_params(settings.paths, project_id))
    started = time.perf_counter()
    labeled, classes, stats, controls = export_labeled(ls, project_id)
    unlabeled: list[str] = []
    if pretrains_backbone(settings, registry, project_id, params):
        unlabeled = fetch_unlabeled_refs(ls.sdk, project_id, controls[0].value_key)
    exported_s = round(time.perf_counter() - started, 3)
    details = train_and_register(
        settings,
        registry,
        loader,
        project_id,
        run_id,
        labeled,
        classes,
        stats,
        params,
        unlabeled,
        aliases=label_aliases(controls),
    )
    details["durations"]["label_studio_export_s"] = exported_s
    return details


def export_labeled(
    ls: LabelStudioClient, project_id: int
) -> tuple[list[LabeledImage], list[str], ExportStats, tuple[BoxControl, ...]]:
    """The project's ground truth from Label Studio: images, class list (label config
    order), what was skipped, and the controls it was read with (those over the first image
    field)."""
    project = ls.sdk.projects.get(id=project_id)
    config = parse_label_config(project.label_config or "")
    controls = config.primary_controls
    classes = list(dict.fromkeys(label for c in controls for label in c.labels))
    stats = ExportStats()
    labeled = []
    for task in fetch_annotated_tasks(ls.sdk, project_id):
        stats.tasks += 1
        item = task_to_labeled(task, controls, classes, stats.skipped)
        if item is not None:
            labeled.append(item)
    return labeled, classes, stats, controls


def train_and_register(
    settings: Settings,
    registry: ModelRegistry,
    loader: ImageLoader,
    project_id: int,
    run_id: int,
    labeled: Sequence[LabeledImage],
    classes: list[str],
    stats: ExportStats,
    params: TrainParams,
    unlabeled: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Dataset -> fine-tune from the live model -> evaluate both -> new version -> gate.

    The one training path: Label Studio runs and the label-efficiency simulation both use it.
    `unlabeled`: image references of tasks without labels, which a first model's backbone
    pretrains on with the labeled images (`first_parent`). `aliases`: lower-cased class name
    -> label (`label_aliases`), how the live model's classes are matched to `classes` when
    they differ (else by name, ignoring case): the fine-tune then starts from the live model
    (or MODEL_PATH) with its class outputs fitted to `classes` (`grow_head`), and the gate
    compares candidate and live model on the classes both know.
    """
    prepare_ultralytics(settings.paths.ultralytics)
    set_torch_threads(settings.torch_threads)
    paths = settings.paths.project(project_id)
    run_dir = paths.run_dir(run_id)
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    data_yaml = write_dataset(
        labeled,
        loader,
        run_dir / "data",
        paths.image_cache,
        classes,
        params.val_percent,
        params.min_images,
        stats,
    )
    t1 = time.perf_counter()
    logger.info(
        "project=%s run=%s dataset: %d train / %d val images, %d boxes, skipped %s",
        project_id,
        run_id,
        stats.train,
        stats.val,
        stats.boxes,
        dict(stats.skipped),
    )

    live = registry.live(project_id)
    change = None
    if live is not None:
        change = class_change(model_class_names(live.weights), classes, aliases)
    image_size = params.image_size
    pretraining = None
    head = None
    if live is not None and change is not None and params.warm_start:
        parent, context = live.version, f"project={project_id} run={run_id} parent {live.version}"
        parent_weights, head = _fitted_parent(live.weights, change, run_dir, context)
    elif settings.model_path is not None:
        parent = f"MODEL_PATH:{file_version(settings.model_path)}"
        model_change = class_change(model_class_names(settings.model_path), classes, aliases)
        context = f"project={project_id} run={run_id} parent {parent}"
        parent_weights, head = _fitted_parent(settings.model_path, model_change, run_dir, context)
    else:
        # A first model has no trained size of its own: one chosen from the data.
        image_size = image_size or stats.scratch_image_size()
        parent_weights, parent, pretraining = first_parent(
            settings,
            loader,
            project_id,
            data_yaml,
            unlabeled,
            image_size,
            cancel_check(settings, project_id, run_id),
        )
        # From a random init the validation fitness of a few dozen images climbs late and
        # noisily: early stopping alone ended one measured run at epoch 53 (0.05 mAP shown).
        params = replace(params, min_epochs=max(params.min_epochs, SCRATCH_MIN_EPOCHS))
    t_parent = time.perf_counter()
    candidate, size, epochs = _fine_tune(
        settings, params, parent_weights, data_yaml, run_dir, project_id, run_id, stats, image_size
    )
    t2 = time.perf_counter()

    # Both models are judged on the same split at the same (the candidate's) image size.
    metrics = evaluate(
        settings, params, candidate, data_yaml, classes, run_dir / "eval-candidate", size
    )
    live_metrics = None
    if live is not None and change is not None and change.shared:
        # The live model is judged on its own classes: the same images, labels re-indexed.
        live_data = data_yaml
        if not change.unchanged:
            live_data = restricted_dataset(data_yaml, change, run_dir / "data-live")
        live_metrics = evaluate(
            settings, params, live.weights, live_data, list(change.old), run_dir / "eval-live", size
        )
    t3 = time.perf_counter()
    if metrics is None:
        raise RuntimeError("the trained candidate does not predict the project's classes")
    gate = gate_decision(metrics, live_metrics, change, params.tolerance, stats.val_boxes)
    passed, why = gate["passed"], gate["reason"]
    display = calibrate(settings, loader, candidate, data_yaml.parent, classes)
    t4 = time.perf_counter()
    details: dict[str, Any] = {
        "run_id": run_id,
        "parent": parent,
        "classes": classes,
        "params": {**asdict(params), "image_size": size},
        "epochs": epochs,  # run, and the best one kept (1-based; 0: no validation ran)
        "backbone_pretraining": pretraining,  # this run's, when it pretrained one
        "head_growth": head,  # when the classes changed: what the parent's head kept
        "data": stats.as_dict(),
        "metrics": metrics,
        "live_metrics": live_metrics,
        "gate": gate,
        DISPLAY_THRESHOLD: None if display is None else display["threshold"],
        "display_calibration": display,
        "durations": {
            "dataset_s": round(t1 - t0, 3),
            "pretrain_s": round(t_parent - t1, 3),
            "train_s": round(t2 - t_parent, 3),
            "evaluate_s": round(t3 - t2, 3),
            "calibrate_s": round(t4 - t3, 3),
        },
        "created_at": time.time(),
    }
    version = registry.create_version(project_id, candidate, details)
    details["version"] = version.version
    if passed:
        registry.promote(project_id, version.version, reason=f"run {run_id}: {why}")
        checked_on = data_yaml.parent / "images" / "val"  # before run_dir is removed
        details["onnx_export"] = export_promoted(
            settings, registry, project_id, version.version, checked_on, params.export_onnx
        )
    else:
        logger.warning(
            "project=%s run=%s %s rejected: %s", project_id, run_id, version.version, why
        )
    details["durations"]["total_s"] = round(time.perf_counter() - t0, 3)
    shutil.rmtree(run_dir, ignore_errors=True)
    return details


def _fitted_parent(
    weights: Path, change: ClassChange, run_dir: Path, context: str
) -> tuple[Path, dict[str, Any] | None]:
    """The weights a fine-tune starts from: `weights` when its classes are the dataset's,
    else a copy with its head grown to the dataset's classes (`grow_head`), and the report."""
    if change.unchanged:
        return weights, None
    grown = run_dir / "parent.pt"
    head = grow_head(weights, change, grown)
    logger.info("%s: classes changed %s; head grown by name", context, change.as_dict())
    return grown, head


# The fixed part of every training run's recipe (ultralytics arguments): one place, so the
# label-efficiency benchmark's converged recipe differs from the product's only where it says.
RECIPE: Mapping[str, Any] = MappingProxyType(
    {
        "workers": 0,
        "plots": False,
        "amp": False,
        "verbose": False,
        "seed": 0,
        "deterministic": False,
        "mosaic": 0.0,
        "optimizer": "AdamW",
        "lr0": 0.002,
        "warmup_epochs": 1,
    }
)
SCRATCH_MIN_EPOCHS = 150  # no early stop before this from a random init (scratch_recipe)


PRETRAIN_MAX_SIZE = 256  # px: the largest side a backbone pretrains at (CPU cost)
PRETRAIN_MAX_IMAGES = 1000  # unlabeled pictures a backbone pretrains on at most (a sample)


def pretrains_backbone(
    settings: Settings, registry: ModelRegistry, project_id: int, params: TrainParams
) -> bool:
    """Whether a run now starts a first model (no live model to warm-start from, no
    MODEL_PATH) whose backbone it must pretrain first (BACKBONE_PRETRAIN_SECONDS > 0)."""
    first = (registry.live(project_id) is None or not params.warm_start) and (
        settings.model_path is None
    )
    backbone = settings.paths.project(project_id).backbone(settings.model_yaml)
    return first and settings.backbone_pretrain_seconds > 0 and not backbone.is_file()


def first_parent(
    settings: Settings,
    loader: ImageLoader,
    project_id: int,
    data_yaml: Path,
    unlabeled: Sequence[str],
    image_size: int,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[Path | None, str, dict[str, Any] | None]:
    """Where a first model starts: MODEL_YAML's backbone pretrained on the project's pictures
    (`backend.encoder.backbone`), else random weights; with the pretraining's report when it
    happens now.

    The backbone is pretrained once per project and kept (`ProjectPaths.backbone`), so a
    failed first run does not pay again: on the run's training pictures (their labels unused;
    the validation split stays unseen) and up to PRETRAIN_MAX_IMAGES unlabeled ones (a seeded
    sample; unreadable ones skipped), at the first model's size (at most PRETRAIN_MAX_SIZE),
    for BACKBONE_PRETRAIN_SECONDS, stopped by what `check_cancelled` raises (a cancelled
    run). Measured: benchmarks/scratch_recipe.py.
    """
    backbone = settings.paths.project(project_id).backbone(settings.model_yaml)
    report = None
    if not backbone.is_file() and settings.backbone_pretrain_seconds > 0:
        rng = np.random.default_rng(project_id)
        refs = [unlabeled[i] for i in sorted(rng.permutation(len(unlabeled))[:PRETRAIN_MAX_IMAGES])]
        pictures = square_images(
            _pretraining_pictures(loader, data_yaml.parent / "images" / "train", refs),
            min(image_size, PRETRAIN_MAX_SIZE),
        )
        if len(pictures) >= 2:
            trained = pretrain_backbone(
                settings.model_yaml,
                pictures,
                backbone,
                seconds=settings.backbone_pretrain_seconds,
                before_step=check_cancelled,
            )
            report = asdict(trained)
            logger.info(
                "project=%s backbone of %s pretrained on %d pictures at %d px: %.0fs, "
                "%.0f epochs, loss %.2f -> %.2f",
                project_id,
                settings.model_yaml,
                trained.images,
                pictures.shape[1],
                trained.seconds,
                trained.epochs,
                trained.loss_first,
                trained.loss_last,
            )
    if backbone.is_file():
        return backbone, f"pretrained-backbone:{settings.model_yaml}", report
    return None, f"random-init:{settings.model_yaml}", None


def _pretraining_pictures(
    loader: ImageLoader, train_dir: Path, refs: Sequence[str]
) -> Iterator[npt.NDArray[np.uint8]]:
    """RGB pictures: the dataset's training images, then the unlabeled references'."""
    for path in sorted(train_dir.iterdir()):
        with Image.open(path) as image:
            yield np.asarray(image.convert("RGB"))
    for ref in refs:
        try:
            yield np.ascontiguousarray(loader.load(ref).pixels[..., ::-1])  # BGR -> RGB
        except ImageError as exc:
            logger.info("pretraining picture %s skipped: %s", ref, exc)


def cancel_check(settings: Settings, project_id: int, run_id: int) -> Callable[[], None]:
    """A check to call between training steps: raises TrainingCancelled once the run's
    project is flagged for cancelling (`ls-active-yolo train cancel`)."""
    flag = settings.paths.project(project_id).cancel_flag

    def check() -> None:
        if flag.exists():
            raise TrainingCancelled(f"project {project_id} run {run_id} cancelled")

    return check


def stop_rule(params: TrainParams, started: float, context: str) -> Callable[[Any], None]:
    """The end-of-epoch callback that overrides ultralytics' stop decision (it reads
    `trainer.stop` right after `on_fit_epoch_end`): no early stop before
    `params.min_epochs` (a tiny dataset's fitness starts flat), and a stop once
    `params.time_limit` seconds have passed since `started` (time.monotonic)."""

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch + 1 < min(params.min_epochs, trainer.epochs):
            trainer.stop = False
        if params.time_limit and time.monotonic() - started >= params.time_limit:
            if not trainer.stop:
                logger.info(
                    "%s time limit %.0fs reached after epoch %d",
                    context,
                    params.time_limit,
                    trainer.epoch + 1,
                )
            trainer.stop = True

    return on_fit_epoch_end


def _fine_tune(
    settings: Settings,
    params: TrainParams,
    parent: Path | None,
    data_yaml: Path,
    run_dir: Path,
    project_id: int,
    run_id: int,
    stats: ExportStats,
    image_size: int,
) -> tuple[Path, int, dict[str, int]]:
    """Train a fresh YOLO instance (never the serving one) from `parent`; returns the
    weights, the image size they were trained at (`image_size`, else the parent's, else one
    chosen from the data's image and object sizes) and the epochs run and kept."""
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    model = YOLO(str(parent) if parent is not None else settings.model_yaml, task="detect")
    image_size = image_size or trained_image_size(model) or stats.scratch_image_size()
    check_cancelled = cancel_check(settings, project_id, run_id)
    started = time.monotonic()

    def on_batch_end(_trainer: Any) -> None:
        check_cancelled()

    def on_epoch_end(trainer: Any) -> None:
        done = trainer.epoch + 1
        elapsed = time.monotonic() - started
        eta = elapsed / done * (trainer.epochs - done)
        loss = _total_loss(getattr(trainer, "tloss", None))
        logger.info(
            "project=%s run=%s epoch %d/%d loss=%.3f elapsed=%.0fs eta=%.0fs",
            project_id,
            run_id,
            done,
            trainer.epochs,
            loss,
            elapsed,
            eta,
        )

    early_stopping = params.patience > 0
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_train_epoch_end", on_epoch_end)
    model.add_callback(
        "on_fit_epoch_end", stop_rule(params, started, f"project={project_id} run={run_id}")
    )
    model.train(
        data=str(data_yaml),
        epochs=params.epochs,
        imgsz=image_size,
        batch=params.batch,
        device=settings.device,
        # Early stopping validates every epoch and keeps the best epoch's checkpoint;
        # without it a run writes only the last epoch's (checkpoints cost a third of a run).
        val=early_stopping,
        save=early_stopping,
        patience=params.patience if early_stopping else params.epochs + 1,
        **RECIPE,
        project=str(run_dir),
        name="train",
        exist_ok=True,
    )
    folder = run_dir / "train" / "weights"
    weights = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
    if not weights.is_file():
        raise RuntimeError(f"training finished without weights in {folder}")
    trained = model.trainer
    epochs = {"trained": int(trained.epoch) + 1, "best": int(trained.stopper.best_epoch)}
    return weights, image_size, epochs


def _total_loss(loss: Any) -> float:
    """ultralytics keeps the running loss as a tensor or a dict of named parts."""
    if loss is None:
        return float("nan")
    if isinstance(loss, dict):
        return float(sum(float(v) for v in loss.values()))
    return float(loss.sum())


def evaluate(
    settings: Settings,
    params: TrainParams,
    weights: Path,
    data_yaml: Path,
    classes: list[str],
    workdir: Path,
    image_size: int | None = None,
    conf: float | None = None,
) -> dict[str, Any] | None:
    """mAP50, mAP50-95 and per-class AP of `weights` on the dataset's validation split, at
    `image_size` (default: TrainParams' size, else the size the weights were trained at),
    over every box (default) or only those at or above `conf` (what annotators are shown).

    None when the model's classes differ from the dataset's (no fair comparison exists).
    """
    from ultralytics import YOLO  # noqa: PLC0415

    model = YOLO(str(weights), task="detect")
    names = [str(model.names[i]) for i in sorted(model.names)]
    if names != classes:
        return None
    result = model.val(
        data=str(data_yaml),
        split="val",
        imgsz=image_size or params.image_size or trained_image_size(model) or INFERENCE_IMAGE_SIZE,
        batch=params.batch,
        device=settings.device,
        workers=0,
        plots=False,
        **({} if conf is None else {"conf": conf}),
        verbose=False,
        project=str(workdir.parent),
        name=workdir.name,
        exist_ok=True,
    )
    box = result.box
    index = [int(i) for i in box.ap_class_index]
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "per_class_ap50": {classes[c]: float(box.ap50[i]) for i, c in enumerate(index)},
        "per_class_ap50_95": {classes[c]: float(box.ap[i]) for i, c in enumerate(index)},
    }
