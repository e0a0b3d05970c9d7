"""Word–region attention similarity and the local contrastive loss (GLoRIA, Global-Local, JoImTeRNet):
the definition.

For image b with regions v_1..v_R and report i with words w_1..w_{n_i} (n_i = word_lengths[i]; the rest
of the L slots are padding and never read):
    s[r, t] = v_r · w_t
    variant "gloria" (GLoRIA's released code, AttnGAN's double softmax):
        a[r, t] = softmax over the report's words t of s[r, ·];   α[t, r] = softmax over regions r of τ_att · a[r, t]
    variant "single" (the papers' text):
        α[t, r] = softmax over regions r of τ_att · s[r, t]
    c_t = Σ_r α[t, r] v_r;   R_t = (c_t · w_t) / max(‖c_t‖ ‖w_t‖, 1e-8)
    S[b, i] = log Σ_t exp(τ_agg · R_t)     ("mean": log of the mean over the n_i words)
This module materialises the [B_img, B_txt, R, L] score tensor: it is the oracle for small inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrfast.reference.contrastive import reduce
from cxrfast.reference.triplet import triplet_from_scores

VARIANTS = ("gloria", "single")
AGGREGATES = ("sum", "mean")
COSINE_EPS = 1e-8  # GLoRIA's cosine_similarity clamp of ‖c‖·‖w‖


def word_mask(word_lengths: torch.Tensor, max_words: int) -> torch.Tensor:
    """[B_txt, L] bool: True for the first word_lengths[i] slots of report i."""
    return torch.arange(max_words, device=word_lengths.device)[None, :] < word_lengths[:, None]


def word_region_similarity(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths: torch.Tensor,
    *,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    return_attention: bool = False,
):
    """S [B_img, B_txt] from regions [B_img, R, D], words [B_txt, L, D], word_lengths [B_txt] (1 ≤ n ≤ L).

    With return_attention=True also returns α of the matched pairs (b = i) as [B, L, R] (zeros at
    padded words), for visualisation; that needs B_img == B_txt.
    """
    agg, alpha, valid = _scores(regions, words, word_lengths, temp_attention, temp_aggregate, aggregate, variant,
                                paired=False)
    if not return_attention:
        return agg
    if regions.shape[0] != words.shape[0]:
        raise ValueError("word_region_similarity: return_attention needs B_img == B_txt (matched pairs b = i), "
                         f"got {regions.shape[0]} images and {words.shape[0]} reports")
    matched = alpha.diagonal(dim1=0, dim2=1).permute(2, 1, 0)  # [B, R, L] → [B, L, R]
    return agg, matched * valid[:, :, None]


def _scores(regions, words, word_lengths, temp_attention, temp_aggregate, aggregate, variant, paired: bool):
    """(S, α, valid) of every (image b, report i) pair ([B_img, B_txt]; α [B, I, R, L]) or, paired, of image b
    with report b only ([B]; α [B, 1, R, L]): the same formulas, the pair axis of size 1."""
    if variant not in VARIANTS:
        raise ValueError(f"word_region_similarity: `variant` must be one of {VARIANTS}, got {variant!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"word_region_similarity: `aggregate` must be one of {AGGREGATES}, got {aggregate!r}")
    n_words = words.shape[1]
    valid = word_mask(word_lengths, n_words)  # [I, L]
    words = words.masked_fill(~valid[:, :, None], 0)  # padding is never read, whatever it holds
    if paired:  # report b only meets image b: [B, 1, R, L], and the reports' axes line up with the images'
        s = torch.einsum("brd,btd->brt", regions, words)[:, None]
        pair_words, pair_valid, log_n = words[:, None], valid[:, None], torch.log(word_lengths.to(s.dtype))[:, None]
    else:
        s = torch.einsum("brd,itd->birt", regions, words)  # [B, I, R, L]
        pair_words, pair_valid, log_n = words[None], valid[None], torch.log(word_lengths.to(s.dtype))[None, :]
    if variant == "gloria":
        a = torch.softmax(s.masked_fill(~pair_valid[:, :, None, :], float("-inf")), dim=3)
        logits = temp_attention * a
    else:
        logits = temp_attention * s
    alpha = torch.softmax(logits, dim=2)  # over regions: [B, I, R, L]
    context = torch.einsum("birt,brd->bitd", alpha, regions)  # c_t: [B, I, L, D]
    dot = (context * pair_words).sum(-1)
    # padded words (w = 0) get norm 1: their cosine is dropped below, but in fp16 the 1e-8 clamp
    # rounds to 0 and 0/0 there would turn the (masked) backward into NaN
    norms = (context.norm(dim=-1) * pair_words.norm(dim=-1)).masked_fill(~pair_valid, 1.0)
    cos = dot / norms.clamp(min=COSINE_EPS)  # R_t: [B, I, L]
    agg = (temp_aggregate * cos).masked_fill(~pair_valid, float("-inf")).logsumexp(dim=2)
    if aggregate == "mean":
        agg = agg - log_n
    return (agg[:, 0] if paired else agg), alpha, valid


def paired_word_region_similarity(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths: torch.Tensor,
    *,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
) -> torch.Tensor:
    """S [B] of the pairs (image b, report b) only: ``word_region_similarity(regions, words, n).diagonal()``
    without the other B² − B pairs, O(B·R·L·D). regions [B, R, D], words [B, L, D], word_lengths [B].
    The chosen-negative triplet losses gather their pairs into such a batch (local_triplet_loss)."""
    return _scores(regions, words, word_lengths, temp_attention, temp_aggregate, aggregate, variant, paired=True)[0]


def local_contrastive_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths: torch.Tensor,
    *,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    temp_logits: float = 10.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    weights=(1.0, 1.0),
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy both ways over temp_logits · S (B_img == B_txt, pair i ↔ i):
    weights[0] · CE(S) + weights[1] · CE(Sᵀ). GLoRIA adds both directions: weights (1, 1).
    Per sample: ℓ_i = weights[0] · CE(S[i, :], i) + weights[1] · CE(S[:, i], i); reduction "mean" (the loss
    above), "sum" or "none" (ℓ [B])."""
    sim = temp_logits * word_region_similarity(regions, words, word_lengths, temp_attention=temp_attention,
                                               temp_aggregate=temp_aggregate, aggregate=aggregate,
                                               variant=variant)
    labels = torch.arange(sim.shape[0], device=sim.device)
    per_sample = (weights[0] * F.cross_entropy(sim, labels, reduction="none")
                  + weights[1] * F.cross_entropy(sim.t(), labels, reduction="none"))
    return reduce(per_sample, reduction)


def local_triplet_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths: torch.Tensor,
    *,
    margin: float = 0.2,
    negatives="hardest",
    reduction: str = "sum",
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JoImTeRNet's word-level ranking loss: the triplet loss of cxrfast.reference.triplet on the word–region
    similarity S [B, B] (triplet_from_scores; the margin is in S's units). With chosen negatives n
    (indices, or "random" with `generator`): image i against report n_i, S(i, n_i), each report read with its
    own length, and report i against image n_i, S(n_i, i). (JoImTeRNet's released words_triplet_loss reads
    the negative report with the anchor's length, cap_lens[i]: a quirk this definition does not copy.)"""
    S = word_region_similarity(regions, words, word_lengths, temp_attention=temp_attention,
                               temp_aggregate=temp_aggregate, aggregate=aggregate, variant=variant)
    return triplet_from_scores(S, margin=margin, negatives=negatives, reduction=reduction, generator=generator)
