#!/usr/bin/env bash
# The committed Fashion-MNIST tables: mlp.py 20 runs per mode, cnn.py as many as time allows.
# Resumable: finished runs are skipped, an interrupted run continues from its checkpoint.
# Usage: bash sweeps/fashion_mnist.sh mlp 20     (or: cnn 3)
set -eu
cd "$(dirname "$0")/.."
script=${1:-mlp}; runs=${2:-20}
for ((i = 0; i < runs; i++)); do
  for mode in baseline emb; do
    python3 "$script.py" --dataset fashion-mnist --mode "$mode" --num "$i" --runs 1 --quiet
  done
done
