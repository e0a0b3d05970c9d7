"""Multi-GPU (torchrun / DDP) InfoNCE: an all-gather with correct gradients and the rank-local loss.

Setting: W ranks (one process per GPU), each holding B_local image–text pairs; the contrastive batch is
the concatenation over ranks, B_global = W · B_local, and rank r's pairs are global rows
[r·B_local, (r+1)·B_local). The loss every rank should be optimising is the single-process full-batch
loss L = cxrfast.contrastive_loss(image_global, text_global, ...).

Two forms (``gather=``):

"local" (default; open_clip's ``local_loss=True``)
    Rank r computes only its own rows of the score grid, in both directions: the i2t block
    S[r-rows, :] = image_local · text_globalᵀ (B_local × B_global) and the t2i block
    Sᵀ[r-rows, :] = text_local · image_globalᵀ (B_local × B_global), each as the row statistics of one
    `torch.ops.cxrfast.infonce_stats` call with the positives placed by pos_offset = r · B_local
    (or by group ids gathered from all ranks).
      FLOPs per rank: 2 · B_local · B_global · D per direction forward (4 · B_global² · D / W in all),
      the backward about three times that (the tile backward recomputes the scores).
      Memory per rank: the gathered embeddings (2 · B_global · D) and O(B_global) statistics;
      no B_local × B_global tensor is materialised on any path (the kernels stream tiles, the chunked
      path holds one bounded block at a time).
    Each grid block is computed twice across the job (block (r, c) on rank r for i2t and its transpose
    on rank c for t2i): per rank that is 2/W of the single-process work, so it beats "full" for W > 2
    and ties at W = 2.

"full" (open_clip's ``local_loss=False``)
    Every rank computes the whole B_global × B_global loss with `cxrfast.contrastive_loss` on the
    gathered tensors (one pass serves both directions): 2 · B_global² · D FLOPs forward per rank, the
    same on every rank. Simpler; the redundancy grows with W.

Communication (both forms): an all-gather of 2 · B_global · D embedding elements (and B_global group
ids) forward, an all-reduce of 2 · B_global · D gradient elements backward, and one tiny all-gather of
the local shapes per call (to fail clearly on ranks with different batch sizes instead of hanging).

Gradient contract (both forms; see `contrastive_loss`): the value each rank returns is such that, after
the averaging DDP performs (gradients all-reduce summed and divided by W), every parameter gradient
equals the gradient of the single-process full-batch loss L — including the logit scale's.

The other terms of the presets follow the same contract ("W × its share": rank r returns ℓ_r with
mean_r ℓ_r = L and Σ_r ∂ℓ_r/∂(its inputs) = W · ∂L/∂(its inputs), the gathers' backward doing the sum):
    local_contrastive_loss   GLoRIA's word–region loss of the global batch in rank-local blocks (rank r:
                             its images against all reports, all images against its reports)
    triplet_loss,            JoImTeRNet's ranking losses with chosen negatives anywhere in the global batch
    local_triplet_loss       (the anchors' pair scores against the gathered embeddings / words and regions)
    gather_word_regions      one gather of words, lengths and regions shared by the two local losses
    global_mean              a mean over elements that ranks hold unequal numbers of (MLM tokens, masked
                             patches, caption tokens): W · local sum / global count
    global_rows              this rank's first row in the global batch (draws keyed by global position)
    batch_moments            BatchNorm statistics of the global batch, differentiable (SyncBatchNorm's,
                             on any backend)
Each is the single-process function (or statistic) when torch.distributed is not initialised. Every rank
must make the same calls in the same order (they are collectives), in training and in evaluation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cxrfast.ops import _validate
from cxrfast.ops import contrastive as _contrastive
from cxrfast.ops import local as _local
from cxrfast.ops import triplet as _triplet
from cxrfast.ops._pairwise import grad_precision, inverse_norms
from cxrfast.reference.triplet import chosen_hinges

__all__ = ["all_gather_with_grad", "batch_moments", "contrastive_loss", "gather_word_regions", "global_mean",
           "global_rows", "GatheredWordRegions", "is_distributed", "local_contrastive_loss", "local_triplet_loss",
           "triplet_loss"]

OP = "cxrfast.distributed.contrastive_loss"
OP_LOCAL = "cxrfast.distributed.local_contrastive_loss"
OP_TRIPLET = "cxrfast.distributed.triplet_loss"
OP_LOCAL_TRIPLET = "cxrfast.distributed.local_triplet_loss"
OP_GATHER = "cxrfast.distributed.gather_word_regions"
TRIPLET_REDUCTIONS = ("mean", "sum")
GATHER_MODES = ("local", "full")
# "reference" materialises the B_global × B_global grid and has no rank-local form.
IMPLS = ("auto", "triton", "chunked")

# all_gather_into_tensor is deprecated in favour of all_gather_single in recent torch; same semantics.
_all_gather_single = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)


def is_distributed(group=None) -> bool:
    """True when torch.distributed is initialised and `group` (default: the world) has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _gather(t: torch.Tensor, group) -> torch.Tensor:
    """Concatenation over ranks along dim 0 (no autograd). Every rank must pass the same shape."""
    t = t.contiguous()
    out = t.new_empty((dist.get_world_size(group) * t.shape[0], *t.shape[1:]))
    _all_gather_single(out, t, group=group)
    return out


