"""The HTTP bodies and parameters of every route, as pydantic models.

The routes validate each request against its model before the service sees it (a misfit is a
400), and /openapi.json is generated from the same models (`openapi.py`), so the description
cannot drift from what is checked. A request model only refuses what the service would refuse
anyway (its own checks keep the precise messages): fields whose meaning the service decides
(`data`, a webhook's `annotation`) are free-form here and described in words. Response models
describe what the service answers; the schemathesis run against a live server holds the
answers to them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.models.registry import MAX_PROJECT_ID


class _Request(BaseModel):
    """Strict types (no "3" for 3); fields Label Studio adds are let through unchecked.

    `extra="ignore"` rather than "allow": the route hands the original body on, and "allow"
    would re-check every unnamed key as text, refusing a key that is not valid Unicode.
    """

    model_config = ConfigDict(
        strict=True, extra="ignore", json_schema_extra={"additionalProperties": True}
    )


class _Answer(BaseModel):
    """A response body this backend writes: no field it does not list."""

    model_config = ConfigDict(extra="forbid")


class _OpenAnswer(BaseModel):
    """A response object in a format this backend does not own (Label Studio's, OpenAPI's),
    which may carry more fields."""

    model_config = ConfigDict(extra="allow")


# -- requests ---------------------------------------------------------------------------------
class ProjectObject(_Request):
    """A project as Label Studio's webhooks send it; only `id` is read."""

    id: int | str | None = None


ProjectRef = Annotated[
    int | str | ProjectObject | None,
    Field(
        description=(
            'The Label Studio project: `3`, `"3"`, `"<id>.<created timestamp>"` as /setup '
            f'and /predict send it, or `{{"id": 3}}`; ids run from 1 to {MAX_PROJECT_ID} '
            "(outside: 400). Absent or null: no project."
        )
    ),
]
LABEL_CONFIG = "The project's label config (XML): RectangleLabels over Image controls."


class SetupRequest(_Request):
    """Label Studio's `POST /setup`: connect a project, check its label config."""

    schema_: str | None = Field(None, alias="schema", description=LABEL_CONFIG)
    label_config: Any = Field(
        None, description="The label config, read only when `schema` is absent."
    )
    project: ProjectRef = None
    extra_params: Any = Field(
        None,
        description=(
            "The ML backend's extra params in Label Studio: training and queue settings for "
            "the project, as a JSON object or its JSON text (unknown keys are ignored; an "
            "empty value means none; anything else is a 400)."
        ),
    )


class Task(_Request):
    """One Label Studio task, as /predict receives it."""

    id: Any = Field(
        None,
        description=(
            "The task id (an integer). Another value is accepted: the task is then never "
            "answered from the stored ranking."
        ),
    )
    data: Any = Field(
        None,
        description=(
            "The task's data: an object holding, under each Image tag's `$value` key, an "
            "image reference (Label Studio media URL, allowed http(s) URL or local path). "
            "Anything else gives this task an empty result, not an error."
        ),
    )


class PredictRequest(_Request):
    """Label Studio's `POST /predict`."""

    tasks: list[Task] = Field(description="The tasks to predict; one result each, in order.")
    label_config: str = Field(description=LABEL_CONFIG)
    project: ProjectRef = None
    params: dict[str, Any] | None = Field(
        None,
        description=(
            "Free-form parameters from Label Studio (`context` carries an annotator's "
            "regions in interactive pre-annotation)."
        ),
    )


class WebhookEvent(_Request):
    """A Label Studio webhook event. Annotation events and START_TRAINING are stored for
    training (201); every other action is acknowledged and ignored (200)."""

    action: str = Field(min_length=1, description="The event, e.g. `ANNOTATION_CREATED`.")
    project: Any = Field(
        None,
        description=(
            "For a stored action: the project reference (see `project` of /predict); "
            "defaults to `annotation.project`."
        ),
    )
    annotation: Any = Field(
        None,
        description=(
            "ANNOTATION_CREATED/UPDATED: the annotation object (with `id`); "
            "ANNOTATIONS_CREATED: a list of them."
        ),
    )
    annotations: Any = Field(
        None, description="ANNOTATIONS_DELETED: the deleted annotations, each with `id`."
    )


class VersionsQuery(_Request):
    """The query of `GET /versions`."""

    project: str | None = Field(
        None,
        description=(
            "The project (`<id>` or `<id>.<ts>`). Label Studio sends none: then the one "
            "project holding model versions is meant (400 when several do)."
        ),
    )


class MetricsQuery(_Request):
    """The query of `GET /metrics`."""

    format: str | None = Field(
        None,
        description=(
            "`prometheus`: the Prometheus text exposition (as with `Accept: text/plain`); "
            "otherwise JSON."
        ),
    )


