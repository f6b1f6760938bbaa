"""CIFAR-100 with the wide ResNet-18 (SPEC §2): 100 epochs, lr 1e-3 x 0.2 every 40 epochs."""
import sys

from labelemb.cli import main
from labelemb.config import RECIPES

RECIPE = RECIPES["cifar100"]

if __name__ == "__main__":
    sys.exit(main(RECIPE))
