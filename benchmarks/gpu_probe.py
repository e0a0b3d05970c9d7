"""Diagnostics for a GPU session (benchmarks/gpu_session.sh): what bounds each fused loss on this GPU, in
seconds, not guesses. Prints a table and writes results/<device>/probe.json.

    python benchmarks/gpu_probe.py [--quick]

1. InfoNCE, B = 32768, D = 512, bf16: forward alone; backward by method ("atomic": one kernel with fp32
   atomics; "gemm": gradient tiles + cuBLAS, at two panel sizes), each with its peak extra memory and its
   gradients' largest difference from the atomic method's; the same-size bf16 matmul beside them (the
   tensor-core ceiling for this problem's shape).
2. Panels holding several row blocks (B = 20000, 157 row blocks over 132 panels): the fused forward and
   backward against the chunked PyTorch path on the same inputs.
3. The word–region loss at GLoRIA's B = 48 (R = 361, L = 97, D = 768), bf16, forward + backward under
   torch.profiler: CUDA time per kernel name, number of launches, and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _bench_ms(fn, reps=20) -> dict:
    """Median / p20 / p80 of CUDA-event times (ms) after a warm-up; fresh events per call."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * (len(times) - 1) + 0.5))]  # noqa: E731
    return {"median_ms": q(0.5), "p20_ms": q(0.2), "p80_ms": q(0.8), "reps": reps}


def _peak_extra(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def infonce_backward_methods(B=32768, D=512, reps=20) -> dict:
    import cxrfast
    from cxrfast.kernels import pairwise

    torch.manual_seed(0)
    x = torch.randn(B, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randn(B, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    scale = torch.tensor(1 / 0.07, device="cuda")
    out = {"B": B, "D": D, "dtype": "bf16"}

    def fwd():
        return cxrfast.contrastive_loss(x, y, scale, impl="triton")

    out["fwd"] = _bench_ms(fwd, reps)
    a, b = torch.randn(B, D, device="cuda", dtype=torch.bfloat16), torch.randn(B, D, device="cuda", dtype=torch.bfloat16)
    out["matmul_bf16_BxBxD"] = _bench_ms(lambda: a @ b.t(), reps)  # the forward's product alone, B×B written
    del a, b
    ref = None
    saved = (os.environ.get("CXRFAST_PAIRWISE_BWD"), pairwise.GEMM_PANEL_ELEMENTS)
    try:
        for name, method, panel in (("atomic", "atomic", None), ("gemm-16M", "gemm", 1 << 24),
                                    ("gemm-64M", "gemm", 1 << 26)):
            os.environ["CXRFAST_PAIRWISE_BWD"] = method
            if panel:
                pairwise.GEMM_PANEL_ELEMENTS = panel
            loss = fwd()

            def bwd():
                x.grad = y.grad = None
                loss.backward(retain_graph=True)

            row = _bench_ms(bwd, reps)
            row["peak_extra_bytes"] = _peak_extra(bwd)
            row["fwdbwd"] = _bench_ms(lambda: (setattr(x, "grad", None), setattr(y, "grad", None),
                                               fwd().backward()), max(5, reps // 2))
            bwd()
            grads = (x.grad.float(), y.grad.float())
            if ref is None:
                ref = grads
            else:
                row["max_rel_diff_vs_atomic"] = max(((g - r).abs().max() / r.abs().max()).item()
                                                    for g, r in zip(grads, ref))
            out[f"bwd_{name}"] = row
            del loss
    finally:
        os.environ.pop("CXRFAST_PAIRWISE_BWD", None)
        if saved[0] is not None:
            os.environ["CXRFAST_PAIRWISE_BWD"] = saved[0]
        pairwise.GEMM_PANEL_ELEMENTS = saved[1]
    flops_fwd, flops_bwd = 2 * B * B * D, 6 * B * B * D
    out["tflops"] = {"fwd": flops_fwd / out["fwd"]["median_ms"] / 1e9}
    for k in [k for k in out if k.startswith("bwd_")]:
        out["tflops"][k] = flops_bwd / out[k]["median_ms"] / 1e9
    return out


def multi_block_panels(B=20000, D=256) -> dict:
    """Fused vs chunked at a B whose panels hold two row blocks (the row state crosses blocks there)."""
    import cxrfast

    torch.manual_seed(1)
    x = torch.randn(B, D, device="cuda", dtype=torch.bfloat16)
    y = (x.float() + 0.7 * torch.randn(B, D, device="cuda")).to(torch.bfloat16)
    res = {}
    for impl in ("triton", "chunked"):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        loss = cxrfast.contrastive_loss(a, b, 20.0, impl=impl)
        loss.backward()
        res[impl] = (loss.item(), a.grad.float(), b.grad.float())
    t, c = res["triton"], res["chunked"]
    return {"B": B, "D": D, "loss_triton": t[0], "loss_chunked": c[0], "loss_abs_diff": abs(t[0] - c[0]),
            "grad_max_rel_diff": max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(t[1:], c[1:]))}


def word_region_profile(B=48, R=361, L=97, D=768) -> dict:
    import cxrfast
    from torch.profiler import ProfilerActivity, profile

    from cxrfast.bench.shapes import Shape

    shape = Shape("local", "GLoRIA", B, D, R=R, L=L, min_words=20)
    torch.manual_seed(0)
    v = (torch.randn(B, R, D, device="cuda") * D ** -0.25).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(B, L, D, device="cuda") * D ** -0.25).to(torch.bfloat16).requires_grad_()
    n = torch.tensor(shape.word_lengths(), device="cuda")

    def step():
        v.grad = w.grad = None
        cxrfast.local_contrastive_loss(v, w, n, impl="triton").backward()

    timing = _bench_ms(step, 10)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(e.name[:90], [0, 0.0])
            k[0] += 1
            k[1] += e.device_time_total / 1e3 if hasattr(e, "device_time_total") else e.cuda_time_total / 1e3
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:15]
    return {"B": B, "R": R, "L": L, "D": D, "fwdbwd": timing, "profiled_wall_ms": wall * 1e3,
            "launches": sum(c for c, _ in kernels.values()),
            "cuda_ms": sum(t for _, t in kernels.values()),
            "top_kernels": [{"name": name, "calls": c, "ms": round(t, 3)} for name, (c, t) in top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_probe: needs CUDA", file=sys.stderr)
        return 2
    from cxrfast.bench.measure import device_slug, environment

    reps = 10 if args.quick else 20
    doc = {"env": environment(torch.device("cuda"))}
    for name, fn in (("infonce_backward", lambda: infonce_backward_methods(reps=reps)),
                     ("multi_block_panels", multi_block_panels),
                     ("word_region_b48", word_region_profile)):
        t0 = time.perf_counter()
        try:
            doc[name] = fn()
        except Exception as exc:  # a probe that fails is a finding: keep going, record it
            doc[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        doc[name]["probe_s"] = round(time.perf_counter() - t0, 1)
        torch.cuda.empty_cache()
        print(f"--- {name} ({doc[name]['probe_s']} s)")
        print(json.dumps(doc[name], indent=1, default=str)[:3000])
    path = HERE / "results" / device_slug(torch.device("cuda")) / "probe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
