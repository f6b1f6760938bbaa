"""labelemb: Label Embedding Network (Sun et al., arXiv 1710.10393) in PyTorch.

The pieces to take into your own code are :class:`LabelEmbedding` (head 2 + the learnable
n x n label embedding) and :class:`LabelEmbLoss`; see README.md for a ten-line example.
Names are imported on first use, so tools that need no torch (the report) start fast.
"""
import importlib

_EXPORTS = {
    "LabelEmbedding": "embedding", "LabelEmbLoss": "embedding", "CompressedLabelEmbedding": "embedding",
    "SoftTargetLoss": "embedding", "BaselineLoss": "modes.baseline",
    "LabelSmoothingLoss": "modes.smoothing", "OnlineLabelSmoothingLoss": "modes.smoothing",
    "TeacherFreeKDLoss": "modes.tfkd", "Mode": "modes", "Setting": "modes", "register_mode": "modes",
    "LabelEmbNet": "models", "MnistMLP": "models", "MnistCNN": "models", "WideResNet": "models",
    "resnet18_wide": "models", "resnet8_wide": "models", "build_model": "models",
    "UserError": "errors", "DataError": "errors", "Config": "config", "RECIPES": "config",
    "load_imagefolder": "imagefolder",
}
_ALIASES = {"register_mode": "register"}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), _ALIASES.get(name, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
