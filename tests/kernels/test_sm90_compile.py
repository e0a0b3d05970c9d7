"""Every Triton kernel compiles for Hopper (sm_90a) ahead of time, and no bf16 autotune config spills.

This runs the real compiler (Triton → PTX → ptxas), not the interpreter, so it catches what only
compiled code shows — type errors the interpreter tolerates, register spills that would silently make a
config slow — on a machine without a GPU. The full table, all dtypes: benchmarks/aot_sm90.py.
"""

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# ptxas may spill a few bytes for bookkeeping in an otherwise register-resident kernel
MAX_SPILL_BYTES = 16


def _aot():
    if os.environ.get("TRITON_INTERPRET") == "1":
        # the module clears TRITON_INTERPRET for itself; triton is already imported in interpreter mode
        # here, which does not affect triton.compile(target=...), only launches
        pass
    spec = importlib.util.spec_from_file_location("aot_sm90", ROOT / "benchmarks" / "aot_sm90.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bf16_kernels_compile_for_sm90_without_spills():
    aot = _aot()
    if not os.path.exists(aot._ptxas()):
        pytest.skip(f"triton ships no ptxas here ({aot._ptxas()})")
    rows = aot.run(dtypes=("bf16",), progress=False)
    assert {r["kernel"] for r in rows} == {n for n, *_ in aot._variants()}
    spilling = [r for r in rows if r["spill_stores"] > MAX_SPILL_BYTES]
    assert not spilling, "configs that spill on sm_90a:\n" + "\n".join(map(str, spilling))
    for r in rows:
        assert 0 < r["registers"] <= 255 and r["shared"] <= 228 * 1024, r
