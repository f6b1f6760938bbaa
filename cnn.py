"""MNIST with the TensorFlow-tutorial CNN (SPEC §2): 15 epochs of 550 steps, 5 evaluations per
epoch; reported: the test error at the last evaluation."""
import sys

from labelemb.cli import Recipe, main

RECIPE = Recipe(task="cnn", arch="cnn", datasets=("mnist", "fashion-mnist"), results_dir="cnn_results",
                epochs=15, batch_size=100, test_batch_size=1000, evals_per_epoch=5, drop_last=True,
                val_size=5000)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