def _check_same_shapes(op: str, named, group) -> None:
    """One small all-gather of every named tensor's (ndim, dim 0, elements per row); raises the same
    ValueError on every rank when they differ (a mismatched all-gather would otherwise hang or fail
    with an opaque backend error)."""
    local = []
    for _, t in named:
        local += [t.dim(), t.shape[0], t[:1].numel() if t.dim() > 1 else 1]
    mine = torch.tensor(local, dtype=torch.int64, device=named[0][1].device)
    ranks = _gather(mine[None], group).tolist()
    for k, (name, _) in enumerate(named):
        ndim, rows, per_row = ([r[3 * k + i] for r in ranks] for i in range(3))
        if len(set(rows)) > 1:
            raise ValueError(
                f"{op}: local batch sizes differ across ranks: `{name}` has {rows[0]} rows on rank 0"
                + "".join(f", {n} on rank {i}" for i, n in enumerate(rows) if i) + " (sizes by rank: "
                f"{rows}); every rank must hold the same number of pairs (e.g. drop_last=True in the "
                "DataLoader / DistributedSampler)")
        if len(set(ndim)) > 1 or len(set(per_row)) > 1:
            raise ValueError(f"{op}: `{name}` has different shapes beyond dim 0 across ranks "
                             f"(ndim by rank: {ndim}; elements per row by rank: {per_row})")


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenation over ranks. Backward: the gradient w.r.t. the concatenation is summed over
    ranks (every rank's loss depends on every rank's rows), and this rank keeps its own slice."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group, ctx.rows = group, t.shape[0]
        ctx.start = dist.get_rank(group) * t.shape[0]
        return _gather(t, group)

    @staticmethod
    def backward(ctx, grad):
        # all_reduce works in place: never write into the incoming gradient buffer.
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g[ctx.start:ctx.start + ctx.rows].clone(), None


