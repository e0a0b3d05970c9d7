"""Measuring one benchmark case: time, peak extra memory, roofline, OOM, environment metadata.

A `Case` is one (shape, implementation) on a device: its inputs and, for each phase ("fwd", "bwd",
"fwdbwd"), a `setup` (not timed: clears gradients; for "bwd" runs the forward) and a `target` (timed).
On CUDA both end with ``torch.cuda.synchronize()``, so a timer around `target` measures the GPU work.
pytest-benchmark times them with ``benchmark.pedantic(target, setup=setup, ...)``; the CLI with
`time_phase` (``time.perf_counter``). Every figure is a median and 20th/80th percentiles over rounds.

Implementations ("impl" in the rows):
    fused      cxrfast.contrastive_loss / triplet_loss / local_contrastive_loss with impl="auto" (Triton on
               CUDA, chunked PyTorch on CPU; CXRFAST_IMPL overrides) -- `impl_detail` says which ran
    baseline   cxrfast.bench.baselines (open_clip ClipLoss pattern, VSE++ ContrastiveLoss, GLoRIA's looped
               local loss), eager
    compiled   the same baseline under torch.compile

Peak extra memory: on CUDA ``max_memory_allocated()`` after ``reset_peak_memory_stats()`` minus what was
allocated before the call (the inputs; for "bwd" also the graph the forward saved). On CPU the peak RSS
growth of one forward + backward in a fresh process (`rss_peak_subprocess`): ``ru_maxrss`` never
decreases, so it cannot be measured twice in one process.

Run as ``python -m cxrfast.bench.measure rss '<json spec>'`` it is that fresh process.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from cxrfast.bench import baselines
from cxrfast.bench.fmt import fmt_bytes
from cxrfast.bench.shapes import Shape

PHASES = ("fwd", "bwd", "fwdbwd")
IMPLS = ("fused", "baseline", "compiled")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SCHEMA = 1
CLIP_LOGIT_SCALE = 1 / 0.07  # CLIP's initial temperature


# --------------------------------------------------------------------------------------------------
# device, dtype


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when available, else CPU. "cuda" without a GPU raises with the reason."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise RuntimeError(f"--device cuda: {why} (torch {torch.__version__})")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def resolve_dtype(name: str | None, device: torch.device) -> str:
    """The dtype label: `name`, else bf16 on CUDA and fp32 on CPU."""
    if name is None:
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# the case


class Skip(Exception):
    """A case that cannot run here; `status` is "OOM" or "skipped", the message says why."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def fused_detail(shape: Shape, x: torch.Tensor, y: torch.Tensor, third=None) -> str:
    """What impl="auto" runs for these inputs: "triton" or "chunked" (or what CXRFAST_IMPL forces); for the
    pair losses on Triton also the forward and backward methods, e.g. "triton (fused fwd, atomic bwd)"."""
    if shape.loss == "local":
        from cxrfast.ops.local import plan

        return plan(x, y, third, impl="auto")[0]
    if shape.loss == "infonce":
        from cxrfast.ops.contrastive import plan

        chosen = plan(x, y, third, impl="auto")[0]
    else:
        from cxrfast.ops.triplet import plan

        chosen = plan(x, y, impl="auto")[0]
    if chosen != "triton":
        return chosen
    from cxrfast.kernels.pairwise import backward_method, forward_method

    mode = {"infonce": 0, "triplet-hardest": 1, "triplet-all": 2}[shape.kind]
    fwd = forward_method(mode, shape.B, shape.B)
    if mode == 1:  # the hardest negatives' backward is a gather of 2·B pairs, not a pair-grid kernel
        return f"triton ({fwd} fwd)"
    return f"triton ({fwd} fwd, {backward_method(shape.B, shape.B)} bwd)"


def fused_call(shape: Shape, x, y, third=None):
    """cxrfast's loss of `shape` with impl="auto"; `third` is the logit scale (InfoNCE) or the report
    lengths (local)."""
    import cxrfast

    if shape.loss == "infonce":
        return cxrfast.contrastive_loss(x, y, third, impl="auto")
    if shape.loss == "local":
        return cxrfast.local_contrastive_loss(x, y, third, impl="auto")
    return cxrfast.triplet_loss(x, y, margin=shape.margin, negatives=shape.negatives, impl="auto")


