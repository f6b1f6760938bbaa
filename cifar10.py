"""CIFAR-10 with the wide ResNet-8 (SPEC §2): 100 epochs at a constant lr 1e-3."""
import sys

from labelemb.cli import main
from labelemb.config import RECIPES

RECIPE = RECIPES["cifar10"]

if __name__ == "__main__":
    sys.exit(main(RECIPE))