def all_gather_with_grad(t: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenation of `t` over the ranks of `group` along dim 0, differentiable.

    t [B_local, ...] → [W · B_local, ...], rank r's rows at [r·B_local, (r+1)·B_local). The backward
    all-reduces (sums) the incoming gradient and returns this rank's slice, so each rank receives the
    gradient of the SUM of all ranks' losses w.r.t. its own rows (the same as
    torch.distributed.nn.all_gather). Every rank must run the backward (it is a collective).
    Identity when torch.distributed is not initialised or the group has one rank.

    Raises ValueError (on every rank) when the ranks' local shapes differ; the check costs one small
    all-gather of the shapes.
    """
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        raise ValueError(f"all_gather_with_grad: `t` must be a tensor with at least one dim, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if not is_distributed(group):
        return t
    _check_same_shapes("all_gather_with_grad", [("t", t)], group)
    return _AllGatherWithGrad.apply(t, group)


def _row_cross_entropy_sum(stats, n_cols: int, label_smoothing: float) -> torch.Tensor:
    """Σ over this rank's rows of CE(row i) = lse_r[i] − Σ_j q_ij s_ij, from infonce_stats outputs."""
    lse_r, _, pos_r, cnt, sum_r = stats
    return (lse_r - _contrastive.row_targets(pos_r, cnt, sum_r, n_cols, label_smoothing)).sum()


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale,
    *,
    normalize: bool = True,
    weights=(0.5, 0.5),
    label_smoothing: float = 0.0,
    groups: torch.Tensor | None = None,
    impl: str = "auto",
    group=None,
    gather: str = "local",
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch gathered from all ranks; call it on every rank.

    image_emb [B_local, D], text_emb [B_local, D] this rank's embeddings (every rank the same B_local),
    logit_scale the multiplier (a scalar tensor replicated on every rank, e.g. exp of a DDP-held log
    scale, or a number), groups optional [B_local] integer ids that are global across ranks (equal ids
    are positives wherever they live, e.g. views of one study split over two ranks), group the process
    group (default: the world). normalize, weights, label_smoothing as in `cxrfast.contrastive_loss`;
    the uniform part of label smoothing spreads over all B_global columns.

    gather="local" (default): rank r computes only its B_local rows of the B_global × B_global grid in
    each direction and returns
        ℓ_r = (w_i2t · Σ_{i ∈ rank r} CE_i2t(i) + w_t2i · Σ_{i ∈ rank r} CE_t2i(i)) / B_local,
    i.e. W × its share of the global mean, so mean_r ℓ_r = L, the single-process full-batch loss
    cxrfast.contrastive_loss(image_global, text_global, logit_scale, ...) (all_reduce ℓ with AVG to log L).
    gather="full": every rank returns L itself, computed from the gathered tensors.

    Gradient contract (both forms): the gathers' backward sums over ranks, so rank r's gradient w.r.t.
    its local embeddings is ∂(Σ_r' ℓ_r')/∂(its rows) = W · ∂L/∂(its rows); its gradient w.r.t.
    logit_scale is ∂ℓ_r/∂logit_scale (the scale is replicated, not gathered). After DDP averaging
    (all-reduce sum, divide by W) every parameter gradient — encoder weights upstream of the embeddings
    AND the logit scale — equals its gradient of L exactly; the logit-scale gradient is NOT multiplied
    by W. Without DDP, divide the summed gradients by W yourself. Every rank must run the backward.

    impl: "auto" | "triton" | "chunked", resolved like `cxrfast.contrastive_loss` (CXRFAST_IMPL
    honoured; "triton" on unsupported input raises). "reference" is not accepted: the reference
    materialises the full grid and has no rank-local form (CXRFAST_IMPL=reference runs "chunked" for
    gather="local" and the reference for gather="full").

    Without torch.distributed initialised, or with one rank, this is `cxrfast.contrastive_loss`.
    Returns a 0-dim fp32 tensor (fp64 for fp64 input).
    """
    _validate.choice(OP, "gather", gather, GATHER_MODES)
    if impl not in IMPLS:
        raise ValueError(f"{OP}: `impl` must be one of {IMPLS}, got {impl!r}"
                         + (" (the reference materialises the full B_global × B_global grid and has no "
                            "rank-local form; use 'chunked' for the portable PyTorch path)"
                            if impl == "reference" else ""))
    if not is_distributed(group):  # (its own checks: validating twice would read a tensor scale twice)
        return _contrastive.contrastive_loss(image_emb, text_emb, logit_scale, normalize=normalize, weights=weights,
                                             label_smoothing=label_smoothing, groups=groups, impl=impl)
    scale, w, eps, groups, chosen = _contrastive.checked_arguments(OP, image_emb, text_emb, logit_scale, weights,
                                                                   label_smoothing, groups, impl)
    b = image_emb.shape[0]
    options = dict(normalize=normalize, weights=w, label_smoothing=eps)

    named = [("image_emb", image_emb), ("text_emb", text_emb)] + ([("groups", groups)] if groups is not None else [])
    _check_same_shapes(OP, named, group)
    image_all = _AllGatherWithGrad.apply(image_emb, group)
    text_all = _AllGatherWithGrad.apply(text_emb, group)
    groups_all = _gather(groups, group) if groups is not None else None

    if gather == "full":
        return _contrastive.contrastive_loss(image_all, text_all, scale, groups=groups_all, impl=chosen, **options)

    if chosen == "reference":  # only via CXRFAST_IMPL; the chunked path is the PyTorch form of these stats
        chosen = "chunked"
    n = image_all.shape[0]
    offset = dist.get_rank(group) * b
    # rx/ry of the gathered tensors are computed after the gather, so their gradients flow back through it.
    # ids mapped once over the whole batch, so this rank's rows and all columns compare consistently
    col_ids = _contrastive.dense_group_ids(groups_all) if groups is not None else None
    row_ids = col_ids[offset:offset + b] if groups is not None else None
    # 16-bit embeddings are differentiated through fp32 copies (ops._pairwise.grad_precision)
    (x, kd), (x_all, _) = grad_precision(image_emb), grad_precision(image_all)
    (t, _), (t_all, _) = grad_precision(text_emb), grad_precision(text_all)
    i2t = torch.ops.cxrfast.infonce_stats(
        x, t_all, inverse_norms(x, normalize), inverse_norms(t_all, normalize),
        scale, row_ids, col_ids, offset, False, chosen, kd)
    t2i = torch.ops.cxrfast.infonce_stats(
        t, x_all, inverse_norms(t, normalize), inverse_norms(x_all, normalize),
        scale, row_ids, col_ids, offset, False, chosen, kd)
    # Only row statistics are needed (columns=False skips the column softmax in both kernels): the
    # columns of these blocks are other ranks' rows, which they compute themselves.
    return (w[0] * _row_cross_entropy_sum(i2t, n, eps) + w[1] * _row_cross_entropy_sum(t2i, n, eps)) / b



# ------------------------------------------------------------------ the global batch: rows, means, statistics

def global_rows(like: torch.Tensor, group=None) -> tuple[int, int]:
    """(this rank's first row in the global batch, the global batch size) for a local batch of
    like.shape[0] rows; ranks hold consecutive slices in rank order (cxrfast.data.loader.EpochBatches deals
    them so). Under torch.distributed one tiny all-gather of the local sizes (on like's device) and a host
    sync, so that uneven local batches are placed exactly; (0, like.shape[0]) without it. Presets key their
    random draws by global row: a sample gets the same draw on any rank and in one process with the whole
    batch."""
    if not isinstance(like, torch.Tensor) or like.dim() == 0:
        raise ValueError(f"global_rows: `like` must be a tensor with a batch dim, got "
                         f"{tuple(like.shape) if isinstance(like, torch.Tensor) else type(like).__name__}")
    b = like.shape[0]
    if not is_distributed(group):
        return 0, b
    sizes = _gather(torch.tensor([b], dtype=torch.int64, device=like.device), group).tolist()
    rank = dist.get_rank(group)
    return sum(sizes[:rank]), sum(sizes)


def global_mean(total: torch.Tensor, count, group=None) -> torch.Tensor:
    """A mean over the elements of the global batch (tokens, patches, samples), each rank holding any number
    of them, as the rank-local term DDP expects.

    total: this rank's sum over its elements (a tensor of any shape, e.g. several sums stacked); count: how
    many elements it sums (an integer tensor or int, broadcastable to total; never differentiated). Returns
        ℓ_r = W · total_r / max(N, 1),   N = Σ_r count_r  (one all-reduce of count, no gradient),
    so mean_r ℓ_r = Σ_r total_r / N, the single-process mean over the whole batch, however unevenly the
    elements fall on the ranks (a rank with none returns 0 and still joins the collective). Without
    torch.distributed: total / max(count, 1).

    Gradient contract: ∂ℓ_r/∂total_r = W / N, so after DDP's averaging (sum over ranks, divide by W) every
    parameter gradient is that of the full-batch mean. (Averaging per-rank means instead would weight the
    ranks equally: wrong whenever their counts differ.)
    """
    if not isinstance(total, torch.Tensor):
        raise TypeError(f"global_mean: `total` must be a tensor, got {type(total).__name__}")
    if not isinstance(count, torch.Tensor):
        count = torch.as_tensor(count, device=total.device)
    if count.is_floating_point() or count.is_complex() or count.dtype == torch.bool:
        raise TypeError(f"global_mean: `count` must be an integer count, got {count.dtype}")
    if not is_distributed(group):
        return total / count.clamp(min=1)
    n = count.detach().to(device=total.device, dtype=torch.int64).clone(memory_format=torch.contiguous_format)
    dist.all_reduce(n, op=dist.ReduceOp.SUM, group=group)
    return dist.get_world_size(group) * total / n.clamp(min=1)


def batch_moments(rows: torch.Tensor, mask: torch.Tensor | None = None, group=None):
    """BatchNorm's training statistics over the rows of every rank, differentiable: (mean [C], biased
    variance [C], count: a 0-dim tensor) of rows [M, C] where mask [M] is True (all rows when mask is None).

    Without torch.distributed: this rank's statistics. Under it: each rank's (count, mean, sum of squared
    deviations M2) in one all-gather with gradients of 2·C + 1 numbers, combined by the parallel-variance
    formula (mean = Σ n_r·mean_r / n, M2 = Σ_r M2_r + n_r·(mean_r − mean)², numerically as stable as the
    two-pass form): torch.nn.SyncBatchNorm's statistics, on any device and backend (SyncBatchNorm itself
    runs on GPUs only), and with a mask (LoVT's BatchNorm over real sentences). A rank without selected rows
    contributes nothing.

    Gradient contract: as all_gather_with_grad's: rank r's rows receive ∂(Σ_r' ℓ_r')/∂(its rows) through the
    statistics, so with every rank's loss W × its share, DDP's averaged gradients are those of one BatchNorm
    over the whole batch. Every rank must run the backward.
    """
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2:
        raise ValueError(f"batch_moments: `rows` must be a 2-D tensor [M, C], got "
                         f"{tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__}")
    if mask is not None and mask.shape != rows.shape[:1]:
        raise ValueError(f"batch_moments: `mask` must have shape [{rows.shape[0]}] (one flag per row), got "
                         f"{tuple(mask.shape)}")
    synced = is_distributed(group)
    m = None if mask is None else mask.reshape(-1, 1).to(rows.dtype)
    n = rows.new_tensor(float(rows.shape[0])) if m is None else m.sum()
    total = rows.sum(0) if m is None else (rows * m).sum(0)
    mean = total / (n.clamp(min=1) if synced else n)  # a rank may hold no selected row
    dev = (rows - mean).square()
    m2 = dev.sum(0) if m is None else (dev * m).sum(0)
    if not synced:
        return mean, m2 / n, n
    C = rows.shape[1]
    stats = _AllGatherWithGrad.apply(torch.cat([n.reshape(1), mean, m2])[None], group)  # [W, 1 + 2C]
    counts, means, m2s = stats[:, :1].detach(), stats[:, 1:1 + C], stats[:, 1 + C:]  # counts: no gradient
    n_all = counts.sum()
    mean_all = (counts * means).sum(0) / n_all
    m2_all = (m2s + counts * (means - mean_all).square()).sum(0)
    return mean_all, m2_all / n_all, n_all


# ---------------------------------------------------------------------------- word–region and triplet losses

class GatheredWordRegions(NamedTuple):
    """The global batch of a word–region loss: regions [B_global, R, D] and words [B_global, L, D] (gathered
    with gradients), word lengths [B_global] int64, and this rank's first row `offset`."""

    regions: torch.Tensor
    words: torch.Tensor
    lengths: torch.Tensor
    offset: int


def gather_word_regions(regions: torch.Tensor, words: torch.Tensor, word_lengths, group=None):
    """One gather of a batch's regions [B_local, R, D], words [B_local, L, D] (differentiable, as
    all_gather_with_grad) and word lengths [B_local] for the word–region losses of this module: pass the
    result as `gathered=` to local_contrastive_loss and local_triplet_loss to share it (JoImTeRNet uses both).
    None without torch.distributed (nothing to gather). Memory: B_global · (R + L) · D elements."""
    if not is_distributed(group):
        return None
    _local._square(OP_GATHER, regions, words)
    lengths = _local.checked_inputs(OP_GATHER, regions, words, word_lengths)
    _check_same_shapes(OP_GATHER, [("regions", regions), ("words", words), ("word_lengths", lengths)], group)
    return GatheredWordRegions(_AllGatherWithGrad.apply(regions, group), _AllGatherWithGrad.apply(words, group),
                               _gather(lengths, group), dist.get_rank(group) * regions.shape[0])


def _global_batch(op: str, regions, words, word_lengths, gathered, group) -> GatheredWordRegions:
    """`gathered`, checked against this rank's tensors, or a fresh gather."""
    if gathered is None:
        return gather_word_regions(regions, words, word_lengths, group)
    if not isinstance(gathered, GatheredWordRegions):
        raise TypeError(f"{op}: `gathered` must be gather_word_regions' result, got {type(gathered).__name__}")
    world, b = dist.get_world_size(group), regions.shape[0]
    want = (world * b, *regions.shape[1:]), (world * b, *words.shape[1:])
    got = tuple(gathered.regions.shape), tuple(gathered.words.shape)
    if got != want or gathered.offset != dist.get_rank(group) * b:
        raise ValueError(f"{op}: `gathered` is not the gather of these `regions` and `words` (shapes {got}, "
                         f"offset {gathered.offset}; expected {want}, offset {dist.get_rank(group) * b})")
    return gathered


def _share(total: torch.Tensor, reduction: str, world: int, n_global: int) -> torch.Tensor:
    """W × this rank's share of the global "mean" (÷ B_global) or "sum" of per-anchor terms."""
    return total * world / n_global if reduction == "mean" else total * world


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
    impl: str = "auto",
    chunk_bytes: int | None = None,
    group=None,
    gathered: GatheredWordRegions | None = None,
) -> torch.Tensor:
    """GLoRIA's word–region loss (cxrfast.local_contrastive_loss, reduction "mean") of the global batch, in
    rank-local blocks; call it on every rank.

    regions [B_local, R, D], words [B_local, L, D], word_lengths [B_local]: this rank's pairs (every rank
    the same B_local); the other arguments as in cxrfast.local_contrastive_loss. With S the B_global ×
    B_global word–region similarity of the global batch (image b, report i), rank r computes only
        its rows     S[r's images, all reports]  = word_region_similarity(regions, words_global)  [B_local, B_global]
        its columns  S[all images, r's reports]  = word_region_similarity(regions_global, words)  [B_global, B_local]
    and the cross-entropy of each of its rows and columns with the positive at its global index
    (offset r · B_local), returning
        ℓ_r = (w₀ · Σ_{i ∈ r} CE(t · S[i, :]) + w₁ · Σ_{i ∈ r} CE(t · S[:, i])) / B_local,
    W × its share of the global mean, so mean_r ℓ_r = L = cxrfast.local_contrastive_loss(all regions, all
    words, all lengths). The released codes (GLoRIA, JoImTeRNet) compute each GPU's local loss on its own
    batch only; this pairs every image with the whole global batch's reports, which the fused op's
    bounded memory makes affordable: per rank 2 · B_local · B_global pairs (the diagonal block twice), 2/W
    of the single-process B_global² (the regions' and words' gather: B_global · (R + L) · D elements).
    gathered: gather_word_regions' result for these tensors (to share one gather); default: gathered here.

    Gradient contract: the gathers' backward sums over ranks, so rank r's gradient w.r.t. its regions and
    words is W · ∂L/∂(them); after DDP's averaging every parameter gradient is ∂L/∂θ. Every rank must run
    the backward. Without torch.distributed: cxrfast.local_contrastive_loss (`gathered` ignored).
    Returns a 0-dim fp32 tensor (fp64 for fp64 input).
    """
    if not is_distributed(group):
        return _local.local_contrastive_loss(regions, words, word_lengths, temp_attention=temp_attention,
                                             temp_aggregate=temp_aggregate, temp_logits=temp_logits,
                                             aggregate=aggregate, variant=variant, weights=weights, impl=impl,
                                             chunk_bytes=chunk_bytes)
    _local._square(OP_LOCAL, regions, words)
    w = _validate.weights_arg(OP_LOCAL, weights)
    t = _validate.positive_number(OP_LOCAL, "temp_logits", temp_logits)
    g = _global_batch(OP_LOCAL, regions, words, word_lengths, gathered, group)
    b, n = regions.shape[0], g.regions.shape[0]
    hyper = dict(temp_attention=temp_attention, temp_aggregate=temp_aggregate, aggregate=aggregate,
                 variant=variant, impl=impl, chunk_bytes=chunk_bytes)
    rows = _local._similarity(OP_LOCAL, regions, g.words, g.lengths, **hyper)                      # [b, n]
    cols = _local._similarity(OP_LOCAL, g.regions, words, g.lengths[g.offset:g.offset + b], **hyper)  # [n, b]
    labels = torch.arange(b, device=rows.device) + g.offset
    total = (w[0] * F.cross_entropy(t * rows, labels, reduction="sum")
             + w[1] * F.cross_entropy(t * cols.t(), labels, reduction="sum"))
    return _share(total, "mean", dist.get_world_size(group), n)