def make_inputs(shape: Shape, device: torch.device, dtype: str, seed: int = 0):
    """Leaves that require grad, random normal, made on the device (seeded: every implementation and
    every run sees the same inputs), and a third input:

        InfoNCE, triplet  (image_emb [B, D], text_emb [B, D], logit_scale or None)
        local             (regions [B, R, D], words [B, L, D], report lengths [B] int64), scaled by
                          D^-1/4 so that region·word products are O(1) as between trained features; the
                          lengths are shape.word_lengths() (uniform in min_words..L), words beyond a
                          report's length are padding (random values, never read)
    """
    torch.manual_seed(seed)
    if shape.loss == "local":
        scale = shape.D ** -0.25
        regions, words = (
            (torch.randn(shape.B, n, shape.D, device=device, dtype=torch.float32) * scale)
            .to(DTYPES[dtype]).requires_grad_()
            for n in (shape.R, shape.L))
        lengths = torch.tensor(shape.word_lengths(seed), device=device, dtype=torch.int64)
        return regions, words, lengths
    x, y = (torch.randn(shape.B, shape.D, device=device, dtype=DTYPES[dtype]).requires_grad_() for _ in range(2))
    scale = None
    if shape.loss == "infonce":
        scale = torch.tensor(CLIP_LOGIT_SCALE, device=device, dtype=torch.float32, requires_grad=True)
    return x, y, scale


