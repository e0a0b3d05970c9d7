#!/usr/bin/env bash
# One call per stage on a lent GPU machine (each stage fits the device tool's 10-minute limit):
#
#   bash benchmarks/gpu_session.sh check   # build cxrfast._C with CUDA, GPU tests (compiled kernels at the
#                                          # papers' shapes, compile/opcheck of the Triton path, memory bound,
#                                          # the radiograph kernel against the CPU pipeline)
#   bash benchmarks/gpu_session.sh ops     # the whole CPU-interpreted op suite (B = 1, odd shapes, poisoned
#                                          # outputs, fp16/bf16/fp32) on compiled kernels on the GPU
#   bash benchmarks/gpu_session.sh bench   # ceilings, then the benchmark suites (losses: InfoNCE/triplet;
#                                          # local: the word–region loss; radiograph: decode + resize, the
#                                          # CUDA batch end to end vs the pinned H2D bound) and the report
#   bash benchmarks/gpu_session.sh big     # B = 2^20: the slow test
#
# Extra arguments go to pytest, e.g. `bench -k infonce` to split a stage that would exceed 10 minutes;
# one suite alone: `bench -k local` (test_bench_local.py -> results/<gpu>/local.json) or
# `bench -k "not local"` (test_bench_losses.py -> losses.json). A suite that did not run keeps its file.
# The machine has torch/triton preinstalled and no internet: the project is installed without deps.
# Logs and results are copied under $OUT (when set) so they come back; the last lines are a summary.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stage="${1:?usage: gpu_session.sh check|ops|bench|big [pytest args]}"
shift
out="${OUT:-/tmp/cxrfast-gpu}"
mkdir -p "$out"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"

if ! ls cxrfast/_C*.so > /dev/null 2>&1 || [ "$stage" = check ]; then
  python -m pip install --no-build-isolation --no-deps -e . > "$out/install.log" 2>&1 \
    || { tail -40 "$out/install.log"; exit 1; }
fi
python -c "import cxrfast._ext as e; print('cxrfast._C:', e.load(), 'cuda kernels:', e.cuda_compiled())"

status=0
case "$stage" in
  check)
    python -m pytest -q -m "gpu and not slow" tests -p no:cacheprovider --junitxml="$out/gpu-tests.xml" "$@" \
      2>&1 | tee "$out/gpu-tests.log" | tail -25
    status=${PIPESTATUS[0]}
    ;;
  ops)
    python -m pytest -q -m "not gpu and not slow" tests/ops tests/reference -p no:cacheprovider "$@" \
      2>&1 | tee "$out/ops-tests.log" | tail -25
    status=${PIPESTATUS[0]}
    ;;
  bench)
    python benchmarks/ceilings.py 2>&1 | tee "$out/ceilings.log"
    python -m pytest benchmarks --benchmark-only -q -p no:cacheprovider "$@" 2>&1 | tee "$out/bench.log" | tail -25
    status=${PIPESTATUS[0]}
    python benchmarks/report.py --no-plots > "$out/report.log" 2>&1
    ;;
  big)
    python -m pytest -q -m "gpu and slow" tests -p no:cacheprovider "$@" 2>&1 | tee "$out/big.log" | tail -15
    status=${PIPESTATUS[0]}
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
cp -r benchmarks/results "$out/" 2>/dev/null
echo "stage $stage: exit $status; results and logs under $out"
exit "$status"
