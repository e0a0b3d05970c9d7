"""Triplet / ranking loss (VSE++, JoImTeRNet): the `cxrfast::triplet_*` ops and `triplet_loss`."""

from __future__ import annotations

from typing import Optional

import torch

from cxrfast.ops import _chunked, _dispatch, _validate
from cxrfast.ops._register import op
from cxrfast.ops._pairwise import (grad_precision, input_grads, inverse_norms, kernel_inputs, rowdot, stat_fakes,
                                   zeros_if_none)
from cxrfast.reference.triplet import chosen_hinges, reduce_anchors

OP = "triplet_loss"
NEGATIVES = ("hardest", "all", "random")
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
    negatives="hardest",
    reduction: str = "sum",
    distance: str = "cosine",
    impl: str = "auto",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bidirectional hinge ranking loss without any B × B tensor.

    image_emb, text_emb [B, D]; the pair (i, i) is positive, every (i, j ≠ i) negative. With s the cosine
    similarity (distance="cosine") or the dot product (distance="dot"):
        image i: [margin + s(i, j) − s(i, i)]₊ over texts j ≠ i;  text j: [margin + s(i, j) − s(j, j)]₊ over i ≠ j.
    negatives:
        "hardest"   the largest hinge of each anchor (VSE++);
        "all"       their sum;
        n           int64 [B] per-sample negative indices (JoImTeRNet): one hinge per anchor, the same index
                    both ways, image i against text n_i, [margin + s(i, n_i) − s(i, i)]₊, and text i against
                    image n_i, [margin + s(n_i, i) − s(i, i)]₊; n_i = -1: no negative (no hinge). Entries must
                    be another sample's index (checked, one sync, with CXRFAST_CHECK_FINITE). A CPU tensor
                    is moved to the embeddings' device. Equivalent to
                    ``s = cos(img, txt); (margin + s[i, n] - s[i, i]).relu() + (margin + s[n, i] - s[i, i]).relu()``
                    with i = arange(B), but only the 3·B scores s(i, i), s(i, n_i), s(n_i, i) are computed:
                    O(B·D), no kernel, in every impl;
        "random"    n drawn here, one uniformly random other sample per anchor, from `generator` (a seeded
                    torch.Generator, on the CPU or the embeddings' device; None: torch's default generator
                    of that device): r = torch.randint(0, B − 1, (B,), generator=generator), n_i = r_i +
                    (r_i ≥ i) (cxrfast.reference.triplet.random_negatives: the same draw in every impl).
                    A new draw per call: to share one draw between losses (JoImTeRNet shares it between
                    the sentence and word losses), draw it once and pass the indices.
    The per-sample loss ℓ_i adds pair i's two anchors (image i, text i); reduction="sum" adds the 2·B anchor
    terms (Σ ℓ), "mean" divides that by B, "none" returns ℓ [B]. JoImTeRNet: distance="cosine", margin=0.5,
    random negatives, reduction="mean" (its cosine distance form is the same expression). Returns a 0-dim fp32
    tensor (fp64 for fp64 input), [B] for "none".
    """
    _validate.embedding_pair(OP, image_emb, text_emb)
    _validate.choice(OP, "reduction", reduction, REDUCTIONS)
    _validate.choice(OP, "distance", distance, DISTANCES)
    margin = _validate.finite_number(OP, "margin", margin)
    reasons = _dispatch.triton_reasons(image_emb, text_emb, dim=image_emb.shape[1])
    chosen = _dispatch.select(OP, impl, reasons)
    # validated (and, for "random", drawn) last: an invalid call consumes nothing from the generator
    mode, idx = _validate.negatives_arg(OP, negatives, image_emb.shape[0], image_emb, generator, NEGATIVES)
    if chosen == "reference":
        from cxrfast.reference import triplet_loss as reference

        return reference(image_emb, text_emb, margin=margin, negatives=mode if idx is None else idx,
                         reduction=reduction, distance=distance)

    x, kernel_dtype = grad_precision(image_emb)  # 16-bit: differentiated in fp32, rounded once (_pairwise)
    y, _ = grad_precision(text_emb)
    normalize = distance == "cosine"
    rx, ry = inverse_norms(x, normalize), inverse_norms(y, normalize)
    diag = _pair_scores(x, y, rx, ry)
    if mode == "all":
        per_img, per_txt, _, _ = torch.ops.cxrfast.triplet_all(x, y, rx, ry, diag, float(margin), chosen,
                                                               kernel_dtype)
        return reduce_anchors(per_img, per_txt, reduction)
    if mode == "hardest":
        idx_r, idx_c = torch.ops.cxrfast.triplet_hardest(image_emb.detach(), text_emb.detach(), rx.detach(),
                                                         ry.detach(), chosen)
    else:  # chosen per-sample negatives: the same index as the image's negative text and the text's negative image
        idx_r = idx_c = idx
    return reduce_anchors(*chosen_negative_hinges(x, y, rx, ry, diag, idx_r, idx_c, margin), reduction)


def chosen_negative_hinges(x, y, rx, ry, diag, idx_r, idx_c, margin, pool=None):
    """(image-anchor hinges, text-anchor hinges) [B] of one chosen negative per anchor, differentiable, O(B·D):
    image a against text idx_r[a], [margin + s(a, idx_r[a]) − diag[a]]₊, and text a against image idx_c[a],
    [margin + s(idx_c[a], a) − diag[a]]₊ (-1: none). x, y [B, D] the anchors' embeddings with their inverse
    norms rx, ry and diag [B] their pair scores; pool = (x, y, rx, ry) of the samples the indices point into
    (default the anchors' own batch; cxrfast.distributed passes the gathered global batch)."""
    xp, yp, rxp, ryp = (x, y, rx, ry) if pool is None else pool
    # Only the 2·B chosen pairs carry gradient: recompute their scores differentiably.
    j, i = idx_r.clamp(min=0), idx_c.clamp(min=0)
    s_r = _pair_scores(x, yp[j], rx, ryp[j])  # image a against text j = idx_r[a]
    s_c = _pair_scores(xp[i], y, rxp[i], ry)  # text a against image i = idx_c[a]
    return chosen_hinges(diag, s_r, idx_r >= 0, s_c, idx_c >= 0, margin)
