#!/usr/bin/env bash
# One call on a lent GPU machine: build, check and time everything GPU-side, by priority, inside a budget.
#
#   bash benchmarks/gpu_session.sh [all] [--budget SECONDS]   # default: all, 420 s
#   bash benchmarks/gpu_session.sh check|ops|bench|big|train [pytest args]   # one stage alone
#
# "all" runs these steps in order, each under a time cap, and skips what no longer fits the budget:
#   1. build     cxrfast._C with CUDA (in the background while 2 runs; skipped when a built .so was carried)
#   2. triton    `pytest -m "gpu and not slow" tests/ops`: compiled kernels at the papers' shapes in
#                bf16/fp16/fp32 against float64, compile + opcheck of the Triton path, memory bounds
#   3. ext       the GPU tests of the extension: radiograph CUDA kernel vs the CPU pipeline, group_counts
#   4. headline  the issue's headline benchmarks, each with its baseline in the same run (losses + local
#                suites; B = 2^20 after B = 32768 in the same process, so tuning happens at 32768)
#   5. probe     benchmarks/gpu_probe.py: backward methods, multi-block panels, word–region profile
#   6. radiograph  the radiograph CUDA batch end to end vs the pinned H2D bound
#   7. ops       the CPU op suite (odd shapes, poisoned outputs, every dtype) on compiled kernels
#   8. rest      the remaining `make bench` GPU cases (merged into the same results files)
# Logs and results go under $OUT (when set: they come back), with the built .so and the Triton cache so
# that a second call can skip the build and most compilation; the last lines are a summary table.
# The machine has torch/triton preinstalled and no internet: the project is installed without deps;
# wheels carried in .whl/ (pydicom for the DICOM tests) are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stage="${1:-all}"
[ $# -gt 0 ] && shift
budget=420
if [ "${1:-}" = "--budget" ]; then budget="$2"; shift 2; fi
out="${OUT:-/tmp/cxrfast-gpu}"
mkdir -p "$out/logs"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
t_start=$SECONDS
summary=()

# carried from an earlier call (.gpu-carry/, git-ignored): the built extension and the Triton cache
if [ -d .gpu-carry ]; then
  cp .gpu-carry/_C*.so cxrfast/ 2>/dev/null
  if [ -f .gpu-carry/triton-cache.tar.gz ]; then
    mkdir -p "${TRITON_CACHE_DIR:-$HOME/.triton/cache}" && tar xzf .gpu-carry/triton-cache.tar.gz -C "${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
  fi
fi
if ls .whl/*.whl > /dev/null 2>&1; then
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv
  python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'device', torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
  nvcc --version | tail -1
} 2>&1 | tee "$out/logs/env.txt"

have_ext() { ls cxrfast/_C*.so > /dev/null 2>&1; }

# The package itself (pure Python, seconds); the extension is built next to it, in place.
CXRFAST_NO_EXT=1 python -m pip install -q --no-build-isolation --no-deps -e . > "$out/logs/install.log" 2>&1 \
  || { tail -20 "$out/logs/install.log"; exit 1; }
build_pid=""
start_build() {
  if have_ext && python -c "import cxrfast._ext as e; assert e.load() and e.cuda_compiled()" 2>/dev/null; then
    echo "cxrfast._C: carried build loads, with CUDA kernels" | tee "$out/logs/build.log"
  else
    rm -f cxrfast/_C*.so
    (MAX_JOBS=12 python setup.py build_ext --inplace > "$out/logs/build.log" 2>&1) &
    build_pid=$!
  fi
}
wait_build() {
  if [ -n "$build_pid" ]; then wait "$build_pid"; echo "build exit $? after $((SECONDS - t_start)) s"; build_pid=""; fi
  python -c "import cxrfast._ext as e; print('cxrfast._C:', e.load() or e.unavailable_reason(), '| cuda kernels:', e.cuda_compiled())" \
    2>&1 | tee -a "$out/logs/build.log"
}

# step NAME CAP CMD...: run under min(CAP, what is left of the budget); log to $out/logs/NAME.log
step() {
  local name=$1 cap=$2; shift 2
  local left=$((budget - (SECONDS - t_start)))
  if [ "$left" -lt 25 ]; then summary+=("$(printf '%-11s skipped (budget spent)' "$name")"); return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "=== $name (cap ${cap}s, t=$((SECONDS - t_start))s)"
  local t0=$SECONDS
  CXRFAST_FAILURE_LOG="$out/logs/failures-$name.txt" timeout -k 10 "$cap" "$@" > "$out/logs/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$out/logs/$name.log"
  local tail_line
  tail_line=$(grep -E "passed|failed|error|wrote" "$out/logs/$name.log" | tail -1 | cut -c1-70)
  [ -s "$out/logs/failures-$name.txt" ] && grep "^FAILED" "$out/logs/failures-$name.txt" | cut -c1-150
  summary+=("$(printf '%-11s exit %-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$tail_line")")
}

# -rfE: a summary of failures; CXRFAST_FAILURE_LOG (tests/conftest.py) writes each failure as it happens,
# so a step cut short by its cap still names them; -v prints each test's outcome (not combined with -q,
# which cancels it)
PYTEST=(python -m pytest -v --tb=short -rfE -p no:cacheprovider -o addopts="")
XDIST=()
python -c "import xdist" 2>/dev/null && XDIST=(-n 14)
HEADLINE='(infonce-clip-convirt-b32768-d512 and (fused or baseline)) or (infonce-clip-convirt-b1048576 and fwdbwd)'
HEADLINE+=' or (triplet-hardest-vse-b32768-d1024 and (fused or baseline)) or (local-gloria-b48 and (fused or baseline))'
HEADLINE+=' or (local-gloria-b1024 and fwdbwd) or gpu_speed_memory_target or gpu_memory_target'
BENCH=(-p no:cacheprovider -o addopts="" --benchmark-only -q --bench-merge)

case "$stage" in
  all)
    start_build
    step triton 150 "${PYTEST[@]}" "${XDIST[@]}" -m "gpu and not slow" tests/ops
    wait_build
    step ext 60 "${PYTEST[@]}" -m gpu tests/io tests/csrc
    step ceilings 30 python benchmarks/ceilings.py
    step probe 90 python benchmarks/gpu_probe.py --quick --env-out "$out/methods.env"
    [ -f "$out/methods.env" ] && source "$out/methods.env" && cat "$out/methods.env"
    step headline 200 python -m pytest benchmarks/test_bench_losses.py benchmarks/test_bench_local.py "${BENCH[@]}" \
      --bench-no-compile -k "$HEADLINE"
    step radiograph 60 python -m pytest benchmarks/test_bench_radiograph.py "${BENCH[@]}" -k "cuda or raw"
    step ops 120 "${PYTEST[@]}" "${XDIST[@]}" -m "not gpu and not slow" tests/ops tests/reference
    step rest 600 python -m pytest benchmarks/test_bench_losses.py benchmarks/test_bench_local.py "${BENCH[@]}" \
      -k "not rss_target and not ($HEADLINE)"
    python benchmarks/report.py --no-plots > "$out/logs/report.log" 2>&1
    ;;
  second)  # after fixes: the segfault's diagnosis, the GPU tests, the methods' probe, the headline cases again
    step segv 30 bash benchmarks/gpu_diag_segv.sh
    step triton 130 "${PYTEST[@]}" "${XDIST[@]}" -m "gpu and not slow" tests/ops
    step ext 30 "${PYTEST[@]}" -m gpu tests/io tests/csrc
    step probe 60 python benchmarks/gpu_probe.py --quick --env-out "$out/methods.env"
    [ -f "$out/methods.env" ] && source "$out/methods.env" && cat "$out/methods.env"
    step headline 60 python -m pytest benchmarks/test_bench_losses.py "${BENCH[@]}" --bench-no-compile \
      -k "(infonce-clip-convirt-b32768-d512 or triplet-hardest-vse-b32768-d1024) and (fused or baseline)"
    step ops 90 "${PYTEST[@]}" "${XDIST[@]}" -m "not gpu and not slow" tests/ops tests/reference
    step big 60 python -m pytest benchmarks/test_bench_losses.py "${BENCH[@]}" --bench-no-compile \
      -k "(infonce-clip-convirt-b32768-d512 and fused-fwd) or (infonce-clip-convirt-b1048576 and fused-fwdbwd)"
    ;;
  train)  # issues 13/14 on the GPU: the presets' steps (small; globallocal paper bf16 B=48 and the largest batch
          # of each step), pre-training throughput with its data-only / model-only runs, the presets' GPU tests, the demo
    # caps: 60 + 170 + 90 + 90 s after the build, inside the default budget (420 s); each bench file writes its
    # JSON after every row, so a step cut short keeps what it measured
    start_build; wait_build
    step models 60 "${PYTEST[@]}" -m gpu tests/models tests/train
    CXRFAST_BENCH_SEARCH_S=40 step presets 170 python -m pytest benchmarks/test_bench_presets.py "${BENCH[@]}" "$@"
    step pretrain 90 python -m pytest benchmarks/test_bench_pretrain.py "${BENCH[@]}" "$@"
    step demo 90 python -m cxrfast demo --out /tmp/cxrfast-demo --no-progress
    python benchmarks/report.py --no-plots > "$out/logs/report.log" 2>&1 ;;
  check)
    start_build; wait_build
    step check 600 "${PYTEST[@]}" -m "gpu and not slow" tests "$@" ;;
  ops)
    step ops 600 "${PYTEST[@]}" -m "not gpu and not slow" tests/ops tests/reference "$@" ;;
  bench)
    start_build; wait_build
    python benchmarks/ceilings.py 2>&1 | tee "$out/logs/ceilings.log"
    step bench 600 python -m pytest benchmarks "${BENCH[@]}" "$@"
    python benchmarks/report.py --no-plots > "$out/logs/report.log" 2>&1 ;;
  big)
    step big 600 "${PYTEST[@]}" -m "gpu and slow" tests "$@" ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac

# What comes back: logs + results (one archive), the built extension, the Triton cache (if small).
tar czf "$out/logs-results.tar.gz" -C "$out" logs -C "$PWD/benchmarks" results 2>/dev/null
rm -rf "$out/logs"
so=$(ls cxrfast/_C*.so 2>/dev/null | head -1)
[ -n "$so" ] && cp "$so" "$out/"
tc="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
[ -d "$tc" ] && tar czf "$out/triton-cache.tar.gz" -C "$tc" . 2>/dev/null
[ -f "$out/triton-cache.tar.gz" ] && [ "$(stat -c %s "$out/triton-cache.tar.gz")" -gt 15000000 ] && rm "$out/triton-cache.tar.gz"
echo
echo "=== summary (${stage}, $((SECONDS - t_start)) s of ${budget} s)"
printf '%s\n' "${summary[@]}"
