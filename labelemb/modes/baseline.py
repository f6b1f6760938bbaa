"""Mode ``baseline``: plain cross-entropy on head 1; head 2 and E are not used."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Mode, batch_reduction


class BaselineLoss(nn.Module):
    """Cross-entropy of head 1's logits, mean over the (global) batch."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused,
                global_batch: int | None = None) -> torch.Tensor:
        if global_batch is None:
            return F.cross_entropy(logits.float(), target)
        b, _ = batch_reduction(logits.shape[0], global_batch)
        return F.cross_entropy(logits.float(), target, reduction="sum") / b


MODE = Mode(
    name="baseline", label="baseline", color="tab:blue", help="cross-entropy only",
    loss=lambda cfg, model: BaselineLoss(), role="reference",
    # SPEC §3, mean ± std over 20 runs and seconds per epoch on the authors' GPU
    paper={("cifar100", "cifar100"): (27.35, 0.40, 86.3), ("cifar10", "cifar10"): (8.66, 0.43, 35.1),
           ("cnn", "mnist"): (0.85, 0.11, 4.60)})