def _negatives(op: str, negatives, b: int, n: int, offset: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(negatives, torch.Tensor):
        raise TypeError(f"{op}: `negatives` must be an integer tensor [B_local] of global sample indices (the "
                        f"same draw on every rank), got {type(negatives).__name__}")
    return _validate.negatives_arg(op, negatives, b, like, None, (), pool=n, offset=offset)[1]


def triplet_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    *,
    negatives: torch.Tensor,
    margin: float = 0.2,
    reduction: str = "mean",
    distance: str = "cosine",
    impl: str = "auto",
    group=None,
) -> torch.Tensor:
    """cxrfast.triplet_loss with chosen negatives anywhere in the global batch (JoImTeRNet's random
    negatives drawn over the whole batch); call it on every rank.

    image_emb, text_emb [B_local, D] this rank's pairs (global rows offset .. offset + B_local − 1, offset =
    rank · B_local); negatives int64 [B_local]: entry a the global index of anchor a's negative (another
    sample of the global batch, -1 none), from a draw made identically on every rank (e.g. a counter-based
    draw over B_global, sliced at this rank's rows: cxrfast.models.sampling). The embeddings are gathered;
    anchor a's hinges are image a against text n_a and text a against image n_a, as in cxrfast.triplet_loss
    (O(B_local · D) pair scores, no B × B). reduction "mean" (÷ B_global, JoImTeRNet) or "sum"; returns
    W × this rank's share, ℓ_r = W · Σ_{a ∈ r} (hinges of a) [/ B_global], so mean_r ℓ_r = the
    single-process loss of the global batch with the same negatives.

    Gradient contract: as contrastive_loss's (the gathers' backward sums over ranks; after DDP's averaging
    every parameter gradient is that of the single-process loss). Every rank must run the backward.
    Without torch.distributed: cxrfast.triplet_loss(image_emb, text_emb, negatives=negatives, ..., impl=impl).
    """
    _validate.choice(OP_TRIPLET, "reduction", reduction, TRIPLET_REDUCTIONS)
    if not is_distributed(group):
        return _triplet.triplet_loss(image_emb, text_emb, margin=margin, negatives=negatives, reduction=reduction,
                                     distance=distance, impl=impl)
    _validate.embedding_pair(OP_TRIPLET, image_emb, text_emb)
    _validate.choice(OP_TRIPLET, "distance", distance, _triplet.DISTANCES)
    margin = _validate.finite_number(OP_TRIPLET, "margin", margin)
    _check_same_shapes(OP_TRIPLET, [("image_emb", image_emb), ("text_emb", text_emb)], group)
    b, world = image_emb.shape[0], dist.get_world_size(group)
    idx = _negatives(OP_TRIPLET, negatives, b, world * b, dist.get_rank(group) * b, image_emb)
    image_all = _AllGatherWithGrad.apply(image_emb, group)
    text_all = _AllGatherWithGrad.apply(text_emb, group)
    normalize = distance == "cosine"
    # 16-bit embeddings differentiated through fp32 copies, as cxrfast.triplet_loss (ops._pairwise.grad_precision)
    x, y, xa, ya = (grad_precision(t)[0] for t in (image_emb, text_emb, image_all, text_all))
    rx, ry, rxa, rya = (inverse_norms(t, normalize) for t in (x, y, xa, ya))
    diag = _triplet._pair_scores(x, y, rx, ry)
    per_img, per_txt = _triplet.chosen_negative_hinges(x, y, rx, ry, diag, idx, idx, margin, pool=(xa, ya, rxa, rya))
    return _share(per_img.sum() + per_txt.sum(), reduction, world, world * b)


