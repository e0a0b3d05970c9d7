"""Bidirectional ranking (triplet) loss, VSE++ / JoImTeRNet: the definition."""

from __future__ import annotations

import torch

from cxrfast.reference.contrastive import similarity_matrix

REDUCTIONS = ("sum", "mean", "none")


def triplet_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    margin: float = 0.2,
    negatives: str = "hardest",
    reduction: str = "sum",
    distance: str = "cosine",
) -> torch.Tensor:
    """Hinge ranking loss in both directions.

    s(i, j) = cos(image_i, text_j) (distance="cosine") or image_i · text_j (distance="dot").
    For image i and every negative text j ≠ i: [margin + s(i, j) − s(i, i)]₊;
    for text j and every negative image i ≠ j: [margin + s(i, j) − s(j, j)]₊.
    negatives="hardest" keeps the largest hinge of each image and of each text (VSE++ max violation);
    negatives="all" sums them. The per-sample loss ℓ_i adds the two anchors of pair i (image i and text i);
    reduction "sum" adds them over the 2·B anchors (Σ_i ℓ_i), "mean" divides that by B, "none" returns ℓ [B].
    JoImTeRNet's cosine *distance* form, [margin + d(i, i) − d(i, j)]₊ with d = 1 − cos, is the same
    expression (the 1s cancel): distance="cosine", margin=0.5.
    """
    s = similarity_matrix(image_emb, text_emb, 1.0, normalize=(distance == "cosine"))
    return triplet_from_scores(s, margin=margin, negatives=negatives, reduction=reduction)


def triplet_from_scores(s: torch.Tensor, *, margin: float, negatives: str = "hardest", reduction: str = "sum"
                        ) -> torch.Tensor:
    """The ranking loss of `triplet_loss` on a given score matrix s [B, B] (pair i ↔ i on the diagonal):
    also JoImTeRNet's local (word-level) triplet loss on the word–region similarity S."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    n = s.shape[0]
    diag = s.diagonal()
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    cost_img = (margin + s - diag[:, None]).clamp(min=0).masked_fill(eye, 0)  # anchor image i, row i
    cost_txt = (margin + s - diag[None, :]).clamp(min=0).masked_fill(eye, 0)  # anchor text j, column j
    if negatives == "hardest":
        per_img = cost_img.max(dim=1).values if n > 1 else cost_img.sum(1)
        per_txt = cost_txt.max(dim=0).values if n > 1 else cost_txt.sum(0)
    else:
        per_img, per_txt = cost_img.sum(1), cost_txt.sum(0)
    per_sample = per_img + per_txt
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    return total / n if reduction == "mean" else total