class Case:
    """One (shape, impl) on a device, with its inputs (pass `inputs` to share them between impls)."""

    def __init__(self, shape: Shape, impl: str, device: torch.device, dtype: str, inputs=None):
        if impl not in IMPLS:
            raise ValueError(f"Case: `impl` must be one of {IMPLS}, got {impl!r}")
        self.shape, self.impl, self.device, self.dtype = shape, impl, device, dtype
        self.inputs = tuple(inputs if inputs is not None else make_inputs(shape, device, dtype))
        self.args = self.inputs
        if impl == "fused":
            self.detail = fused_detail(shape, *self.inputs)
        else:
            self.detail = "eager" if impl == "baseline" else "torch.compile"
            if shape.loss == "local":  # GLoRIA's cap_lens is a list of ints: no device sync per report
                self.args = (*self.inputs[:2], self.inputs[2].tolist())
        self.name = "cxrfast" if impl == "fused" else baselines.name(shape, compiled_=impl == "compiled")
        self._loss = None
        self._mem_base = None  # CUDA: bytes allocated before the pending target (set by setup)
        self.timed_peak = None  # CUDA: the largest peak extra bytes of a target since the last setup(phase)

    def loss(self) -> torch.Tensor:
        if self.impl == "fused":
            return fused_call(self.shape, *self.args)
        return baselines.call(self.shape, *self.args, compiled_=self.impl == "compiled")

    def leaves(self):
        return [t for t in self.inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def reset(self) -> None:
        """Drop gradients (as zero_grad(set_to_none=True)) and any pending forward graph."""
        self._loss = None
        for t in self.leaves():
            t.grad = None

    # phase callables ------------------------------------------------------------------------------
    def phase(self, phase: str):
        """(setup, target) of a phase; setup is not timed, target is; both end synchronised. Running out
        of memory in either raises Skip("OOM") (after freeing what the case held)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")

        self.timed_peak, self._mem_base = None, None

        def setup():
            self.collect_peak()
            self.reset()
            if phase == "bwd":
                self._loss = self.loss()
            sync(self.device)
            if self.device.type == "cuda":  # the target's peak is read in the next setup / collect_peak
                self._mem_base = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)

        def target():
            if phase == "fwd":
                self.loss()
            elif phase == "bwd":
                loss, self._loss = self._loss, None
                loss.backward()
            else:
                self.loss().backward()
            sync(self.device)

        return self._oom_guard(setup), self._oom_guard(target)

    def _oom_guard(self, fn):
        def guarded():
            try:
                return fn()
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self.recover()  # outside the except block: the traceback no longer pins the tensors
            raise Skip("OOM", message)

        return guarded

    def collect_peak(self) -> int | None:
        """CUDA: fold the finished target's peak extra bytes (above what was allocated when it started)
        into `timed_peak`, which then holds the largest over the timed calls; measuring during the timed
        rounds costs no extra call (seconds at B = 2^20) and nothing inside the timed region."""
        if self._mem_base is not None:
            peak = torch.cuda.max_memory_allocated(self.device) - self._mem_base
            self.timed_peak = peak if self.timed_peak is None else max(self.timed_peak, peak)
            self._mem_base = None
        return self.timed_peak

    def run_once(self, phase: str) -> float:
        """Seconds of one `target` after its `setup`."""
        setup, target = self.phase(phase)
        setup()
        t0 = time.perf_counter()
        target()
        return time.perf_counter() - t0

    def recover(self) -> None:
        self.reset()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def cuda_peak_bytes(self, phase: str) -> int:
        """Peak bytes allocated by one `target` above what was allocated before it (CUDA)."""
        setup, target = self.phase(phase)
        setup()
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        target()
        peak = torch.cuda.max_memory_allocated(self.device) - base
        self.reset()
        return peak


# --------------------------------------------------------------------------------------------------
# timing


def percentile(sorted_values, q: float) -> float:
    """Linear-interpolated q-th percentile (0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples) -> dict:
    """median / p20 / p80 / rounds of per-call seconds."""
    s = sorted(float(v) for v in samples)
    return {"median_s": percentile(s, 50), "p20_s": percentile(s, 20), "p80_s": percentile(s, 80),
            "rounds": len(s)}


# Calls this long are timed fewer times (at least 3 rounds below 5 s, 2 below 20 s, then 1): B = 2^20 takes
# tens of seconds a call, and its spread is far below the differences it is measured for.
LONG_CALL_S = (5.0, 20.0)


def plan_rounds(estimate_s: float, device: torch.device, budget_s: float | None = None) -> int:
    """Timed rounds that fit about `budget_s` per phase (CUDA 2 s, 3..100 rounds; CPU 1 s, 3..30; fewer
    for long calls, see LONG_CALL_S)."""
    budget, lo, hi = (2.0, 3, 100) if device.type == "cuda" else (1.0, 3, 30)
    lo = lo if estimate_s < LONG_CALL_S[0] else (2 if estimate_s < LONG_CALL_S[1] else 1)
    rounds = int((budget_s or budget) / max(estimate_s, 1e-6))
    return max(lo, min(hi, rounds))


def warm_up(case: Case, phase: str, min_s: float = 0.3, max_calls: int = 10) -> float:
    """Run the phase for at least `min_s` and, where first calls are special (CUDA: allocator, autotune;
    torch.compile: compilation), at least twice — once only where the first call alone took more than
    LONG_CALL_S[0] on CUDA outside torch.compile (start-up costs are then a small part of it); on shared
    or virtual CPUs the first ~0.1 s of work is slow as well. Returns the last call's seconds, the
    estimate for planning the rounds."""
    at_least = 2 if case.device.type == "cuda" or case.impl == "compiled" else 1
    t0 = time.perf_counter()
    for calls in range(1, max_calls + 1):
        t = case.run_once(phase)
        if calls == 1 and t >= LONG_CALL_S[0] and case.device.type == "cuda" and case.impl != "compiled":
            at_least = 1
        if calls >= at_least and time.perf_counter() - t0 >= min_s:
            break
    return t


def time_phase(case: Case, phase: str, rounds: int | None = None, budget_s: float | None = None) -> list[float]:
    """Per-call seconds of `rounds` timed calls (after warm-up); planned from the estimate if None."""
    estimate = warm_up(case, phase)
    if rounds is None:
        rounds = plan_rounds(estimate, case.device, budget_s)
    return [case.run_once(phase) for _ in range(rounds)]


# --------------------------------------------------------------------------------------------------
# roofline

# (device name pattern, dense peak TFLOP/s per dtype, memory bandwidth TB/s). fp32 is the non-tensor-core
# rate: the Triton kernels use IEEE fp32 dots for fp32 inputs and torch keeps TF32 off for matmul.
PEAKS = [
    (r"H100.*(SXM|HBM3)", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 3.35),
    (r"H100.*PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}, 2.0),
    (r"H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 4.8),
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 2.0),
]


def device_peak(device_name: str, dtype: str):
    """(peak TFLOP/s, TB/s) of a known GPU, else (None, None)."""
    for pattern, flops, bandwidth in PEAKS:
        if re.search(pattern, device_name):
            return flops.get(dtype), bandwidth
    return None, None


def roofline(shape: Shape, phase: str, seconds: float, dtype: str, device_type: str, device_name: str) -> dict:
    """Achieved rate for the problem's nominal FLOPs (Shape.flops) and, on a known GPU, % of peak and of
    the roofline bound max(minimal FLOPs / peak, minimal bytes / bandwidth) (Shape.min_flops: the
    nominal FLOPs for the pairwise losses; without recompute and padding for the local loss)."""
    flops = shape.flops(phase)
    out = {"flops": flops, "tflops": None, "peak_tflops": None, "pct_peak": None, "pct_roofline": None}
    if shape.loss == "local":
        out["min_flops"] = shape.min_flops(phase)
    if flops is None or not seconds or seconds != seconds:
        return out
    out["tflops"] = flops / seconds / 1e12
    if device_type != "cuda":
        return out
    peak, bandwidth = device_peak(device_name, dtype)
    if peak:
        out["peak_tflops"] = peak
        out["pct_peak"] = 100.0 * out["tflops"] / peak
        bound = max(shape.min_flops(phase) / (peak * 1e12),
                    shape.min_bytes(phase, DTYPES[dtype].itemsize) / (bandwidth * 1e12))
        out["pct_roofline"] = 100.0 * bound / seconds
    return out


# --------------------------------------------------------------------------------------------------
# rows and result files


def make_row(case_or_shape, impl: str, phase: str, *, env: dict, dtype: str, samples=None, detail: str = "",
             status: str = "ok", note: str = "", peak_mem_bytes=None, mem_method=None, shape_set: str = "") -> dict:
    """One result row (the schema of results/<device>/<suite>.json and of `cxrfast bench losses --json`;
    local rows also carry R, L, min_words, mean_words and min_flops)."""
    shape = case_or_shape.shape if isinstance(case_or_shape, Case) else case_or_shape
    row = {
        "loss": shape.kind, "paper": shape.paper, "B": shape.B, "D": shape.D, "shape_id": shape.id,
        "set": shape_set, "impl": impl, "impl_detail": detail, "phase": phase, "dtype": dtype,
        "device": env.get("device_name"), "status": status, "note": note,
        "median_s": None, "p20_s": None, "p80_s": None, "rounds": 0,
        "peak_mem_bytes": peak_mem_bytes, "mem_method": mem_method,
    }
    if shape.loss == "local":
        row.update(R=shape.R, L=shape.L, min_words=shape.min_words, mean_words=shape.mean_words)
    if samples:
        row.update(summarize(samples))
        row.update(roofline(shape, phase, row["median_s"], dtype, env.get("device_type"), env.get("device_name", "")))
    return row


def results_document(suite: str, rows: list, env: dict, targets: list | None = None) -> dict:
    return {"schema": SCHEMA, "suite": suite, "env": env, "rows": rows, "targets": targets or []}


def write_json(path, document: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------------
# environment


def slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_slug(device: torch.device) -> str:
    """results/<slug>/: e.g. "nvidia-h100-80gb-hbm3", "cpu-intel-xeon-processor"."""
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device))
    return "cpu-" + slug(cpu_model())


def _git(*args) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """Where and with what a result was measured."""
    import cxrfast

    env = {
        "device_type": device.type,
        "device_slug": device_slug(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton") or _version("pytorch-triton"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cxrfast": cxrfast.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "env_overrides": {k: os.environ[k] for k in ("CXRFAST_IMPL", "CXRFAST_CHECK_FINITE", "TRITON_INTERPRET")
                          if k in os.environ},
    }
    status = _git("status", "--porcelain", "--untracked-files=no")
    env["git_dirty"] = None if status is None else bool(status)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count, device_memory_bytes=props.total_memory)
    else:
        env.update(device_name=f"cpu ({env['cpu_model']})")
    return env


def mem_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


LOCAL_BASELINE_FP32_PER_PAIR_WORD = (2.5, 4)  # floats per (pair, real word): · R, · D


def baseline_bytes_estimate(shape: Shape) -> int:
    """What a baseline holds at its peak, in fp32. InfoNCE and triplet, from their B × B matrices:
    InfoNCE 4 (two logits + two log-softmax in the forward; gradient copies in the backward), triplet 5
    (scores, two costs, the hinge temporaries, the mask). Measured on CPU: B=16384 InfoNCE grows the RSS
    by 4.1 GB = 4 matrices.
    GLoRIA's local loss keeps, for every (image, report) pair, the autograd graph of one report's loop
    iteration: [n, R] attention tensors (softmax outputs, the scaled copy) and [n, D] word/context tensors
    (the repeated words, the weighted context, their transposed copies, the cosine's product) with n the
    report's real length: about 2.5·n·R + 4·n·D floats per pair, fitted to the peak RSS growth of its
    forward+backward on CPU in fp32 (R, D = 100, 64: 494 floats per pair and word; 361, 768: 3911).
    Under 16-bit autocast most of the [n, D] tensors are 16-bit: about half of that."""
    if shape.loss == "local":
        per_r, per_d = LOCAL_BASELINE_FP32_PER_PAIR_WORD
        return int(4 * shape.B * sum(shape.word_lengths()) * (per_r * shape.R + per_d * shape.D))
    return (4 if shape.loss == "infonce" else 5) * shape.baseline_matrix_bytes(4)


def baseline_need(shape: Shape) -> str:
    """What the baseline holds, in words: "B x B matrices (4.0 TB)"."""
    if shape.loss == "local":
        return (f"the autograd graphs of its per-report loop for all B² image-report pairs: about "
                f"{fmt_bytes(baseline_bytes_estimate(shape))} in fp32, half that under 16-bit autocast")
    return f"B x B matrices ({fmt_bytes(baseline_bytes_estimate(shape))})"


def cpu_baseline_reason(shape: Shape) -> str | None:
    """Why the baseline of `shape` should not run on this CPU (None: it fits)."""
    if shape.fused_only:
        return f"the baseline needs {baseline_need(shape)}"
    need, avail = baseline_bytes_estimate(shape), mem_available_bytes()
    if avail is not None and need > 0.8 * avail:
        return f"the baseline needs about {fmt_bytes(need)}; {fmt_bytes(avail)} available"
    return None


# --------------------------------------------------------------------------------------------------
# CPU peak RSS in a fresh process


def _proc_status_bytes(field: str) -> int | None:
    """A "kB" field of /proc/self/status (VmRSS, VmHWM, VmSize) in bytes; None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Reset VmHWM (this mm's peak RSS) to the current RSS (Linux >= 4.0: "5" > clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_child(spec: dict) -> dict:
    """In the fresh process: one forward + backward of the case; peak RSS growth over the state before.

    The figure is ru_maxrss after - ru_maxrss before. That is only sound when this process's ru_maxrss
    started at its own size: Linux carries the maxrss of the process image an exec replaces, so a child
    exec'd straight from a big parent (vfork/fork + exec, as subprocess does) starts with the parent's
    peak as its floor and hides any growth below it. `rss_peak_subprocess` therefore launches through
    /bin/sh (whose fork starts a fresh count). As a cross-check the growth of VmHWM (reset to the current
    RSS just before the call) is recorded too, and used when the floor was nevertheless inherited."""
    import resource

    shape = Shape(**spec["shape"])
    device = torch.device("cpu")
    try:  # if the machine runs out of memory, the kernel should pick this measuring process first
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass
    # Initialise the libraries (thread pools, kernels' lazy state, imports) at a tiny size, so their
    # one-time allocations are not charged to the case; a warm-up at full size would leave freed memory
    # resident and hide the case's own peak.
    tiny = dataclasses.replace(shape, B=max(2, min(16, shape.B // 4)), fused_only=False, gpu_only=False)
    warm = Case(tiny, spec["impl"], device, spec["dtype"])
    warm.loss().backward()
    del warm
    case = Case(shape, spec["impl"], device, spec["dtype"])
    gc.collect()
    limit = spec.get("limit_bytes")
    if limit:
        vm = _proc_status_bytes("VmSize")
        if vm is not None:  # cap the address space: allocation fails in here instead of the OOM killer
            resource.setrlimit(resource.RLIMIT_AS, (vm + int(limit), resource.RLIM_INFINITY))
    hwm_reset = _reset_vm_hwm()
    rss_before = _proc_status_bytes("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    out = {"status": "ok", "note": "", "limit_bytes": limit, "rss_before": rss_before,
           "maxrss_before": maxrss_before, "impl_detail": case.detail,
           "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    try:
        t0 = time.perf_counter()
        loss = case.loss()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        out.update(fwd_s=t1 - t0, bwd_s=t2 - t1, fwdbwd_s=t2 - t0)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        out.update(status="OOM", note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    out["maxrss_after"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm = _proc_status_bytes("VmHWM")
    out["peak_extra_vmhwm"] = hwm - rss_before if hwm_reset and hwm is not None and rss_before else None
    out["peak_extra_bytes"] = out["maxrss_after"] - maxrss_before
    inherited = rss_before is not None and maxrss_before - rss_before > 32 * 2**20
    if inherited and out["peak_extra_vmhwm"] is not None:
        out["peak_extra_bytes"] = out["peak_extra_vmhwm"]
        out["note"] = (out["note"] + "; " if out["note"] else "") + \
            "ru_maxrss started above the resident set (inherited); figure from VmHWM"
    return out


def rss_peak_subprocess(shape: Shape, impl: str, dtype: str = "fp32", *, limit_bytes: int | None = None,
                        timeout_s: float = 900) -> dict:
    """Peak RSS growth of one forward + backward of (shape, impl) on CPU, in a fresh Python process.

    Returns the child's dict: status ("ok" | "OOM" | "error"), peak_extra_bytes, fwd_s, bwd_s, note.
    `limit_bytes` caps the child's extra address space (allocation failure is reported as OOM)."""
    spec = {"shape": dataclasses.asdict(shape),
            "impl": impl, "dtype": dtype, "limit_bytes": limit_bytes}
    cmd = [sys.executable, "-m", "cxrfast.bench.measure", "rss", json.dumps(spec)]
    if os.path.exists("/bin/sh"):  # a small intermediate process: see _rss_child on inherited ru_maxrss
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    # A fixed mmap threshold turns off glibc's dynamic one, which otherwise keeps freed blocks of up to
    # 32 MB in its arenas after the first large free: identical runs then differ by +-50 MB. With it,
    # large tensors go back to the OS when freed and the figure is the peak of live memory (what
    # max_memory_allocated gives on CUDA), reproducible to about 1 MB. Both implementations get it.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"timed out after {timeout_s:.0f} s", "peak_extra_bytes": None}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    if proc.returncode in (-9, 137):  # SIGKILL, directly or as the shell reports it
        return {"status": "OOM", "note": "fresh process killed by SIGKILL (out of memory)",
                "peak_extra_bytes": None}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": "error", "note": f"exit {proc.returncode}: " + " | ".join(tail), "peak_extra_bytes": None}


# --------------------------------------------------------------------------------------------------
# progress


def progress(total: int, desc: str):
    """The shared bar (cxrfast._progress.Bar), counting cases; it has
    step(label) and close()."""
    from cxrfast._progress import progress as _progress

    return _progress(total, desc, unit="case")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "rss":
        sys.exit("usage: python -m cxrfast.bench.measure rss '<json spec>'")
    print("RESULT " + json.dumps(_rss_child(json.loads(sys.argv[2]))), flush=True)
