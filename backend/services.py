"""The composition root: every long-lived service of a process, built from `Settings` here
and nowhere else (the web app, the training child, RQ workers, the CLI and the ranker)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.analytics.ledger import AnnotationLedger
from backend.config import Settings
from backend.events import EventStore
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.models.detector import DetectorPool
from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.models.pretrained import resolve_named_weights
from backend.models.registry import ModelRegistry


@dataclass(frozen=True)
class Services:
    """What one process needs, built once and passed down."""

    settings: Settings
    events: EventStore
    registry: ModelRegistry
    label_studio: LabelStudioClient
    images: ImageLoader
    detectors: DetectorPool  # loads no model until asked
    ledger: AnnotationLedger


def build_services(settings: Settings) -> Services:
    """Create MODEL_DIR, set ultralytics up offline, find MODEL_PATH's named weights (a
    download only with ALLOW_WEIGHT_DOWNLOADS), and wire the services together."""
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    prepare_ultralytics(settings.paths.ultralytics)
    settings = resolve_named_weights(settings)
    set_torch_threads(settings.torch_threads)
    registry = ModelRegistry(settings.model_dir)
    label_studio = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
    return Services(
        settings=settings,
        events=EventStore(settings.paths.events_db),
        registry=registry,
        label_studio=label_studio,
        images=ImageLoader(settings, label_studio),
        detectors=DetectorPool(settings, registry),
        ledger=AnnotationLedger(settings.paths.annotation_ledger),
    )
