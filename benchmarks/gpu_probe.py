"""Diagnostics for a GPU session (benchmarks/gpu_session.sh): what bounds each fused loss on this GPU, in
seconds, not guesses. Prints a table and writes results/<device>/probe.json.

    python benchmarks/gpu_probe.py [--quick]

1. InfoNCE (D = 512) and triplet-hardest (D = 1024) at B = 32768, bf16: forward and forward + backward by
   method (kernels.pairwise.forward_method / backward_method), each with its peak extra memory and its
   gradients' largest difference from the fused/atomic ones; the same-size bf16 matmul beside them (the
   tensor-core ceiling for this problem's shape). The fastest InfoNCE pair is printed (and, with
   --env-out, written as shell exports for the session's benchmark step).
2. load_radiographs(device="cuda") on 64 raw 2500×2048 files: prepare (threads), render, pinned
   allocation, end to end.
3. Panels holding several row blocks (B = 20000, 157 row blocks over 132 panels): the fused forward and
   backward against the chunked PyTorch path on the same inputs.
4. The word–region loss at GLoRIA's B = 48 (R = 361, L = 97, D = 768), bf16, forward + backward under
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


def pair_methods(B=32768, D=512, reps=10) -> dict:
    """InfoNCE (D = 512) and triplet-hardest (D = 1024) at B: forward by method, backward by method, each
    with its peak extra memory, and the gradients' largest difference from the fused/atomic ones."""
    import cxrfast

    out = {"B": B, "dtype": "bf16"}
    saved = {k: os.environ.get(k) for k in ("CXRFAST_PAIRWISE_FWD", "CXRFAST_PAIRWISE_BWD")}
    try:
        for loss, d in (("infonce", 512), ("triplet_hardest", 1024)):
            torch.manual_seed(0)
            x = torch.randn(B, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            y = torch.randn(B, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            scale = torch.tensor(1 / 0.07, device="cuda")

            def fwd():
                if loss == "infonce":
                    return cxrfast.contrastive_loss(x, y, scale, impl="triton")
                return cxrfast.triplet_loss(x, y, impl="triton")

            res, ref = {}, None
            a, b = torch.randn(B, d, device="cuda", dtype=torch.bfloat16), torch.randn(B, d, device="cuda",
                                                                                        dtype=torch.bfloat16)
            res["matmul_bf16_BxBxD"] = _bench_ms(lambda: a @ b.t(), reps)
            del a, b
            methods = [("fused", "atomic"), ("gemm", "gemm"), ("fused", "gemm")] if loss == "infonce" else \
                [("fused", "atomic"), ("gemm", "gemm")]
            for fm, bm in methods:
                os.environ["CXRFAST_PAIRWISE_FWD"], os.environ["CXRFAST_PAIRWISE_BWD"] = fm, bm
                row = {"fwd": _bench_ms(lambda: fwd(), reps)}
                row["fwd"]["peak_extra_bytes"] = _peak_extra(fwd)

                def step():
                    x.grad = y.grad = None
                    fwd().backward()

                row["fwdbwd"] = _bench_ms(step, reps)
                row["fwdbwd"]["peak_extra_bytes"] = _peak_extra(step)
                grads = (x.grad.float(), y.grad.float())
                if ref is None:
                    ref = grads
                else:
                    row["max_rel_diff_vs_first"] = max(((g - r).abs().max() / r.abs().max()).item()
                                                       for g, r in zip(grads, ref))
                res[f"{fm}/{bm}"] = row
            out[loss] = res
            del x, y, ref
            torch.cuda.empty_cache()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    return out


def best_methods(doc) -> tuple[str, str]:
    """The (forward, backward) methods with the fastest InfoNCE fwd+bwd in `doc["pair_methods"]`."""
    res = doc["pair_methods"]["infonce"]
    times = {k: v["fwdbwd"]["median_ms"] for k, v in res.items() if "/" in k}
    return tuple(min(times, key=times.get).split("/"))


def radiograph_breakdown(n_files=64, size=224) -> dict:
    """Where load_radiographs(device="cuda") spends its time for n_files raw 12-bit 2500×2048 files:
    read + parse + tables (threads), pinned staging, host→device copy, the kernel."""
    import tempfile

    sys.path.insert(0, str(HERE))
    import radiograph as rg

    import cxrfast.io as cio
    from cxrfast.io.radiograph import _defaults, _options, _prepare, _render

    folder = tempfile.mkdtemp()
    paths = rg.write_files(folder, n_files)["many"]
    w = len(os.sched_getaffinity(0))
    opts = _options(size, **_defaults())
    from concurrent.futures import ThreadPoolExecutor

    def prepare_all():
        with ThreadPoolExecutor(max_workers=w) as pool:
            return list(pool.map(lambda p: _prepare(p, opts, 0), paths))

    out = {"files": n_files, "workers": w}
    for _ in range(2):
        prepare_all()
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        prepared = prepare_all()
        t.append(time.perf_counter() - t0)
    out["prepare_s"] = sorted(t)[2]
    t = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _render(prepared, opts, "cuda", w)
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    out["render_s"] = sorted(t)[2]
    total = sum(p.sample_count for p in prepared)
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        buf = torch.empty(total, dtype=torch.int16, pin_memory=True)
        t.append(time.perf_counter() - t0)
        del buf
    out["pinned_alloc_s"] = sorted(t)[2]
    t = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        cio.load_radiographs(paths, size, device="cuda", workers=w)
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    out["end_to_end_s"] = sorted(t)[2]
    out["images_per_s"] = n_files / out["end_to_end_s"]
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
    ap.add_argument("--env-out", help="write `export CXRFAST_PAIRWISE_FWD=… CXRFAST_PAIRWISE_BWD=…` (the fastest) here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_probe: needs CUDA", file=sys.stderr)
        return 2
    from cxrfast.bench.measure import device_slug, environment

    reps = 10 if args.quick else 20
    doc = {"env": environment(torch.device("cuda"))}
    for name, fn in (("pair_methods", lambda: pair_methods(reps=reps)),
                     ("radiograph", radiograph_breakdown),
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
    if "error" not in doc["pair_methods"]:
        fm, bm = best_methods(doc)
        doc["best_methods"] = {"forward": fm, "backward": bm}
        if args.env_out:  # for the benchmark step of the same session
            Path(args.env_out).write_text(f"export CXRFAST_PAIRWISE_FWD={fm} CXRFAST_PAIRWISE_BWD={bm}\n")
        print(f"fastest InfoNCE fwd+bwd: forward {fm}, backward {bm}")
    path = HERE / "results" / device_slug(torch.device("cuda")) / "probe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
