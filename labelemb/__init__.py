"""labelemb: Label Embedding Network (Sun et al., arXiv 1710.10393) in PyTorch.

The pieces to take into your own code are :class:`LabelEmbedding` (head 2 + the learnable
n x n label embedding) and :class:`LabelEmbLoss`; see README.md for a ten-line example.
"""
from .embedding import BaselineLoss, LabelEmbedding, LabelEmbLoss
from .errors import DataError, UserError
from .models import LabelEmbNet, MnistCNN, MnistMLP, WideResNet, build_model, resnet8_wide, resnet18_wide

__all__ = ["LabelEmbedding", "LabelEmbLoss", "BaselineLoss", "LabelEmbNet", "MnistMLP", "MnistCNN",
           "WideResNet", "resnet18_wide", "resnet8_wide", "build_model", "UserError", "DataError"]
__version__ = "0.1.0"
