"""InfoNCE (CLIP / ConVIRT) loss: the `cxrfast::infonce_stats` op and `contrastive_loss`."""

from __future__ import annotations

from typing import Optional

import torch

from cxrfast.ops import _chunked, _dispatch, _validate
from cxrfast.ops._register import op
from cxrfast.ops._pairwise import (column_scores, grad_precision, input_grads, inverse_norms, kernel_inputs,
                                   stat_fakes, zeros_if_none)
from cxrfast.reference.contrastive import REDUCTIONS

OP = "contrastive_loss"


@op("cxrfast::infonce_stats")
def infonce_stats(
    x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, scale: torch.Tensor,
    row_groups: Optional[torch.Tensor], col_groups: Optional[torch.Tensor], pos_offset: int,
    columns: bool, impl: str, kernel_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row/column statistics of s = scale · diag(rx) · x · yᵀ · diag(ry), x [M, D], y [N, D]:
    (lse_r [M], lse_c [N], pos_r [M], cnt [M], sum_r [M]); see cxrfast.kernels.contrastive.
    columns=False returns lse_c empty ([0]) and skips its softmax. Nothing M × N is stored.
    impl: "triton" or "chunked". kernel_dtype: the dtype the kernels read x and y in, when they come as
    fp32 copies of 16-bit embeddings (_pairwise.grad_precision); None: their own dtype."""
    x, y = kernel_inputs(x, y, kernel_dtype)
    args = (x, y, rx, ry, scale, row_groups, col_groups, pos_offset, columns)
    if impl == "triton":
        from cxrfast.kernels.contrastive import infonce_forward

        return infonce_forward(*args)
    return _chunked.infonce_stats(*args)


@infonce_stats.register_fake
def _(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, columns, impl, kernel_dtype=None):
    M, N = x.shape[0], y.shape[0]
    return stat_fakes((M,), (N if columns else 0,), (M,), (M,), (M,), like=x)


@op("cxrfast::infonce_stats_backward")
def infonce_stats_backward(
    x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, scale: torch.Tensor,
    row_groups: Optional[torch.Tensor], col_groups: Optional[torch.Tensor], pos_offset: int,
    lse_r: torch.Tensor, lse_c: torch.Tensor,
    g_lse_r: torch.Tensor, g_lse_c: torch.Tensor, g_pos: torch.Tensor, g_sum: torch.Tensor, impl: str,
    kernel_dtype: Optional[torch.dtype] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient pieces (A_x [M, D], A_y [N, D], V_r [M], V_c [N]) of Σ g·stats (kernels.pairwise)."""
    x, y = kernel_inputs(x, y, kernel_dtype)
    args = (x, y, rx, ry, scale, row_groups, col_groups, pos_offset, lse_r, lse_c, g_lse_r, g_lse_c, g_pos, g_sum)
    if impl == "triton":
        from cxrfast.kernels.contrastive import infonce_backward

        return infonce_backward(*args)
    return _chunked.infonce_backward(*args)


@infonce_stats_backward.register_fake
def _(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, lse_r, lse_c, g_lse_r, g_lse_c, g_pos, g_sum, impl,
      kernel_dtype=None):
    return stat_fakes(tuple(x.shape), tuple(y.shape), (x.shape[0],), (y.shape[0],), like=x)


def _setup_context(ctx, inputs, output):
    x, y, rx, ry, scale, row_groups, col_groups, pos_offset, _columns, impl, kernel_dtype = inputs
    lse_r, lse_c, _, cnt, _ = output
    ctx.mark_non_differentiable(cnt)
    ctx.save_for_backward(x, y, rx, ry, scale, row_groups, col_groups, lse_r, lse_c)
    ctx.pos_offset, ctx.impl, ctx.kernel_dtype = pos_offset, impl, kernel_dtype


def _backward(ctx, g_lse_r, g_lse_c, g_pos, g_cnt, g_sum):
    x, y, rx, ry, scale, row_groups, col_groups, lse_r, lse_c = ctx.saved_tensors
    pieces = torch.ops.cxrfast.infonce_stats_backward(
        x, y, rx, ry, scale, row_groups, col_groups, ctx.pos_offset, lse_r, lse_c,
        zeros_if_none(g_lse_r, lse_r), zeros_if_none(g_lse_c, lse_c),
        zeros_if_none(g_pos, lse_r), zeros_if_none(g_sum, lse_r), ctx.impl, ctx.kernel_dtype)
    return (*input_grads(ctx, x, y, rx, ry, scale, pieces), None, None, None, None, None, None)


torch.library.register_autograd("cxrfast::infonce_stats", _backward, setup_context=_setup_context)


def dense_group_ids(groups: torch.Tensor) -> torch.Tensor:
    """int32 ids 0..G-1 with the same equalities as `groups` (any int64 values, e.g. study ids).
    The kernels compare ids tile by tile: int32 halves their registers (the grouped backward tile at
    128×128 spills otherwise, benchmarks/aot_sm90.py)."""
    # sort + run starts + scatter back: static shapes throughout (torch.unique's output size is
    # data-dependent, which torch.compile(fullgraph=True) cannot always capture)
    values, order = torch.sort(groups)
    starts = torch.ones_like(values, dtype=torch.int32)
    starts[1:] = (values[1:] != values[:-1]).to(torch.int32)
    return torch.empty_like(starts).scatter_(0, order, starts.cumsum(0, dtype=torch.int32) - 1)


def row_targets(pos_r, cnt, sum_r, n_cols: int, label_smoothing: float) -> torch.Tensor:
    """Σ_j q_ij s_ij for each row, q_i = (1−ε)·uniform(positives of i) + ε·uniform(all n_cols columns),
    so that the cross-entropy of row i is lse_r[i] − row_targets[i]."""
    return (1.0 - label_smoothing) * pos_r / cnt + (label_smoothing / n_cols) * sum_r


SCALE_MEANING = "the multiplier of the cosine similarities, 1/temperature: e.g. 10 for τ = 0.1"


def checked_arguments(op, image_emb, text_emb, logit_scale, weights, label_smoothing, groups, impl):
    """Validate the InfoNCE arguments (errors named for `op`) and resolve the implementation:
    (scale 0-dim tensor, (w_i2t, w_t2i), label_smoothing, groups int64 or None, chosen impl)."""
    _validate.embedding_pair(op, image_emb, text_emb)
    scale = _validate.scalar(op, "logit_scale", logit_scale, image_emb, positive=SCALE_MEANING)
    w = _validate.weights_arg(op, weights)
    eps = _validate.probability(op, "label_smoothing", label_smoothing)
    groups = _validate.groups_arg(op, groups, image_emb.shape[0], image_emb)
    reasons = _dispatch.triton_reasons(image_emb, text_emb, dim=image_emb.shape[1])
    return scale, w, eps, groups, _dispatch.select(op, impl, reasons)


def plan(image_emb, text_emb, logit_scale=None, *, impl="auto", **_):
    """(chosen impl, reasons Triton is not usable, what was requested) — for `explain`."""
    _validate.embedding_pair(OP, image_emb, text_emb)
    reasons = _dispatch.triton_reasons(image_emb, text_emb, dim=image_emb.shape[1])
    return _dispatch.select(OP, impl, reasons), reasons, impl


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale,
    *,
    normalize: bool = True,
    weights=(0.5, 0.5),
    label_smoothing: float = 0.0,
    groups: torch.Tensor | None = None,
    reduction: str = "mean",
    impl: str = "auto",
) -> torch.Tensor:
    """Symmetric InfoNCE without any B × B tensor.

    image_emb [B, D], text_emb [B, D] (fp16/bf16/fp32; fp64 on the chunked path), logit_scale a
    scalar tensor (the multiplier, e.g. exp of a learnable log-scale) or a number, groups optional
    [B] integer ids (pairs with equal ids are all positives, e.g. several views of one study).
    Equivalent to (for groups=None, label_smoothing=0)::

        S = logit_scale * F.normalize(image_emb) @ F.normalize(text_emb).T
        weights[0] * F.cross_entropy(S, arange(B)) + weights[1] * F.cross_entropy(S.T, arange(B))

    reduction: "mean" (the loss above), "sum", or "none": the per-sample losses ℓ [B],
    ℓ_i = weights[0] · CE(S[i, :]) + weights[1] · CE(S[:, i]) (pair i's image and text as anchors; their mean
    is the loss), from the same O(B) statistics plus, with groups or label smoothing, O(B·D) column sums.

    Returns a 0-dim fp32 tensor (fp64 for fp64 input), [B] for reduction="none". Gradients flow to both
    embeddings and to logit_scale. See cxrfast.reference.contrastive_loss for the full definition.
    """
    scale, w, eps, groups, chosen = checked_arguments(OP, image_emb, text_emb, logit_scale, weights,
                                                      label_smoothing, groups, impl)
    _validate.choice(OP, "reduction", reduction, REDUCTIONS)
    if chosen == "reference":
        from cxrfast.reference import contrastive_loss as reference

        return reference(image_emb, text_emb, scale, normalize=normalize, weights=w,
                         label_smoothing=eps, groups=groups, reduction=reduction)

    B = image_emb.shape[0]
    if groups is not None:
        groups = dense_group_ids(groups)
    x, kernel_dtype = grad_precision(image_emb)
    y, _ = grad_precision(text_emb)
    rx, ry = inverse_norms(x, normalize), inverse_norms(y, normalize)
    lse_r, lse_c, pos_r, cnt, sum_r = torch.ops.cxrfast.infonce_stats(
        x, y, rx, ry, scale, groups, groups, 0, True, chosen, kernel_dtype)
    if reduction == "none":
        return per_sample(x, y, rx, ry, scale, groups, (lse_r, lse_c, pos_r, cnt, sum_r), w, eps)
    # Positives are symmetric, so Σ_j (target term of column j) = Σ_i (target term of row i):
    # one O(B) sum serves both directions.
    target = row_targets(pos_r, cnt, sum_r, B, eps).sum()
    total = w[0] * lse_r.sum() + w[1] * lse_c.sum() - (w[0] + w[1]) * target
    return total if reduction == "sum" else total / B


def per_sample(x, y, rx, ry, scale, groups, stats, w, eps) -> torch.Tensor:
    """ℓ_i = w_i2t · (lse_r[i] − row target i) + w_t2i · (lse_c[i] − column target i), [B].

    The column target of text i is (1−ε) · (Σ of s over i's positive images) / cnt[i] + ε/B · Σ_j s_ji. Without
    groups its positive is s_ii = pos_r[i]; with groups, and for the smoothing term, the column sums come
    from column_scores (O(B·D), no B × B): the statistics ops give row sums only."""
    lse_r, lse_c, pos_r, cnt, sum_r = stats
    B = x.shape[0]
    if groups is None:
        pos_c = pos_r
    else:
        pos_c = column_scores(x, y, rx, ry, scale, groups, B)
    col_target = (1.0 - eps) * pos_c / cnt
    if eps:
        col_target = col_target + (eps / B) * column_scores(x, y, rx, ry, scale, None, 1)
    row = lse_r - row_targets(pos_r, cnt, sum_r, B, eps)
    return w[0] * row + w[1] * (lse_c - col_target)
