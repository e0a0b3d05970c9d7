"""One training step per preset (forward + backward + AdamW step), cxrfast's model against the paper's
original-style step on the same weights and batch, same run: samples/s and memory.

    fused      model(batch)["loss"]: cxrfast's fused ops (the CPU path here; Triton on a GPU)
    original   cxrfast.bench.presets.<preset>.baseline_loss(model, batch): the released code's step
               (GLoRIA's token-by-token word merge and per-report local loss, JoImTeRNet's loops, LoVT's
               per-sample restructuring, the mixed-data per-kind loops, REFERS' per-view ViT calls and
               ConVIRT loop), equal to the fused loss to rounding (tests/models)

CPU: every preset at its `small` size, batch CPU_BATCH, fp32. Memory on CPU is the bytes the step saves for
backward (tensors held by autograd, each storage counted once); on CUDA it is torch.cuda's peak allocated during
the timed steps less what was allocated before them (the weights and the optimiser's state, gradients freed): the
step's own working memory (activations, gradients, temporaries); the total peak is kept beside it.
CUDA: the same at the `small` size, plus `globallocal` at the `paper` size, batch 48, bf16 autocast (the
issue's headline case) and the largest batch of that configuration that fits in the device's memory, for
both steps (doubling, then bisection; two steps per try, so that the optimiser's state is in place; an
out-of-memory error, torch's or cuDNN's / cuBLAS's allocation failure, is the only failure accepted). Writes
results/<device>/presets.json; the README table comes from report.py.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import time

import pytest
import torch

PRESETS = ("globallocal", "joimternet", "lovt", "mixed", "refers")
CPU_BATCH = 8
GPU_BATCH = 48
ROUNDS = 3
ROWS: list[dict] = []


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _baseline(preset: str):
    return importlib.import_module(f"cxrfast.bench.presets.{preset}").baseline_loss


def _setup(preset: str, size: str, batch_size: int, device: torch.device):
    from cxrfast.models import create_model
    from cxrfast.models.factory import random_batch

    torch.manual_seed(0)
    model = create_model(preset, size=size).to(device).train()
    batch = random_batch(model, batch_size, seed=0).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, batch, optimizer


def _step_fn(model, batch, optimizer, impl: str, amp: bool):
    loss_of = (lambda: model(batch)["loss"]) if impl == "fused" else (lambda: _baseline(model.config.preset)(model, batch))
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step():
        optimizer.zero_grad(set_to_none=True)
        with ctx():
            loss = loss_of()
        loss.backward()
        optimizer.step()
        return loss

    return step


def _saved_bytes(step_loss) -> int:
    """Bytes autograd saves for backward during one forward (each storage once)."""
    seen: dict = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[(st.data_ptr(), t.device)] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_loss()
    del loss
    return sum(seen.values())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _measure(benchmark, preset, size, batch_size, impl, device, amp) -> dict:
    """pytest-benchmark times the step (ROUNDS rounds after one warm-up round, synchronised on CUDA)."""
    model, batch, optimizer = _setup(preset, size, batch_size, device)
    step = _step_fn(model, batch, optimizer, impl, amp)
    last = {}

    def timed():
        last["loss"] = step()
        _sync(device)

    if device.type == "cuda":
        step()  # warm-up before the peak-memory reset (kernel compilation, the optimiser's state)
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=0 if device.type == "cuda" else 1)
    times = sorted(benchmark.stats.stats.data)
    row = {"preset": preset, "size": size, "batch": batch_size, "impl": impl, "device": device.type,
           "dtype": "bf16 autocast" if amp else "fp32", "median_s": times[len(times) // 2], "min_s": times[0],
           "max_s": times[-1], "rounds": len(times), "loss": float(last["loss"])}
    row["samples_per_s"] = batch_size / row["median_s"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row["peak_mem_bytes"], row["total_peak_bytes"], row["resident_bytes"] = peak - before, peak, before
        row["mem_method"] = "cuda peak in the step above weights + optimiser state"
    else:
        loss_of = (lambda: model(batch)["loss"]) if impl == "fused" else (lambda: _baseline(preset)(model, batch))
        row["peak_mem_bytes"], row["mem_method"] = _saved_bytes(loss_of), "saved for backward"
    del model, batch, optimizer, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    benchmark.extra_info.update({k: v for k, v in row.items() if isinstance(v, (int, float, str))})
    return row


_ALLOC_FAILED = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                 "CUBLAS_STATUS_NOT_INITIALIZED")  # (cuBLAS reports a failed workspace allocation as the last)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(m in str(exc) for m in _ALLOC_FAILED))


def _fits(preset, size, batch_size, impl, device, amp) -> bool:
    """Whether two steps run (the second with the optimiser's state allocated); only running out of memory
    counts as not fitting, any other error is raised."""
    model = batch = optimizer = step = None
    try:
        model, batch, optimizer = _setup(preset, size, batch_size, device)
        step = _step_fn(model, batch, optimizer, impl, amp)
        step()
        step()
        _sync(device)
        return True
    except RuntimeError as exc:
        if _out_of_memory(exc):
            return False
        raise
    finally:
        model = batch = optimizer = step = None  # noqa: F841 - free before the next try
        gc.collect()
        torch.cuda.empty_cache()


def largest_batch(preset, size, impl, device, amp, start: int, limit: int = 1 << 16, budget_s: float | None = None):
    """The largest batch whose step fits: doubling from `start`, then bisection (within `budget_s`, default
    $CXRFAST_BENCH_SEARCH_S or 120 s; past it the result is a lower bound, flagged)."""
    if budget_s is None:
        budget_s = float(os.environ.get("CXRFAST_BENCH_SEARCH_S", "120"))
    t0 = time.perf_counter()
    lo, hi = 0, None
    b = start
    while hi is None and b <= limit:
        if _fits(preset, size, b, impl, device, amp):
            lo, b = b, b * 2
        elif b == start:  # the batch just timed: failing here is not "too large", it is something else
            raise RuntimeError(f"largest_batch: {preset} {impl} at the starting batch {start} failed as out of "
                               "memory, though that step was just timed")
        else:
            hi = b
        if time.perf_counter() - t0 > budget_s:
            return lo, "time budget spent: a lower bound"
    if hi is None:
        return lo, f"fits at the search limit {limit}: a lower bound"
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        if _fits(preset, size, mid, impl, device, amp):
            lo = mid
        else:
            hi = mid
        if time.perf_counter() - t0 > budget_s:
            return lo, "time budget spent: a lower bound"
    return lo, f"within {100 * (hi - lo) / max(lo, 1):.0f}%"


@pytest.mark.parametrize("impl", ["fused", "original"])
@pytest.mark.parametrize("preset", PRESETS)
def test_small_step(benchmark, preset, impl, request):
    device = _device()
    ROWS.append(_measure(benchmark, preset, "small", CPU_BATCH if device.type == "cpu" else GPU_BATCH, impl,
                         device, False))
    _save(request.config)  # after every row: a run cut short keeps what it measured


@pytest.mark.parametrize("impl", ["fused", "original"])
def test_globallocal_paper_bf16(benchmark, impl, request):
    device = _device()
    if device.type != "cuda":
        pytest.skip("globallocal at the paper size, batch 48, bf16: GPU only (on CPU one step takes minutes)")
    row = _measure(benchmark, "globallocal", "paper", GPU_BATCH, impl, device, True)
    row["largest_batch"], row["largest_batch_note"] = largest_batch("globallocal", "paper", impl, device, True,
                                                                    start=GPU_BATCH)
    ROWS.append(row)
    _save(request.config)


@pytest.fixture(scope="module", autouse=True)
def results(request):
    yield
    _save(request.config)


def _save(config) -> None:
    if not ROWS:
        return
    import json

    from cxrfast.bench import measure

    device = _device()
    env = measure.environment(device)
    env.update(cpus=len(os.sched_getaffinity(0)), threads=torch.get_num_threads())
    by = {(r["preset"], r["size"], r["dtype"], r["impl"]): r for r in ROWS}
    for (preset, size, dtype, impl), row in by.items():
        base = by.get((preset, size, dtype, "original"))
        if impl == "fused" and base:
            row["speedup"] = base["median_s"] / row["median_s"]
            row["memory_ratio"] = base["peak_mem_bytes"] / max(row["peak_mem_bytes"], 1)
            if "largest_batch" in row and base.get("largest_batch"):
                row["largest_batch_ratio"] = row["largest_batch"] / base["largest_batch"]
    doc = {"suite": "presets", "env": env, "rows": ROWS,
           "targets": {"globallocal paper bf16 B=48": "≥ 3× the original step's samples/s, ≥ 8× its largest batch"}}
    path = os.path.join(config.getoption("--bench-results"), env["device_slug"], "presets.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {path}")
