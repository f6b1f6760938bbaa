#!/usr/bin/env bash
# The paper's MNIST row on the real MNIST (../shared/data/mnist), two runs at a time on two cores:
# mlp.py in four modes, 20 runs each; cnn.py in the paper's two modes, 20 runs each; then cnn.py's
# rivals, 5 runs each. Resumable: the same command skips complete runs and resumes the rest.
#   RESULTS_ROOT=$PWD nohup bash /frozen/copy/sweeps/mnist.sh > mnist.log 2>&1 &   (from a frozen copy)
# Then: python3 -m labelemb.report mlp_results cnn_results
set -u
cd "$(dirname "$0")/.."
data=$(realpath "${DATA:-../shared/data/mnist}")
root=${RESULTS_ROOT:-$PWD}
sweep() { python3 -m labelemb.sweep "$@" --jobs 2 -- --data "$data"; }
sweep mlp --modes baseline,emb,ls,ols --runs 20 --results-dir "$root/mlp_results"
sweep cnn --modes paper --runs 20 --results-dir "$root/cnn_results"
sweep cnn --modes ls,ols --runs 5 --results-dir "$root/cnn_results"
