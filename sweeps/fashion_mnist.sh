#!/usr/bin/env bash
# The committed Fashion-MNIST tables, two runs at a time on two cores (resumable: the same command
# skips complete runs and resumes the rest):
#   bash sweeps/fashion_mnist.sh mlp 20 all     # mlp.py, runs 0..19 in every mode
#   bash sweeps/fashion_mnist.sh cnn 5 paper    # cnn.py, runs 0..4, baseline and emb
# RESULTS_DIR (default <task>_results) says where the records go, so a sweep can run from a frozen
# copy of the code while the tree changes. Then: python3 -m labelemb.report mlp_results
set -eu
cd "$(dirname "$0")/.."
task=${1:-mlp}; runs=${2:-20}; modes=${3:-paper}
python3 -m labelemb.sweep "$task" --modes "$modes" --runs "$runs" --jobs 2 \
  --results-dir "${RESULTS_DIR:-${task}_results}" -- --dataset fashion-mnist
