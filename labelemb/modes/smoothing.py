"""Soft-label rivals of LabelEmb on head 1 only, for the same models and recipe.

- ``--mode ls``, :class:`LabelSmoothingLoss`: ``(1 - eps) * CE(y, o1) + eps * CE(uniform, o1)``,
  the same as ``F.cross_entropy(o1, y, label_smoothing=eps)``.
- ``--mode ols``, :class:`OnlineLabelSmoothingLoss`: online label smoothing (Zhang et al.,
  "Delving Deep into Label Smoothing", IEEE TIP 2021). S starts uniform; during an epoch the
  softmax outputs of the training samples that head 1 classifies correctly are summed per
  class; at the end of the epoch (:meth:`~OnlineLabelSmoothingLoss.end_epoch`) each row of S
  becomes the mean of its class's sums, or uniform for a class with no correctly classified
  sample. The loss is ``0.5 * CE(y, o1) + 0.5 * CE(S[y], o1)`` with the previous epoch's S.
  As in the authors' code (github.com/zhangchbin/OnlineLabelSmoothing) but for the first epoch:
  their CIFAR script (whose 0.5 / 0.5 weights these are) starts S at zero, i.e. 0.5 * CE alone
  in the first epoch; their fine-grained one starts it uniform, as here (it also weights the
  terms 1 : 1 and stops updating a row whose largest entry reaches 0.88).

Both take ``global_batch`` like the LabelEmb criteria: under DDP the per-batch means are taken
over the global batch, so DDP's gradient average equals the one-process gradient.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..bounds import Bound
from ..embedding import SoftTargetLoss
from .base import Mode, Setting, StatefulLoss, batch_reduction

SMOOTHING = 0.1  # the usual label-smoothing epsilon (not from the paper)
SMOOTHING_SETTING = Setting("smoothing", SMOOTHING, "label-smoothing epsilon",
                            Bound(0, 1, hi_open=True, hint="0.1 is usual"), metavar="EPS")


class LabelSmoothingLoss(nn.Module):
    """``(1 - eps) * CE(onehot(y), o1) + eps * CE(uniform, o1)``, mean over the batch."""

    def __init__(self, smoothing: float = SMOOTHING):
        super().__init__()
        SMOOTHING_SETTING.check(smoothing)  # ValueError (a ConfigError) outside [0, 1)
        self.smoothing = float(smoothing)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused,
                global_batch: int | None = None) -> torch.Tensor:
        logp = logits.float().log_softmax(dim=1)
        b, _ = batch_reduction(logits.shape[0], global_batch)
        hard = -logp.gather(1, target.view(-1, 1)).sum()
        uniform = -logp.mean(dim=1).sum()  # CE(uniform, o1) = -(1/n) sum_j log p_j
        return ((1 - self.smoothing) * hard + self.smoothing * uniform) / b


class OnlineLabelSmoothingLoss(SoftTargetLoss, StatefulLoss):
    """Online label smoothing (Zhang et al., IEEE TIP 2021); see the module docstring.

    Buffers: ``matrix`` (S of the previous epoch, uniform at the start), ``sums`` (per class, the
    summed softmax outputs of this epoch's correctly classified training samples) and ``counts``
    (how many). They are the criterion's whole state: save and restore ``state_dict()`` to resume
    exactly. Outputs are collected only while the module is in training mode (the default); call
    :meth:`end_epoch` after each epoch.
    """

    def __init__(self, num_classes: int, hard_weight: float = 0.5):
        if num_classes < 2:
            raise ValueError(f"need num_classes >= 2, got {num_classes}")
        super().__init__(torch.full((num_classes, num_classes), 1.0 / num_classes), hard_weight)
        self.register_buffer("sums", torch.zeros(num_classes, num_classes))
        self.register_buffer("counts", torch.zeros(num_classes))

    @torch.no_grad()
    def _observe(self, logp: torch.Tensor, target: torch.Tensor) -> None:
        if not self.training:
            return
        p = logp.detach().exp()
        correct = (p.argmax(dim=1) == target).to(p.dtype)  # a mask, not an index: no host sync
        self.sums.index_add_(0, target, p * correct[:, None])
        self.counts.index_add_(0, target, correct)

    @torch.no_grad()
    def end_epoch(self, dist=None) -> None:
        """Rebuild S from this epoch's sums (summed over the ranks first, with ``dist``) and reset them.

        A class with no correctly classified training sample in the epoch gets the uniform row, as
        in the authors' code.
        """
        if dist is not None:
            dist.sum_(self.sums)
            dist.sum_(self.counts)
        seen = self.counts > 0
        new = self.sums / self.counts.clamp(min=1)[:, None]
        self.matrix.copy_(torch.where(seen[:, None], new, 1.0 / self.matrix.shape[1]))
        self.sums.zero_()
        self.counts.zero_()

    def checkpoint_state(self, dist=None) -> dict:
        """``state_dict()`` with the epoch's sums of all ranks (every rank must call this under DDP)."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if dist is not None:
            dist.sum_(state["sums"])
            dist.sum_(state["counts"])
        return state

    def load_checkpoint_state(self, state: dict, carry_sums: bool = True) -> None:
        """Restore :meth:`checkpoint_state`; ``carry_sums=False`` on all ranks but one under DDP,
        so that the summed-over-ranks sums are counted once."""
        self.load_state_dict(state)
        if not carry_sums:
            self.sums.zero_()
            self.counts.zero_()


LS = Mode(name="ls", label="ls", color="tab:green", help="label smoothing (--smoothing)",
          loss=lambda cfg, model: LabelSmoothingLoss(cfg.smoothing), settings=(SMOOTHING_SETTING,))
OLS = Mode(name="ols", label="ols", color="tab:orange",
           help="online label smoothing (Zhang et al. 2021)",
           loss=lambda cfg, model: OnlineLabelSmoothingLoss(model.num_classes, hard_weight=0.5))
