"""What a training run reads from a real Label Studio: the annotated tasks it learns from and
the unlabeled tasks' pictures a first model's backbone pretrains on."""

from __future__ import annotations

from pathlib import Path

from backend.training.dataset import fetch_unlabeled_refs
from devkit.datagen import ls_regions, write_images
from devkit.local_label_studio import LocalLabelStudio
from tests.conftest import BOX_CONFIG


def test_unlabeled_refs_are_the_tasks_without_annotations(
    tmp_path: Path, label_studio: LocalLabelStudio, ls_document_root: Path
) -> None:
    files = write_images(ls_document_root / f"export-{tmp_path.name}", 5, seed=41)
    project = label_studio.create_project("e2e export", BOX_CONFIG)
    task_ids = label_studio.import_images(project, [p for p, _ in files])
    client = label_studio.client()
    for task_id, (_, sample) in zip(task_ids[:2], files, strict=False):
        client.annotations.create(id=task_id, result=ls_regions(sample))
    # a skipped task was not labeled: its picture is one more to pretrain on
    client.annotations.create(id=task_ids[2], result=[], was_cancelled=True)

    refs = fetch_unlabeled_refs(client, project, "image", page_size=2)  # pages are followed
    expected = [client.tasks.get(id=t).data["image"] for t in task_ids[2:]]
    assert sorted(refs) == sorted(expected)
    assert fetch_unlabeled_refs(client, project, "no_such_field") == []
