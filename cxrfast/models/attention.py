"""One attention function for cxrfast's own blocks (view fusion, the report decoder, the single-stream
transformer), with two backends:

    "sdpa"      torch.nn.functional.scaled_dot_product_attention (default; any device)
    "xformers"  xformers.ops.memory_efficient_attention, where xformers is installed and runs (its ops are
                CUDA-only: on other devices, or without it, this backend raises saying why)

xformers is optional and deliberately not in requirements/ nor in the package's dependencies: its wheels are
built against one CUDA release (0.0.35: cu128) and pin a torch of their own, its ops do nothing on a CPU
(CI's machines), and "sdpa" computes the same attention everywhere. Install it beside a matching torch on a
GPU machine to use this backend; nothing imports it unless backend="xformers" is asked for.

q [B, H, Lq, Dh], k and v [B, H, Lk, Dh]; key_padding [B, Lk] bool (True: a real key) or None; causal.
Both backends compute softmax(q kᵀ / √Dh + mask) v; results agree within rounding (tested where both run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attention", "BACKENDS", "xformers_reason"]

BACKENDS = ("sdpa", "xformers")


def xformers_reason(device: torch.device) -> str | None:
    """None when the xformers backend can run on `device`, else why not."""
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - an import error of any kind means "not usable"
        return f"xformers is not importable ({type(exc).__name__}: {exc})"
    if device.type != "cuda":
        return f"xformers' attention ops are CUDA-only; the tensors are on {device}"
    return None


def _bias(key_padding, causal: bool, B: int, H: int, Lq: int, Lk: int, dtype, device):
    """Additive mask [B, H, Lq, Lk] (0 or -inf), or None."""
    if key_padding is None and not causal:
        return None
    bias = torch.zeros(B, 1, Lq, Lk, dtype=dtype, device=device)
    if key_padding is not None:
        bias = bias.masked_fill(~key_padding[:, None, None, :], float("-inf"))
    if causal:
        future = torch.ones(Lq, Lk, dtype=torch.bool, device=device).triu(1)
        bias = bias.masked_fill(future, float("-inf"))
    return bias.expand(B, H, Lq, Lk)


def attention(q, k, v, *, key_padding=None, causal: bool = False, backend: str = "sdpa", dropout_p: float = 0.0):
    """softmax(q kᵀ / √Dh + mask) v, [B, H, Lq, Dh] (see the module docstring). A query whose keys are all
    masked gets zeros, not NaN."""
    if backend not in BACKENDS:
        raise ValueError(f"attention: backend must be one of {BACKENDS}, got {backend!r}")
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]
    bias = _bias(key_padding, causal, B, H, Lq, Lk, q.dtype, q.device)
    if backend == "xformers":
        why = xformers_reason(q.device)
        if why:
            raise RuntimeError(f"attention(backend='xformers'): {why}")
        import xformers.ops as xops

        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_bias=bias, p=dropout_p).transpose(1, 2)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    if bias is not None:  # rows with no key at all: softmax of all -inf is NaN; make them 0
        dead = torch.isinf(bias).all(dim=-1, keepdim=True) if key_padding is not None or causal else None
        if dead is not None:
            out = out.masked_fill(dead, 0.0)
    return out
