#!/usr/bin/env bash
# The committed Fashion-MNIST tables: mlp.py 20 runs per mode, cnn.py as many as time allows.
# Resumable: finished runs are skipped, an interrupted run continues from its checkpoint, and a run
# another process is training is skipped (lock), so two copies (one per core) can share the work:
#   OMP_NUM_THREADS=1 bash sweeps/fashion_mnist.sh mlp 20 &
#   OMP_NUM_THREADS=1 bash sweeps/fashion_mnist.sh mlp 20 reverse &
set -eu
cd "$(dirname "$0")/.."
script=${1:-mlp}; runs=${2:-20}; order=${3:-forward}
nums=$(seq 0 $((runs - 1)))
[ "$order" = reverse ] && nums=$(seq $((runs - 1)) -1 0)
for i in $nums; do
  for mode in baseline emb; do
    python3 "$script.py" --dataset fashion-mnist --mode "$mode" --num "$i" --runs 1 --quiet
  done
done
