"""Where a run computes, and with which numerics."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else the CPU; otherwise the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure(device: torch.device) -> None:
    """Process-wide settings for training on ``device``."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the authors' CIFAR code
