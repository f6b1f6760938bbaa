"""CIFAR-100 with the wide ResNet-18 (SPEC §2): 100 epochs, lr 1e-3 x 0.2 every 40 epochs."""
import sys

from labelemb.cli import Recipe, main

RECIPE = Recipe(task="cifar100", arch="resnet18", datasets=("cifar100", "imagefolder"), results_dir="100_results",
                epochs=100, batch_size=128, test_batch_size=100, lr_decay_every=40, lr_decay=0.2)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
