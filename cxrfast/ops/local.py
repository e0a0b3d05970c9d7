"""Word–region attention similarity and the local losses (GLoRIA / Global-Local, JoImTeRNet):
the `cxrfast::word_region_similarity` op, `word_region_similarity`, `local_contrastive_loss`,
`local_triplet_loss`.

The definition is cxrfast.reference.local; how it is computed in bounded memory is
cxrfast.ops._wordregion; the fused Triton middle is cxrfast.kernels.wordregion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrfast.ops import _dispatch, _validate, _wordregion
from cxrfast.ops._register import no_autocast
from cxrfast.reference.contrastive import REDUCTIONS, reduce

OP = "word_region_similarity"
VARIANTS = ("gloria", "single")
AGGREGATES = ("sum", "mean")
MAX_TRITON_REGIONS = 1024  # one program holds all of a pair's regions (BLOCK_R = next_pow2(R)); 2048 spills


def _middle(impl: str):
    if impl == "triton":
        from cxrfast.kernels.wordregion import TritonMiddle

        return TritonMiddle
    return _wordregion.TorchMiddle


# torch.library.custom_op, not triton_op: the body plans its chunks on the host from the report lengths
# (length buckets, one sync), which triton_op's tracing of the body cannot follow. torch.compile and
# opcheck see the op as opaque (its fake below); the Triton launches inside run as they are.
@torch.library.custom_op("cxrfast::word_region_similarity", mutates_args=())
@no_autocast
def word_region_similarity_op(
    regions: torch.Tensor, words: torch.Tensor, word_lengths: torch.Tensor, temp_attention: float,
    temp_aggregate: float, mean: bool, gloria: bool, chunk_bytes: int, impl: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S [B_img, B_txt], c·w [B_img, B_txt, L], ‖c‖² [B_img, B_txt, L]), fp32 (fp64 for fp64 input); the
    last two are the per-word statistics the backward needs (not differentiable). word_lengths int64 on
    the inputs' device, 1..L. impl: "triton" or "chunked" (the attention middle; the GEMMs are the same)."""
    return _wordregion.similarity(regions, words, word_lengths, temp_attention, temp_aggregate, mean, gloria,
                                  chunk_bytes, _middle(impl))


@word_region_similarity_op.register_fake
def _(regions, words, word_lengths, temp_attention, temp_aggregate, mean, gloria, chunk_bytes, impl):
    B, I, L = regions.shape[0], words.shape[0], words.shape[1]
    acc = _wordregion.acc_dtype(regions.dtype)
    return regions.new_empty((B, I), dtype=acc), regions.new_empty((B, I, L), dtype=acc), \
        regions.new_empty((B, I, L), dtype=acc)


