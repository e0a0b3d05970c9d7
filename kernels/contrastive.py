"""Fused InfoNCE statistics: one pass over the B×B score grid, O(B) outputs.

For s_ij = scale · rx_i · ry_j · (x_i · y_j), x [M, D], y [N, D], the forward kernel returns, per row i
and column j,
    lse_r[i] = logsumexp_j s_ij          lse_c[j] = logsumexp_i s_ij
    pos_r[i] = Σ_{j ∈ P(i)} s_ij          cnt[i]  = |P(i)|        sum_r[i] = Σ_j s_ij
with P(i) the positives of row i: columns with the same group id, or without groups the single column
i + pos_offset (0 for a whole batch; the rank's offset in the rank-local distributed form).
columns=False skips lse_c (its online softmax is a second exp per score): the rank-local distributed
form needs only row statistics. Every InfoNCE variant the
library offers (weights, label smoothing, several positives per study) is an O(B) expression of these
(cxrfast.ops.contrastive); the backward is kernels.pairwise.pairwise_bwd_kernel in MODE 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pairwise import (
    GPU_PANEL_BLOCK_M,
    LN2,
    PANEL_BLOCK_M,
    configs,
    dot_flags,
    forward_method,
    num_panels,
    pairwise_backward,
    panel_rows,
    positive_pairs,
    scores_tile,
)


# Spill-free on sm_90a (benchmarks/aot_sm90.py): BLOCK_N = 128 at 8 warps spills ~1 KB per thread in
# this kernel (two online softmaxes over one tile).
FWD_CONFIGS = [(GPU_PANEL_BLOCK_M, 64, 64, 8, 3), (GPU_PANEL_BLOCK_M, 64, 64, 8, 4),
               (GPU_PANEL_BLOCK_M, 64, 32, 8, 4), (GPU_PANEL_BLOCK_M, 32, 64, 4, 3)]


@triton.autotune(
    configs=configs(gpu=FWD_CONFIGS, interpret=(PANEL_BLOCK_M, 16, 16)),
    key=["D", "HAS_GROUPS", "COLUMNS"],
)
@triton.jit
def infonce_fwd_kernel(
    # inputs
    x_ptr, y_ptr, rx_ptr, ry_ptr, scale_ptr, row_groups_ptr, col_groups_ptr,
    # outputs: row_stats [5, M] (m₂, l, pos, cnt, sum; rows owned by this panel), col_lse2 [P, N]
    row_stats_ptr, col_lse2_ptr,
    # shapes
    M, N, D, n_panels, pos_offset,
    # strides
    stride_xb, stride_xd, stride_yb, stride_yd,
    # constexpr
    HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per row panel; walks every column block once (see kernels.pairwise).

    Everything runs in base 2 (exp2 is the native instruction): t = s·log₂e, m₂ = running max of t,
    l = Σ 2^(t − m₂); pos and sum are kept in the same units and converted on the host. A panel's
    column result is its local log₂-sum-exp, combined on the host. Register pressure decides the speed
    of this kernel (benchmarks/aot_sm90.py), hence: padded lanes are exactly 0 in t (their loads give 0),
    so plain sums need no mask; the -inf masking for max/exp is two broadcast bias vectors, not a
    [BLOCK_M, BLOCK_N] predicate; positives are only tested on tiles that can hold one.
    """
    pid = tl.program_id(0)
    row_start, row_end = panel_rows(pid, M, n_panels, BLOCK_M)
    scale2 = tl.load(scale_ptr).to(tl.float32) * 1.4426950408889634
    for c0 in range(0, N, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        cmask = cols < N
        ry = tl.load(ry_ptr + cols, mask=cmask, other=0.0)
        col_bias = tl.where(cmask, 0.0, -1.0e38)
        col_m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        col_l = tl.zeros((BLOCK_N,), tl.float32)
        first = c0 == 0  # the row state is (re)initialised here, so autotune re-runs are harmless
        for r0 in range(row_start, row_end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            rmask = rows < row_end
            acc = scores_tile(x_ptr, y_ptr, rows, cols, M, N, D, stride_xb, stride_xd, stride_yb, stride_yd,
                              BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
            rx = tl.load(rx_ptr + rows, mask=rmask, other=0.0)
            t = acc * (scale2 * rx)[:, None] * ry[None, :]  # s·log₂e; exactly 0 in padded lanes

            p_m = row_stats_ptr + rows
            p_l = p_m + M
            p_pos = p_m + 2 * M
            p_cnt = p_m + 3 * M
            p_sum = p_m + 4 * M
            row_pos = tl.where(first, 0.0, tl.load(p_pos, mask=rmask, other=0.0))
            row_cnt = tl.where(first, 0.0, tl.load(p_cnt, mask=rmask, other=0.0))
            row_sum = tl.where(first, 0.0, tl.load(p_sum, mask=rmask, other=0.0)) + tl.sum(t, axis=1)
            # without groups the positives lie on one diagonal: most tiles cannot hold any
            if HAS_GROUPS or ((r0 + pos_offset < c0 + BLOCK_N) & (c0 < r0 + pos_offset + BLOCK_M)):
                pos = positive_pairs(rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr,
                                     pos_offset, HAS_GROUPS) & cmask[None, :]
                row_pos += tl.sum(tl.where(pos, t, 0.0), axis=1)
                row_cnt += tl.sum(pos.to(tl.float32), axis=1)

            # log-sum-exps: padded rows/columns get -1e38 through the bias, which exp2 takes to 0 next to
            # any real score; finite (two biases sum to -2e38 > -FLT_MAX), so no lane ever forms
            # -inf - (-inf). Every tile has a real row and a real column.
            t = t + tl.where(rmask, 0.0, -1.0e38)[:, None] + col_bias[None, :]
            if COLUMNS:
                new_col_m = tl.maximum(col_m, tl.max(t, axis=0))
                col_l = col_l * tl.exp2(col_m - new_col_m) + tl.sum(tl.exp2(t - new_col_m[None, :]), axis=0)
                col_m = new_col_m
            row_m = tl.where(first, float("-inf"), tl.load(p_m, mask=rmask, other=0.0))
            row_l = tl.where(first, 0.0, tl.load(p_l, mask=rmask, other=0.0))
            new_row_m = tl.maximum(row_m, tl.max(t, axis=1))
            row_l = row_l * tl.exp2(row_m - new_row_m) + tl.sum(tl.exp2(t - new_row_m[:, None]), axis=1)

            tl.store(p_m, new_row_m, mask=rmask)
            tl.store(p_l, row_l, mask=rmask)
            tl.store(p_pos, row_pos, mask=rmask)
            tl.store(p_cnt, row_cnt, mask=rmask)
            tl.store(p_sum, row_sum, mask=rmask)
            # the next column block re-reads these rows, possibly from other threads of the program
            tl.debug_barrier()
        if COLUMNS:
            tl.store(col_lse2_ptr + pid.to(tl.int64) * N + cols, col_m + tl.log2(col_l), mask=cmask)


def infonce_forward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, columns=True):
    """Launch the forward. Returns fp32 tensors (lse_r [M], lse_c [N] or [0], pos_r [M], cnt [M], sum_r [M]).
    The method is kernels.pairwise.forward_method(): this module's fused kernel, or score panels."""
    from torch.library import wrap_triton

    if forward_method(0, x.shape[0], y.shape[0]) == "gemm":
        from .panels import INFONCE, panel_forward

        return panel_forward(x, y, rx, ry, mode=INFONCE, scale=scale, row_groups=row_groups, col_groups=col_groups,
                             pos_offset=pos_offset, columns=columns)

    (M, D), N = x.shape, y.shape[0]
    n_panels = num_panels(x, PANEL_BLOCK_M)
    row_stats = torch.empty((5, M), dtype=torch.float32, device=x.device)
    col_lse2 = torch.empty((n_panels, N) if columns else (0,), dtype=torch.float32, device=x.device)
    has_groups = row_groups is not None
    wrap_triton(infonce_fwd_kernel)[(n_panels,)](
        x, y, rx, ry, scale, row_groups if has_groups else rx, col_groups if has_groups else ry,
        row_stats, col_lse2 if columns else row_stats,
        M, N, D, n_panels, pos_offset,
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        HAS_GROUPS=has_groups, COLUMNS=columns, **dot_flags(x.dtype),
    )
    lse_r = (row_stats[0] + torch.log2(row_stats[1])) * LN2
    lse_c = torch.logsumexp(col_lse2 * LN2, dim=0) if columns else col_lse2
    return lse_r, lse_c, row_stats[2] * LN2, row_stats[3].clone(), row_stats[4] * LN2


def infonce_backward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset,
                     lse_r, lse_c, g_lse_r, g_lse_c, g_pos, g_sum):
    """Gradient pieces (A_x, A_y, V_r, V_c) of Σ g·stats; see kernels.pairwise for their use.
    An empty lse_c (columns=False in the forward) drops the column-softmax term."""
    columns = lse_c.numel() > 0
    return pairwise_backward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset,
                             (lse_r, g_lse_r, g_pos, g_sum), (lse_c, g_lse_c) if columns else (ry, ry),
                             mode=0, columns=columns)
