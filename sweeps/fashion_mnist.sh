#!/usr/bin/env bash
# The committed Fashion-MNIST tables: mlp.py 20 runs per mode, cnn.py as many as time allows.
#   bash sweeps/fashion_mnist.sh mlp 20            # runs 0..19, baseline and emb alternating
#   bash sweeps/fashion_mnist.sh mlp 20 reverse    # the same from 19 down: a second process shares the work
# Resumable: finished runs are skipped, an interrupted run continues from its checkpoint, and a run
# another process is training is skipped (lock). RESULTS_DIR (default <script>_results) says where
# the records go, so a sweep can run from a frozen copy of the code while the tree changes; MODES
# (default "baseline emb") which modes run, e.g. MODES="ls ols" bash sweeps/fashion_mnist.sh mlp 5.
# Then: python3 -m labelemb.report mlp_results
set -eu
cd "$(dirname "$0")/.."
script=${1:-mlp}; runs=${2:-20}; order=${3:-forward}
results=${RESULTS_DIR:-${script}_results}
nums=$(seq 0 $((runs - 1)))
if [ "$order" = reverse ]; then nums=$(seq $((runs - 1)) -1 0); fi
for i in $nums; do
  for mode in ${MODES:-baseline emb}; do
    python3 "$script.py" --dataset fashion-mnist --mode "$mode" --num "$i" --runs 1 --quiet --results-dir "$results"
  done
done
