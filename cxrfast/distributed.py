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
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cxrfast.ops import _validate
from cxrfast.ops import contrastive as _contrastive
from cxrfast.ops._pairwise import grad_precision, inverse_norms

__all__ = ["all_gather_with_grad", "contrastive_loss", "is_distributed"]

OP = "cxrfast.distributed.contrastive_loss"
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
    scale, w, eps, groups, chosen = _contrastive.checked_arguments(OP, image_emb, text_emb, logit_scale, weights,
                                                                   label_smoothing, groups, impl)
    b = image_emb.shape[0]
    options = dict(normalize=normalize, weights=w, label_smoothing=eps)

    if not is_distributed(group):
        return _contrastive.contrastive_loss(image_emb, text_emb, scale, groups=groups, impl=chosen, **options)

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
