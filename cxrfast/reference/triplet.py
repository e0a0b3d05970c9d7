"""Bidirectional ranking (triplet) loss, VSE++ / JoImTeRNet: the definition."""

from __future__ import annotations

import torch

from cxrfast.reference.contrastive import similarity_matrix

REDUCTIONS = ("sum", "mean", "none")
NEGATIVE_MODES = ("hardest", "all", "random")


def random_negatives(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """One uniformly random *other* sample per anchor: int64 [n], entry i in {0..n-1} \\ {i}.

    The draw is ``r = torch.randint(0, n - 1, (n,), generator=generator)`` on the generator's device (torch's
    default generator of `device` when `generator` is None), mapped past the anchor, ``r + (r >= i)``: the
    r-th of the other samples in index order, as the released JoImTeRNet code's
    ``np.random.choice(ids[ids != i])``. One call draws n numbers from the generator, whatever the impl,
    so a generator seeded alike gives the same negatives in every implementation. The result is moved to
    `device`. n = 1: no other sample, [-1] (the anchor contributes no hinge), and nothing is drawn."""
    if n < 2:
        return torch.full((n,), -1, dtype=torch.int64, device=device)
    where = generator.device if generator is not None else device
    r = torch.randint(0, n - 1, (n,), generator=generator, device=where).to(device)
    return r + (r >= torch.arange(n, device=r.device)).to(r.dtype)


def negative_indices(negatives, n: int, generator=None, device=None) -> torch.Tensor | None:
    """The per-anchor negative indices of `negatives`: None for "hardest" / "all" (the loss looks at every
    negative), a fresh draw for "random" (random_negatives), the tensor itself when indices are given."""
    if isinstance(negatives, torch.Tensor):
        return negatives.to(device=device, dtype=torch.int64)
    if negatives == "random":
        return random_negatives(n, generator, device)
    return None


def triplet_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    margin: float = 0.2,
    negatives="hardest",
    reduction: str = "sum",
    distance: str = "cosine",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hinge ranking loss in both directions.

    s(i, j) = cos(image_i, text_j) (distance="cosine") or image_i · text_j (distance="dot").
    For image i and every negative text j ≠ i: [margin + s(i, j) − s(i, i)]₊;
    for text j and every negative image i ≠ j: [margin + s(i, j) − s(j, j)]₊.
    negatives="hardest" keeps the largest hinge of each image and of each text (VSE++ max violation);
    negatives="all" sums them; negatives=n (int64 [B], per-sample indices) keeps one chosen negative per
    anchor, the same index both ways: image i against text n_i, text i against image n_i (JoImTeRNet's
    ``sent_triplet_loss``; n_i = -1: no negative, no hinge); negatives="random" draws n with
    random_negatives(B, generator) (one uniformly random other sample per anchor). The per-sample loss ℓ_i
    adds the two anchors of pair i (image i and text i); reduction "sum" adds them over the 2·B anchors
    (Σ_i ℓ_i), "mean" divides that by B, "none" returns ℓ [B].
    JoImTeRNet's cosine *distance* form, [margin + d(i, i) − d(i, j)]₊ with d = 1 − cos, is the same
    expression (the 1s cancel): distance="cosine", margin=0.5, reduction="mean" (its two directions are
    means over the batch, added).
    """
    s = similarity_matrix(image_emb, text_emb, 1.0, normalize=(distance == "cosine"))
    return triplet_from_scores(s, margin=margin, negatives=negatives, reduction=reduction, generator=generator)


def triplet_from_scores(s: torch.Tensor, *, margin: float, negatives="hardest", reduction: str = "sum",
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The ranking loss of `triplet_loss` on a given score matrix s [B, B] (pair i ↔ i on the diagonal):
    also JoImTeRNet's local (word-level) triplet loss on the word–region similarity S. `negatives` as in
    triplet_loss: "hardest", "all", "random" (with `generator`) or int64 indices [B]."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    n = s.shape[0]
    diag = s.diagonal()
    chosen = negative_indices(negatives, n, generator, s.device)
    if chosen is not None:
        has, j = chosen >= 0, chosen.clamp(min=0)
        rows = torch.arange(n, device=s.device)
        per_img, per_txt = chosen_hinges(diag, s[rows, j], has, s[j, rows], has, margin)
        return reduce_anchors(per_img, per_txt, reduction)
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    cost_img = (margin + s - diag[:, None]).clamp(min=0).masked_fill(eye, 0)  # anchor image i, row i
    cost_txt = (margin + s - diag[None, :]).clamp(min=0).masked_fill(eye, 0)  # anchor text j, column j
    if negatives == "hardest":
        per_img = cost_img.max(dim=1).values if n > 1 else cost_img.sum(1)
        per_txt = cost_txt.max(dim=0).values if n > 1 else cost_txt.sum(0)
    else:
        per_img, per_txt = cost_img.sum(1), cost_txt.sum(0)
    return reduce_anchors(per_img, per_txt, reduction)


def chosen_hinges(diag, s_row, has_row, s_col, has_col, margin):
    """(image-anchor hinges, text-anchor hinges) [B] of one chosen negative per anchor: s_row[a] = s(a, j)
    (image a against its negative text j), s_col[a] = s(i, a) (text a against its negative image i),
    diag[a] = s(a, a); zero where has_row / has_col is False (no negative)."""
    per_img = torch.where(has_row, (margin + s_row - diag).clamp(min=0), 0)
    per_txt = torch.where(has_col, (margin + s_col - diag).clamp(min=0), 0)
    return per_img, per_txt


def reduce_anchors(per_img: torch.Tensor, per_txt: torch.Tensor, reduction: str) -> torch.Tensor:
    """ℓ_i = image anchor i + text anchor i; "none": ℓ [B], "sum": Σ ℓ, "mean": Σ ℓ / B."""
    if reduction == "none":
        return per_img + per_txt
    total = per_img.sum() + per_txt.sum()
    return total / per_img.shape[0] if reduction == "mean" else total
