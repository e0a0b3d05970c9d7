"""Compile every cxrfast Triton kernel, for every autotune config and input dtype, ahead of time for
Hopper (sm_90a) — no GPU needed — and report what ptxas says: registers per thread, spill bytes, stack,
shared memory. A config that spills is slow on every GPU; this catches it on a CPU-only machine.

    python benchmarks/aot_sm90.py [--dtypes bf16,fp16,fp32] [--json benchmarks/results/sm90-aot/kernels.json]

Launch-time specialisations are reproduced: 16-byte-aligned pointers, D and row strides divisible
by 16 (D = 512 and contiguous rows), unit column strides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

if __name__ == "__main__":
    # As a script: import the kernel modules in compiled mode. As a module (the CI test) the environment
    # is left alone; triton.compile(target=...) compiles for the GPU either way.
    os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DTYPES = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}
INTS = {"M", "N", "B", "D", "n_panels", "pos_offset", "stride_xb", "stride_yb", "R", "L", "Bc", "row0", "n_rows",
        "n", "stride_s", "stride_g"}
FLOATS = {"margin", "temp_attention"}
WORD_REGION_SHAPES = [(49, 97), (361, 97), (1024, 97)]  # (R, L): 7×7 … GLoRIA 19×19 … the maximum
ALIGNED_INTS = {"D", "stride_xb", "stride_yb", "stride_s", "stride_g"}
TYPED_POINTERS = ("x_ptr", "y_ptr", "g_ptr")  # in the input dtype; other pointers fp32 unless stated
UNIT = {"stride_xd", "stride_yd"}


def _variants():
    """(name, autotuned kernel, its GPU config tuples, {constexpr: value}, {pointer: type}) for every
    code path we launch. The config lists are read from the kernel modules, not from the autotuners,
    which hold the interpreter's single config when TRITON_INTERPRET=1 was set at their import."""
    from cxrfast.kernels import contrastive, pairwise, triplet

    groups = {"row_groups_ptr": "*i32", "col_groups_ptr": "*i32"}
    fwd, tfwd, bwd = contrastive.FWD_CONFIGS, triplet.FWD_CONFIGS, pairwise.BWD_CONFIGS
    yield "infonce_fwd", contrastive.infonce_fwd_kernel, fwd, {"HAS_GROUPS": False, "COLUMNS": True}, {}
    yield "infonce_fwd+groups", contrastive.infonce_fwd_kernel, fwd, {"HAS_GROUPS": True, "COLUMNS": True}, groups
    yield "infonce_fwd_rows", contrastive.infonce_fwd_kernel, fwd, {"HAS_GROUPS": False, "COLUMNS": False}, {}
    yield "triplet_fwd_hardest", triplet.triplet_fwd_kernel, tfwd, {"ALL": False}, \
        {"row_aux_ptr": "*i32", "col_aux_ptr": "*i32"}
    yield "triplet_fwd_all", triplet.triplet_fwd_kernel, tfwd, {"ALL": True}, {}
    base = {"GROUP_M": 8, "COLUMNS": True}
    yield "pairwise_bwd_infonce", pairwise.pairwise_bwd_kernel, bwd, dict(base, MODE=0, HAS_GROUPS=False), {}
    yield "pairwise_bwd_infonce+groups", pairwise.pairwise_bwd_kernel, bwd, dict(base, MODE=0, HAS_GROUPS=True), groups
    yield "pairwise_bwd_infonce_rows", pairwise.pairwise_bwd_kernel, bwd, \
        dict(base, MODE=0, HAS_GROUPS=False, COLUMNS=False), {}
    yield "pairwise_bwd_hinge", pairwise.pairwise_bwd_kernel, bwd, dict(base, MODE=1, HAS_GROUPS=False), {}
    # the score-panel methods (kernels.panels): Ĝ from stored scores, and the forward's reduction
    from cxrfast.kernels import panels

    grad = pairwise.GRAD_CONFIGS
    yield "panel_grad_infonce", panels.panel_grad_kernel, grad, dict(base, MODE=0, HAS_GROUPS=False), {}
    yield "panel_grad_infonce+groups", panels.panel_grad_kernel, grad, dict(base, MODE=0, HAS_GROUPS=True), groups
    yield "panel_grad_hinge", panels.panel_grad_kernel, grad, dict(base, MODE=1, HAS_GROUPS=False), {}
    stats = [triton.Config({"BLOCK_M": panels.STATS_BLOCK_M, "BLOCK_N": panels.STATS_BLOCK_N}, num_warps=4)]
    for name, mode in (("infonce", panels.INFONCE), ("hardest", panels.HARDEST), ("all", panels.ALL)):
        ptrs = {"row_idx_ptr": "*i32", "col_idx_ptr": "*i32"} if mode == panels.HARDEST else {}
        yield f"panel_stats_{name}", panels.panel_stats_kernel, stats, \
            {"MODE": mode, "HAS_GROUPS": False, "COLUMNS": True}, ptrs
    # the word-region middle: fp32 buffers whatever the input dtype, one tile shape per (R, L)
    from cxrfast.kernels import wordregion

    tiles = [wordregion.tiles(r, l) for r, l in WORD_REGION_SHAPES]
    cfgs = [triton.Config({k: v for k, v in t.items() if k != "num_warps"}, num_warps=t["num_warps"], num_stages=1)
            for t in tiles]
    lengths = {"lengths_ptr": "*i64"}
    for variant, gloria in (("gloria", True), ("single", False)):
        yield f"wordregion_fwd_{variant}", wordregion.attention_fwd_kernel, cfgs, {"GLORIA": gloria}, lengths
        yield f"wordregion_bwd_{variant}", wordregion.attention_bwd_kernel, cfgs, {"GLORIA": gloria}, lengths


