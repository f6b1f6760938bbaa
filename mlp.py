"""MNIST with the 784-500-500 MLP (SPEC §2): 15 epochs of 550 steps, 5 evaluations per epoch;
reported: the test error at the evaluation with the best validation accuracy."""
import sys

from labelemb.cli import Recipe, main

RECIPE = Recipe(task="mlp", arch="mlp", datasets=("mnist", "fashion-mnist"), results_dir="mlp_results",
                epochs=15, batch_size=100, test_batch_size=1000, evals_per_epoch=5, drop_last=True,
                val_size=5000, reported="best_val")

if __name__ == "__main__":
    sys.exit(main(RECIPE))
