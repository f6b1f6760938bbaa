"""Where a run computes, and with which numerics.

SPEC §2: the authors trained in full fp32 (2017 GPUs had no TF32). PyTorch runs CUDA
convolutions in TF32 unless told otherwise, so :func:`configure` turns TF32 off for convolutions
and matmuls unless ``--tf32`` asks for it. On a CPU there is no TF32 and nothing is changed.
"""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if available, else the CPU; otherwise the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _new_api() -> bool:
    """torch >= 2.9 sets TF32 per backend with ``fp32_precision``; mixing it with the older flags is an error."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision")


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for CUDA matmuls and cuDNN convolutions (process-wide)."""
    if _new_api():
        torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, bool]:
    """Whether TF32 is allowed right now, as torch reports it: {"matmul": ..., "conv": ...}."""
    if _new_api():
        return {"matmul": torch.backends.cuda.matmul.fp32_precision == "tf32",
                "conv": torch.backends.cudnn.conv.fp32_precision == "tf32"}
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "conv": bool(torch.backends.cudnn.allow_tf32)}


def configure(device: torch.device, tf32: bool = False) -> None:
    """Process-wide settings for training on ``device``: strict fp32 unless ``tf32`` (CUDA only)."""
    if device.type == "cuda":
        set_tf32(tf32)
        torch.backends.cudnn.benchmark = True  # as the authors' CIFAR code


def precision(device: torch.device, amp: bool) -> str:
    """The arithmetic a run on ``device`` uses, as configured now: fp32, tf32, bf16 autocast."""
    tf32 = device.type == "cuda" and any(tf32_state().values())
    base = "tf32" if tf32 else "fp32"
    return f"bf16 autocast ({base} outside it)" if amp else base