def _ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_one(jit, dtype: str, constexprs: dict, pointer_types: dict, config: triton.Config) -> dict:
    names = jit.arg_names
    consts = dict(constexprs, **config.kwargs, UPCAST=False, PRECISION="ieee" if dtype == "fp32" else "tf32")
    consts = {k: v for k, v in consts.items() if k in names}  # the dot flags exist only where there are dots
    consts.update({n: 1 for n in UNIT if n in names})
    signature, attrs = {}, {}
    for i, n in enumerate(names):
        if n in consts:
            signature[n] = "constexpr"
        elif n.endswith("_ptr"):
            signature[n] = DTYPES[dtype] if n in TYPED_POINTERS else pointer_types.get(n, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in INTS:
            signature[n] = "i32"
            if n in ALIGNED_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in FLOATS:
            signature[n] = "fp32"
        else:
            raise KeyError(f"aot_sm90: no type rule for argument {n!r} of {jit.__name__}")
    src = ASTSource(fn=jit, signature=signature, constexprs={(names.index(k),): v for k, v in consts.items()},
                    attrs=attrs)
    t0 = time.perf_counter()
    kernel = triton.compile(src, target=TARGET,
                            options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    seconds = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    try:
        out = subprocess.run([_ptxas(), "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    info = out.stdout + out.stderr

    def grab(pattern):
        m = re.search(pattern, info)
        return int(m.group(1)) if m else 0

    return {
        "registers": grab(r"Used (\d+) registers"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "stack": grab(r"(\d+) bytes stack frame"),
        "shared": kernel.metadata.shared,
        "compile_s": round(seconds, 2),
    }


def run(dtypes=("bf16", "fp16", "fp32"), only=None, progress=True) -> list[dict]:
    rows = []
    def config(cfg):
        if isinstance(cfg, triton.Config):
            return cfg
        bm, bn, bk, w, st = cfg
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)

    def jit(kernel):  # an autotuned kernel wraps its JITFunction; a plain @triton.jit kernel is one
        return kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel

    jobs = [(n, jit(k), c, p, d, config(cfg))
            for n, k, cfgs, c, p in _variants() if only is None or n in only
            # kernels without inputs or outputs in the input dtype read fp32 buffers only: one dtype row
            for d in (dtypes if {"x_ptr", "g_ptr"} & set(jit(k).arg_names) else ("fp32",)) for cfg in cfgs]
    t0 = time.perf_counter()
    for i, (name, kernel, consts, ptrs, dtype, cfg) in enumerate(jobs, 1):
        row = {"kernel": name, "dtype": dtype, **cfg.kwargs, "num_warps": cfg.num_warps,
               "num_stages": cfg.num_stages}
        row.update(compile_one(kernel, dtype, consts, ptrs, cfg))
        rows.append(row)
        if progress:
            rate = i / (time.perf_counter() - t0)
            sys.stderr.write(f"\r[{'#' * (30 * i // len(jobs)):<30}] {i}/{len(jobs)} kernels "
                             f"{rate:.2f}/s ETA {(len(jobs) - i) / rate:4.0f}s")
    if progress:
        sys.stderr.write("\n")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="bf16,fp16,fp32")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "sm90-aot", "kernels.json"))
    args = ap.parse_args(argv)
    rows = run(tuple(args.dtypes.split(",")))
    hdr = f"{'kernel':30} {'dtype':5} {'tile':>14} {'w':>2} {'st':>2} {'regs':>4} {'spill':>6} {'smem':>7}"
    print(hdr)
    for r in rows:
        tile = "×".join(str(v) for k, v in r.items() if k.startswith("BLOCK_"))
        print(f"{r['kernel']:30} {r['dtype']:5} {tile:>14} "
              f"{r['num_warps']:2} {r['num_stages']:2} {r['registers']:4} {r['spill_stores']:6} {r['shared']:7}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    meta = {"target": "sm_90a", "triton": triton.__version__, "ptxas": _ptxas_version(),
            "date": time.strftime("%Y-%m-%d"), "commit": _commit()}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


def _ptxas_version() -> str:
    out = subprocess.run([_ptxas(), "--version"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "unknown"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
