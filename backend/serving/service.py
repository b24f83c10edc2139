"""The ML backend's behaviour behind the routes: setup, predict, versions, webhook intake,
status.

Routes parse HTTP and call one method here; this module validates Label Studio's JSON, picks
the model for the project, runs the detector and maps the answer back to Label Studio JSON.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from backend.analytics.report import read_report
from backend.errors import BadRequest, ImageError, storage_error
from backend.labelstudio import format as ls_format
from backend.labelstudio.images import LoadedImage
from backend.labelstudio.label_config import BoxControl, ParsedConfig, parse_label_config
from backend.models.detector import Box, Detector, ImageDetections, ModelSource
from backend.models.handout import LiveFile, live_file
from backend.project_params import TrainParams, save_project_params
from backend.ranking.queue_config import KEYS as QUEUE_KEYS
from backend.ranking.queue_config import queue_config
from backend.ranking.store import precomputed_prediction, stored_queue_version
from backend.services import Services
from backend.serving.analytics_page import analytics_html
from backend.serving.assist import (
    best_overlap,
    context_regions,
    crop_window,
    innermost,
    shifted,
    user_regions,
)

logger = logging.getLogger(__name__)


class MLService:
    """One per process; built by `create_app` and shared by every request thread."""

    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.ls = services.label_studio
        self.detectors = services.detectors
        self.images = services.images
        self.events = services.events
        self.registry = services.registry
        self.ledger = services.ledger
        self._fetchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-fetch")
        self._hooks_done: set[int] = set()  # projects whose webhook carries our credentials
        self._hooks_lock = threading.Lock()

    # -- /health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Unauthenticated (Label Studio calls it before every request): says what serves and
        whether MODEL_DIR takes writes, never a file path."""
        source = self.detectors.source_for(None, ())  # what serves a project with no model
        model: dict[str, Any] = {"source": source.kind, "version": source.version}
        if source.weights is None:
            model["warning"] = (
                "no MODEL_PATH and nothing promoted yet: predictions come from a randomly "
                "initialised model until a project's first retraining"
            )
        return {
            "status": "UP",
            "model_class": "YOLO",
            "base_model": model,
            "storage": self._storage_status(),
        }

    def _storage_status(self) -> dict[str, Any]:
        """Can MODEL_DIR take a write now? (Events and settings are refused while it cannot.)"""
        probe = self.settings.paths.health_probe
        try:
            free = shutil.disk_usage(self.settings.model_dir).free
            with probe.open("wb") as handle:
                handle.write(b"\0" * 4096)
            probe.unlink()
        except OSError as exc:
            error = storage_error(exc, "writing to MODEL_DIR")
            return {"status": "failing", "error": error.code, "message": str(error)}
        return {"status": "ok", "free_bytes": free}

    # -- /setup ----------------------------------------------------------------------------
    def setup(self, body: dict[str, Any], base_url: str = "") -> dict[str, Any]:
        """Validate the project's label config and report the version that will serve it.

        `base_url` is how Label Studio reached us; with basic auth on, it locates the webhook
        Label Studio made for us, which must carry our credentials (see `_secure_webhook`).
        """
        config = self._config(body.get("schema", body.get("label_config")))
        project = self._project(body.get("project"))
        extra = body.get("extra_params") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except ValueError:
                raise BadRequest("extra_params must be a JSON object") from None
        if not isinstance(extra, dict):
            raise BadRequest("extra_params must be a JSON object")
        val_percent = TrainParams.resolve(self.settings, extra).val_percent
        control = config.controls[0]
        queue_config(extra, control.queue_attributes, val_percent=val_percent)
        if project is not None:
            keys = (*TrainParams.OVERRIDES, *QUEUE_KEYS)
            saved = {k: extra[k] for k in keys if k in extra}
            if save_project_params(self.settings.paths, project, saved):
                logger.info("project=%s extra params set: %s", project, saved)
        if project is not None and base_url:
            self._secure_webhook(project, base_url)
        source = self.detectors.source_for(project, control.labels, control.model_path)
        return {"model_version": self._answer_version(project, source.version) or source.version}

    def _answer_version(self, project: int | None, version: str) -> str | None:
        """The queue version of the project's stored ranking by model `version`, if any: what
        /setup and /predict answer with, so Label Studio files what /predict returns under the
        version its project serves (shown in the editor, and not asked for again)."""
        if project is None:
            return None
        return stored_queue_version(self.settings.model_dir, project, version)

    def _secure_webhook(self, project: int, base_url: str) -> None:
        """With basic auth on, make LS's webhook to us send credentials (in the background:
        /setup has a 3 s budget, and LS creates the webhook only after the first /setup)."""
        user, password = self.settings.basic_auth_user, self.settings.basic_auth_pass
        if user is None or not self.ls.configured:
            return
        with self._hooks_lock:
            if project in self._hooks_done:
                return
            self._hooks_done.add(project)  # one attempt at a time; undone on failure
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        url = base_url.rstrip("/") + "/webhook"

        def attempt() -> None:
            try:
                for _ in range(60):  # LS makes the webhook right after its first /setup
                    if self.ls.ensure_webhook_credentials(project, url, f"Basic {token}"):
                        return
                    time.sleep(0.5)
                logger.warning("project=%s: no Label Studio webhook to %s found", project, url)
            except Exception:
                logger.exception("project=%s: could not add credentials to the webhook", project)
            with self._hooks_lock:
                self._hooks_done.discard(project)  # try again at the next /setup

        self._fetchers.submit(attempt)

    # -- /versions -------------------------------------------------------------------------
    def versions(self, project_ref: str | None) -> dict[str, Any]:
        """The project's model versions, for Label Studio's version list.

        First the version the project is served under now, named as /setup names it (its
        queue version once ranked: the project's `model_version` in Label Studio), then the
        registry's other versions, newest first. Label Studio 1.23 sends no project with this
        request, so without `project_ref` the one project holding registry versions is
        meant (none: every project is served by the base model); with several, which one
        Label Studio asks about cannot be known, and the answer is a 400.
        """
        project = self._project(project_ref)
        if project is None:
            held = [p for p in self.registry.projects() if self.registry.versions(p)]
            if len(held) > 1:
                raise BadRequest(
                    f"{len(held)} projects hold model versions here and the request names "
                    "none: ask /versions?project=<id>"
                )
            project = held[0] if held else None
        serving = self.detectors.source_for(project, ()).version
        current = self._answer_version(project, serving) or serving
        stored = self.registry.versions(project) if project is not None else []
        older = [v.version for v in reversed(stored) if v.version != serving]
        return {"versions": [current, *older], "model_version": current}

    # -- /predict --------------------------------------------------------------------------
    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        """One result per task, in order; a task whose image fails gets an empty result.

        Tasks the ranking job already scored with the live model are answered from its
        stored predictions (same regions, and the queue score Label Studio orders by); the
        rest go through the detector. Once a ranking exists, every answer carries its queue
        version, and those others get scores above every ranked one (1 + mean confidence),
        so they queue after the ranked tasks until the next ranking places them.

        No detector batch starts after PREDICT_BUDGET_SECONDS: the tasks left are answered
        with no prediction at all (an empty list, which Label Studio stores nothing for), so
        "Retrieve predictions" on thousands of tasks never times out, and the next one (or
        the next ranking) predicts them.
        """
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("'tasks' must be a list of task objects")
        config = self._config(body.get("label_config"))
        project = self._project(body.get("project"))
        started = time.perf_counter()
        # One resolution per request: a promotion landing mid-request must not pair one
        # version's regions with another's model_version.
        sources = {
            control.from_name: self.detectors.source_for(
                project, control.labels, control.model_path
            )
            for control in config.controls
        }
        primary = config.controls[0]
        version = sources[primary.from_name].version
        queue = self._answer_version(project, version)
        drawn = context_regions(body.get("params"))
        if drawn is not None:
            return self._assist(tasks, config, sources, drawn, queue or version, project)
        answers: list[dict[str, Any] | None] = [None] * len(tasks)
        if queue is not None and len(_by_image_field(config)) == 1:
            for i, task in enumerate(tasks):
                answers[i] = self._precomputed(project, version, primary, task)  # type: ignore[arg-type]
        todo = [i for i, answer in enumerate(answers) if answer is None]
        offset = 1.0 if queue is not None else 0.0
        budget = self.settings.predict_budget_seconds
        found = self._detect(
            [tasks[i] for i in todo],
            config,
            sources,
            project,
            deadline=started + budget if budget > 0 else float("inf"),
        )
        for i, regions in zip(todo, found, strict=True):
            if regions is None:  # over budget: no prediction, so Label Studio asks again
                continue
            answer = ls_format.task_prediction(regions, queue or version)
            answer["score"] = round(answer["score"] + offset, 4)
            answers[i] = answer
        left = sum(regions is None for regions in found)
        logger.log(
            logging.WARNING if left else logging.INFO,
            "project=%s model_version=%s answered %d tasks in %.3fs: %d from the ranking, "
            "%d detected, %d left without a prediction%s",
            project,
            queue or version,
            len(tasks),
            time.perf_counter() - started,
            len(tasks) - len(todo),
            len(todo) - left,
            left,
            f" (over PREDICT_BUDGET_SECONDS={budget:g})" if left else "",
        )
        return {"results": [[] if answer is None else answer for answer in answers]}

    def _assist(
        self,
        tasks: Sequence[dict[str, Any]],
        config: ParsedConfig,
        sources: Mapping[str, ModelSource],
        drawn: Sequence[Mapping[str, Any]],
        model_version: str,
        project: int | None,
    ) -> dict[str, Any]:
        """Interactive assist (`assist`): for the one task Label Studio sends, the box the
        detector finds for each rectangle or click the annotator drew in `drawn`."""
        if len(tasks) != 1:
            raise BadRequest("an interactive /predict (params.context) takes exactly one task")
        (task,) = tasks
        started = time.perf_counter()
        controls: dict[str, BoxControl] = {}
        for control in config.controls:  # the first RectangleLabels over each image
            controls.setdefault(control.to_name, control)
        regions: list[dict[str, Any]] = []
        for to_name in dict.fromkeys(str(r.get("to_name", "")) for r in drawn):
            control = controls.get(to_name)
            if control is None:
                raise BadRequest(f"no RectangleLabels control over {to_name!r} in the label config")
            data = task.get("data")
            ref = data.get(control.value_key) if isinstance(data, dict) else None
            try:
                image = self.images.load(ref)
            except ImageError as exc:
                logger.warning("project=%s task=%s: %s", project, task.get("id"), exc)
                continue
            detector = self.detectors.get(sources[control.from_name])
            mine = [r for r in drawn if str(r.get("to_name", "")) == to_name]
            regions += self._snap(detector, control, image, mine, self.settings.score_threshold)
        logger.info(
            "project=%s task=%s assist: %d region(s) drawn, %d answered in %.3fs",
            project,
            task.get("id"),
            len(drawn),
            len(regions),
            time.perf_counter() - started,
        )
        return {"results": [ls_format.task_prediction(regions, model_version)]}

    @staticmethod
    def _snap(
        detector: Detector,
        control: BoxControl,
        image: LoadedImage,
        drawn: Sequence[Mapping[str, Any]],
        sure: float,
    ) -> list[dict[str, Any]]:
        """The detector's box for each of one image's drawn regions (none where it finds
        nothing there); a rectangle's crop without a box of confidence `sure` or more lets
        the whole image's boxes compete."""
        width, height = image.width, image.height

        @functools.cache
        def whole() -> list[Box]:  # the whole image's boxes, detected once if needed
            return list(detector.predict([image.pixels])[0].boxes)

        answers = []
        for region in user_regions(drawn, width, height):
            if region.is_point:
                box = innermost(whole(), region)
            else:
                x0, y0, x1, y1 = crop_window(region, width, height)
                crop = np.ascontiguousarray(image.pixels[y0:y1, x0:x1])
                found = shifted(detector.predict([crop])[0].boxes, x0, y0)
                box = best_overlap(found, region)
                if box is None or box.conf < sure:
                    box = best_overlap([*found, *whole()], region)
            if box is None or not 0 <= box.class_id < len(detector.names):
                continue
            model_label = control.label_for(detector.names[box.class_id])
            chosen = region.label if region.label in control.labels else None
            label = chosen or model_label
            if label is not None:
                answers.append(ls_format.box_region(box, label, control, width, height))
        return answers

    def _precomputed(
        self, project: int, version: str, control: BoxControl, task: dict[str, Any]
    ) -> dict[str, Any] | None:
        task_id, data = task.get("id"), task.get("data")
        if not isinstance(task_id, int) or isinstance(task_id, bool) or not isinstance(data, dict):
            return None
        ref = data.get(control.value_key)
        return precomputed_prediction(
            self.settings.model_dir,
            project,
            task_id,
            version,
            image_ref=ref if isinstance(ref, str) else None,
        )

    def _detect(
        self,
        tasks: Sequence[dict[str, Any]],
        config: ParsedConfig,
        sources: Mapping[str, ModelSource],
        project: int | None,
        deadline: float,
    ) -> list[list[dict[str, Any]] | None]:
        """Regions per task from the detector(s) of the config's controls (`sources` maps
        each control's name to the model resolved for this request); None for the tasks not
        reached by `deadline` (a `time.perf_counter` value) in every image field."""
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        reached = len(tasks)
        for value_key, controls in _by_image_field(config).items():
            detectors = [(c, self.detectors.get(sources[c.from_name])) for c in controls]
            reached = self._in_image_batches(
                tasks[:reached],
                value_key,
                project,
                functools.partial(self._detect_batch, detectors, regions),
                deadline,
            )
        return [found if i < reached else None for i, found in enumerate(regions)]

    def _detect_batch(
        self,
        detectors: Sequence[tuple[BoxControl, Detector]],
        regions: list[list[dict[str, Any]]],
        batch: list[tuple[int, LoadedImage]],
    ) -> None:
        """Add the regions each control's detector finds in `batch` to `regions[task index]`."""
        pixels = [image.pixels for _, image in batch]
        by_model: dict[str, list[ImageDetections]] = {}
        for control, detector in detectors:
            if detector.version not in by_model:
                by_model[detector.version] = detector.predict(pixels)
            threshold = detector.source.shown_from(
                control.score_threshold, self.settings.score_threshold
            )
            for (i, image), found in zip(batch, by_model[detector.version], strict=True):
                regions[i].extend(
                    ls_format.control_regions(
                        found.boxes, detector.names, control, image.width, image.height, threshold
                    )
                )

    def _in_image_batches(
        self,
        tasks: Sequence[dict[str, Any]],
        value_key: str,
        project: int | None,
        handle: Callable[[list[tuple[int, LoadedImage]]], None],
        deadline: float,
    ) -> int:
        """Decode the tasks' images and hand them to `handle` as (task index, image) batches
        of PREDICT_BATCH images holding at most MAX_REQUEST_PIXELS decoded pixels (a larger
        image goes alone), so a request of many large images never holds them all in memory.
        A batch's bytes are fetched concurrently. A task whose image fails is logged and left
        out. Returns how many tasks (from the first) were handled: no batch starts
        after `deadline`, but the first always does."""

        def read(task: dict[str, Any]) -> tuple[str, bytes, int] | None:
            data = task.get("data")
            ref = data.get(value_key) if isinstance(data, dict) else None
            try:
                if not isinstance(ref, str):
                    raise ImageError(f"task data has no {value_key!r} field with an image URL")
                raw = self.images.read(ref)
                width, height = self.images.image_size(raw, ref)
                return ref, raw, width * height
            except ImageError as exc:
                logger.warning("project=%s task=%s: %s", project, task.get("id"), exc)
                return None

        budget = self.settings.max_request_pixels
        window = max(1, self.settings.predict_batch)
        for start in range(0, len(tasks), window):
            if start and time.perf_counter() >= deadline:
                return start
            indices = range(start, min(start + window, len(tasks)))
            fetched = list(self._fetchers.map(read, [tasks[i] for i in indices]))
            batch: list[tuple[int, LoadedImage]] = []
            held = 0
            for i, item in zip(indices, fetched, strict=True):
                if item is None:
                    continue
                ref, raw, pixels = item
                if batch and held + pixels > budget:
                    handle(batch)
                    batch, held = [], 0
                try:
                    image = self.images.decode(raw, ref)
                except ImageError as exc:
                    logger.warning("project=%s task=%s: %s", project, tasks[i].get("id"), exc)
                    continue
                batch.append((i, image))
                held += pixels
            del fetched
            if batch:
                handle(batch)
        return len(tasks)

    # -- /webhook --------------------------------------------------------------------------
    def record_event(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and durably store a webhook event; unhandled actions are acknowledged."""
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("webhook payload needs a string 'action'")
        if action not in ls_format.HANDLED_ACTIONS:
            logger.debug("ignoring webhook action %s", action)
            return {"status": "ignored", "action": action}
        annotation = body.get("annotation")
        fallback = annotation.get("project") if isinstance(annotation, dict) else None
        project = self._project(body.get("project", fallback))
        if project is None:
            raise BadRequest(f"{action} payload has no project id")
        try:
            ids = ls_format.webhook_annotation_ids(action, body)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        event_id = self.events.append(project, action, ids, body)
        logger.info(
            "project=%s recorded %s event=%d annotations=%s", project, action, event_id, ids
        )
        return {"status": "recorded", "event_id": event_id}

    # -- /metrics --------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        pending = self.events.pending_counts()
        annotated = self.ledger.projects()
        projects = sorted(set(pending) | set(self.registry.projects()) | set(annotated))
        per_project = {}
        for pid in projects:
            live = self.registry.live(pid)
            runs = self.events.runs(pid, limit=1)
            last = None
            if runs:
                run = runs[0]
                details = run["details"]
                last = {
                    "run_id": run["id"],
                    "state": run["state"],
                    "reason": run["reason"],
                    "version": run["version"],
                    "started_at": run["started_at"],
                    "finished_at": run["finished_at"],
                    "duration_s": (run["finished_at"] or time.time()) - run["started_at"],
                    "metrics": details.get("metrics"),
                    "gate": details.get("gate"),
                    "error": details.get("error"),
                }
            per_project[str(pid)] = {
                "live_version": live.version if live else None,
                "queued_events": pending.get(pid, 0),
                "last_training": last,
                "annotations": (
                    _without_project(read_report(self.ledger, pid).as_dict())
                    if pid in annotated
                    else None
                ),
            }
        return {"projects": per_project}

    # -- /models/<id>/live -----------------------------------------------------------------
    def live_file(self, project_id: int, fmt: str) -> LiveFile:
        """The project's live model as a file to run elsewhere (see `models.handout`)."""
        return live_file(self.registry, project_id, fmt)

    def analytics_page(self, project_id: int) -> str:
        """The project's annotation analytics as an HTML page (see `analytics_page`)."""
        return analytics_html(read_report(self.ledger, project_id))

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _config(xml: object) -> ParsedConfig:
        if not isinstance(xml, str) or not xml.strip():
            raise BadRequest("request needs the project's label config ('label_config')")
        return parse_label_config(xml)

    @staticmethod
    def _project(value: object) -> int | None:
        try:
            return ls_format.project_id(value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None


def _without_project(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "project_id"}


def _by_image_field(config: ParsedConfig) -> dict[str, list[BoxControl]]:
    groups: dict[str, list[BoxControl]] = {}
    for control in config.controls:
        groups.setdefault(control.value_key, []).append(control)
    return groups
