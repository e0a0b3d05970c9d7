"""Helpers shared by the pair-statistics ops (InfoNCE, triplet)."""

from __future__ import annotations

import torch

from cxrfast.reference.contrastive import NORM_EPS


def inverse_norms(t: torch.Tensor, normalize: bool) -> torch.Tensor:
    """rx = 1 / max(‖t_i‖, eps) in fp32 (fp64 for fp64 input), differentiable; ones when not normalising.
    The kernels take this multiplier instead of a normalised copy of `t`."""
    dtype = torch.promote_types(t.dtype, torch.float32)
    if not normalize:
        return torch.ones(t.shape[0], dtype=dtype, device=t.device)
    return torch.linalg.vector_norm(t, dim=1, dtype=dtype).clamp_min(NORM_EPS).reciprocal()


def grad_precision(t: torch.Tensor):
    """(t in the precision its gradient is assembled in, the dtype the kernels read it in or None).

    16-bit embeddings are differentiated through an fp32 copy: every path of the loss (the op, the inverse
    norms, the triplet's pair scores) then adds its part of ∂/∂t in fp32, and the sum is rounded to 16 bits
    once, where the copy was made. Without it autograd adds separately rounded 16-bit parts that cancel
    (the normalisation's radial term against the op's): issue 9 measured errors of ~4 bf16 ulps of the
    large terms on small gradient entries. The ops cast the copy back to the 16-bit dtype for their kernels
    (exactly: the values came from 16 bits), so the kernels run as before. Cost: 4 bytes per element of
    extra memory, O(B·D)."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float(), t.dtype
    return t, None


def kernel_inputs(x: torch.Tensor, y: torch.Tensor, kernel_dtype):
    """x, y in the dtype the kernels read (see grad_precision); unchanged when kernel_dtype is None."""
    if kernel_dtype is None or kernel_dtype == x.dtype:
        return x, y
    return x.to(kernel_dtype), y.to(kernel_dtype)


# Rows per block of the fp32 upcast in rowdot (transient memory: 2 · block · D · 4 bytes).
ROWDOT_BLOCK = 4096


class _RowDot(torch.autograd.Function):
    """d_i = x_i · y_i with fp32 products and accumulation (fp64 for fp64), whatever the input dtype.

    `(x * y).sum(-1, dtype=float32)` would round every product to the input dtype first: for bf16 an
    error of ~1e-3 in d, enough to flip hinge decisions that the kernels, whose products are exact in
    fp32, resolve correctly. Upcasting block by block keeps the memory O(block · D); backward saves only
    x and y, which autograd keeps anyway."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        cd = torch.promote_types(x.dtype, torch.float32)
        out = torch.empty(x.shape[0], dtype=cd, device=x.device)
        for i in range(0, x.shape[0], ROWDOT_BLOCK):
            sl = slice(i, i + ROWDOT_BLOCK)
            out[sl] = (x[sl].to(cd) * y[sl].to(cd)).sum(-1)
        return out

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gx = (g[:, None] * y).to(x.dtype) if ctx.needs_input_grad[0] else None
        gy = (g[:, None] * x).to(y.dtype) if ctx.needs_input_grad[1] else None
        return gx, gy


def rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] fp32 (fp64 for fp64) row-wise dot products, differentiable; see _RowDot."""
    return _RowDot.apply(x, y)


def group_sums(x: torch.Tensor, w: torch.Tensor, ids: torch.Tensor | None, n_groups: int) -> torch.Tensor:
    """G [n_groups, D] = Σ_{i: ids[i] = g} w_i · x_i in fp32 (fp64 for fp64), differentiable, block by block
    (transient memory O(block · D)); ids None: one group, Σ_i w_i · x_i as [1, D]."""
    cd = torch.promote_types(x.dtype, torch.float32)
    out = torch.zeros(n_groups if ids is not None else 1, x.shape[1], dtype=cd, device=x.device)
    for i in range(0, x.shape[0], ROWDOT_BLOCK):
        sl = slice(i, i + ROWDOT_BLOCK)
        part = x[sl].to(cd) * w[sl, None].to(cd)
        if ids is None:
            out = out + part.sum(0, keepdim=True)
        else:
            out = out.index_add(0, ids[sl].long(), part)
    return out


def column_scores(x, y, rx, ry, scale, ids: torch.Tensor | None, n_groups: int) -> torch.Tensor:
    """c_j = Σ_{i in j's group} s_ij with s = scale · diag(rx) · x · yᵀ · diag(ry) ([N], differentiable), in
    O((M + N) · D): s_ij is linear in x_i, so the sum over i is one weighted sum of x per group, dotted with
    y_j. ids: dense group ids of the rows and columns (None: every row, i.e. the column sums of s)."""
    G = group_sums(x, rx, ids, n_groups)  # [groups, D]
    per_col = G[ids.long()] if ids is not None else G.expand(y.shape[0], -1)
    return scale.to(G.dtype) * ry.to(G.dtype) * rowdot(y, per_col)


def zeros_if_none(g, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous()


def input_grads(ctx, x, y, rx, ry, scale, pieces):
    """Turn the gradient pieces (A_x, A_y, V_r, V_c) into ∂/∂(x, y, rx, ry, scale); see kernels.pairwise."""
    ax, ay, vr, vc = pieces
    sc = scale.to(ax.dtype)
    need = ctx.needs_input_grad
    # A_x, A_y are this backward's own fp32 buffers: scaled in place, no second B×D fp32 temporary
    dx = ax.mul_((sc * rx.to(ax.dtype))[:, None]).to(x.dtype) if need[0] else None
    dy = ay.mul_((sc * ry.to(ay.dtype))[:, None]).to(y.dtype) if need[1] else None
    drx = (sc * vr).to(rx.dtype) if need[2] else None
    dry = (sc * vc).to(ry.dtype) if need[3] else None
    dscale = (rx.to(vr.dtype) * vr).sum().to(scale.dtype) if need[4] else None
    return dx, dy, drx, dry, dscale


def stat_fakes(*shapes, like: torch.Tensor):
    dtype = torch.promote_types(like.dtype, torch.float32)
    return tuple(like.new_empty(s, dtype=dtype) for s in shapes)
