"""MNIST with the TensorFlow-tutorial CNN (SPEC §2): 15 epochs of 550 steps, 5 evaluations per
epoch; reported: the test error at the last evaluation."""
import sys

from labelemb.cli import main
from labelemb.config import RECIPES

RECIPE = RECIPES["cnn"]

if __name__ == "__main__":
    sys.exit(main(RECIPE))
