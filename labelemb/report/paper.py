"""What the paper reports (SPEC §3), for the report's paper columns and figures."""
from __future__ import annotations

from .records import BASE_MODE, EMB_MODE

# SPEC §3: (task, dataset) -> name and {mode: (mean test error %, std, seconds per epoch)}, 20 runs each.
PAPER = {
    ("cifar100", "cifar100"): ("CIFAR-100, ResNet-18", {BASE_MODE: (27.35, 0.40, 86.3), EMB_MODE: (23.97, 0.33, 87.8)}),
    ("cifar10", "cifar10"): ("CIFAR-10, ResNet-8", {BASE_MODE: (8.66, 0.43, 35.1), EMB_MODE: (6.97, 0.22, 42.5)}),
    ("cnn", "mnist"): ("MNIST, CNN", {BASE_MODE: (0.85, 0.11, 4.60), EMB_MODE: (0.55, 0.03, 5.46)}),
}
PAPER_RUNS = 20
METRIC_WORDS = {
    "final": "final test error (test error at the last evaluation)",
    "best_val": "test error at the evaluation point with the best validation accuracy (ties go to the later point)",
}
# The CIFAR-100 labels of the paper's heatmap, in its order.
PAPER_HEATMAP_CLASSES = ("baby", "bottle", "apple", "boy", "bowl", "orange", "girl", "can", "sweet_pepper",
                         "man", "cup", "pear", "woman", "plate", "mushroom")