def local_triplet_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_lengths,
    *,
    negatives: torch.Tensor,
    margin: float = 0.2,
    reduction: str = "mean",
    temp_attention: float = 4.0,
    temp_aggregate: float = 5.0,
    aggregate: str = "sum",
    variant: str = "gloria",
    impl: str = "auto",
    chunk_bytes: int | None = None,
    group=None,
    gathered: GatheredWordRegions | None = None,
) -> torch.Tensor:
    """cxrfast.local_triplet_loss (JoImTeRNet's word-level ranking loss on the word–region similarity S) with
    chosen negatives anywhere in the global batch; call it on every rank.

    regions [B_local, R, D], words [B_local, L, D], word_lengths [B_local] this rank's pairs; negatives as in
    triplet_loss (global indices, the same draw on every rank). Anchor a's hinges compare S(a, a) with
    S(a, n_a) (its image against report n_a, gathered) and S(n_a, a) (image n_a, gathered, against its
    report): 3 · B_local paired similarities (cxrfast.reference.local.paired_word_region_similarity in fp32,
    fp64 for fp64; autograd), no B × B. reduction "mean" (÷ B_global, JoImTeRNet) or "sum"; returns W × this
    rank's share, so mean_r ℓ_r = cxrfast.local_triplet_loss of the global batch with the same negatives.
    gathered: gather_word_regions' result for these tensors (shared with local_contrastive_loss); default:
    gathered here. impl and chunk_bytes apply without torch.distributed only (the chosen pairs take the
    paired path, as cxrfast.local_triplet_loss's non-reference impls).

    Gradient contract: as local_contrastive_loss's. Without torch.distributed: cxrfast.local_triplet_loss.
    """
    _validate.choice(OP_LOCAL_TRIPLET, "reduction", reduction, TRIPLET_REDUCTIONS)
    if not is_distributed(group):
        return _local.local_triplet_loss(regions, words, word_lengths, margin=margin, negatives=negatives,
                                         reduction=reduction, temp_attention=temp_attention,
                                         temp_aggregate=temp_aggregate, aggregate=aggregate, variant=variant,
                                         impl=impl, chunk_bytes=chunk_bytes)
    _local._square(OP_LOCAL_TRIPLET, regions, words)
    m = _validate.finite_number(OP_LOCAL_TRIPLET, "margin", margin)
    ta, tg, lengths, _, _ = _local._prepare(OP_LOCAL_TRIPLET, regions, words, word_lengths, temp_attention,
                                            temp_aggregate, aggregate, variant, impl, chunk_bytes)
    g = _global_batch(OP_LOCAL_TRIPLET, regions, words, lengths, gathered, group)
    b, n = regions.shape[0], g.regions.shape[0]
    idx = _negatives(OP_LOCAL_TRIPLET, negatives, b, n, g.offset, regions)
    hyper = dict(temp_attention=ta, temp_aggregate=tg, aggregate=aggregate, variant=variant)
    diag, s_row, s_col = _local._chosen_pair_scores(regions, words, lengths, idx, hyper,
                                                    pool=(g.regions, g.words, g.lengths))
    per_img, per_txt = chosen_hinges(diag, s_row, idx >= 0, s_col, idx >= 0, m)
    return _share(per_img.sum() + per_txt.sum(), reduction, dist.get_world_size(group), n)