@torch.library.custom_op("cxrfast::word_region_similarity_backward", mutates_args=())
@no_autocast
def word_region_similarity_backward_op(
    regions: torch.Tensor, words: torch.Tensor, word_lengths: torch.Tensor, cw: torch.Tensor, nc2: torch.Tensor,
    grad_S: torch.Tensor, temp_attention: float, temp_aggregate: float, mean: bool, gloria: bool,
    chunk_bytes: int, impl: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂regions, ∂words) of Σ grad_S · S; zeros at padded words."""
    return _wordregion.similarity_backward(regions, words, word_lengths, cw, nc2, grad_S, temp_attention,
                                           temp_aggregate, mean, gloria, chunk_bytes, _middle(impl))


@word_region_similarity_backward_op.register_fake
def _(regions, words, word_lengths, cw, nc2, grad_S, temp_attention, temp_aggregate, mean, gloria, chunk_bytes,
      impl):
    # contiguous, as the real backward returns them (empty_like would copy a view's strides)
    return regions.new_empty(regions.shape), words.new_empty(words.shape)


def _setup_context(ctx, inputs, output):
    regions, words, word_lengths, *hyper = inputs
    _, cw, nc2 = output
    ctx.mark_non_differentiable(cw, nc2)
    ctx.save_for_backward(regions, words, word_lengths, cw, nc2)
    ctx.hyper = hyper


def _backward(ctx, grad_S, _grad_cw, _grad_nc2):
    regions, words, word_lengths, cw, nc2 = ctx.saved_tensors
    ta, tg, mean, gloria, chunk_bytes, impl = ctx.hyper
    d_regions, d_words = torch.ops.cxrfast.word_region_similarity_backward(
        regions, words, word_lengths, cw, nc2, grad_S.contiguous(), ta, tg, mean, gloria, chunk_bytes, impl)
    return d_regions, d_words, None, None, None, None, None, None, None


torch.library.register_autograd("cxrfast::word_region_similarity", _backward, setup_context=_setup_context)


def checked_inputs(op: str, regions, words, word_lengths) -> torch.Tensor:
    """Validate regions [B_img, R, D], words [B_txt, L, D], word_lengths [B_txt] (1..L); returns the
    lengths as int64 on the inputs' device (a CPU tensor or a list is accepted and moved)."""
    for name, t in (("regions", regions), ("words", words)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            layout = "[B_img, R, D]" if name == "regions" else "[B_txt, L, D]"
            raise ValueError(f"{op}: `{name}` must be 3-D {layout}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: `{name}` must be a floating-point tensor, got {t.dtype}")
        if 0 in t.shape:
            raise ValueError(f"{op}: `{name}` is empty: shape {tuple(t.shape)}")
    if regions.shape[2] != words.shape[2]:
        raise ValueError(f"{op}: feature dims differ: `regions` has D={regions.shape[2]}, "
                         f"`words` has D={words.shape[2]}")
    if regions.device != words.device:
        raise ValueError(f"{op}: `regions` is on {regions.device} but `words` is on {words.device}")
    if regions.dtype != words.dtype:
        raise TypeError(f"{op}: `regions` is {regions.dtype} but `words` is {words.dtype}; cast one of them")
    lengths = _validate.lengths_arg(op, "word_lengths", word_lengths, words.shape[0], words, "length per report")
    if all(_validate.readable(t) for t in (regions, words, lengths)):
        L = words.shape[1]
        bad = ((lengths < 1) | (lengths > L)).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            raise ValueError(f"{op}: `word_lengths[{i}]` = {int(lengths[i])}, expected 1 ≤ length ≤ L = {L} "
                             "(every report needs at least one word, and no more than `words` holds)")
        if _validate.check_finite_enabled():
            _validate.finite(op, "regions", regions)
            real = torch.arange(L, device=words.device)[None, :] < lengths[:, None]
            bad_words = (~torch.isfinite(words)).any(-1) & real
            if bool(bad_words.any()):
                raise ValueError(f"{op}: `words` holds {int(bad_words.sum())} real word(s) with non-finite "
                                 "values (NaN or inf); padding beyond word_lengths may hold anything")
    return lengths


def _triton_reasons(regions, words):
    # dim=0: the contractions over D are cuBLAS GEMMs; the Triton middle never sees D
    reasons = _dispatch.triton_reasons(regions, words, dim=0)
    if regions.shape[1] > MAX_TRITON_REGIONS:
        reasons.append(f"R={regions.shape[1]} regions exceed the supported maximum {MAX_TRITON_REGIONS}")
    return reasons


def plan(regions, words, word_lengths=None, *, impl="auto", **_):
    """(chosen impl, reasons Triton is not usable, what was requested) — for `explain`."""
    reasons = _triton_reasons(regions, words)
    return _dispatch.select(OP, impl, reasons), reasons, impl


def _hyper(op, temp_attention, temp_aggregate, aggregate, variant):
    ta = _validate.positive_number(op, "temp_attention", temp_attention)
    tg = _validate.positive_number(op, "temp_aggregate", temp_aggregate)
    _validate.choice(op, "aggregate", aggregate, AGGREGATES)
    _validate.choice(op, "variant", variant, VARIANTS)
    return ta, tg


def word_region_similarity(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths,
    *,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    impl: str = "auto",
    return_attention: bool = False,
    chunk_bytes: int | None = None,
):
    """S [B_img, B_txt]: how well report i's words are explained by image b's regions.

    regions [B_img, R, D], words [B_txt, L, D] (fp16/bf16/fp32; fp64 on the chunked path),
    word_lengths [B_txt] integers 1..L (words beyond a report's length are padding and never read).
    For image b and report i (see cxrfast.reference.local for the full definition)::

        s = regions[b] @ words[i, :n].T                                   # [R, n]
        α = softmax over regions of temp_attention · (softmax over words of s)    (variant="gloria")
          | softmax over regions of temp_attention · s                            (variant="single")
        c = α.T @ regions[b];   R_t = cos(c_t, w_t)   (‖c‖·‖w‖ clamped at 1e-8, as GLoRIA)
        S[b, i] = logsumexp(temp_aggregate · R)   ("mean": minus log n)

    No [B_img, B_txt, L, R] or [B_img, B_txt, L, D] tensor is formed: the pair grid is walked in chunks
    of about `chunk_bytes` (default 256 MiB on CUDA, 16 MiB on CPU), reports in order of length, each chunk
    computed at its own longest report. Returns fp32 (fp64 for fp64 input);
    gradients flow to `regions` and `words`. With return_attention=True, also returns α of the matched
    pairs (b = i) as [B, L, R] (zeros at padding; needs B_img == B_txt), e.g. for cxrfast.viz.
    """
    return _similarity(OP, regions, words, word_lengths, temp_attention=temp_attention,
                       temp_aggregate=temp_aggregate, aggregate=aggregate, variant=variant, impl=impl,
                       return_attention=return_attention, chunk_bytes=chunk_bytes)


def _prepare(op, regions, words, word_lengths, temp_attention, temp_aggregate, aggregate, variant, impl,
             chunk_bytes):
    """Validate a word–region call (errors named for `op`, the function the user called); returns
    (temp_attention, temp_aggregate, lengths as int64 on the inputs' device, chunk_bytes, chosen impl)."""
    ta, tg = _hyper(op, temp_attention, temp_aggregate, aggregate, variant)
    lengths = checked_inputs(op, regions, words, word_lengths)
    if chunk_bytes is None:
        chunk_bytes = _wordregion.default_chunk_bytes(regions.device)
    elif isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
        raise ValueError(f"{op}: `chunk_bytes` must be a positive int, got {chunk_bytes!r}")
    return ta, tg, lengths, chunk_bytes, _dispatch.select(op, impl, _triton_reasons(regions, words))


def _similarity(op, regions, words, word_lengths, *, temp_attention, temp_aggregate, aggregate, variant, impl,
                return_attention=False, chunk_bytes=None):
    """word_region_similarity, its errors named for `op` (the function the user called)."""
    ta, tg, lengths, chunk_bytes, chosen = _prepare(op, regions, words, word_lengths, temp_attention,
                                                    temp_aggregate, aggregate, variant, impl, chunk_bytes)
    if return_attention and regions.shape[0] != words.shape[0]:
        raise ValueError(f"{op}: return_attention needs B_img == B_txt (matched pairs b = i), got "
                         f"{regions.shape[0]} images and {words.shape[0]} reports")
    if chosen == "reference":
        from cxrfast.reference.local import word_region_similarity as reference

        return reference(regions, words, lengths, temp_attention=ta, temp_aggregate=tg, aggregate=aggregate,
                         variant=variant, return_attention=return_attention)
    S, _, _ = torch.ops.cxrfast.word_region_similarity(regions, words, lengths, ta, tg, aggregate == "mean",
                                                       variant == "gloria", chunk_bytes, chosen)
    if not return_attention:
        return S
    with torch.no_grad():
        maps = _wordregion.matched_attention(regions, words, lengths, ta, variant == "gloria")
    return S, maps


def _square(op, regions, words):
    # (anything that is not a pair of 3-D tensors is reported by word_region_similarity's own checks)
    tensors = isinstance(regions, torch.Tensor) and isinstance(words, torch.Tensor)
    if tensors and regions.dim() == 3 and words.dim() == 3 and regions.shape[0] != words.shape[0]:
        raise ValueError(f"{op}: batch sizes differ: `regions` has B={regions.shape[0]}, `words` has "
                         f"B={words.shape[0]} (each image needs its paired report at the same index)")


def local_contrastive_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths,
    *,
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    temp_logits: float = 10.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    weights=(1.0, 1.0),
    reduction: str = "mean",
    impl: str = "auto",
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """GLoRIA's local loss: cross-entropy both ways over temp_logits · S (pair i ↔ i),
    weights[0]·CE(S) + weights[1]·CE(Sᵀ); GLoRIA adds both directions, weights (1, 1).
    S = word_region_similarity(...) (same arguments); the B × B matrix is small, the work is in S.
    reduction "mean" (the loss), "sum", or "none": ℓ [B], ℓ_i = weights[0]·CE(S[i, :]) + weights[1]·CE(S[:, i])."""
    op_ = "local_contrastive_loss"
    _square(op_, regions, words)
    w = _validate.weights_arg(op_, weights)
    t = _validate.positive_number(op_, "temp_logits", temp_logits)
    _validate.choice(op_, "reduction", reduction, REDUCTIONS)
    S = _similarity(op_, regions, words, word_lengths, temp_attention=temp_attention,
                    temp_aggregate=temp_aggregate, aggregate=aggregate, variant=variant, impl=impl,
                    chunk_bytes=chunk_bytes)
    logits = t * S
    labels = torch.arange(S.shape[0], device=S.device)
    per_sample = (w[0] * F.cross_entropy(logits, labels, reduction="none")
                  + w[1] * F.cross_entropy(logits.t(), labels, reduction="none"))
    return reduce(per_sample, reduction)


def local_triplet_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths,
    *,
    margin: float = 0.2,
    negatives="hardest",
    reduction: str = "sum",
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    impl: str = "auto",
    chunk_bytes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JoImTeRNet's word-level (local) ranking loss on the word–region similarity S: for every
    anchor image and every anchor report, [margin + S(negative) − S(matched)]₊; see
    cxrfast.reference.local.local_triplet_loss. The margin is in S's units (log-sum-exp of temp_aggregate ·
    cosine). negatives:
        "hardest" / "all"   the hardest negative (VSE++) or all of them: S [B, B] is computed
                            (word_region_similarity, the same arguments);
        n                   int64 [B] per-sample negative indices, as in triplet_loss: image i against report
                            n_i, [margin + S(i, n_i) − S(i, i)]₊, and report i against image n_i,
                            [margin + S(n_i, i) − S(i, i)]₊ (n_i = -1: none). Only those 3·B pairs are
                            computed, as one batch of (image, report) pairs, each report at its own length
                            (cxrfast.reference.local.paired_word_region_similarity in fp32, fp64 for fp64
                            input; autograd through it): O(B·R·L·D), no B × B similarity, in every impl but
                            "reference" (which gathers from the full S, the definition);
        "random"            n drawn from `generator` as in triplet_loss (random_negatives: one uniformly random
                            other sample per anchor). To share one draw with the sentence-level triplet_loss
                            (JoImTeRNet), draw once and pass the indices to both.
    reduction as in triplet_loss: "sum" over the 2·B anchors, "mean" (÷ B), "none": ℓ [B], pair i's image
    anchor plus its report anchor. JoImTeRNet: margin=0.5, reduction="mean", temperatures 4 / 5."""
    from cxrfast.reference.triplet import REDUCTIONS as TRIPLET_REDUCTIONS, chosen_hinges, reduce_anchors, \
        triplet_from_scores

    op_ = "local_triplet_loss"
    _square(op_, regions, words)
    m = _validate.finite_number(op_, "margin", margin)
    _validate.choice(op_, "reduction", reduction, TRIPLET_REDUCTIONS)
    ta, tg, lengths, chunk_bytes, chosen = _prepare(op_, regions, words, word_lengths, temp_attention,
                                                    temp_aggregate, aggregate, variant, impl, chunk_bytes)
    # validated (and, for "random", drawn) last: an invalid call consumes nothing from the generator
    mode, idx = _validate.negatives_arg(op_, negatives, regions.shape[0], regions, generator)
    hyper = dict(temp_attention=ta, temp_aggregate=tg, aggregate=aggregate, variant=variant)
    if chosen == "reference":
        from cxrfast.reference.local import local_triplet_loss as reference

        return reference(regions, words, lengths, margin=m, negatives=mode if idx is None else idx,
                         reduction=reduction, **hyper)
    if idx is None:
        S, _, _ = torch.ops.cxrfast.word_region_similarity(regions, words, lengths, ta, tg, aggregate == "mean",
                                                           variant == "gloria", chunk_bytes, chosen)
        return triplet_from_scores(S, margin=m, negatives=mode, reduction=reduction)
    diag, s_row, s_col = _chosen_pair_scores(regions, words, lengths, idx, hyper)
    return reduce_anchors(*chosen_hinges(diag, s_row, idx >= 0, s_col, idx >= 0, m), reduction)


@no_autocast
def _chosen_pair_scores(regions, words, lengths, idx, hyper, pool=None):
    """(S(a, a), S(a, n_a), S(n_a, a)), each [B], in fp32 (fp64 for fp64): one batch of 3·B (image, report)
    pairs through the paired word–region similarity, differentiable (autograd: O(B·R·L·D)), with autocast off
    like every op body (the caller's bf16 autocast would otherwise run the einsums in 16 bits).
    pool = (regions, words, lengths) of the samples the indices point into (default: the anchors' own batch;
    cxrfast.distributed passes the gathered global batch)."""
    from cxrfast.reference.local import paired_word_region_similarity

    B, n = regions.shape[0], idx.clamp(min=0)
    acc = _wordregion.acc_dtype(regions.dtype)
    V, W = regions.to(acc), words.to(acc)
    Vp, Wp, Lp = (V, W, lengths) if pool is None else (pool[0].to(acc), pool[1].to(acc), pool[2])
    S = paired_word_region_similarity(torch.cat([V, V, Vp[n]]), torch.cat([W, Wp[n], W]),
                                      torch.cat([lengths, Lp[n], lengths]), **hyper)
    return S.view(3, B).unbind(0)
