"""LoVT's local losses: the batched path vs the literal definition (which follows LoVT's code), same run.

    python benchmarks/lovt_local.py [--device cpu|cuda] [--json PATH]

For LoVT's setting (7 × 7 regions of ResNet-50 at 224 px, reports of up to 12 sentences, D = 512) and a
14 × 14 grid: forward+backward time (median of rounds, 20th/80th percentiles) and the bytes autograd
saves for the backward (counted with saved_tensors_hooks, inputs excluded) — the memory that grows with
the batch. Writes benchmarks/results/<device>/lovt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cxrfast.bench import measure  # noqa: E402
from cxrfast.ops.lovt import lovt_local_loss  # noqa: E402

SHAPES = [  # (name, B, grid, M sentences, D)
    ("LoVT 7x7", 32, (7, 7), 12, 512),
    ("14x14", 32, (14, 14), 12, 512),
]


def _inputs(B, grid, M, D, device):
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(B, grid[0] * grid[1], D, generator=g).to(device).requires_grad_()
    sentences = torch.randn(B, M, D, generator=g).to(device).requires_grad_()
    lengths = torch.randint(1, M + 1, (B,), generator=g).to(device)
    return regions, sentences, lengths


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward, excluding leaves (the inputs)."""
    seen = {}

    def pack(t):
        if not (t.requires_grad and t.grad_fn is None):  # a leaf input is not extra memory
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(seen.values())


def timed(fn, device, rounds) -> list[float]:
    out = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = measure.resolve_device(args.device)
    env = measure.environment(device)
    rows = []
    for name, B, grid, M, D in SHAPES:
        regions, sentences, lengths = _inputs(B, grid, M, D, device)
        for impl in ("batched", "reference"):
            def fn(impl=impl):
                return lovt_local_loss(regions, sentences, lengths, grid=grid, impl=impl)["loss"]

            timed(fn, device, 2)  # warm-up
            samples = timed(fn, device, args.rounds)
            q = statistics.quantiles(samples, n=5)
            rows.append({"shape": name, "B": B, "grid": list(grid), "M": M, "D": D, "impl": impl,
                         "median_s": statistics.median(samples), "p20_s": q[0], "p80_s": q[-1],
                         "rounds": len(samples), "saved_bytes": saved_bytes(fn)})
            r = rows[-1]
            print(f"{name:9} {impl:9} fwd+bwd {r['median_s'] * 1e3:8.2f} ms  saved {r['saved_bytes'] / 2**20:7.1f} MiB")
    path = args.json or os.path.join(os.path.dirname(__file__), "results", env["device_slug"], "lovt.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"suite": "lovt", "env": env, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
