"""The detector's backbone pretrained contrastively: only the backbone learns, and the
checkpoint is one a fine-tune can start from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.encoder.backbone import BackboneFeatures, pretrain_backbone, square_images


def test_only_the_backbone_learns_and_the_checkpoint_loads(
    tmp_path: Path, ultralytics_dir: Path
) -> None:
    from ultralytics import YOLO

    rng = np.random.default_rng(0)
    images = square_images(
        [rng.integers(0, 255, (48 + 8 * i, 80, 3), dtype=np.uint8) for i in range(10)], 64
    )
    assert images.shape == (10, 64, 64, 3) and images.dtype == np.uint8
    out = tmp_path / "backbone.pt"
    report = pretrain_backbone("yolo11n.yaml", images, out, seconds=60, seed=3, max_steps=2)
    assert report.steps == 2 and report.images == 10

    torch.manual_seed(3)  # the same random init pretrain_backbone started from
    fresh = YOLO("yolo11n.yaml", task="detect").model
    trained = YOLO(str(out), task="detect").model.float()
    depth = len(fresh.yaml["backbone"])
    assert BackboneFeatures(fresh).taps == [4, 6, depth - 1]
    before, after = fresh.state_dict(), trained.state_dict()
    moved = {
        # an AdamW step moves a weight by about its learning rate (2e-3); storing in half
        # precision, by at most 5e-4
        name: float((before[name].float() - after[name]).abs().max()) > 1e-3
        for name in before
        if name.endswith("conv.weight")
    }
    in_backbone = {name: int(name.split(".")[1]) < depth for name in moved}
    assert any(moved[n] for n in moved if in_backbone[n])
    assert not any(moved[n] for n in moved if not in_backbone[n])
