"""Mode ``tfkd``: teacher-free knowledge distillation by a hand-made teacher, Tf-KD_reg (Yuan et
al., "Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020), as the
authors' ``loss_kd_regularization`` computes it (yuanli2333/Teacher-free-Knowledge-Distillation):

    teacher[y] = a, teacher[k != y] = (1 - a) / (K - 1)        (a = 0.99: the correct class's probability)
    loss = (1 - alpha) * CE(y, o1) + alpha * multiplier * KL(softmax(teacher / T) || softmax(o1))

The teacher's *probabilities* are divided by the temperature T and passed through a softmax, and
the student's output is not softened; the KL is averaged over all B x K elements (PyTorch's
``KLDivLoss()`` default, ``reduction="mean"``), not over the batch. Their settings for CIFAR-100:
ResNet-18 T = 20, alpha = 0.1, multiplier = 100 (our defaults); GoogLeNet T = 40, alpha = 0.1,
multiplier = 50; MobileNetV2 T = 40, alpha = 0.95, multiplier = 1; ShuffleNetV2 T = 10,
alpha = 0.95, multiplier = 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..bounds import Bound
from .base import Mode, Setting, batch_reduction

CORRECT_PROB, TEMPERATURE, ALPHA, MULTIPLIER = 0.99, 20.0, 0.1, 100.0


class TeacherFreeKDLoss(nn.Module):
    """Tf-KD_reg on head 1 (see the module docstring); mean over the (global) batch."""

    def __init__(self, alpha: float = ALPHA, temperature: float = TEMPERATURE, multiplier: float = MULTIPLIER,
                 correct_prob: float = CORRECT_PROB):
        super().__init__()
        for s, v in zip(SETTINGS, (alpha, temperature, multiplier, correct_prob)):
            s.check(v)  # ValueError (a ConfigError) naming the flag
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.multiplier, self.correct_prob = float(multiplier), float(correct_prob)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, temperature={self.temperature}, multiplier={self.multiplier}, "
                f"correct_prob={self.correct_prob}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *unused,
                global_batch: int | None = None) -> torch.Tensor:
        logp = logits.float().log_softmax(dim=1)
        k = logp.shape[1]
        b, _ = batch_reduction(logp.shape[0], global_batch)
        onehot = torch.zeros_like(logp).scatter_(1, target.view(-1, 1), 1.0)
        teacher = torch.lerp(torch.full_like(logp, (1 - self.correct_prob) / (k - 1)),
                             torch.full_like(logp, self.correct_prob), onehot)
        log_t = (teacher / self.temperature).log_softmax(dim=1)
        kl = (log_t.exp() * (log_t - logp)).sum() / (b * k)  # KLDivLoss(): the mean over all B x K elements
        ce = -(onehot * logp).sum() / b
        return (1 - self.alpha) * ce + self.alpha * self.multiplier * kl


SETTINGS = (
    Setting("tfkd_alpha", ALPHA, "weight of the teacher term (the authors' reg_alpha: 0.1 for ResNet-18 and "
            "GoogLeNet, 0.95 for MobileNetV2 and ShuffleNetV2)", Bound(0, 1)),
    Setting("tfkd_temperature", TEMPERATURE, "temperature T of the hand-made teacher (reg_temperature: 20 for "
            "ResNet-18, 40 for GoogLeNet and MobileNetV2, 10 for ShuffleNetV2)", Bound(0, lo_open=True), metavar="T"),
    Setting("tfkd_multiplier", MULTIPLIER, "factor of the KL term (multiplier: 100 for ResNet-18, 50 for "
            "GoogLeNet, 1 for MobileNetV2 and ShuffleNetV2)", Bound(0)),
    Setting("tfkd_correct_prob", CORRECT_PROB, "the teacher's probability of the correct class (the authors' "
            "code fixes it at 0.99)", Bound(0, 1, lo_open=True, hi_open=True), metavar="A"),
)

MODE = Mode(name="tfkd", label="Tf-KD", color="tab:purple",
            help="teacher-free KD with a hand-made teacher, Tf-KD_reg (Yuan et al. 2020)",
            loss=lambda cfg, model: TeacherFreeKDLoss(cfg.tfkd_alpha, cfg.tfkd_temperature, cfg.tfkd_multiplier,
                                                      cfg.tfkd_correct_prob),
            settings=SETTINGS)