class ProjectPath(_Request):
    """The path parameters of `GET /analytics/{project_id}` and `GET /models/{project_id}/...`."""

    project_id: int = Field(ge=1, le=MAX_PROJECT_ID, description="The Label Studio project id.")


class LiveModelQuery(_Request):
    """The query of `GET /models/{project_id}/live` and `.../live/meta`."""

    format: Literal["pt", "onnx"] | None = Field(
        None,
        description=(
            "`pt` (default): the PyTorch weights; `onnx`: the ONNX export, present when the "
            "project exports on promotion (EXPORT_ONNX) and the export passed its check."
        ),
    )


# -- responses --------------------------------------------------------------------------------
class ErrorBody(_Answer):
    """Every error answer: a stable code and a message a user can act on."""

    error: str = Field(description="e.g. `bad_request`, `payload_too_large`, `unauthorized`.")
    message: str


class BaseModelStatus(_Answer):
    source: str = Field(description="`MODEL_PATH` or `random-init`.")
    version: str
    warning: str | None = None


class StorageOk(_Answer):
    status: Literal["ok"]
    free_bytes: int


class StorageFailing(_Answer):
    status: Literal["failing"]
    error: str
    message: str


class HealthAnswer(_Answer):
    """What serves a project with no model of its own, and whether MODEL_DIR takes writes."""

    status: Literal["UP"]
    model_class: str
    base_model: BaseModelStatus
    storage: StorageOk | StorageFailing


class SetupAnswer(_Answer):
    model_version: str = Field(description="The version that serves the project now.")


class RectangleValue(_OpenAnswer):
    """A box in percent of the image; x, y: its top-left corner."""

    x: float
    y: float
    width: float
    height: float
    rotation: float
    rectanglelabels: list[str]


class Region(_OpenAnswer):
    """One predicted RectangleLabels region."""

    from_name: str
    to_name: str
    type: Literal["rectanglelabels"]
    original_width: int
    original_height: int
    image_rotation: float
    value: RectangleValue
    score: float


class Prediction(_OpenAnswer):
    """One task's prediction. Label Studio queues the lowest `score` first."""

    result: list[Region]
    score: float
    model_version: str


NoPrediction = Annotated[
    list[Any],
    Field(
        max_length=0,
        description=(
            "No prediction: the task was not reached within PREDICT_BUDGET_SECONDS; the next "
            "request predicts it."
        ),
    ),
]


class PredictAnswer(_Answer):
    results: list[Prediction | NoPrediction] = Field(description="One entry per task, in order.")


class VersionsAnswer(_Answer):
    versions: list[str] = Field(description="The version serving now first, then older ones.")
    model_version: str


class EventRecorded(_Answer):
    status: Literal["recorded"]
    event_id: int


class EventIgnored(_Answer):
    status: Literal["ignored"]
    action: str


class LastTraining(_Answer):
    run_id: int
    state: str
    reason: str
    version: str | None
    started_at: float
    finished_at: float | None
    duration_s: float
    metrics: dict[str, Any] | None
    gate: dict[str, Any] | None
    error: Any


class ProjectStatus(_Answer):
    live_version: str | None
    queued_events: int
    last_training: LastTraining | None
    annotations: dict[str, Any] | None = Field(
        description="The annotation analytics (see /analytics/{project_id}); null if none."
    )


class MetricsAnswer(_Answer):
    projects: dict[str, ProjectStatus] = Field(description="By project id.")


class LiveModelAnswer(_Answer):
    """The live model's file as `GET /models/{project_id}/live` sends it, and what a device
    needs to run it."""

    project: int
    version: str = Field(description="The registry version, e.g. `v3`.")
    format: Literal["pt", "onnx"]
    filename: str = Field(description="`project-<id>-<version>.<format>`.")
    bytes: int
    sha256: str = Field(description="Of the file's bytes (hex); also its ETag.")
    classes: list[str] = Field(description="Class names in class-id order.")
    image_size: int | None = Field(
        description="The square input size in pixels it was trained (and ONNX-exported) at."
    )
    display_threshold: float | None = Field(
        description="The confidence from which its boxes are worth showing (calibrated)."
    )
    metrics: dict[str, Any] | None = Field(description="mAP50, mAP50-95 on the validation split.")
    created_at: float | None
    promoted_at: float | None = Field(description="Its latest promotion (Unix time).")
    onnx: dict[str, Any] | None = Field(
        description=(
            "With format `onnx`: the export's record: input and output (name, shape), the "
            "check's figures, package versions. Null for `pt`."
        )
    )


class OpenAPIDocument(_OpenAnswer):
    """This description."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
