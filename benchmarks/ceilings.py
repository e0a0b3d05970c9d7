"""Measure the two ceilings of this GPU once: a large bf16 matrix product (TFLOP/s) and a large
device-to-device copy (GB/s, bytes read + written). Roofline percentages quote these beside the
datasheet peaks. Writes benchmarks/results/<device>/ceilings.json.

    python benchmarks/ceilings.py
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch


def _median_ms(fn, warmup=5, reps=30) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> int:
    if not torch.cuda.is_available():
        print("ceilings: needs CUDA", file=sys.stderr)
        return 2
    from cxrfast.bench.measure import device_slug

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)  # random, never zeros
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = _median_ms(lambda: a @ b)
    tflops = 2 * n**3 / ms / 1e9
    src = torch.randn(1 << 28, device="cuda", dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    ms_copy = _median_ms(lambda: dst.copy_(src))
    gbs = 2 * src.numel() * 4 / ms_copy / 1e6
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "bf16_matmul_tflops": round(tflops, 1), "matmul_shape": [n, n, n],
           "d2d_copy_gbs": round(gbs, 1), "copy_bytes": 2 * src.numel() * 4}
    path = pathlib.Path(__file__).parent / "results" / device_slug(torch.device("cuda")) / "ceilings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"ceilings: bf16 matmul {tflops:.0f} TFLOP/s, device copy {gbs:.0f} GB/s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
