"""What the paper reports (SPEC §3), for the report's paper columns and figures."""
from __future__ import annotations

from .. import modes

# SPEC §3: the tasks the paper reports, by the name of its table's row
PAPER_TASKS = {("cifar100", "cifar100"): "CIFAR-100, ResNet-18", ("cifar10", "cifar10"): "CIFAR-10, ResNet-8",
               ("cnn", "mnist"): "MNIST, CNN"}
# (task, dataset) -> the row's name and {mode: (mean test error %, std, seconds per epoch)}, 20 runs each;
# the numbers are declared by the modes (labelemb.modes), beside their losses
PAPER = {key: (name, {m.name: m.paper[key] for m in modes.MODES.values() if key in m.paper})
         for key, name in PAPER_TASKS.items()}
PAPER_RUNS = 20
METRIC_WORDS = {
    "final": "final test error (test error at the last evaluation)",
    "best_val": "test error at the evaluation point with the best validation accuracy (ties go to the later point)",
}
# The CIFAR-100 labels of the paper's heatmap, in its order.
PAPER_HEATMAP_CLASSES = ("baby", "bottle", "apple", "boy", "bowl", "orange", "girl", "can", "sweet_pepper",
                         "man", "cup", "pear", "woman", "plate", "mushroom")
