"""LoVT's local (intra-sample) region–sentence losses: the definition.

Müller et al., "Joint Learning of Localized Representations from Medical Images and Reports" (ECCV 2022),
code github.com/philip-mueller/lovt (read at commit 87b9a307). What LoVT does, and where it lives there:

1. Alignment model (``src/models/components/attention.py``: ``CrossAttention``, built in
   ``src/models/pretraining/bimodal_alignment_model.py`` with the defaults of ``BiModalModelConfig`` in
   ``src/models/pretraining/pretraining_utils.py``: ``attention_sim='scaled_dot_product'``,
   ``symmetric_attention=True``, ``attention_temperature=1``). One score matrix per sample,
    s[r, m] = k(v_r) · k(u_m) / (sqrt(D) · τ_att),
   is used both ways ("symmetric": the sentence→region scores are its transpose):
    region r attends over its report's sentences   ã_r = Σ_m softmax_m(s[r, ·] − ∞·[m padded]) val(u_m)
    sentence m attends over its image's regions    ũ_m = Σ_r softmax_r(s[·, m]) val(v_r)  (0 for padded m)
   followed by an output projection and a BatchNorm. k, val and the output projection are linear layers.
2. Local loss (``src/models/objectives/local_alignment.py``: ``LocalIntraSampleContrastiveLoss``), run
   once per modality on (local z, attended z̃) of the same sample, N locals of which n are valid:
    a = z / ‖z‖, b = z̃ / ‖z̃‖,  S[i, j] = a_i · b_j / τ  (τ = ``similarity_temperature`` = 0.3)
    P = the row-normalised positive weights (below), columns of padded j zeroed first
    l2att_i = −Σ_j P[i, j] S[i, j] + log Σ_{valid j} exp S[i, j]      (anchor: local i, candidates: attended)
    att2l_i = −Σ_j P[i, j] S[j, i] + log Σ_{valid j} exp S[j, i]      (anchor: attended i, candidates: locals)
    loss = mean over the batch of Σ_i w_i · loss_i,  w = per-local weights (zero at padding), Σ_i w_i = 1
   i.e. a soft-target cross-entropy: the target of anchor i is the distribution P[i, ·], the candidates
   are all valid locals of the same sample (``cross_sample_negatives=False``,
   ``negatives_from_same_modality=False``, ``normalize_by_num_negatives=False`` in both configs).
   Positive weights (``_compute_pos_weights_from_distances``):
    - regions (``configs/objective/scan_local_intra_contrastive.yaml``): ``threshold_type: relative``,
      ``distance_threshold: 0.5``, ``smooth_weights: true``, ``smooth_lambda: 1.0``. Grid coordinates
      (h, w) divided by the grid diagonal sqrt(H² + W²), d = Euclidean distance, and
      P[i, j] ∝ [d_ij ≤ 0.5] · exp(−λ d_ij). So spatially close regions are soft *positives* (the target
      spreads over a disc of radius half the diagonal, weights decaying with distance); nothing
      down-weights negatives. ``configs/experiment/ablation/no_spatial.yaml`` sets smooth_weights=false:
      the uniform disc, which is λ = 0 here.
    - sentences (``configs/objective/report_sent_intra_contrastive.yaml``): ``threshold_type: absolute``,
      ``distance_threshold: 0``, no smoothing: P = identity, plain InfoNCE over the report's sentences.
   Local weights w: ``configs/experiment/LoVT_100.yaml`` takes them from the attention-pooling
   aggregators (``l_weights_a/b: from_aggregation``, detached by ``l_weights_stop_grad``); without them
   (ablation ``no_weight``) w is uniform over the valid locals.
3. ``LossModule.local_loss`` (bimodal_alignment_model.py) names the four results local_a_l2att,
   local_a_att2l (scan), local_b_l2att, local_b_att2l (report); LoVT_100 weights each by 0.375 next to
   its global InfoNCE (0.75 / 0.25).

Deviations, and why:
- Projections are model code (``cxrfast.models``), not part of a loss: by default this op takes features
  that are already projected and uses them as attention keys and values, and as z (LoVT's attention with
  its key, value and output projections switched off). LoVT_100's attention projects keys K(z) and
  values V(z) and passes the attended vectors through an output projection and a BatchNorm (whose batch
  statistics are not a per-sample function, so they cannot be folded into the op): a model that holds
  those layers (cxrfast.models.lovt) computes z̃ itself and passes it as ``attended``; the op then skips
  its own attention and the losses score z against the given z̃.
- The distance threshold is decided on exact integer squared distances (Δh² + Δw² ≤ θ² · (H² + W²)) rather
  than on float32 ``torch.cdist`` output, so pairs exactly on the boundary (e.g. (3, 4) cells apart on a
  6 × 8 grid at θ = 0.5) are always inside, as ``<=`` intends.
- LoVT normalises coordinates by the diagonal of its maximal grid and slices the weight buffer; its scan
  encoder asserts the grid always has that size, so normalising by the given grid is the same.
- Padded sentences (and padded entries of ``sentence_weights``) are never read, whatever they hold:
  they are replaced before use (LoVT multiplies by masks, which would spread NaN). In the loss they
  become ones, and an empty positive-weight row (a padded anchor) is divided by 1 instead of LoVT's
  clamp_min(1e-12): both keep fp16 finite (1e-12 rounds to 0 there) and change no value.
This module materialises every [B, N, N] intermediate as LoVT does: it is the oracle for small inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cxrfast.reference.contrastive import reduce
from cxrfast.reference.local import word_mask

# LoVT's defaults: scan_local_intra_contrastive.yaml / report_sent_intra_contrastive.yaml, BiModalModelConfig
TEMPERATURE = 0.3
ATTENTION_TEMPERATURE = 1.0
DISTANCE_THRESHOLD = 0.5
SMOOTH_LAMBDA = 1.0
LOSS_NAMES = ("region_l2att", "region_att2l", "sentence_l2att", "sentence_att2l")


def region_positive_weights(
    grid: tuple[int, int],
    *,
    distance_threshold: float = DISTANCE_THRESHOLD,
    smooth_lambda: float = SMOOTH_LAMBDA,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """[R, R] un-normalised positive weights of a row-major H × W grid (region r = h·W + w):
    P[i, j] = [d_ij ≤ distance_threshold] · exp(−smooth_lambda · d_ij), d = grid distance / sqrt(H² + W²).
    The diagonal is always 1 (d = 0), so no row is empty."""
    H, W = grid
    h = torch.arange(H, dtype=torch.int64).repeat_interleave(W)
    w = torch.arange(W, dtype=torch.int64).repeat(H)
    d2 = (h[:, None] - h[None, :]) ** 2 + (w[:, None] - w[None, :]) ** 2  # exact integers
    diag2 = H * H + W * W
    # float64 on the CPU: exact for the comparison, and available on every backend before the cast
    inside = d2.double() <= distance_threshold * distance_threshold * diag2
    dist = torch.sqrt(d2.double() / diag2)
    weights = inside.double() * torch.exp(-smooth_lambda * dist)
    return weights.to(device=device, dtype=dtype)


def cross_attention(
    regions: torch.Tensor,
    sentences: torch.Tensor,
    sentence_lengths: torch.Tensor,
    *,
    attention_temperature: float = ATTENTION_TEMPERATURE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LoVT's symmetric scaled-dot-product cross-attention without projections.

    regions [B, R, D], sentences [B, M, D], sentence_lengths [B] (1 ≤ n ≤ M) →
    (sentences aligned to each region [B, R, D], regions aligned to each sentence [B, M, D], zero rows at
    padded sentences). Equivalent to::

        s = regions @ sentences.mT / (sqrt(D) * attention_temperature)
        softmax(s masked at padded sentences, dim=2) @ sentences,  softmax(s, dim=1).mT @ regions
    """
    valid = word_mask(sentence_lengths, sentences.shape[1])  # [B, M]
    sentences = sentences.masked_fill(~valid[:, :, None], 0)  # padding is never read, whatever it holds
    scores = torch.bmm(regions, sentences.transpose(1, 2)) / (math.sqrt(regions.shape[2]) * attention_temperature)
    # LoVT's AttentionMask: additive −inf on the keys' padding, then probs · the queries' binary mask
    additive = torch.zeros_like(valid, dtype=scores.dtype).masked_fill(~valid, float("-inf"))
    probs_b2a = torch.softmax(scores + additive[:, None, :], dim=-1)  # regions over sentences [B, R, M]
    probs_a2b = torch.softmax(scores.transpose(1, 2), dim=-1) * valid[:, :, None]  # sentences over regions
    return torch.bmm(probs_b2a, sentences), torch.bmm(probs_a2b, regions)


