"""MNIST with the 784-500-500 MLP (SPEC §2): 15 epochs of 550 steps, 5 evaluations per epoch;
reported: the test error at the evaluation with the best validation accuracy."""
import sys

from labelemb.cli import main
from labelemb.config import RECIPES

RECIPE = RECIPES["mlp"]

if __name__ == "__main__":
    sys.exit(main(RECIPE))
