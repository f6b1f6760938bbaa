"""The label embedding (head 2 + the learnable n x n matrix E) and its soft-training loss.

Usable in any PyTorch loop::

    emb = LabelEmbedding(feature_dim, num_classes)        # add emb.parameters() to the optimiser
    criterion = LabelEmbLoss(tau=2.0, alpha=0.9, beta=0.5)
    h = backbone(x); logits = head(h)
    teacher_logits, label_emb = emb(h, y)
    loss = criterion(logits, y, teacher_logits, label_emb)

The five terms and where their gradients go are SPEC §1; :func:`reference_terms` writes them out
literally with autograd, and the tests hold :class:`LabelEmbLoss` to it. This file imports only
torch and the standard library: copy it into your own project as it is.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

# SPEC §1: the paper's hyper-parameters
TAU, ALPHA, BETA = 2.0, 0.9, 0.5


def _check(name: str, value, ok, allowed: str) -> None:
    """ValueError naming the setting unless ``value`` is a finite number with ``ok(value)``."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy scalars too
    if not number or not math.isfinite(value) or not ok(float(value)):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


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
        # index_select, not weight[target]: the same rows, with a cheaper backward (index_add_)
        return self.head(features.detach()), self.weight.index_select(0, target)

    @torch.no_grad()
    def soft_targets(self) -> torch.Tensor:
        """softmax(E): row y is the soft distribution label y is trained towards."""
        return self.weight.float().softmax(dim=1)


class CompressedLabelEmbedding(nn.Module):
    """Head 2 and a *compressed* label embedding for many labels (``--emb-dim h``):
    ``E[y] = relu(proj(code[y]))`` with ``code`` an n x h table and ``proj`` a Linear(h -> n),
    so the embedding holds n*h + h*n + n parameters instead of n*n.

    A drop-in for :class:`LabelEmbedding`: ``forward(features, target)`` returns ``(o2, E[target])``
    and LabelEmbLoss routes gradients the same way (E's parameters learn from L_emb_o2 only).
    Initialisation: PyTorch's defaults (an h < n code cannot start at the identity).
    """

    def __init__(self, in_features: int, num_classes: int, dim: int):
        super().__init__()
        if in_features < 1 or num_classes < 2 or dim < 1:
            raise ValueError(f"need in_features >= 1, num_classes >= 2 and dim >= 1, "
                             f"got {in_features}, {num_classes}, {dim}")
        self.head = nn.Linear(in_features, num_classes)
        self.code = nn.Embedding(num_classes, dim)
        self.proj = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(features.detach()), F.relu(self.proj(self.code(target)))

    @torch.no_grad()
    def matrix(self) -> torch.Tensor:
        """The n x n matrix of all rows E[y] (n*n memory: for inspection of small label sets)."""
        return F.relu(self.proj(self.code.weight)).float()

    @torch.no_grad()
    def soft_targets(self) -> torch.Tensor:
        """softmax(E): row y is the soft distribution label y is trained towards."""
        return self.matrix().softmax(dim=1)


