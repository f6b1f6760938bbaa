"""The label embedding (head 2 + the learnable n x n matrix E) and its soft-training loss.

Usable in any PyTorch loop::

    emb = LabelEmbedding(feature_dim, num_classes)        # add emb.parameters() to the optimiser
    criterion = LabelEmbLoss(tau=2.0, alpha=0.9, beta=0.5)
    h = backbone(x); logits = head(h)
    teacher_logits, label_emb = emb(h, y)
    loss = criterion(logits, y, teacher_logits, label_emb)

The five terms and where their gradients go are SPEC §1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LabelEmbedding(nn.Module):
    """Head 2 on *detached* features and the label embedding E (n x n, identity at start).

    ``forward(features, target)`` returns ``(o2, E[target])``. Head 2 never sends gradient
    into the backbone because it sees ``features.detach()``.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise ValueError(f"need in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}")
        self.head = nn.Linear(in_features, num_classes)
        self.weight = nn.Parameter(torch.eye(num_classes))

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(features.detach()), self.weight[target]

    @torch.no_grad()
    def soft_targets(self) -> torch.Tensor:
        """softmax(E): row y is the soft distribution label y is trained towards."""
        return self.weight.float().softmax(dim=1)


def _check_hparams(tau: float, alpha: float, beta: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be > 0 (the paper uses 2), got {tau}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] (the paper uses 0.9), got {alpha}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1] (the paper uses 0.5), got {beta}")


class LabelEmbLoss(nn.Module):
    """Total LabelEmb loss: beta*L_o1_y + (1-beta)*L_o1_emb + L_o2_y + L_emb_o2 + L_re."""

    def __init__(self, tau: float = 2.0, alpha: float = 0.9, beta: float = 0.5):
        super().__init__()
        _check_hparams(tau, alpha, beta)
        self.tau, self.alpha, self.beta = float(tau), float(alpha), float(beta)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
                label_emb: torch.Tensor) -> torch.Tensor:
        # The two head-1 terms are one cross-entropy against the mixed target
        # beta*onehot(y) + (1-beta)*softmax(e): same value and gradient, one pass.
        logits, teacher_logits, label_emb = logits.float(), teacher_logits.float(), label_emb.float()
        soft = label_emb.detach().softmax(dim=1)
        mixed = torch.lerp(soft, F.one_hot(target, logits.shape[1]).to(soft.dtype), self.beta)
        head1 = -(mixed * logits.log_softmax(dim=1)).sum(dim=1).mean()
        return head1 + self._teacher_terms(target, teacher_logits, label_emb)

    def _teacher_terms(self, target, teacher_logits, label_emb) -> torch.Tensor:
        """L_o2_y + L_emb_o2 + L_re (everything head 2 and E learn from)."""
        logp2 = teacher_logits.log_softmax(dim=1)
        p_true = logp2.gather(1, target[:, None]).squeeze(1)
        l_o2_y = -p_true.mean()
        l_re = F.relu(p_true.exp() - self.alpha).sum()  # a sum over the batch, as the authors' code
        with torch.no_grad():
            q = (teacher_logits / self.tau).softmax(dim=1)
            m = (teacher_logits.argmax(dim=1) == target).to(q.dtype)
        per_sample = -(q * label_emb.log_softmax(dim=1)).sum(dim=1)
        l_emb_o2 = (m * per_sample).sum() / (m.sum() + 1e-8)
        return l_o2_y + l_emb_o2 + l_re


class BaselineLoss(nn.Module):
    """Mode ``baseline``: plain cross-entropy on head 1; head 2 and E are not used."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)
