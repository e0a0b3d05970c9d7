"""InfoNCE (CLIP / ConVIRT) loss: the definition."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The clamp used by F.normalize and by every cxrfast implementation: u = x / max(‖x‖, NORM_EPS).
NORM_EPS = 1e-12
# reduction of the per-sample losses ℓ_i: their mean (the papers' loss), their sum, or ℓ [B] itself
REDUCTIONS = ("mean", "sum", "none")


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """ℓ [B] → mean, sum or ℓ itself (reduction "none")."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def similarity_matrix(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale, normalize: bool = True):
    """S = logit_scale · n(image_emb) · n(text_emb)ᵀ  → [B_img, B_txt]."""
    if normalize:
        image_emb = F.normalize(image_emb, dim=-1, eps=NORM_EPS)
        text_emb = F.normalize(text_emb, dim=-1, eps=NORM_EPS)
    return logit_scale * (image_emb @ text_emb.t())


def positive_mask(groups: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """[B, B] bool: True where (i, j) is a positive pair (same group id, or i == j without groups)."""
    if groups is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    return groups[:, None] == groups[None, :]


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
) -> torch.Tensor:
    """Symmetric InfoNCE.

    image_emb [B, D], text_emb [B, D], logit_scale a scalar (tensor or float), groups optional [B] ids.
    S = logit_scale · n(image_emb) · n(text_emb)ᵀ and, with the target distribution
    q_i = (1 − ε) · uniform(positives of i) + ε · uniform(all B)  (positives: same group id, else i itself),
        ℓ_i = w_i2t · CE(S[i, :], q_i) + w_t2i · CE(S[:, i], q_i)      (pair i: its image and its text as anchors)
        loss = mean_i ℓ_i   (reduction "mean"; "sum": Σ_i ℓ_i; "none": ℓ [B])
    Without groups and ε = 0 the mean is exactly
        w_i2t · F.cross_entropy(S, arange(B)) + w_t2i · F.cross_entropy(S.T, arange(B)).
    """
    n = image_emb.shape[0]
    s = similarity_matrix(image_emb, text_emb, logit_scale, normalize)
    pos = positive_mask(groups, n, s.device).to(s.dtype)
    target = (1.0 - label_smoothing) * pos / pos.sum(1, keepdim=True) + label_smoothing / n
    # pos is symmetric, so the t2i target of column j is row j of `target` as well.
    loss_i2t = -(target * torch.log_softmax(s, dim=1)).sum(1)
    loss_t2i = -(target * torch.log_softmax(s.t(), dim=1)).sum(1)
    return reduce(weights[0] * loss_i2t + weights[1] * loss_t2i, reduction)
