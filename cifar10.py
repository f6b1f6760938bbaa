"""CIFAR-10 with the wide ResNet-8 (SPEC §2): 100 epochs at a constant lr 1e-3."""
import sys

from labelemb.cli import Recipe, main

RECIPE = Recipe(task="cifar10", arch="resnet8", datasets=("cifar10", "imagefolder"), results_dir="10_results",
                epochs=100, batch_size=128, test_batch_size=100)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
