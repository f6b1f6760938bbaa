#!/usr/bin/env bash
# The paper's MNIST row on the real MNIST (../shared/data/mnist): cnn.py baseline and emb, 20 runs
# each; mlp.py baseline, emb, ls and ols, 20 runs each; then cnn.py ls and ols, 5 runs each.
#   bash sweeps/mnist.sh a     # worker a: the MLP runs first, then the CNN ones
#   bash sweeps/mnist.sh b     # worker b: the CNN runs first, then the MLP ones (run both at once)
# Resumable: finished runs are skipped, an interrupted run continues from its checkpoint, and a run
# another worker is training is skipped (its lock). DATA (default ../shared/data/mnist) is the data
# folder; RESULTS_ROOT (default: this checkout) holds mlp_results/ and cnn_results/, so the sweep
# can run from a frozen copy of the code while the tree changes:
#   RESULTS_ROOT=$PWD OMP_NUM_THREADS=1 nohup bash /frozen/copy/sweeps/mnist.sh a > a.log 2>&1 &
# Then: python3 -m labelemb.report mlp_results cnn_results
set -u
cd "$(dirname "$0")/.."
data=$(realpath "${DATA:-../shared/data/mnist}")
root=${RESULTS_ROOT:-$PWD}
worker=${1:-a}

one() {  # script mode num
  python3 "$1.py" --data "$data" --mode "$2" --num "$3" --runs 1 --quiet --results-dir "$root/$1_results" \
    || echo "$1 $2 #$3 exited with $?"   # a broken run does not stop the sweep
}
mlp() { for i in $(seq 0 19); do for m in baseline emb ls ols; do one mlp "$m" "$i"; done; done; }
cnn() { for i in $(seq 0 19); do for m in baseline emb; do one cnn "$m" "$i"; done; done; }
cnn_rivals() { for i in $(seq 0 4); do for m in ls ols; do one cnn "$m" "$i"; done; done; }

if [ "$worker" = a ]; then mlp; cnn; else cnn; mlp; fi
cnn_rivals