class _LabelEmbLossFn(torch.autograd.Function):
    """All five terms in one forward with their gradients written out by hand.

    The terms are small (B x n) tensors, so on a CPU autograd's per-op overhead would cost more
    than the arithmetic; here the forward computes the gradients as it goes and the backward
    only scales them. ``tests/test_embedding.py`` checks values and gradients against a
    literal autograd transcription of SPEC §1.

    ``b`` divides the batch means and ``world`` multiplies the batch sums: (B, 1) for one process;
    (global batch / world, world) under DDP, whose gradient average then equals the gradient of
    the loss over the global batch. The mask count of L_emb_o2 is then summed over the ranks.
    """

    @staticmethod
    def forward(ctx, o1, o2, e, target, hyper: tuple[float, float, float, float, int]):
        tau, alpha, beta, b, world = hyper
        # Written for few tensor ops (each costs a few microseconds of dispatch on a CPU, far more
        # than its arithmetic on B x n): one log_softmax and one exp for all four distributions,
        # no F.one_hot (it checks the labels' range: extra ops, and a host sync on a GPU), Python
        # scalars only where an op takes them natively or on 0-dim tensors.
        logp = torch.stack((o1, o2, e, o2 / tau)).log_softmax(dim=2)
        p1, p2, soft, q = logp.exp().unbind()  # q = softmax(o2 / tau)
        logp1, logp2, log_soft, _ = logp.unbind()
        y = target.view(-1, 1)
        onehot = torch.zeros_like(o1).scatter_(1, y, 1.0)
        # head 1: beta*CE(onehot) + (1-beta)*CE(softmax(e)) is one CE against the mixed target
        mixed = torch.lerp(soft, onehot, beta)
        # head 2: L_re = sum relu(p_y - alpha) (a *sum* over the batch, as the authors' code)
        p_y = p2.gather(1, y)
        excess = (p_y - alpha).relu_()
        # E: CE of q against e, only for samples head 2 classifies correctly (mask m)
        m = (o2.argmax(dim=1, keepdim=True) == y).to(o1.dtype)
        count = m.sum()
        if world > 1:
            torch.distributed.all_reduce(count)
            m_scaled = m * (world / (count + 1e-8))
        else:
            m_scaled = m / count.add_(1e-8)
        # the three CEs are sums of target * log-prob: L_o1 and L_o2_y over b, L_emb_o2 over the mask
        ce = torch.addcmul(mixed * logp1, onehot, logp2).sum().div_(b) + (m_scaled * q * log_soft).sum()
        loss = (excess.sum() if world == 1 else excess.sum() * world) - ce
        # gradients: d CE(t, z) / dz = softmax(z) - t; L_re adds -world * [p_y > alpha] p_y (onehot - p2)
        d2 = p2 - onehot
        g_o1 = (p1 - mixed).div_(b)
        g_o2 = torch.addcmul(d2 / b, d2, p_y * excess.sign_(), value=-world)  # sign: [p_y > alpha]
        g_e = m_scaled * (soft - q)
        ctx.save_for_backward(g_o1, g_o2, g_e)
        return loss

    @staticmethod
    def backward(ctx, grad):
        g_o1, g_o2, g_e = ctx.saved_tensors
        return grad * g_o1, grad * g_o2, grad * g_e, None, None


class LabelEmbLoss(nn.Module):
    """Total LabelEmb loss: beta*L_o1_y + (1-beta)*L_o1_emb + L_o2_y + L_emb_o2 + L_re (SPEC §1).

    ``forward(logits, target, teacher_logits, label_emb)`` takes head 1's logits o1, the integer
    labels y, head 2's logits o2 (computed on detached features) and the embedding rows E[y].
    Gradients: head 1 learns from the first two terms, head 2 from L_o2_y and L_re, E from
    L_emb_o2 only (its soft target enters head 1's loss as a constant).
    """

    def __init__(self, tau: float = TAU, alpha: float = ALPHA, beta: float = BETA):
        super().__init__()
        _check("tau", tau, lambda v: v > 0, "> 0")
        _check("alpha", alpha, lambda v: 0 < v <= 1, "in (0, 1]")
        _check("beta", beta, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.tau, self.alpha, self.beta = float(tau), float(alpha), float(beta)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
                label_emb: torch.Tensor, global_batch: int | None = None) -> torch.Tensor:
        """``global_batch``: under DDP, the batch of all ranks together (see _LabelEmbLossFn)."""
        b, world = batch_reduction(logits.shape[0], global_batch)
        return _LabelEmbLossFn.apply(logits.float(), teacher_logits.float(), label_emb.float(), target,
                                     (self.tau, self.alpha, self.beta, b, world))


