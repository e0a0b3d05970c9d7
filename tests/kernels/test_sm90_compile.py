"""Every Triton kernel compiles for Hopper (sm_90a) ahead of time, and no bf16 autotune config spills.

This runs the real compiler (Triton → PTX → ptxas), not the interpreter, so it catches what only
compiled code shows — type errors the interpreter tolerates, register spills that would silently make a
config slow — on a machine without a GPU. It runs benchmarks/aot_sm90.py in a subprocess: the kernels
must be imported with TRITON_INTERPRET unset, which this test session has set.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# ptxas may spill a few bytes for bookkeeping in an otherwise register-resident kernel
MAX_SPILL_BYTES = 16
VARIANTS = {"infonce_fwd", "infonce_fwd+groups", "infonce_fwd_rows", "triplet_fwd_hardest", "triplet_fwd_all",
            "pairwise_bwd_infonce", "pairwise_bwd_infonce+groups", "pairwise_bwd_infonce_rows", "pairwise_bwd_hinge",
            "panel_grad_infonce", "panel_grad_infonce+groups", "panel_grad_hinge",
            "panel_stats_infonce", "panel_stats_hardest", "panel_stats_all",
            "wordregion_fwd_gloria", "wordregion_bwd_gloria", "wordregion_fwd_single", "wordregion_bwd_single"}


@pytest.mark.slow
def test_bf16_kernels_compile_for_sm90_without_spills(tmp_path):
    import triton

    if not (pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this triton install ships no ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out_json = tmp_path / "kernels.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aot_sm90.py"), "--dtypes", "bf16",
                          "--json", str(out_json)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["kernel"] for r in rows} == VARIANTS
    spilling = [r for r in rows if r["spill_stores"] > MAX_SPILL_BYTES]
    assert not spilling, "configs that spill on sm_90a:\n" + "\n".join(map(str, spilling))
    for r in rows:
        assert 0 < r["registers"] <= 255 and r["shared"] <= 228 * 1024, r
