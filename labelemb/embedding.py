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


class _LabelEmbLossFn(torch.autograd.Function):
    """All five terms in one forward with their gradients written out by hand.

    The terms are small (B x n) tensors, so on a CPU autograd's per-op overhead would cost more
    than the arithmetic; here the forward computes the gradients as it goes and the backward
    only scales them. ``tests/test_embedding.py`` checks values and gradients against a
    literal autograd transcription of SPEC §1.
    """

    @staticmethod
    def forward(ctx, o1, o2, e, target, tau: float, alpha: float, beta: float):
        b = o1.shape[0]
        onehot = F.one_hot(target, o1.shape[1]).to(o1.dtype)
        # head 1: beta*CE(onehot) + (1-beta)*CE(softmax(e)) is one CE against the mixed target
        logp1 = o1.log_softmax(dim=1)
        log_soft = e.log_softmax(dim=1)
        soft = log_soft.exp()
        mixed = torch.lerp(soft, onehot, beta)
        head1 = -(mixed * logp1).sum() / b
        g_o1 = (logp1.exp() - mixed) / b
        # head 2: L_o2_y (mean CE) + L_re (a *sum* over the batch, as the authors' code)
        logp2 = o2.log_softmax(dim=1)
        p2 = logp2.exp()
        logp_y = logp2.gather(1, target[:, None])
        p_y = logp_y.exp()
        over = (p_y > alpha).to(o2.dtype)
        l_head2 = -logp_y.sum() / b + ((p_y - alpha) * over).sum()
        g_o2 = (p2 - onehot) / b + (over * p_y) * (onehot - p2)
        # E: CE of softmax(o2 / tau) against e, only for samples head 2 classifies correctly
        q = (o2 / tau).softmax(dim=1)
        m = (o2.argmax(dim=1) == target).to(e.dtype)[:, None]
        denom = m.sum() + 1e-8
        l_emb = -(m * q * log_soft).sum() / denom
        g_e = m * (soft - q) / denom
        ctx.save_for_backward(g_o1, g_o2, g_e)
        return head1 + l_head2 + l_emb

    @staticmethod
    def backward(ctx, grad):
        g_o1, g_o2, g_e = ctx.saved_tensors
        return grad * g_o1, grad * g_o2, grad * g_e, None, None, None, None


class LabelEmbLoss(nn.Module):
    """Total LabelEmb loss: beta*L_o1_y + (1-beta)*L_o1_emb + L_o2_y + L_emb_o2 + L_re (SPEC §1).

    ``forward(logits, target, teacher_logits, label_emb)`` takes head 1's logits o1, the integer
    labels y, head 2's logits o2 (computed on detached features) and the embedding rows E[y].
    Gradients: head 1 learns from the first two terms, head 2 from L_o2_y and L_re, E from
    L_emb_o2 only (its soft target enters head 1's loss as a constant).
    """

    def __init__(self, tau: float = 2.0, alpha: float = 0.9, beta: float = 0.5):
        super().__init__()
        _check_hparams(tau, alpha, beta)
        self.tau, self.alpha, self.beta = float(tau), float(alpha), float(beta)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
                label_emb: torch.Tensor) -> torch.Tensor:
        return _LabelEmbLossFn.apply(logits.float(), teacher_logits.float(), label_emb.float(), target,
                                     self.tau, self.alpha, self.beta)


class BaselineLoss(nn.Module):
    """Mode ``baseline``: plain cross-entropy on head 1; head 2 and E are not used."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)
