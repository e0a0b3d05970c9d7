"""Pair statistics through score panels: cuBLAS does the products, Triton the rest ("gemm" methods).

The fused kernels (kernels.contrastive, kernels.triplet, kernels.pairwise's atomic backward) keep every
product inside one Triton kernel and nothing but O(B) statistics in memory. Here the B_img × B_txt grid is
walked in panels of P consecutive rows instead, and each panel's products run where the chip is fastest:

    S  = x[panel] · yᵀ          [P, N] fp32 scores, one cuBLAS GEMM (16-bit operands on the tensor cores,
                                 fp32 epilogue; fp32 operands follow torch's float32 matmul setting)
  forward   panel_stats_kernel reads S once: each program owns BLOCK_M rows and a range of columns, keeps
            its rows' statistics in registers across that range and writes, per column, the statistics
            of its rows; the host combines these small partials and merges each panel's column
            statistics into running ones (log-sum-exp, argmax, sums), so no column waits for a second pass.
  backward  panel_grad_kernel turns S into Ĝ = σ·diag(rx)·G·diag(ry) in the input dtype (the same
            epilogue as the atomic kernel: kernels.pairwise.grad_of_scores), and two cuBLAS GEMMs with fp32
            output give
            P_x[panel] = Ĝ·y and P_y += Ĝᵀ·x[panel]; then A_x = P_x / (σ·rx), A_y = P_y / (σ·ry) and the
            row sums are the row dots V_r = x·A_x, V_c = y·A_y (Σ_j G_ij ry_j (x_i·y_j) = x_i·Σ_j G_ij ry_j y_j).
Extra memory: one score panel (SCORE_PANEL_BYTES) and, in the backward, one Ĝ panel in the input dtype,
besides the O(B·D) outputs; no atomics anywhere, so both directions are deterministic.

The statistics are those of the fused kernels, in the same base-2 units (see kernels.contrastive and
kernels.triplet), and the same tie rules: the first of equal maxima wins (lowest column for a row, lowest
row for a column).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pairwise import (
    GRAD_CONFIGS,
    INTERPRET,
    LN2,
    _sm_count,
    _vector_slots,
    configs,
    dot_flags,
    grad_of_scores,
    grouped_tile,
    positive_pairs,
)

# fp32 score panel: P = SCORE_PANEL_BYTES / (4·N) rows (whole multiples of PANEL_MIN_ROWS, at least one
# multiple, at most M). 256 MiB: 2048 rows at N = 32768 (GEMMs of ~70 GFLOP), 64 rows at N = 2^20.
SCORE_PANEL_BYTES = 256 << 20
PANEL_MIN_ROWS = 16 if INTERPRET else 64

# panel_stats_kernel: rows per program and columns per step (a memory-bound pass over S)
STATS_BLOCK_M = 16 if INTERPRET else 64
STATS_BLOCK_N = 16 if INTERPRET else 64

INFONCE, HARDEST, ALL = 0, 1, 2


def panel_rows(M: int, N: int) -> int:
    """Rows of a score panel (see SCORE_PANEL_BYTES)."""
    step = PANEL_MIN_ROWS
    return max(1, min(M, max(step, SCORE_PANEL_BYTES // (4 * max(N, 1)) // step * step)))


def mm_fp32(a, b, out, accumulate: bool = False):
    """out (+)= a @ b with fp32 output and accumulation: cuBLAS with a 16-bit → fp32 epilogue where the
    operands are 16-bit on CUDA (aten::mm / addmm .dtype_out), else in fp32 (operands upcast; on CUDA
    torch's float32 matmul setting decides TF32)."""
    if a.is_cuda and a.dtype != torch.float32:
        if accumulate:
            return torch.ops.aten.addmm.dtype_out(out, a, b, torch.float32, out=out)
        return torch.ops.aten.mm.dtype_out(a, b, torch.float32, out=out)
    a, b = a.float(), b.float()
    return out.addmm_(a, b) if accumulate else torch.mm(a, b, out=out)


def rowdots(a, b, block: int = 1 << 14):
    """[M] fp32 Σ_d a_id·b_id (a any float dtype, b fp32), upcasting a block of rows at a time."""
    out = torch.empty(a.shape[0], dtype=torch.float32, device=a.device)
    for i in range(0, a.shape[0], block):
        out[i:i + block] = torch.linalg.vecdot(a[i:i + block].float(), b[i:i + block])
    return out


def _splits(row_blocks: int, n_col_blocks: int, device) -> int:
    """Column ranges per row block: enough programs to fill the GPU about twice."""
    target = 2 * (_sm_count(device.index or 0) if device.type == "cuda" else 2)
    return max(1, min(n_col_blocks, triton.cdiv(target, row_blocks)))


@triton.jit
def panel_stats_kernel(
    # inputs: S [n, N] fp32 (row i of S is row row0 + i of x), per-row / per-column multipliers
    s_ptr, rx_ptr, ry_ptr, scale_ptr, diag_ptr, row_groups_ptr, col_groups_ptr,
    # outputs: row partials [K_r, splits, n] (fp32) + row indices [splits, n] (int32, HARDEST);
    #          column partials [K_c, row blocks, N] (fp32) + column indices [row blocks, N] (int32, HARDEST)
    row_val_ptr, row_idx_ptr, col_val_ptr, col_idx_ptr,
    # shapes and scalars
    n, N, row0, pos_offset, margin,
    # strides
    stride_s,
    # constexpr
    MODE: tl.constexpr,  # INFONCE: m₂, l, pos, cnt, sum per row; m₂, l per column
                         # HARDEST: best negative score + index per row and per column
                         # ALL:     hinge sum + active count per row and per column
    HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Statistics of BLOCK_M panel rows over one column range (program (row block, split)); see the
    module docstring. INFONCE works in base 2 like kernels.contrastive: t = s·log₂e, padded lanes are 0 in
    t (their loads give 0), −1e38 biases keep padded rows/columns out of max and exp2."""
    pm = tl.program_id(0)
    sp = tl.program_id(1)
    n_splits = tl.num_programs(1)
    local = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = local < n
    rows = row0 + local
    rx = tl.load(rx_ptr + rows, mask=rmask, other=0.0)
    per = tl.cdiv(tl.cdiv(N, BLOCK_N), n_splits) * BLOCK_N
    c_lo = sp * per
    c_hi = tl.minimum(c_lo + per, N)
    s_row = local.to(tl.int64) * stride_s
    if MODE == 0:
        scale2 = tl.load(scale_ptr).to(tl.float32) * 1.4426950408889634
        row_bias = tl.where(rmask, 0.0, -1.0e38)
        r_m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        r_l = tl.zeros((BLOCK_M,), tl.float32)
        r_pos = tl.zeros((BLOCK_M,), tl.float32)
        r_cnt = tl.zeros((BLOCK_M,), tl.float32)
        r_sum = tl.zeros((BLOCK_M,), tl.float32)
    elif MODE == 1:
        r_best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        r_arg = tl.full((BLOCK_M,), -1, tl.int32)
    else:
        d_row = tl.load(diag_ptr + rows, mask=rmask, other=0.0)
        r_hinge = tl.zeros((BLOCK_M,), tl.float32)
        r_cnt = tl.zeros((BLOCK_M,), tl.float32)
    for c0 in range(c_lo, c_hi, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        cmask = cols < c_hi
        acc = tl.load(s_ptr + s_row[:, None] + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        ry = tl.load(ry_ptr + cols, mask=cmask, other=0.0)
        c_out = pm.to(tl.int64) * N + cols
        if MODE == 0:
            t = acc * (scale2 * rx)[:, None] * ry[None, :]
            r_sum += tl.sum(t, axis=1)
            pos = positive_pairs(rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr, pos_offset,
                                 HAS_GROUPS) & rmask[:, None] & cmask[None, :]
            r_pos += tl.sum(tl.where(pos, t, 0.0), axis=1)
            r_cnt += tl.sum(pos.to(tl.float32), axis=1)
            t = t + row_bias[:, None] + tl.where(cmask, 0.0, -1.0e38)[None, :]
            new_m = tl.maximum(r_m, tl.max(t, axis=1))
            r_l = r_l * tl.exp2(r_m - new_m) + tl.sum(tl.exp2(t - new_m[:, None]), axis=1)
            r_m = new_m
            if COLUMNS:
                c_m = tl.max(t, axis=0)
                c_l = tl.sum(tl.exp2(t - c_m[None, :]), axis=0)
                tl.store(col_val_ptr + c_out, c_m, mask=cmask)
                tl.store(col_val_ptr + tl.num_programs(0).to(tl.int64) * N + c_out, c_l, mask=cmask)
        elif MODE == 1:
            s = acc * rx[:, None] * ry[None, :]
            neg = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
            s = tl.where(neg, s, float("-inf"))
            t_val, t_arg = tl.max(s, axis=1, return_indices=True)
            better = t_val > r_best  # strict: the first of equal maxima (lowest column) wins
            r_arg = tl.where(better, c0 + t_arg, r_arg)
            r_best = tl.where(better, t_val, r_best)
            c_val, c_arg = tl.max(s, axis=0, return_indices=True)
            tl.store(col_val_ptr + c_out, c_val, mask=cmask)
            tl.store(col_idx_ptr + c_out, row0 + pm * BLOCK_M + c_arg, mask=cmask)
        else:
            s = acc * rx[:, None] * ry[None, :]
            neg = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
            d_col = tl.load(diag_ptr + cols, mask=cmask, other=0.0)
            h_row = tl.where(neg, margin + s - d_row[:, None], 0.0)
            h_col = tl.where(neg, margin + s - d_col[None, :], 0.0)
            r_hinge += tl.sum(tl.maximum(h_row, 0.0), axis=1)
            r_cnt += tl.sum((h_row > 0).to(tl.float32), axis=1)
            tl.store(col_val_ptr + c_out, tl.sum(tl.maximum(h_col, 0.0), axis=0), mask=cmask)
            tl.store(col_val_ptr + tl.num_programs(0).to(tl.int64) * N + c_out,
                     tl.sum((h_col > 0).to(tl.float32), axis=0), mask=cmask)
    r_out = row_val_ptr + sp.to(tl.int64) * n + local
    plane = n_splits.to(tl.int64) * n  # one [splits, n] plane per row statistic
    if MODE == 0:
        tl.store(r_out, r_m, mask=rmask)
        tl.store(r_out + plane, r_l, mask=rmask)
        tl.store(r_out + 2 * plane, r_pos, mask=rmask)
        tl.store(r_out + 3 * plane, r_cnt, mask=rmask)
        tl.store(r_out + 4 * plane, r_sum, mask=rmask)
    elif MODE == 1:
        tl.store(r_out, r_best, mask=rmask)
        tl.store(row_idx_ptr + sp.to(tl.int64) * n + local, r_arg, mask=rmask)
    else:
        tl.store(r_out, r_hinge, mask=rmask)
        tl.store(r_out + plane, r_cnt, mask=rmask)


def _lse2(m2, l):
    """Natural log-sum-exp from base-2 (max, sum) pairs: (m₂ + log₂ l)·ln 2; (−inf, 0) gives −inf."""
    return (m2 + torch.log2(l)) * LN2


def panel_forward(x, y, rx, ry, *, mode: int, scale=None, row_groups=None, col_groups=None, pos_offset: int = 0,
                  columns: bool = True, diag=None, margin: float = 0.0):
    """The pair statistics of kernels.contrastive.infonce_forward (INFONCE: lse_r, lse_c, pos_r, cnt, sum_r),
    kernels.triplet.triplet_hardest (HARDEST: idx_r, idx_c) or kernels.triplet.triplet_all (ALL: hinge_r,
    hinge_c, cnt_r, cnt_c), computed panel by panel from cuBLAS scores."""
    from torch.library import wrap_triton

    (M, _), N = x.shape, y.shape[0]
    dev, f32 = x.device, torch.float32
    P = panel_rows(M, N)
    s_buf = torch.empty((P, N), dtype=f32, device=dev)
    n_row_blocks = triton.cdiv(P, STATS_BLOCK_M)
    splits = _splits(n_row_blocks, triton.cdiv(N, STATS_BLOCK_N), dev)
    k_row, k_col = {INFONCE: (5, 2), HARDEST: (1, 1), ALL: (2, 2)}[mode]
    # partial buffers, flat: a panel of n rows writes [k, splits, n] and [k, its row blocks, N] into their fronts
    row_val = torch.empty(k_row * splits * P, dtype=f32, device=dev)
    col_val = torch.empty(k_col * n_row_blocks * N if (columns or mode != INFONCE) else 0, dtype=f32, device=dev)
    idx = mode == HARDEST
    row_idx = torch.empty(splits * P, dtype=torch.int32, device=dev) if idx else row_val
    col_idx = torch.empty(n_row_blocks * N, dtype=torch.int32, device=dev) if idx else row_val
    # outputs, and the running column statistics merged panel after panel
    if mode == INFONCE:
        lse_r, pos_r, cnt, sum_r = (torch.empty(M, dtype=f32, device=dev) for _ in range(4))
        lse_c = torch.full((N if columns else 0,), float("-inf"), dtype=f32, device=dev)
    elif mode == HARDEST:
        idx_r = torch.empty(M, dtype=torch.int64, device=dev)
        best_c = torch.full((N,), float("-inf"), dtype=f32, device=dev)
        idx_c = torch.full((N,), -1, dtype=torch.int64, device=dev)
    else:
        hinge_r, cnt_r = torch.empty(M, dtype=f32, device=dev), torch.empty(M, dtype=f32, device=dev)
        hinge_c, cnt_c = torch.zeros(N, dtype=f32, device=dev), torch.zeros(N, dtype=f32, device=dev)
    has_groups = row_groups is not None
    one = torch.ones((), dtype=f32, device=dev)
    for r0 in range(0, M, P):
        n = min(P, M - r0)
        s = s_buf[:n]
        mm_fp32(x[r0:r0 + n], y.t(), s)
        nb = triton.cdiv(n, STATS_BLOCK_M)
        wrap_triton(panel_stats_kernel)[(nb, splits)](
            s, rx, ry, scale if scale is not None else one, diag if diag is not None else rx,
            row_groups if has_groups else rx, col_groups if has_groups else ry,
            row_val, row_idx, col_val if col_val.numel() else row_val, col_idx,
            n, N, r0, pos_offset, float(margin),
            s.stride(0),
            MODE=mode, HAS_GROUPS=has_groups, COLUMNS=columns,
            BLOCK_M=STATS_BLOCK_M, BLOCK_N=STATS_BLOCK_N, num_warps=4,
        )
        rows = slice(r0, r0 + n)
        if mode == INFONCE:
            rv = row_val[: 5 * splits * n].view(5, splits, n)
            lse_r[rows] = torch.logsumexp(_lse2(rv[0], rv[1]), dim=0)
            pos_r[rows], cnt[rows], sum_r[rows] = rv[2].sum(0) * LN2, rv[3].sum(0), rv[4].sum(0) * LN2
            if columns:
                cv = col_val[: 2 * nb * N].view(2, nb, N)
                lse_c = torch.logaddexp(lse_c, torch.logsumexp(_lse2(cv[0], cv[1]), dim=0))
        elif mode == HARDEST:
            rv = row_val[: splits * n].view(splits, n)
            ri = row_idx[: splits * n].view(splits, n)
            best = rv.argmax(dim=0, keepdim=True)  # first maximum: the lowest split, i.e. the lowest column
            val = rv.gather(0, best).squeeze(0)
            idx_r[rows] = torch.where(val > float("-inf"), ri.gather(0, best).squeeze(0).long(), -1)
            cv = col_val[: nb * N].view(nb, N)
            ci = col_idx[: nb * N].view(nb, N)
            best = cv.argmax(dim=0, keepdim=True)  # the lowest row block: the lowest row
            val = cv.gather(0, best).squeeze(0)
            better = val > best_c  # strict: earlier panels (lower rows) win ties
            idx_c = torch.where(better, ci.gather(0, best).squeeze(0).long(), idx_c)
            best_c = torch.where(better, val, best_c)
        else:
            rv = row_val[: 2 * splits * n].view(2, splits, n)
            hinge_r[rows], cnt_r[rows] = rv[0].sum(0), rv[1].sum(0)
            cv = col_val[: 2 * nb * N].view(2, nb, N)
            hinge_c += cv[0].sum(0)
            cnt_c += cv[1].sum(0)
    if mode == INFONCE:
        return lse_r, lse_c, pos_r, cnt, sum_r
    if mode == HARDEST:
        return idx_r, idx_c
    return hinge_r, hinge_c, cnt_r, cnt_c


def _grad_scale(mode, rx, ry, row_vectors, col_vectors, columns):
    """σ, a power of two (0-dim fp32 tensor, computed on the device: no sync) that brings a bound of
    max |G_ij·rx_i·ry_j| to about 2¹⁴, so that Ĝ in fp16 neither overflows nor flushes to subnormals
    (bf16 and fp32 would not need it; it is exact to undo). Softmax terms are ≤ 1 and hinge indicators
    0 or 1, so |G_ij| ≤ a_i + b_j with a, b the per-row and per-column gradient weights."""
    if mode == 0:
        a = row_vectors[1].abs() + row_vectors[2].abs() + row_vectors[3].abs()
        b = col_vectors[1].abs() if columns else torch.zeros_like(ry)
    else:
        a, b = row_vectors[1].abs(), col_vectors[1].abs()
    a, b, rx, ry = (t.float() for t in (a, b, rx, ry))
    bound = (a * rx).max() * ry.max() + rx.max() * (b * ry).max()
    e = torch.floor(torch.log2(16384.0 / bound)).clamp(-100.0, 100.0)
    return torch.where(bound > 0, torch.exp2(e), torch.ones_like(bound))


@triton.autotune(configs=configs(gpu=GRAD_CONFIGS, interpret=(16, 16, 16)), key=["MODE", "HAS_GROUPS", "COLUMNS"])
@triton.jit
def panel_grad_kernel(
    # inputs: S [n, N] fp32 (row i of S is row row0 + i), multipliers, σ, the gradient vectors
    s_ptr, rx_ptr, ry_ptr, scale_ptr, sigma_ptr, row_groups_ptr, col_groups_ptr,
    row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr,
    # output: Ĝ [n, N] in the dtype of g_ptr
    g_ptr,
    # shapes and scalars
    n, N, row0, pos_offset, margin,
    # strides
    stride_s, stride_g,
    # constexpr
    MODE: tl.constexpr, HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Ĝ_ij = σ·G_ij·rx_i·ry_j over one tile of the panel, G from kernels.pairwise.grad_of_scores; the
    multipliers are applied in fp32, before the one rounding to the store dtype."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(n, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    local = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    lmask = local < n
    cmask = cols < N
    rows = row0 + local
    acc = tl.load(s_ptr + local.to(tl.int64)[:, None] * stride_s + cols[None, :],
                  mask=lmask[:, None] & cmask[None, :], other=0.0)
    rx = tl.load(rx_ptr + rows, mask=lmask, other=0.0)
    ry = tl.load(ry_ptr + cols, mask=cmask, other=0.0)
    g = grad_of_scores(acc, rows, cols, lmask, cmask, rx, ry, scale_ptr, row_groups_ptr, col_groups_ptr,
                       row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr, pos_offset, margin,
                       MODE, HAS_GROUPS, COLUMNS)
    g = g * (tl.load(sigma_ptr) * rx)[:, None] * ry[None, :]
    tl.store(g_ptr + local.to(tl.int64)[:, None] * stride_g + cols[None, :], g.to(g_ptr.dtype.element_ty),
             mask=lmask[:, None] & cmask[None, :])


def panel_backward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, row_vectors, col_vectors,
                   *, mode: int, margin: float = 0.0, columns: bool = True):
    """Gradient pieces (A_x, A_y, V_r, V_c) of kernels.pairwise.pairwise_backward, panel by panel (module
    docstring)."""
    from torch.library import wrap_triton

    (M, D), N = x.shape, y.shape[0]
    f32 = torch.float32
    px = torch.empty((M, D), dtype=f32, device=x.device)
    py = torch.zeros((N, D), dtype=f32, device=x.device)
    if M == 0 or N == 0:
        return px.zero_(), py, torch.zeros(M, dtype=f32, device=x.device), torch.zeros(N, dtype=f32, device=x.device)
    # Ĝ in the input dtype for the tensor cores; fp32 where the kernels upcast (bf16 under the interpreter)
    g_dtype = f32 if (dot_flags(x.dtype)["UPCAST"] or x.dtype == f32) else x.dtype
    sigma = _grad_scale(mode, rx, ry, row_vectors, col_vectors, columns)
    P = panel_rows(M, N)
    g_buf = torch.empty((P, N), dtype=g_dtype, device=x.device)
    s_buf = torch.empty((P, N), dtype=f32, device=x.device)
    r, c = _vector_slots(rx, row_vectors, col_vectors)
    has_groups = row_groups is not None
    for row0 in range(0, M, P):
        n = min(P, M - row0)
        g, s = g_buf[:n], s_buf[:n]
        mm_fp32(x[row0:row0 + n], y.t(), s)

        def grid(meta, n=n):
            return (triton.cdiv(n, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        wrap_triton(panel_grad_kernel)[grid](
            s, rx, ry, scale, sigma, row_groups if has_groups else rx, col_groups if has_groups else ry,
            r[0], r[1], r[2], r[3], c[0], c[1],
            g,
            n, N, row0, pos_offset, float(margin),
            s.stride(0), g.stride(0),
            MODE=mode, HAS_GROUPS=has_groups, COLUMNS=columns, GROUP_M=8,
        )
        mm_fp32(g, y, px[row0:row0 + n])
        mm_fp32(g.t(), x[row0:row0 + n], py, accumulate=True)
    ax = px.mul_((1.0 / (sigma * rx.float()))[:, None])
    ay = py.mul_((1.0 / (sigma * ry.float()))[:, None])
    return ax, ay, rowdots(x, ax), rowdots(y, ay)
