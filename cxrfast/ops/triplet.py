"""Triplet / ranking loss (VSE++, JoImTeRNet): the `cxrfast::triplet_*` ops and `triplet_loss`."""

from __future__ import annotations

from typing import Optional

import torch

from cxrfast.ops import _chunked, _dispatch, _validate
from cxrfast.ops._register import op
from cxrfast.ops._pairwise import (grad_precision, input_grads, inverse_norms, kernel_inputs, rowdot, stat_fakes,
                                   zeros_if_none)

OP = "triplet_loss"
NEGATIVES = ("hardest", "all")
REDUCTIONS = ("sum", "mean", "none")
DISTANCES = ("cosine", "dot")


@op("cxrfast::triplet_hardest")
def triplet_hardest(x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, impl: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 (idx_r [B], idx_c [B]): argmax over negatives of each row / column of diag(rx)·x·yᵀ·diag(ry);
    -1 where there is no negative (B = 1). Not differentiable: the loss gathers the chosen pairs."""
    if impl == "triton":
        from cxrfast.kernels.triplet import triplet_hardest as kernel

        return kernel(x, y, rx, ry)
    return _chunked.triplet_hardest(x, y, rx, ry)


@triplet_hardest.register_fake
def _(x, y, rx, ry, impl):
    return x.new_empty((x.shape[0],), dtype=torch.int64), x.new_empty((x.shape[0],), dtype=torch.int64)


@op("cxrfast::triplet_all")
def triplet_all(x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, diag: torch.Tensor,
                margin: float, impl: str, kernel_dtype: Optional[torch.dtype] = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hinge_r, hinge_c, cnt_r, cnt_c), each [B]: Σ over negatives of [margin + s_ij − d]₊ per row
    (d = diag[i]) and per column (d = diag[j]), and how many hinges are active. kernel_dtype: as
    cxrfast::infonce_stats'."""
    x, y = kernel_inputs(x, y, kernel_dtype)
    if impl == "triton":
        from cxrfast.kernels.triplet import triplet_all as kernel

        return kernel(x, y, rx, ry, diag, margin)
    return _chunked.triplet_all(x, y, rx, ry, diag, margin)


@triplet_all.register_fake
def _(x, y, rx, ry, diag, margin, impl, kernel_dtype=None):
    return stat_fakes(*[(x.shape[0],)] * 4, like=x)


@op("cxrfast::triplet_all_backward")
def triplet_all_backward(x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor,
                         diag: torch.Tensor, margin: float, g_hinge_r: torch.Tensor, g_hinge_c: torch.Tensor,
                         impl: str, kernel_dtype: Optional[torch.dtype] = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient pieces (A_x, A_y, V_r, V_c) of Σ g_r·hinge_r + Σ g_c·hinge_c (kernels.pairwise)."""
    x, y = kernel_inputs(x, y, kernel_dtype)
    if impl == "triton":
        from cxrfast.kernels.triplet import triplet_all_backward as kernel

        return kernel(x, y, rx, ry, diag, margin, g_hinge_r, g_hinge_c)
    return _chunked.triplet_all_backward(x, y, rx, ry, diag, margin, g_hinge_r, g_hinge_c)


@triplet_all_backward.register_fake
def _(x, y, rx, ry, diag, margin, g_hinge_r, g_hinge_c, impl, kernel_dtype=None):
    return stat_fakes(tuple(x.shape), tuple(y.shape), (x.shape[0],), (y.shape[0],), like=x)


def _setup_context(ctx, inputs, output):
    x, y, rx, ry, diag, margin, impl, kernel_dtype = inputs
    _, _, cnt_r, cnt_c = output
    ctx.mark_non_differentiable(cnt_r, cnt_c)
    ctx.save_for_backward(x, y, rx, ry, diag, cnt_r, cnt_c)
    ctx.margin, ctx.impl, ctx.kernel_dtype = margin, impl, kernel_dtype


def _backward(ctx, g_hinge_r, g_hinge_c, g_cnt_r, g_cnt_c):
    x, y, rx, ry, diag, cnt_r, cnt_c = ctx.saved_tensors
    g_hinge_r, g_hinge_c = zeros_if_none(g_hinge_r, cnt_r), zeros_if_none(g_hinge_c, cnt_c)
    pieces = torch.ops.cxrfast.triplet_all_backward(x, y, rx, ry, diag, ctx.margin, g_hinge_r, g_hinge_c, ctx.impl,
                                                    ctx.kernel_dtype)
    one = torch.ones((), dtype=rx.dtype, device=x.device)
    dx, dy, drx, dry, _ = input_grads(ctx, x, y, rx, ry, one, pieces)
    # d appears with a minus sign in every active hinge of its row (as anchor image) and column (text)
    ddiag = -(g_hinge_r * cnt_r + g_hinge_c * cnt_c).to(diag.dtype) if ctx.needs_input_grad[4] else None
    return dx, dy, drx, dry, ddiag, None, None, None


torch.library.register_autograd("cxrfast::triplet_all", _backward, setup_context=_setup_context)


def plan(image_emb, text_emb, *, impl="auto", **_):
    """(chosen impl, reasons Triton is not usable, what was requested) — for `explain`."""
    _validate.embedding_pair(OP, image_emb, text_emb)
    reasons = _dispatch.triton_reasons(image_emb, text_emb, dim=image_emb.shape[1])
    return _dispatch.select(OP, impl, reasons), reasons, impl


def _pair_scores(x, y, rx, ry):
    """s_i = rx_i · ry_i · (x_i · y_i), row by row, differentiable, with fp32 products like the kernels."""
    return rowdot(x, y) * rx * ry


def triplet_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    margin: float = 0.2,
    negatives: str = "hardest",
    reduction: str = "sum",
    distance: str = "cosine",
    impl: str = "auto",
) -> torch.Tensor:
    """Bidirectional hinge ranking loss without any B × B tensor.

    image_emb, text_emb [B, D]; the pair (i, i) is positive, every (i, j ≠ i) negative. With s the cosine
    similarity (distance="cosine") or the dot product (distance="dot"):
        image i: [margin + s(i, j) − s(i, i)]₊ over texts j ≠ i;  text j: [margin + s(i, j) − s(j, j)]₊ over i ≠ j.
    negatives="hardest": the largest hinge of each anchor (VSE++); "all": their sum. The per-sample loss ℓ_i
    adds pair i's two anchors (image i, text i); reduction="sum" adds the 2·B anchor terms (Σ ℓ), "mean"
    divides that by B, "none" returns ℓ [B]. JoImTeRNet: distance="cosine", margin=0.5 (its cosine
    distance form is the same expression). Returns a 0-dim fp32 tensor (fp64 for fp64 input), [B] for "none".
    """
    _validate.embedding_pair(OP, image_emb, text_emb)
    _validate.choice(OP, "negatives", negatives, NEGATIVES)
    _validate.choice(OP, "reduction", reduction, REDUCTIONS)
    _validate.choice(OP, "distance", distance, DISTANCES)
    margin = _validate.finite_number(OP, "margin", margin)
    reasons = _dispatch.triton_reasons(image_emb, text_emb, dim=image_emb.shape[1])
    chosen = _dispatch.select(OP, impl, reasons)
    if chosen == "reference":
        from cxrfast.reference import triplet_loss as reference

        return reference(image_emb, text_emb, margin=margin, negatives=negatives,
                         reduction=reduction, distance=distance)

    x, kernel_dtype = grad_precision(image_emb)  # 16-bit: differentiated in fp32, rounded once (_pairwise)
    y, _ = grad_precision(text_emb)
    B = x.shape[0]
    normalize = distance == "cosine"
    rx, ry = inverse_norms(x, normalize), inverse_norms(y, normalize)
    diag = _pair_scores(x, y, rx, ry)
    if negatives == "hardest":
        idx_r, idx_c = torch.ops.cxrfast.triplet_hardest(image_emb.detach(), text_emb.detach(), rx.detach(),
                                                         ry.detach(), chosen)
        # Only the 2·B chosen pairs carry gradient: recompute their scores differentiably, O(B·D).
        has_r, has_c = idx_r >= 0, idx_c >= 0
        j, i = idx_r.clamp(min=0), idx_c.clamp(min=0)
        s_r = _pair_scores(x, y[j], rx, ry[j])
        s_c = _pair_scores(x[i], y, rx[i], ry)
        per_img = torch.where(has_r, (margin + s_r - diag).clamp(min=0), 0)
        per_txt = torch.where(has_c, (margin + s_c - diag).clamp(min=0), 0)
    else:
        per_img, per_txt, _, _ = torch.ops.cxrfast.triplet_all(x, y, rx, ry, diag, float(margin), chosen,
                                                               kernel_dtype)
    if reduction == "none":
        return per_img + per_txt
    total = per_img.sum() + per_txt.sum()
    return total / B if reduction == "mean" else total
