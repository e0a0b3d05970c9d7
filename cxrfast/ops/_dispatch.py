"""Implementation choice: impl = "auto" | "triton" | "chunked" | "reference".

"auto" takes the CXRFAST_IMPL environment variable when it is set, else Triton when the inputs are
supported by the Triton kernels (CUDA tensors, fp16/bf16/fp32, D ≤ 4096, triton importable) and the
chunked PyTorch path otherwise. An explicit "triton" on unsupported input raises with every reason;
it never falls back silently. `explain(...)` tells what a call would run, and why.
"""

from __future__ import annotations

import os

import torch

IMPLS = ("auto", "triton", "chunked", "reference")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_TRITON_DIM = 4096


class UnsupportedInputError(ValueError):
    """The requested implementation cannot run these inputs; the message lists the reasons."""


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_import_error() -> str | None:
    from cxrfast.ops._register import has_triton

    return None if has_triton() else "triton is not installed (it is a Linux-only dependency)"


def triton_reasons(*tensors: torch.Tensor, dim: int) -> list[str]:
    """Why the Triton kernels cannot take these tensors (empty list: they can)."""
    reasons = []
    err = triton_import_error()
    if err:
        reasons.append(err)
    t = tensors[0]
    if t.device.type != "cuda" and not (interpreting() and t.device.type == "cpu"):
        reasons.append(f"tensors are on {t.device}, the Triton kernels need CUDA "
                       "(or CPU with TRITON_INTERPRET=1)")
    if t.dtype not in TRITON_DTYPES:
        reasons.append(f"dtype {t.dtype} is not one of float16, bfloat16, float32")
    elif t.dtype == torch.bfloat16 and t.device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(t.device)
        if major < 8:
            reasons.append(f"bfloat16 tensor-core dots need compute capability 8.0+, this GPU is {major}.{minor}")
    if dim > MAX_TRITON_DIM:
        reasons.append(f"embedding dim D={dim} exceeds the supported maximum {MAX_TRITON_DIM}")
    return reasons


def select(op: str, impl: str, reasons: list[str]) -> str:
    """Resolve `impl` for an op whose Triton path is blocked by `reasons` (empty: supported)."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: `impl` must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = os.environ.get("CXRFAST_IMPL", "auto") or "auto"
        if impl not in IMPLS:
            raise ValueError(f"{op}: environment variable CXRFAST_IMPL must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if not reasons and not interpreting() else "chunked"
    if impl == "triton" and reasons:
        raise UnsupportedInputError(f"{op}: impl='triton' cannot run these inputs: " + "; ".join(reasons))
    return impl


# the ops explain() knows, and the module whose plan(...) it asks
EXPLAINED = {"contrastive_loss": "cxrfast.ops.contrastive", "triplet_loss": "cxrfast.ops.triplet",
             "word_region_similarity": "cxrfast.ops.local", "local_contrastive_loss": "cxrfast.ops.local",
             "local_triplet_loss": "cxrfast.ops.local", "lovt_local_loss": "cxrfast.ops.lovt"}


def explain(op: str, *args, **kwargs) -> str:
    """Which implementation `cxrfast.<op>(*args, **kwargs)` would run, and why. Runs no kernel.

    >>> cxrfast.explain("contrastive_loss", img, txt, scale)
    'contrastive_loss: chunked (auto; Triton not used: tensors are on cpu, ...)'
    """
    import importlib

    if op not in EXPLAINED:
        raise ValueError(f"explain: unknown op {op!r}; known: {sorted(EXPLAINED)}")
    planned = importlib.import_module(EXPLAINED[op]).plan(*args, **kwargs)
    if len(planned) == 2:  # an op without a Triton path says why itself
        impl, why = planned
        return f"{op}: {impl} ({kwargs.get('impl', 'auto')}; {why})"
    impl, reasons, requested = planned
    if reasons:
        why = "Triton not used: " + "; ".join(reasons)
    elif impl != "triton" and interpreting():
        why = "TRITON_INTERPRET=1: auto keeps the chunked path; impl='triton' runs the kernels interpreted"
    else:
        why = "Triton supported"
    return f"{op}: {impl} ({requested}; {why})"
