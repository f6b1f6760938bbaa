#!/usr/bin/env bash
# The GPU check in one command (issue 12): the CUDA tests, then the benchmark on CUDA, strict fp32 and
# with --tf32. Logs and JSON go to OUT (default ./gpu_check); commit the JSON under benchmarks/.
#   bash sweeps/gpu_check.sh            # about 5-10 minutes on one H100
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python3 -m pytest -m cuda -q -ra 2>&1 | tee "$out/cuda_tests.log"
tests=${PIPESTATUS[0]}
python3 -m labelemb.bench --device cuda --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.log"
python3 -m labelemb.bench --device cuda --tf32 --task mlp,cnn --out "$out/bench_cuda_tf32.json" 2>&1 \
  | tee "$out/bench_cuda_tf32.log"
echo "CUDA tests exit code: $tests"
exit "$tests"
