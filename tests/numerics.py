"""DESIGN's earned tolerance: |kernel − ref64| ≤ k·|ref_lowprec − ref64| + atol_dtype."""

from __future__ import annotations

import torch

ATOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 2e-3, torch.float16: 5e-4}
K = 2.0


def assert_earned(name: str, got, ref64, ref_low, dtype: torch.dtype, k: float = K, amplification: float = 1.0) -> None:
    """Tensor-wise max-norm form of the rule; atol is relative to the size of the reference.

    `amplification` states a known condition number: with logit scale τ, a rounding error δ in a cosine
    is τ·δ in a logit, so at τ = 100 an fp32 result may differ from ref64 by ~100·eps even where the
    one sample of the fp32 reference happened to land closer (a scalar like ∂/∂logit_scale has no
    spread for the max-norm to average over)."""
    got = torch.as_tensor(got).detach().double().cpu()
    ref64 = torch.as_tensor(ref64).detach().double().cpu()
    ref_low = torch.as_tensor(ref_low).detach().double().cpu()
    assert got.shape == ref64.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref64.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values in the result"
    err = (got - ref64).abs().max().item()
    earned = (ref_low - ref64).abs().max().item()
    scale = max(1.0, ref64.abs().max().item())
    bound = k * earned + ATOL[dtype] * scale * amplification
    assert err <= bound, (f"{name}: max |got − ref64| = {err:.3e} > {bound:.3e} "
                          f"(= {k}·{earned:.3e} earned by the {dtype} reference + {ATOL[dtype]:.0e}·{scale:.3g})")


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def loss_and_grads(fn, tensors):
    """Run fn(*leaves) → loss; return (loss, [grads of the floating leaves])."""
    leaves = [leaf(t) if t.is_floating_point() else t for t in tensors]
    loss = fn(*leaves)
    diff = [t for t in leaves if t.is_floating_point()]
    grads = torch.autograd.grad(loss, diff, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(diff, grads)]
    return loss.detach(), grads


def poison_new_tensors(monkeypatch) -> None:
    """Make every torch.empty return NaN (floats) or -7 (ints): an op that leaves any element of an
    output it allocated unwritten then fails its comparison."""
    real_empty = torch.empty

    def poisoned(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-7)

    monkeypatch.setattr(torch, "empty", poisoned)


def force_16bit_operands(monkeypatch) -> None:
    """Make the interpreter run the GPU's cast path for fp16: gradient tiles really cast to fp16 before
    tl.dot (the interpreter multiplies fp16 correctly; only bf16 needs the upcast)."""
    from cxrfast.kernels import pairwise

    real = pairwise.dot_flags
    monkeypatch.setattr(pairwise, "dot_flags", lambda dtype: dict(real(dtype), UPCAST=False)
                        if dtype == torch.float16 else real(dtype))
