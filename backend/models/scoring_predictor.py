"""An ultralytics DetectionPredictor that also returns class-score vectors and embeddings.

YOLO detect heads output independent per-class sigmoids for each anchor; the stock predictor
keeps only the max (`conf`). Uncertainty scores (margin, entropy) need the whole vector, so
this predictor asks NMS for the kept anchor indices and gathers the vectors in the same pass.
A forward pre-hook on the detection head captures the neck's feature maps, pooled into one
image embedding for diversity: still one forward pass per image.
Imports ultralytics at import time: import it only after `prepare_ultralytics()`.
"""

from __future__ import annotations

from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import nms


class ScoringPredictor(DetectionPredictor):
    """Results gain `class_scores`, a (n_boxes, n_classes) float32 array, and `embedding`,
    a (d,) float32 L2-normalised array (d = sum of the neck levels' channels)."""

    def setup_model(self, model: Any, verbose: bool = True) -> None:
        super().setup_model(model, verbose=verbose)  # deep-copies and fuses the model
        self._neck: list[torch.Tensor] = []
        self.model.model.model[-1].register_forward_pre_hook(self._capture_neck)

    def _capture_neck(self, _module: Any, inputs: tuple[Any, ...]) -> None:
        self._neck = [t.detach() for t in inputs[0]]

    def postprocess(self, preds: Any, img: Any, orig_imgs: Any, **kwargs: Any) -> Any:
        raw = preds[0] if isinstance(preds, list | tuple) else preds
        nc = len(self.model.names)
        end2end = bool(getattr(self.model, "end2end", False))
        kept, idxs = nms.non_max_suppression(
            preds,
            self.args.conf,
            self.args.iou,
            self.args.classes,
            self.args.agnostic_nms,
            max_det=self.args.max_det,
            nc=0,
            end2end=end2end,
            return_idxs=True,
        )
        results = self.construct_results(kept, img, orig_imgs)
        for b, (result, idx) in enumerate(zip(results, idxs, strict=True)):
            if not end2end and raw.dim() == 3 and raw.shape[1] >= 4 + nc:
                scores = raw[b, 4 : 4 + nc][:, idx.long().reshape(-1)].transpose(0, 1)
            else:  # NMS-free heads keep no per-anchor vectors: one-hot the confidence
                scores = _one_hot(kept[b], nc)
            result.class_scores = scores.float().cpu().numpy()
        for result, embedding in zip(results, self._pooled_neck(len(results)), strict=True):
            result.embedding = embedding
        return results

    def _pooled_neck(self, n: int) -> Any:
        """Global-average-pool each neck level, concatenate, L2-normalise: (n, d) numpy."""
        pooled = torch.cat([t.float().mean(dim=(2, 3)) for t in self._neck], dim=1)[:n]
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.cpu().numpy().astype("float32")


def _one_hot(det: torch.Tensor, nc: int) -> torch.Tensor:
    scores = torch.zeros((det.shape[0], nc), dtype=torch.float32)
    if det.shape[0]:
        scores[torch.arange(det.shape[0]), det[:, 5].long()] = det[:, 4].float().cpu()
    return scores