def intra_sample_contrastive(
    local: torch.Tensor,
    attended: torch.Tensor,
    positive_weights: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    temperature: float = TEMPERATURE,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """LoVT's ``LocalIntraSampleContrastiveLoss`` (no cross-sample or same-modality negatives).

    local [B, N, D] (z), attended [B, N, D] (z̃ at the same positions), positive_weights [N, N]
    (un-normalised), valid [B, N] bool (None: all valid), weights [B, N] ≥ 0 (None: uniform) →
    (l2att, att2l), each a 0-dim tensor (reduction "mean", LoVT's; "sum") or the per-sample Σ_i w_i · loss_i
    [B] (reduction "none"); see the module docstring for the formula.
    """
    B, N, _ = local.shape
    if valid is None:
        valid = torch.ones(B, N, dtype=torch.bool, device=local.device)
    # Padded slots are never read. They become ones, not zeros: they are excluded below (weight 0, −∞ as a
    # candidate, zero positive weight), but F.normalize of a zero row is 0/0 in fp16, whose eps 1e-12 rounds to 0
    local = local.masked_fill(~valid[:, :, None], 1)
    attended = attended.masked_fill(~valid[:, :, None], 1)
    if weights is None:
        weights = torch.ones(B, N, dtype=local.dtype, device=local.device)
    weights = weights.masked_fill(~valid, 0)
    weights = weights / weights.sum(dim=1, keepdim=True)  # [B, N]

    pos = positive_weights.expand(B, N, N) * valid[:, None, :]  # padded candidates are never positives
    # rows sum to 1; a padded anchor's row is empty and stays 0 (LoVT divides by clamp_min(1e-12), which
    # fp16 rounds to 0: 0/0)
    row_sum = pos.sum(-1, keepdim=True)
    pos = pos / row_sum.masked_fill(row_sum == 0, 1)  # [B, N, N]

    a = F.normalize(local, dim=-1, p=2)
    b = F.normalize(attended, dim=-1, p=2)
    scores_ab = torch.bmm(a, b.transpose(1, 2)) / temperature  # [B, N, N]
    scores_ba = scores_ab.transpose(1, 2)
    additive = torch.zeros_like(weights).masked_fill(~valid, float("-inf"))
    loss_ab = -(pos * scores_ab).sum(-1) + torch.logsumexp(scores_ab + additive[:, None, :], dim=-1)  # [B, N]
    loss_ba = -(pos * scores_ba).sum(-1) + torch.logsumexp(scores_ba + additive[:, None, :], dim=-1)
    return reduce((weights * loss_ab).sum(-1), reduction), reduce((weights * loss_ba).sum(-1), reduction)


def lovt_local_loss(
    regions: torch.Tensor,
    sentences: torch.Tensor,
    sentence_lengths: torch.Tensor,
    *,
    grid: tuple[int, int],
    temperature: float = TEMPERATURE,
    attention_temperature: float = ATTENTION_TEMPERATURE,
    distance_threshold: float = DISTANCE_THRESHOLD,
    smooth_lambda: float = SMOOTH_LAMBDA,
    region_weights: torch.Tensor | None = None,
    sentence_weights: torch.Tensor | None = None,
    attended: tuple[torch.Tensor, torch.Tensor] | None = None,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """The four LoVT local losses and their mean.

    regions [B, R, D] (a row-major H × W grid, R = H·W), sentences [B, M, D], sentence_lengths [B]
    (1 ≤ n ≤ M; sentence slots n.. are never read), region_weights [B, R] / sentence_weights [B, M]
    optional per-local weights (LoVT: the attention-pooling weights, detached by the caller).
    attended: None (z̃ from ``cross_attention`` of regions and sentences) or the caller's own
    (z̃ of each region [B, R, D], z̃ of each sentence [B, M, D]), e.g. from LoVT's projected attention;
    then attention_temperature is unused and padded sentence rows of z̃ are never read.
    Returns {"region_l2att", "region_att2l", "sentence_l2att", "sentence_att2l", "loss"} (0-dim each;
    "loss" is the mean of the four: LoVT_100 adds 0.375 · their sum = 1.5 · loss to its global loss).
    reduction "mean" (LoVT's: the mean over the batch of each sample's loss), "sum", or "none": each entry
    is then the [B] per-sample losses (those of the sample alone).
    """
    if attended is None:
        to_regions, to_sentences = cross_attention(regions, sentences, sentence_lengths,
                                                   attention_temperature=attention_temperature)
    else:
        to_regions, to_sentences = attended
    valid = word_mask(sentence_lengths, sentences.shape[1])
    region_pos = region_positive_weights(grid, distance_threshold=distance_threshold, smooth_lambda=smooth_lambda,
                                         dtype=regions.dtype, device=regions.device)
    # the report side: absolute threshold 0 → a sentence's only positive is its own aligned vector
    sentence_pos = torch.eye(sentences.shape[1], dtype=sentences.dtype, device=sentences.device)
    losses = dict(zip(LOSS_NAMES, (
        *intra_sample_contrastive(regions, to_regions, region_pos, weights=region_weights, temperature=temperature,
                                  reduction=reduction),
        *intra_sample_contrastive(sentences, to_sentences, sentence_pos, valid=valid, weights=sentence_weights,
                                  temperature=temperature, reduction=reduction),
    )))
    losses["loss"] = sum(losses.values()) / 4
    return losses
