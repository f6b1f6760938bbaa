"""Backbones of the four recipes (SPEC §2) and the two-headed network that wraps them.

Every backbone maps images to a feature vector ``h`` (the layer before the classifier) and
exposes its size as ``feature_dim``. :class:`LabelEmbNet` adds head 1 (the evaluated
classifier) and the :class:`~labelemb.embedding.LabelEmbedding` (head 2 + the n x n matrix E).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ARCHS, BN_INITS
from .embedding import CompressedLabelEmbedding, LabelEmbedding


def trunc_normal_tf_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """TensorFlow's ``tf.truncated_normal(stddev=std)``: normal, redrawn beyond two std."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _init_tf_(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_tf_(m.weight, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- MNIST models
class MnistMLP(nn.Module):
    """784 -> 500 -> 500, ReLU after each (SPEC §2, mlp.py)."""

    feature_dim = 500

    def __init__(self, in_features: int = 784, hidden: int = 500):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))


class MnistCNN(nn.Module):
    """Two 5x5 'same' convs (32, 64) with 2x2 max-pool, then 3136 -> 1024 (SPEC §2, cnn.py)."""

    feature_dim = 1024

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc = nn.Linear(7 * 7 * 64, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        # TF flattened NHWC; the order of a fixed permutation does not change the model family.
        return F.relu(self.fc(x.flatten(1)))


# --------------------------------------------------------------------------- CIFAR ResNets
class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class WideResNet(nn.Module):
    """The authors' CIFAR ResNets: BasicBlocks, stem of 128 channels, no bias in convs.

    ``blocks``/``widths``/``strides`` give one entry per stage; the final map is 4x4
    average-pooled and flattened, so ``feature_dim`` depends on the final spatial size.
    """

    def __init__(self, blocks, widths, strides, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        stem = widths[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, in_planes, size = [], stem, image_size
        for n, planes, stride in zip(blocks, widths, strides):
            stage = []
            for s in [stride] + [1] * (n - 1):
                stage.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            layers.append(nn.Sequential(*stage))
            size //= stride
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_planes * (size // 4) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return F.avg_pool2d(out, 4).flatten(1)


def resnet18_wide(in_channels: int = 3) -> WideResNet:
    """CIFAR-100 backbone: [2, 2, 2, 2] blocks of 128/256/512/1024 channels -> 1024 features."""
    return WideResNet([2, 2, 2, 2], [128, 256, 512, 1024], [1, 2, 2, 2], in_channels)


def resnet8_wide(in_channels: int = 3) -> WideResNet:
    """CIFAR-10 backbone: [1, 1, 1] blocks of 128/256/512 channels -> 512x2x2 = 2048 features."""
    return WideResNet([1, 1, 1], [128, 256, 512], [1, 2, 2], in_channels)


# --------------------------------------------------------------------------- the full network
class LabelEmbNet(nn.Module):
    """Backbone + head 1 + label embedding (head 2 on detached features and E).

    ``forward(x)`` returns the head-1 logits, which is all evaluation needs;
    ``forward(x, target)`` also returns head 2's logits and the embedding rows E[target].
    Both heads and E exist in either mode so the parameter set does not depend on it.
    ``emb_dim`` (> 0) replaces the n x n matrix by a
    :class:`~labelemb.embedding.CompressedLabelEmbedding` of width ``emb_dim``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head_std: float | None = None,
                 emb_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        if emb_dim:
            self.emb = CompressedLabelEmbedding(backbone.feature_dim, num_classes, emb_dim)
        else:
            self.emb = LabelEmbedding(backbone.feature_dim, num_classes)
        if head_std is not None:  # TF-style recipes initialise both heads from a narrow normal
            _init_tf_(self.head, head_std)
            _init_tf_(self.emb.head, head_std)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None):
        h = self.backbone(x)
        o1 = self.head(h)
        if target is None:
            return o1
        o2, e = self.emb(h, target)
        return o1, o2, e


def init_batchnorm_(model: nn.Module, how: str) -> None:
    """Every BatchNorm's bias 0 and scale ``how``: "uniform" in [0, 1), as PyTorch 0.2 (the
    authors') started it, or "ones", as PyTorch >= 1.0 does. The uniform scales are drawn from
    the global RNG, after every other weight, so the other weights are those of a "ones" model."""
    if how not in BN_INITS:
        raise ValueError(f"bn_init must be one of {', '.join(BN_INITS)}, got {how!r}")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight) if how == "uniform" else nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 28,
                emb_dim: int | None = None, bn_init: str | None = "uniform") -> LabelEmbNet:
    """The recipe's network, initialised as the authors' code did (SPEC §2).

    ``emb_dim`` (opt-in, ``--emb-dim``): a compressed label embedding of that width instead of
    the n x n matrix (its parameters are drawn from the same RNG stream, so the heads' initial
    weights then differ from a full-matrix model of the same seed). ``bn_init``: the ResNets'
    BatchNorm scales, see :func:`init_batchnorm_` (the MLP and CNN have no BatchNorm: ignored).
    """
    if arch == "mlp":
        backbone = MnistMLP(in_features=image_size * image_size * in_channels)
        _init_tf_(backbone, 0.1)
        return LabelEmbNet(backbone, num_classes, head_std=0.01, emb_dim=emb_dim)
    if arch == "cnn":
        backbone = MnistCNN()
        _init_tf_(backbone, 0.1)
        return LabelEmbNet(backbone, num_classes, head_std=0.001, emb_dim=emb_dim)
    if arch in ("resnet18", "resnet8"):
        backbone = resnet18_wide(in_channels) if arch == "resnet18" else resnet8_wide(in_channels)
        model = LabelEmbNet(backbone, num_classes, emb_dim=emb_dim)
        init_batchnorm_(model, bn_init)
        return model
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
