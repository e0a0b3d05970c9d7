"""InfoNCE and triplet losses: cxrfast (impl="auto") vs the baselines users run today.

For every shape (cxrfast/bench/shapes.py), implementation and phase:
    implementations  fused     cxrfast.contrastive_loss / triplet_loss, impl="auto" (Triton on CUDA,
                               chunked PyTorch on CPU)
                     baseline  open_clip's ClipLoss pattern / VSE++'s ContrastiveLoss (cxrfast/bench/baselines.py)
                     compiled  the baseline under torch.compile
    phases           fwd, bwd (forward done in the untimed setup), fwdbwd
Timed calls synchronise on CUDA. Each row also carries the peak extra memory (CUDA: max_memory_allocated
after reset, every phase; CPU: peak RSS growth of one fwd+bwd in a fresh process) and the roofline
(nominal FLOPs 2·B²·D forward, 8·B²·D forward+backward; % of the device's peak on known GPUs), in
`benchmark.extra_info` and in results/<device>/losses.json.

Last, the issue's CPU memory target: chunked InfoNCE at B=32768, D=128, forward + backward, peak RSS
growth ≤ 512 MB, measured in a fresh process, with the baseline's figure from the same run.
"""

from __future__ import annotations

import pytest

from cxrfast.bench import measure, shapes
from cxrfast.bench.fmt import fmt_bytes

EXTRA_KEYS = ("impl_detail", "dtype", "device", "median_s", "p20_s", "p80_s", "rounds", "peak_mem_bytes",
              "mem_method", "flops", "tflops", "peak_tflops", "pct_peak", "pct_roofline", "note")


def _skip(bench, shape, impl, phase, status, reason, shape_set, keep_row=True):
    if keep_row:
        bench.record(measure.make_row(shape, impl, phase, env=bench.env, dtype=bench.dtype, status=status,
                                      note=reason, shape_set=shape_set))
    pytest.skip(f"{status}: {reason}" if status == "OOM" else reason)


def _memory(bench, case, phase) -> tuple[int | None, str | None, str]:
    """(peak extra bytes, method, note) of one call of the phase."""
    if bench.device.type == "cuda":
        return case.cuda_peak_bytes(phase), "cuda-max-allocated", ""
    if phase != "fwdbwd":
        return None, None, ""
    if case.impl == "compiled":
        return None, None, "memory not measured for torch.compile on CPU (a fresh process recompiles)"
    res = measure.rss_peak_subprocess(case.shape, case.impl, case.dtype)
    note = "" if res["status"] == "ok" else f"memory: {res['status']} {res.get('note', '')}".strip()
    return res.get("peak_extra_bytes") if res["status"] == "ok" else None, "rss-subprocess", note


def test_loss(benchmark, bench, bench_case):
    shape_set, shape, impl, phase = bench_case
    skip = bench.skip_reason(shape, impl)
    if skip is not None:
        reason, keep = skip
        _skip(bench, shape, impl, phase, "skipped", reason, shape_set, keep_row=keep and phase == "fwdbwd")
    benchmark.group = f"{shape.id} {phase} ({bench.dtype})"
    case = None
    try:
        case = bench.case(shape, impl)
        estimate = measure.warm_up(case, phase)
        setup, target = case.phase(phase)
        benchmark.pedantic(target, setup=setup, rounds=measure.plan_rounds(estimate, bench.device),
                           warmup_rounds=0, iterations=1)
        mem, method, note = _memory(bench, case, phase)
    except measure.Skip as exc:
        _skip(bench, shape, impl, phase, exc.status, exc.reason, shape_set)
    finally:
        if case is not None:
            case.reset()
    if benchmark.stats is None:  # --benchmark-disable: the target ran once, untimed
        pytest.skip("benchmarking disabled")
    row = bench.record(measure.make_row(
        case, impl, phase, env=bench.env, dtype=bench.dtype, samples=benchmark.stats.stats.data,
        detail=case.detail, peak_mem_bytes=mem, mem_method=method, note=note, shape_set=shape_set))
    benchmark.extra_info.update({k: row[k] for k in EXTRA_KEYS})


@pytest.mark.parametrize("impl", ["fused", "baseline"])
def test_rss_target(benchmark, bench, impl):
    """Peak RSS growth of one fp32 forward + backward at B=32768, D=128, each in a fresh process.
    The benchmark time of this test is that process's wall time (startup + one fwd+bwd); the fwd and
    bwd times measured inside it are in the row."""
    if bench.device.type != "cpu":
        pytest.skip("CPU memory target; run with --bench-device cpu")
    if bench.config.getoption("--bench-no-rss-target"):
        pytest.skip("disabled (--bench-no-rss-target)")
    shape, limit = shapes.RSS_TARGET, shapes.RSS_TARGET_LIMIT_BYTES
    target = _target_entry(bench, shape, limit)
    if impl == "fused":
        # A regression that materialises B x B would fail here as OOM instead of swapping the machine.
        cap = 4 * 2**30
    else:
        need, avail = measure.baseline_bytes_estimate(shape), measure.mem_available_bytes()
        if avail is not None and avail < need + 2**30:
            reason = (f"not run: the baseline needs about {fmt_bytes(need)} "
                      f"(4 fp32 {shape.B}x{shape.B} matrices); {fmt_bytes(avail)} available")
            target["baseline"] = {"status": "skipped", "note": reason}
            _skip(bench, shape, impl, "fwdbwd", "skipped", reason, "rss-target")
        cap = (avail - 2**30) if avail is not None else None
    benchmark.group = "rss-target: InfoNCE B=32768 D=128 fp32, fresh process (startup + one fwd+bwd)"
    res = benchmark.pedantic(measure.rss_peak_subprocess, args=(shape, impl, "fp32"),
                             kwargs={"limit_bytes": cap}, rounds=1, iterations=1)
    ok = res["status"] == "ok"
    row = bench.record(measure.make_row(
        shape, impl, "fwdbwd", env=bench.env, dtype="fp32", samples=[res["fwdbwd_s"]] if ok else None,
        detail=res.get("impl_detail", ""), status=res["status"], note=res.get("note", ""),
        peak_mem_bytes=res.get("peak_extra_bytes"), mem_method="rss-subprocess", shape_set="rss-target"))
    row.update(fwd_s=res.get("fwd_s"), bwd_s=res.get("bwd_s"), mem_cap_bytes=cap)
    benchmark.extra_info.update({k: row.get(k) for k in EXTRA_KEYS + ("fwd_s", "bwd_s")})
    target[impl] = {k: res.get(k) for k in ("status", "note", "peak_extra_bytes", "fwd_s", "bwd_s", "impl_detail")}
    if impl == "fused":
        target["passed"] = ok and res["peak_extra_bytes"] <= limit
        assert ok, f"chunked InfoNCE at B={shape.B}, D={shape.D} did not run: {res}"
        assert res["peak_extra_bytes"] <= limit, (
            f"peak RSS growth {fmt_bytes(res['peak_extra_bytes'])} exceeds the target "
            f"{fmt_bytes(limit)}")


def _target_entry(bench, shape, limit) -> dict:
    for t in bench.targets:
        if t["shape_id"] == shape.id:
            return t
    entry = {"name": f"chunked InfoNCE fwd+bwd peak RSS growth at B={shape.B}, D={shape.D} (fp32, CPU)",
             "shape_id": shape.id, "B": shape.B, "D": shape.D, "limit_bytes": limit, "passed": None}
    bench.targets.append(entry)
    return entry
