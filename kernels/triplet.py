"""Fused triplet (ranking) loss statistics over the B×B similarity grid, O(B) outputs.

s_ij = rx_i · ry_j · (x_i · y_j) (cosine when rx, ry are inverse norms). Negatives exclude the diagonal.
  hardest: idx_r[i] = argmax_{j≠i} s_ij, idx_c[j] = argmax_{i≠j} s_ij   (2·B indices, -1 when B = 1);
           the loss is then an O(B·D) expression of gathered pairs, and so is its backward.
  all:     hinge_r[i] = Σ_{j≠i} [m + s_ij − d_i]₊,  hinge_c[j] = Σ_{i≠j} [m + s_ij − d_j]₊, and the counts of
           active hinges (∂/∂d); the backward is kernels.pairwise.pairwise_bwd_kernel in MODE 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pairwise import (
    GPU_PANEL_BLOCK_M,
    PANEL_BLOCK_M,
    configs,
    dot_flags,
    forward_method,
    num_panels,
    pairwise_backward,
    panel_rows,
    scores_tile,
)


# spill-free on sm_90a in both modes (benchmarks/aot_sm90.py)
FWD_CONFIGS = [(GPU_PANEL_BLOCK_M, 64, 64, 8, 3), (GPU_PANEL_BLOCK_M, 64, 64, 8, 4), (GPU_PANEL_BLOCK_M, 64, 32, 8, 4)]


@triton.autotune(
    configs=configs(gpu=FWD_CONFIGS, interpret=(PANEL_BLOCK_M, 16, 16)),
    key=["D", "ALL"],
)
@triton.jit
def triplet_fwd_kernel(
    # inputs
    x_ptr, y_ptr, rx_ptr, ry_ptr, diag_ptr,
    # outputs: rows [B] (owned by this panel), columns [P, B] partials
    row_val_ptr, row_aux_ptr, col_val_ptr, col_aux_ptr,
    # shapes and scalars
    B, D, n_panels, margin,
    # strides
    stride_xb, stride_xd, stride_yb, stride_yd,
    # constexpr
    ALL: tl.constexpr,  # False: val = hardest negative score, aux = its index; True: val = hinge sum, aux = active count
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    row_start, row_end = panel_rows(pid, B, n_panels, BLOCK_M)
    for c0 in range(0, B, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        cmask = cols < B
        ry = tl.load(ry_ptr + cols, mask=cmask, other=0.0)
        if ALL:
            d_col = tl.load(diag_ptr + cols, mask=cmask, other=0.0)
            col_val = tl.zeros((BLOCK_N,), tl.float32)
            col_aux = tl.zeros((BLOCK_N,), tl.float32)
        else:
            col_val = tl.full((BLOCK_N,), float("-inf"), tl.float32)
            col_aux = tl.full((BLOCK_N,), -1, tl.int32)
        first = c0 == 0  # row state (re)initialised here: autotune re-runs are harmless
        for r0 in range(row_start, row_end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            rmask = rows < row_end
            acc = scores_tile(x_ptr, y_ptr, rows, cols, B, B, D, stride_xb, stride_xd, stride_yb, stride_yd,
                              BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
            rx = tl.load(rx_ptr + rows, mask=rmask, other=0.0)
            s = acc * rx[:, None] * ry[None, :]
            neg = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
            p_val = row_val_ptr + rows
            p_aux = row_aux_ptr + rows
            if ALL:
                d_row = tl.load(diag_ptr + rows, mask=rmask, other=0.0)
                h_row = tl.where(neg, margin + s - d_row[:, None], 0.0)
                h_col = tl.where(neg, margin + s - d_col[None, :], 0.0)
                col_val += tl.sum(tl.maximum(h_col, 0.0), axis=0)
                col_aux += tl.sum((h_col > 0).to(tl.float32), axis=0)
                row_val = tl.where(first, 0.0, tl.load(p_val, mask=rmask, other=0.0))
                row_aux = tl.where(first, 0.0, tl.load(p_aux, mask=rmask, other=0.0))
                row_val += tl.sum(tl.maximum(h_row, 0.0), axis=1)
                row_aux += tl.sum((h_row > 0).to(tl.float32), axis=1)
            else:
                s_neg = tl.where(neg, s, float("-inf"))
                t_val, t_arg = tl.max(s_neg, axis=0, return_indices=True)
                better = t_val > col_val  # strict: the first of equal maxima wins, deterministically
                col_aux = tl.where(better, r0 + t_arg, col_aux)
                col_val = tl.where(better, t_val, col_val)
                row_val = tl.where(first, float("-inf"), tl.load(p_val, mask=rmask, other=0.0))
                row_aux = tl.where(first, -1, tl.load(p_aux, mask=rmask, other=0))
                t_val, t_arg = tl.max(s_neg, axis=1, return_indices=True)
                better = t_val > row_val
                row_aux = tl.where(better, c0 + t_arg, row_aux)
                row_val = tl.where(better, t_val, row_val)
            tl.store(p_val, row_val, mask=rmask)
            tl.store(p_aux, row_aux, mask=rmask)
            tl.debug_barrier()  # the next column block re-reads these rows
        off = pid.to(tl.int64) * B + cols
        tl.store(col_val_ptr + off, col_val, mask=cmask)
        tl.store(col_aux_ptr + off, col_aux, mask=cmask)


def _launch(x, y, rx, ry, diag, margin, all_negatives):
    from torch.library import wrap_triton

    B, D = x.shape
    n_panels = num_panels(x, PANEL_BLOCK_M)
    aux_dtype = torch.float32 if all_negatives else torch.int32
    row_val = torch.empty((B,), dtype=torch.float32, device=x.device)
    row_aux = torch.empty((B,), dtype=aux_dtype, device=x.device)
    col_val = torch.empty((n_panels, B), dtype=torch.float32, device=x.device)
    col_aux = torch.empty((n_panels, B), dtype=aux_dtype, device=x.device)
    wrap_triton(triplet_fwd_kernel)[(n_panels,)](
        x, y, rx, ry, diag,
        row_val, row_aux, col_val, col_aux,
        B, D, n_panels, float(margin),
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        ALL=all_negatives, **dot_flags(x.dtype),
    )
    return row_val, row_aux, col_val, col_aux


def triplet_hardest(x, y, rx, ry):
    """int64 (idx_r [B], idx_c [B]): hardest negative text of each image and image of each text."""
    if forward_method(1, x.shape[0], y.shape[0]) == "gemm":
        from .panels import HARDEST, panel_forward

        return panel_forward(x, y, rx, ry, mode=HARDEST)
    _, row_idx, col_val, col_idx = _launch(x, y, rx, ry, rx, 0.0, False)
    # Combine panel partials: the best panel for each column (ties → lowest panel, i.e. lowest row).
    best = col_val.argmax(dim=0, keepdim=True)
    return row_idx.long(), col_idx.gather(0, best).squeeze(0).long()


def triplet_all(x, y, rx, ry, diag, margin):
    """fp32 (hinge_r, hinge_c, cnt_r, cnt_c), each [B]."""
    if forward_method(2, x.shape[0], y.shape[0]) == "gemm":
        from .panels import ALL, panel_forward

        return panel_forward(x, y, rx, ry, mode=ALL, diag=diag, margin=margin)
    hinge_r, cnt_r, col_val, col_cnt = _launch(x, y, rx, ry, diag, margin, True)
    return hinge_r, col_val.sum(0), cnt_r, col_cnt.sum(0)


def triplet_all_backward(x, y, rx, ry, diag, margin, g_hinge_r, g_hinge_c):
    """Gradient pieces (A_x, A_y, V_r, V_c) of Σ g_r·hinge_r + Σ g_c·hinge_c; scale is 1."""
    one = torch.ones((), dtype=torch.float32, device=x.device)
    return pairwise_backward(x, y, rx, ry, one, None, None, 0, (diag, g_hinge_r), (diag, g_hinge_c),
                             mode=1, margin=margin)
