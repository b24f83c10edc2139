"""Every path under MODEL_DIR, named once.

MODEL_DIR is the one volume every process shares (web workers, the training child, RQ
workers): the event store, the model registry, per-project settings, caches and logs. Code
asks this module for a path instead of spelling it, so the layout can be read here whole:

    events.sqlite3                       webhook events and training runs (events.py)
    annotations.sqlite3                  the annotation ledger (analytics/ledger.py)
    trainer.lock                         flock electing the one scheduler (jobs/scheduler.py)
    .ultralytics/                        ultralytics' settings, offline (models/offline.py)
    pretrained/<name>.pt                 named weights downloaded for MODEL_PATH=<name>.pt
                                         (models/pretrained.py; only when allowed)
    pretrained.lock                      flock: one process downloads them at a time
    .health-probe                        /health's write test
    projects/<id>/LIVE                   the live version's name (models/registry.py)
    projects/<id>/history.jsonl          promotions and rollbacks
    projects/<id>/versions/<vN>/         weights.pt + meta.json, never changed once written, but
                                         for the ONNX export added after promotion: model.onnx
                                         and meta.json's `onnx_export` (training/onnx_export.py)
    projects/<id>/export.lock            flock: one ONNX export of the project at a time
    projects/<id>/.export-<token>/       an ONNX export and its check while they run
    projects/<id>/params.json            the project's extra params, saved at /setup
    projects/<id>/CANCEL                 touched to cancel the running training job
    projects/<id>/logs/run-<n>.log       a training run's log
    projects/<id>/runs/run-<n>/          a training run's dataset and scratch (removed after)
    projects/<id>/image-cache/           downloaded training images
    projects/<id>/ranking/               the stored queue, detection caches and .lock (ranking/)
    projects/<id>/embeddings/            FAISS indexes per model version (ranking/)
    projects/<id>/detect-chunks/<token>/ a ranking's detect pass shared with RQ workers
                                         (ranking/chunks.py)
    projects/<id>/encoder/               the self-supervised image encoder's versions
                                         (<eN>.pt + <eN>.json), their FAISS indexes
                                         (<eN>.faiss), the tasks' thumbnails (encoder/)
                                         and backbone-<arch>.pt, the detector backbone
                                         pretrained on the project's images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VersionPaths:
    """One model version's folder (or its staging folder while it is written)."""

    root: Path

    @property
    def weights(self) -> Path:
        return self.root / "weights.pt"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def onnx(self) -> Path:
        """The version's ONNX export, added after its promotion when it passed its check."""
        return self.root / "model.onnx"


@dataclass(frozen=True)
class ProjectPaths:
    """The paths of one project under MODEL_DIR/projects/<id>."""

    root: Path

    @property
    def live_pointer(self) -> Path:
        return self.root / "LIVE"

    @property
    def promotion_history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def version(self, name: str) -> VersionPaths:
        return VersionPaths(self.versions / name)

    def staging(self, token: str) -> VersionPaths:
        """A version being written, renamed into `versions/` when whole."""
        return VersionPaths(self.root / f".staging-{token}")

    @property
    def export_lock(self) -> Path:
        return self.root / "export.lock"

    def export_scratch(self, token: str) -> Path:
        """Where an ONNX export is written and checked before it is moved into its version."""
        return self.root / f".export-{token}"

    def export_scratches(self) -> list[Path]:
        """Every export scratch folder there is (under the export lock: left by a crash)."""
        return sorted(self.root.glob(f"{self.export_scratch('').name}*"))

    @property
    def params(self) -> Path:
        return self.root / "params.json"

    @property
    def cancel_flag(self) -> Path:
        return self.root / "CANCEL"

    def run_log(self, run_id: int) -> Path:
        return self.root / "logs" / f"run-{int(run_id)}.log"

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / f"run-{int(run_id)}"

    @property
    def image_cache(self) -> Path:
        return self.root / "image-cache"

    @property
    def ranking(self) -> Path:
        return self.root / "ranking"

    @property
    def ranking_lock(self) -> Path:
        """flock held while the project's queue is ranked (one ranking at a time)."""
        return self.ranking / ".lock"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def detect_chunks(self) -> Path:
        return self.root / "detect-chunks"

    @property
    def encoder(self) -> Path:
        return self.root / "encoder"

    @property
    def thumbnails(self) -> Path:
        return self.encoder / "thumbnails.npz"

    def backbone(self, architecture: str) -> Path:
        """The detector architecture's backbone pretrained on the project's images."""
        return self.encoder / f"backbone-{Path(architecture).stem}.pt"


@dataclass(frozen=True)
class ModelDir:
    """The paths under MODEL_DIR."""

    root: Path

    @property
    def events_db(self) -> Path:
        return self.root / "events.sqlite3"

    @property
    def annotation_ledger(self) -> Path:
        return self.root / "annotations.sqlite3"

    @property
    def trainer_lock(self) -> Path:
        return self.root / "trainer.lock"

    @property
    def ultralytics(self) -> Path:
        return self.root / ".ultralytics"

    @property
    def pretrained(self) -> Path:
        """Named pretrained weights downloaded for MODEL_PATH (ALLOW_WEIGHT_DOWNLOADS)."""
        return self.root / "pretrained"

    @property
    def pretrained_lock(self) -> Path:
        """flock held while named weights are downloaded (one download at a time)."""
        return self.root / "pretrained.lock"

    @property
    def health_probe(self) -> Path:
        return self.root / ".health-probe"

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    def project(self, project_id: int) -> ProjectPaths:
        return ProjectPaths(self.projects / str(int(project_id)))