class SoftTargetLoss(nn.Module):
    """``hard_weight * CE(onehot(y), o1) + (1 - hard_weight) * CE(S[y], o1)``, mean over the batch,
    for a fixed per-class soft-target matrix S (rows are distributions).

    With S = softmax(E) and ``hard_weight`` = beta it is LabelEmb's head-1 loss with E held fixed
    (``--freeze-emb``). ``matrix`` is a buffer: it moves with ``.to()`` and is part of ``state_dict()``.
    """

    def __init__(self, matrix: torch.Tensor, hard_weight: float = 0.5):
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            raise ValueError(f"matrix must be n x n with n >= 2, got shape {tuple(matrix.shape)}")
        _check("hard_weight", hard_weight, lambda v: 0 <= v <= 1, "in [0, 1]")
        self.hard_weight = float(hard_weight)
        self.register_buffer("matrix", matrix.detach().float().clone())

    def extra_repr(self) -> str:
        return f"num_classes={self.matrix.shape[0]}, hard_weight={self.hard_weight}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused,
                global_batch: int | None = None) -> torch.Tensor:
        logp = logits.float().log_softmax(dim=1)
        self._observe(logp, target)
        b, _ = batch_reduction(logits.shape[0], global_batch)
        # one CE against the mixed target w * onehot + (1 - w) * S[y]
        mixed = self.matrix.index_select(0, target).mul(1 - self.hard_weight)
        mixed.scatter_add_(1, target.view(-1, 1), torch.full_like(mixed[:, :1], self.hard_weight))
        return -(mixed * logp).sum() / b

    def _observe(self, logp: torch.Tensor, target: torch.Tensor) -> None:
        """Hook for subclasses that learn from the training outputs."""


def batch_reduction(local_batch: int, global_batch: int | None) -> tuple[float, int]:
    """(divisor of batch means, multiplier of batch sums) on this process. One process: (B, 1).
    Under DDP with ``global_batch`` the batch of all ranks: (global batch / world, world), so that
    DDP's average of the ranks' gradients is the gradient of the loss over the global batch."""
    if global_batch is None:
        return float(local_batch), 1
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return global_batch / world, world


# ----------------------------------------------------------------------------- SPEC §1, literally
def reference_terms(o1, o2, e, y, tau: float = TAU, alpha: float = ALPHA) -> dict[str, torch.Tensor]:
    """SPEC §1 term by term, with autograd (stopgrad = ``.detach()``): the readable definition that
    :class:`LabelEmbLoss` computes fast. Slow (many small ops); for checking, not for training."""
    n = o1.shape[1]
    onehot = F.one_hot(y, n).to(o1.dtype)

    def ce(p, z):  # CE(p, z) = -sum_j p_j log softmax(z)_j, per sample
        return -(p * F.log_softmax(z, dim=1)).sum(dim=1)

    l_o1_y = ce(onehot, o1).mean()
    l_o1_emb = ce(F.softmax(e, dim=1).detach(), o1).mean()
    l_o2_y = ce(onehot, o2).mean()
    m = (o2.argmax(dim=1) == y).to(o1.dtype).detach()
    l_emb_o2 = (m * ce(F.softmax(o2 / tau, dim=1).detach(), e)).sum() / (m.sum() + 1e-8)
    p_y = F.softmax(o2, dim=1).gather(1, y[:, None]).squeeze(1)
    l_re = F.relu(p_y - alpha).sum()
    return {"o1_y": l_o1_y, "o1_emb": l_o1_emb, "o2_y": l_o2_y, "emb_o2": l_emb_o2, "re": l_re}


def reference_loss(o1, o2, e, y, tau: float = TAU, alpha: float = ALPHA, beta: float = BETA) -> torch.Tensor:
    """The total of :func:`reference_terms`: beta*L_o1_y + (1-beta)*L_o1_emb + L_o2_y + L_emb_o2 + L_re."""
    t = reference_terms(o1, o2, e, y, tau, alpha)
    return beta * t["o1_y"] + (1 - beta) * t["o1_emb"] + t["o2_y"] + t["emb_o2"] + t["re"]
