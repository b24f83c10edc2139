"""Cold start against a real Label Studio 1.23: a fresh project (no promoted model) gets a
queue whose first batch is picked on the project encoder's embeddings, and its known
near-duplicates are grouped: moved behind their original, marked in their data and listed
in the "Near-duplicates" Data Manager tab."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.predictions import DUPLICATES_VIEW_TITLE, NEAR_DUPLICATE_FIELD
from backend.models.detector import DetectorPool
from backend.models.registry import ModelRegistry
from backend.ranking.job import rank_project
from backend.ranking.queue_config import QueueConfig
from devkit.datagen import write_images
from devkit.local_label_studio import LocalLabelStudio
from tests.conftest import BOX_CONFIG

N_IMAGES = 16
COPIED = (2, 7, 11)  # images re-shot once each


def reshoot(path: Path, target: Path, seed: int) -> None:
    """A second shot of the picture: moved 3 px, a little brighter, fresh noise."""
    rng = np.random.default_rng(seed)
    pixels = np.roll(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64), 3, axis=1)
    pixels = pixels * 1.08 + 5 + rng.normal(0, 2.0, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=92)


def test_a_fresh_project_is_ranked_by_the_encoder_and_its_duplicates_grouped(
    label_studio: LocalLabelStudio, ls_document_root: Path, trained_weights: Path, tmp_path: Path
) -> None:
    project_id = label_studio.create_project("Cold start", BOX_CONFIG)
    folder = ls_document_root / f"coldstart-{uuid.uuid4().hex[:8]}"
    paths = [path for path, _ in write_images(folder, N_IMAGES, seed=23)]
    copies = []
    for i in COPIED:
        copies.append(folder / f"copy_{i}.jpg")
        reshoot(paths[i], copies[-1], seed=i)
    task_ids = label_studio.import_images(project_id, paths + copies)
    original_of = {task_ids[N_IMAGES + k]: task_ids[i] for k, i in enumerate(COPIED)}

    settings = Settings(
        model_dir=tmp_path / "models",
        model_path=trained_weights,
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.legacy_token,
        local_files_root=ls_document_root.resolve(),
        image_size=160,
        encoder_train_seconds=20,
    )
    registry = ModelRegistry(settings.model_dir)
    client = LabelStudioClient(label_studio.url, label_studio.legacy_token)
    summary = rank_project(
        settings=settings,
        detectors=DetectorPool(settings, registry),
        images=ImageLoader(settings, client),
        label_studio=client,
        registry=registry,
        project_id=project_id,
        queue=QueueConfig(batch_size=6),
    )
    assert registry.live(project_id) is None
    assert summary.strategy == "typiclust"  # not the configured hybrid: no model yet
    assert summary.encoder_version == "e1"
    assert (settings.paths.project(project_id).encoder / "e1.faiss").is_file()
    assert summary.n_ranked == N_IMAGES + len(COPIED)
    assert summary.near_duplicates == len(COPIED)
    head = set(summary.top_task_ids)
    assert not any(copy in head and original in head for copy, original in original_of.items())

    headers = label_studio.auth_headers()
    tasks = requests.get(
        f"{label_studio.url}/api/tasks",
        params={"project": project_id, "page_size": 100},
        headers=headers,
        timeout=30,
    ).json()["tasks"]
    marked = {t["id"]: t["data"].get(NEAR_DUPLICATE_FIELD) for t in tasks}
    marked = {task: of for task, of in marked.items() if of is not None}
    pairs = {frozenset((task, of)) for task, of in marked.items()}
    assert pairs == {frozenset(pair) for pair in original_of.items()}
    # The image reference is untouched, so the task still shows its picture.
    assert all(t["data"]["image"].startswith("/data/local-files/") for t in tasks)

    views = requests.get(
        f"{label_studio.url}/api/dm/views", params={"project": project_id}, headers=headers
    ).json()
    view = next(v for v in views if v["data"].get("title") == DUPLICATES_VIEW_TITLE)
    listed = requests.get(
        f"{label_studio.url}/api/tasks",
        params={"project": project_id, "view": view["id"], "page_size": 100},
        headers=headers,
        timeout=30,
    ).json()["tasks"]
    assert {t["id"] for t in listed} == set(marked)
