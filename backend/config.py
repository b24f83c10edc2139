"""Settings, read once from the environment into a frozen dataclass.

Nothing else in the backend reads `os.environ`: `create_app()` and the CLI build one
`Settings` and pass it down. Names follow the official Label Studio ML backends where one
exists (LABEL_STUDIO_URL, MODEL_DIR, BASIC_AUTH_USER, ...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from backend.errors import ConfigError
from backend.layout import ModelDir


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _get(env, name)
    return Path(raw).expanduser().resolve() if raw else None


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _get(env, name) or ""
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


_REDIS_SCHEMES = ("redis", "rediss", "unix")

# Every environment variable `Settings.from_env` reads (a test keeps this list exact).
ENV_NAMES = frozenset(
    {
        "ALLOWED_IMAGE_HOSTS",
        "ALLOW_WEIGHT_DOWNLOADS",
        "BACKBONE_PRETRAIN_SECONDS",
        "BASIC_AUTH_PASS",
        "BASIC_AUTH_USER",
        "DETECT_CONF_FLOOR",
        "DEVICE",
        "ENCODER_TRAIN_SECONDS",
        "EXPORT_ONNX",
        "HOST",
        "IMAGE_FETCH_TIMEOUT",
        "IMAGE_ROOT",
        "IMAGE_SIZE",
        "LABEL_STUDIO_API_KEY",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
        "LABEL_STUDIO_URL",
        "LOCAL_FILES_DOCUMENT_ROOT",
        "LOG_LEVEL",
        "MAX_IMAGE_BYTES",
        "MAX_IMAGE_PIXELS",
        "MAX_EVENT_BYTES",
        "MAX_LOADED_MODELS",
        "MAX_REQUEST_BYTES",
        "MAX_REQUEST_PIXELS",
        "MODELS_ROOT",
        "MODEL_DIR",
        "MODEL_PATH",
        "MODEL_SCORE_THRESHOLD",
        "MODEL_YAML",
        "PORT",
        "PREDICT_BATCH",
        "PREDICT_BUDGET_SECONDS",
        "PRETRAINED_DIR",
        "PROMOTE_TOLERANCE",
        "REDIS_URL",
        "THREADS",
        "TORCH_THREADS",
        "TRAINING",
        "TRAIN_BATCH",
        "TRAIN_EPOCHS",
        "TRAIN_EVERY",
        "TRAIN_IMAGE_SIZE",
        "TRAIN_JOB_RETRIES",
        "TRAIN_JOB_TIMEOUT",
        "TRAIN_MIN_EPOCHS",
        "TRAIN_MIN_IMAGES",
        "TRAIN_PATIENCE",
        "TRAIN_POLL_SECONDS",
        "TRAIN_QUEUE",
        "TRAIN_QUIET_SECONDS",
        "TRAIN_RETRY_SECONDS",
        "TRAIN_SUBPROCESS",
        "TRAIN_TIME_LIMIT",
        "TRAIN_VAL_PERCENT",
        "TRAIN_WARM_START",
        "WEIGHTS_URL",
        "WORKERS",
        "WORKER_HEARTBEAT_SECONDS",
    }
)

# MODEL_PATH may name ultralytics' pretrained weights instead of a file: a bare file name.
WEIGHTS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.pt")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the environment variable that sets it in the comment."""

    model_dir: Path = field(default_factory=lambda: Path("models").resolve())  # MODEL_DIR
    model_path: Path | None = None  # MODEL_PATH: base weights (.pt) used before any retraining
    model_name: str | None = None  # MODEL_PATH given as pretrained weights' name (yolo11n.pt,
    # no such file): found in PRETRAINED_DIR or MODEL_DIR/pretrained, or downloaded when
    # allowed (backend/models/pretrained.py), which sets model_path
    allow_weight_downloads: bool = False  # ALLOW_WEIGHT_DOWNLOADS: download a named MODEL_PATH
    weights_url: str | None = None  # WEIGHTS_URL: where named weights are downloaded from
    # (<WEIGHTS_URL>/<name>); unset = the GitHub release of the pinned ultralytics
    pretrained_dir: Path | None = None  # PRETRAINED_DIR: read-only folder of named weights
    # (an image's baked WEIGHTS), looked in before MODEL_DIR/pretrained
    model_yaml: str = "yolo11n.yaml"  # MODEL_YAML: architecture for a randomly initialised model
    models_root: Path | None = None  # MODELS_ROOT: the only folder a label config's
    # `model_path` may name weights in (weights are code: unpickling runs it); unset = refused
    label_studio_url: str | None = None  # LABEL_STUDIO_URL
    label_studio_api_key: str | None = field(default=None, repr=False)  # LABEL_STUDIO_API_KEY
    basic_auth_user: str | None = None  # BASIC_AUTH_USER
    basic_auth_pass: str | None = field(default=None, repr=False)  # BASIC_AUTH_PASS
    log_level: str = "INFO"  # LOG_LEVEL
    host: str = "0.0.0.0"  # HOST
    port: int = 9090  # PORT
    workers: int = 1  # WORKERS
    threads: int = 4  # THREADS
    score_threshold: float = 0.25  # MODEL_SCORE_THRESHOLD: boxes below are not shown
    detect_conf_floor: float = 0.05  # DETECT_CONF_FLOOR: boxes kept for uncertainty scoring
    image_size: int = 0  # IMAGE_SIZE: inference size in pixels; 0 = the size the model was
    # trained at (else 640): a model trained small detects poorly at a larger size
    device: str = "cpu"  # DEVICE: torch device ("cpu", "cuda:0", ...)
    torch_threads: int = 0  # TORCH_THREADS: 0 = all cores
    predict_batch: int = 8  # PREDICT_BATCH: images per forward pass
    predict_budget_seconds: float = 40.0  # PREDICT_BUDGET_SECONDS: a /predict starts no
    # detector batch after this (Label Studio waits 100 s, and then stores what came back:
    # about 15 s for 576 predictions on 2 cores): the tasks left get no prediction and are
    # asked again by the next "Retrieve predictions" (0: no budget)
    max_loaded_models: int = 4  # MAX_LOADED_MODELS: detectors kept in memory per process
    image_root: Path | None = None  # IMAGE_ROOT: local paths allowed under this folder
    local_files_root: Path | None = None  # LOCAL_FILES_DOCUMENT_ROOT: LS local storage on disk
    allowed_image_hosts: tuple[str, ...] = ()  # ALLOWED_IMAGE_HOSTS: extra hosts (names,
    # IPs or CIDR networks); "*" = any public host. Loopback, private and link-local
    # addresses are reached only when named here explicitly (or as LABEL_STUDIO_URL's host)
    max_image_bytes: int = 50 * 1024 * 1024  # MAX_IMAGE_BYTES
    max_image_pixels: int = 64_000_000  # MAX_IMAGE_PIXELS: per image, checked from the header
    max_request_pixels: int = 64_000_000  # MAX_REQUEST_PIXELS: decoded pixels one /predict
    # holds at once; a larger batch is decoded and predicted in turns
    max_request_bytes: int = 64 * 1024 * 1024  # MAX_REQUEST_BYTES: any request body (413)
    max_event_bytes: int = 4 * 1024 * 1024  # MAX_EVENT_BYTES: one webhook event (413)
    fetch_timeout: float = 15.0  # IMAGE_FETCH_TIMEOUT (seconds)
    training_enabled: bool = True  # TRAINING: "0" runs no background trainer in this process
    # TRAIN_EVERY, TRAIN_QUIET_SECONDS: changed annotations that trigger a training run, and
    # how long pending changes wait at most; neither applies to a project whose Label Studio
    # training switch is on (its START_TRAINING events drive it: jobs.scheduler)
    train_every: int = 10
    train_quiet_seconds: float = 300.0
    train_poll_seconds: float = 2.0  # TRAIN_POLL_SECONDS: how often the trainer looks for work
    train_retry_seconds: float = 60.0  # TRAIN_RETRY_SECONDS: first back-off after a failure
    train_subprocess: bool = True  # TRAIN_SUBPROCESS: run each job in a child process
    train_epochs: int = 200  # TRAIN_EPOCHS: the most epochs one run trains
    train_patience: int = 20  # TRAIN_PATIENCE: stop once the validation split's fitness has
    # not improved for this many epochs, and keep the best epoch (0: train every epoch, keep
    # the last)
    train_min_epochs: int = 0  # TRAIN_MIN_EPOCHS: no early stop before this many epochs
    train_time_limit: float = 240.0  # TRAIN_TIME_LIMIT: seconds; no epoch starts after it
    # (0: no limit)
    train_warm_start: bool = True  # TRAIN_WARM_START: fine-tune the live model; false
    # restarts every run from MODEL_PATH (or a random init)
    train_image_size: int = 0  # TRAIN_IMAGE_SIZE: 0 = the parent model's training size, or
    # for a model trained from scratch one chosen from the data (ExportStats.scratch_image_size)
    train_batch: int = 8  # TRAIN_BATCH
    train_val_percent: int = 20  # TRAIN_VAL_PERCENT: share of tasks held out for the gate
    train_min_images: int = 4  # TRAIN_MIN_IMAGES: fewer annotated images: no training
    promote_tolerance: float = 0.0  # PROMOTE_TOLERANCE: mAP50 drop always allowed (see gate_noise)
    export_onnx: bool = False  # EXPORT_ONNX: a promoted version also gets model.onnx, checked
    # against PyTorch (training/onnx_export.py); a project's `export_onnx` param overrides it
    encoder_train_seconds: float = 120.0  # ENCODER_TRAIN_SECONDS: time budget of the project
    # encoder (cold-start picks, near-duplicate groups) when a ranking needs a new one; 0: off
    backbone_pretrain_seconds: float = 300.0  # BACKBONE_PRETRAIN_SECONDS: before a project's
    # first model (no MODEL_PATH), its backbone learns the project's images this long; 0: off
    # -- scale-out (backend/distributed.py): with REDIS_URL, runs are RQ jobs for `worker`s --
    redis_url: str | None = field(default=None, repr=False)  # REDIS_URL (may hold a password)
    train_queue: str = "ls-active-yolo-training"  # TRAIN_QUEUE: the RQ queue of training jobs
    train_job_timeout: int = 86400  # TRAIN_JOB_TIMEOUT: seconds before RQ kills a training job
    train_job_retries: int = 3  # TRAIN_JOB_RETRIES: re-runs of a job whose worker died
    worker_heartbeat_seconds: int = 10  # WORKER_HEARTBEAT_SECONDS: a silent worker is dead
    # after 3 of these, and its job goes back to the queue

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raises ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        d = cls()  # the defaults, as the fields above declare them
        user, password = _get(env, "BASIC_AUTH_USER"), _get(env, "BASIC_AUTH_PASS")
        if (user is None) != (password is None):
            raise ConfigError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
        ls_url = _get(env, "LABEL_STUDIO_URL")
        if ls_url is not None:
            parts = urlsplit(ls_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"LABEL_STUDIO_URL must be an http(s) URL, got {ls_url!r}")
            ls_url = ls_url.rstrip("/")
        model_path, model_name = _model_path(env)
        weights_url = _get(env, "WEIGHTS_URL")
        if weights_url is not None:
            if urlsplit(weights_url).scheme not in ("http", "https"):
                raise ConfigError(f"WEIGHTS_URL must be an http(s) URL, got {weights_url!r}")
            weights_url = weights_url.rstrip("/")
        models_root = _path(env, "MODELS_ROOT")
        if models_root is not None and not models_root.is_dir():
            raise ConfigError(f"MODELS_ROOT {models_root} is not a folder")
        redis_url = _get(env, "REDIS_URL")
        if redis_url is not None and urlsplit(redis_url).scheme not in _REDIS_SCHEMES:
            raise ConfigError(
                "REDIS_URL must start with redis://, rediss:// or unix://, got "
                f"{urlsplit(redis_url).scheme or 'no scheme'}"
            )
        threshold = _float(env, "MODEL_SCORE_THRESHOLD", d.score_threshold, 0.0, 1.0)
        floor = _float(env, "DETECT_CONF_FLOOR", min(d.detect_conf_floor, threshold), 0.0, 1.0)
        if floor > threshold:
            raise ConfigError("DETECT_CONF_FLOOR must not exceed MODEL_SCORE_THRESHOLD")
        return cls(
            model_dir=_path(env, "MODEL_DIR") or d.model_dir,
            model_path=model_path,
            model_name=model_name,
            allow_weight_downloads=_bool(env, "ALLOW_WEIGHT_DOWNLOADS", d.allow_weight_downloads),
            weights_url=weights_url,
            pretrained_dir=_path(env, "PRETRAINED_DIR"),
            model_yaml=_get(env, "MODEL_YAML") or d.model_yaml,
            models_root=models_root,
            label_studio_url=ls_url,
            label_studio_api_key=_get(env, "LABEL_STUDIO_API_KEY"),
            basic_auth_user=user,
            basic_auth_pass=password,
            log_level=(_get(env, "LOG_LEVEL") or d.log_level).upper(),
            host=_get(env, "HOST") or d.host,
            port=_int(env, "PORT", d.port),
            workers=_int(env, "WORKERS", d.workers),
            threads=_int(env, "THREADS", d.threads),
            score_threshold=threshold,
            detect_conf_floor=floor,
            image_size=_size(env, "IMAGE_SIZE"),
            device=_get(env, "DEVICE") or d.device,
            torch_threads=_int(env, "TORCH_THREADS", d.torch_threads, minimum=0),
            predict_batch=_int(env, "PREDICT_BATCH", d.predict_batch),
            predict_budget_seconds=_float(
                env, "PREDICT_BUDGET_SECONDS", d.predict_budget_seconds, 0.0, 86400.0
            ),
            max_loaded_models=_int(env, "MAX_LOADED_MODELS", d.max_loaded_models),
            image_root=_path(env, "IMAGE_ROOT"),
            local_files_root=_path(env, "LOCAL_FILES_DOCUMENT_ROOT")
            or _path(env, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
            allowed_image_hosts=_hosts(env, "ALLOWED_IMAGE_HOSTS"),
            max_image_bytes=_int(env, "MAX_IMAGE_BYTES", d.max_image_bytes),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", d.max_image_pixels),
            max_request_pixels=_int(env, "MAX_REQUEST_PIXELS", d.max_request_pixels),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", d.max_request_bytes, minimum=1024),
            max_event_bytes=_int(env, "MAX_EVENT_BYTES", d.max_event_bytes, minimum=1024),
            fetch_timeout=_float(env, "IMAGE_FETCH_TIMEOUT", d.fetch_timeout, 0.1, 600.0),
            training_enabled=_bool(env, "TRAINING", d.training_enabled),
            train_every=_int(env, "TRAIN_EVERY", d.train_every),
            train_quiet_seconds=_float(
                env, "TRAIN_QUIET_SECONDS", d.train_quiet_seconds, 0.0, 86400.0 * 7
            ),
            train_poll_seconds=_float(
                env, "TRAIN_POLL_SECONDS", d.train_poll_seconds, 0.05, 3600.0
            ),
            train_retry_seconds=_float(
                env, "TRAIN_RETRY_SECONDS", d.train_retry_seconds, 0.0, 86400.0
            ),
            train_subprocess=_bool(env, "TRAIN_SUBPROCESS", d.train_subprocess),
            train_epochs=_int(env, "TRAIN_EPOCHS", d.train_epochs),
            train_patience=_int(env, "TRAIN_PATIENCE", d.train_patience, minimum=0),
            train_min_epochs=_int(env, "TRAIN_MIN_EPOCHS", d.train_min_epochs, minimum=0),
            train_time_limit=_float(env, "TRAIN_TIME_LIMIT", d.train_time_limit, 0.0, 86400.0 * 7),
            encoder_train_seconds=_float(
                env, "ENCODER_TRAIN_SECONDS", d.encoder_train_seconds, 0.0, 86400.0
            ),
            backbone_pretrain_seconds=_float(
                env, "BACKBONE_PRETRAIN_SECONDS", d.backbone_pretrain_seconds, 0.0, 86400.0
            ),
            train_warm_start=_bool(env, "TRAIN_WARM_START", d.train_warm_start),
            train_image_size=_size(env, "TRAIN_IMAGE_SIZE"),
            train_batch=_int(env, "TRAIN_BATCH", d.train_batch),
            train_val_percent=int(_float(env, "TRAIN_VAL_PERCENT", d.train_val_percent, 1, 90)),
            train_min_images=_int(env, "TRAIN_MIN_IMAGES", d.train_min_images, minimum=2),
            promote_tolerance=_float(env, "PROMOTE_TOLERANCE", d.promote_tolerance, 0.0, 1.0),
            export_onnx=_bool(env, "EXPORT_ONNX", d.export_onnx),
            redis_url=redis_url,
            train_queue=_get(env, "TRAIN_QUEUE") or d.train_queue,
            train_job_timeout=_int(env, "TRAIN_JOB_TIMEOUT", d.train_job_timeout, minimum=60),
            train_job_retries=_int(env, "TRAIN_JOB_RETRIES", d.train_job_retries, minimum=0),
            worker_heartbeat_seconds=_int(
                env, "WORKER_HEARTBEAT_SECONDS", d.worker_heartbeat_seconds
            ),
        )

    @property
    def paths(self) -> ModelDir:
        """Every path under MODEL_DIR."""
        return ModelDir(self.model_dir)

    def to_json(self) -> str:
        """Serialise (secrets included: only for a child process's environment)."""
        return json.dumps({f.name: _jsonable(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The inverse of `to_json`."""
        raw = json.loads(text)
        paths = {
            "model_dir",
            "model_path",
            "models_root",
            "image_root",
            "local_files_root",
            "pretrained_dir",
        }
        values = {
            k: (Path(v) if k in paths and v is not None else tuple(v) if isinstance(v, list) else v)
            for k, v in raw.items()
        }
        return cls(**values)


def _model_path(env: Mapping[str, str]) -> tuple[Path | None, str | None]:
    """MODEL_PATH as (an existing weights file, None) or, for a bare `.pt` file name that is
    no file here, (None, the name of pretrained weights); ConfigError otherwise."""
    raw = _get(env, "MODEL_PATH")
    if raw is None:
        return None, None
    path = Path(raw).expanduser().resolve()
    if path.is_file():
        return path, None
    if WEIGHTS_NAME.fullmatch(raw):
        return None, raw
    raise ConfigError(f"MODEL_PATH {path} does not exist")


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _size(env: Mapping[str, str], name: str) -> int:
    """An image size in pixels: 0 (or unset) means automatic, else at least 32."""
    value = _int(env, name, 0, minimum=0)
    if 0 < value < 32:
        raise ConfigError(f"{name} must be 0 (automatic) or >= 32, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")
