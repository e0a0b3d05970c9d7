"""The chunked twins of the Triton pair kernels: the same statistics and gradient pieces in plain
PyTorch, a block of rows at a time, so memory is O(chunk · N) instead of O(M · N). This is the CPU
implementation and the portable fallback. Computation runs in fp32 (fp64 for fp64 inputs)."""

from __future__ import annotations

import torch

# Elements of one [chunk, N] block; a few such blocks are alive at once (≈ 16 MB each in fp32).
BLOCK_ELEMENTS = 1 << 22


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def row_chunks(x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, scale=None):
    """Yield (rows slice, x block in the compute dtype, scores block s = scale·rx_i·ry_j·(x_i·y_j))
    over blocks of rows — the kernels' score tile, in fp32 (fp64 for fp64 input)."""
    cd = compute_dtype(x)
    yc, ryc = y.to(cd), ry.to(cd)[None, :]
    rxc = rx.to(cd) if scale is None else scale.to(cd) * rx.to(cd)
    M, N = x.shape[0], y.shape[0]
    step = max(1, min(M, BLOCK_ELEMENTS // max(N, 1)))
    for i0 in range(0, M, step):
        sl = slice(i0, min(i0 + step, M))
        xs = x[sl].to(cd)
        yield sl, xs, (xs @ yc.t()).mul_(rxc[sl, None]).mul_(ryc)


class Positives:
    """The positive pairs of a block of rows: same group id, else the single column row + pos_offset.
    Without groups they are one diagonal, handled by indexing instead of a [rows, N] mask."""

    def __init__(self, sl: slice, n_cols: int, row_groups, col_groups, pos_offset: int, device):
        if row_groups is not None:
            self.mask = row_groups[sl, None] == col_groups[None, :]
            return
        self.mask = None
        cols = torch.arange(sl.start, sl.stop, device=device) + pos_offset
        inside = (cols >= 0) & (cols < n_cols)
        self.rows = torch.nonzero(inside).squeeze(1)  # block-local rows that have their positive here
        self.cols = cols[inside]

    def sum(self, s: torch.Tensor) -> torch.Tensor:
        """Σ over the positives of each row of s."""
        if self.mask is not None:
            return torch.where(self.mask, s, 0).sum(1)
        out = s.new_zeros(s.shape[0])
        return out.index_put_((self.rows,), s[self.rows, self.cols])

    def count(self, n_rows: int, dtype, device) -> torch.Tensor:
        """|positives| of each row."""
        if self.mask is not None:
            return self.mask.sum(1).to(dtype)
        return torch.zeros(n_rows, dtype=dtype, device=device).index_fill_(0, self.rows, 1)

    def add_(self, g: torch.Tensor, per_row: torch.Tensor) -> torch.Tensor:
        """g[i, j] += per_row[i] at every positive (i, j), in place."""
        if self.mask is not None:
            return g.add_(self.mask * per_row[:, None])
        return g.index_put_((self.rows, self.cols), per_row[self.rows], accumulate=True)


def gradient_pieces(x, y, rx, ry, scale, grad_block):
    """Shared backward loop. grad_block(sl, scores block) → G = ∂loss/∂s block (may reuse the block's
    storage); returns (A_x, A_y, V_r, V_c): A_x = G·diag(ry)·y, A_y = Gᵀ·diag(rx)·x, and
    V_r = Σ_j G ry (x·y) = x·A_x, V_c = Σ_i G rx (x·y) = y·A_y: row dots after the products, O(B·D),
    instead of an elementwise pass over every block."""
    cd = compute_dtype(x)
    yc, rxc, ryc = y.to(cd), rx.to(cd), ry.to(cd)[None, :]
    ax = torch.empty(x.shape, dtype=cd, device=x.device)
    ay = torch.zeros(y.shape, dtype=cd, device=x.device)
    for sl, xs, s in row_chunks(x, y, rx, ry, scale):
        g = grad_block(sl, s)
        ax[sl] = (g * ryc) @ yc
        ay += g.mul_(rxc[sl, None]).t() @ xs
    vr = torch.linalg.vecdot(x.to(cd), ax)
    vc = torch.linalg.vecdot(yc, ay)
    return ax, ay, vr, vc


def infonce_stats(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, columns=True):
    cd = compute_dtype(x)
    M, N = x.shape[0], y.shape[0]
    lse_r = torch.empty(M, dtype=cd, device=x.device)
    pos_r, cnt, sum_r = torch.empty_like(lse_r), torch.empty_like(lse_r), torch.empty_like(lse_r)
    lse_c = torch.full((N if columns else 0,), float("-inf"), dtype=cd, device=x.device)
    for sl, _, s in row_chunks(x, y, rx, ry, scale):
        pos = Positives(sl, N, row_groups, col_groups, pos_offset, x.device)
        lse_r[sl] = torch.logsumexp(s, dim=1)
        if columns:
            lse_c = torch.logaddexp(lse_c, torch.logsumexp(s, dim=0))
        pos_r[sl] = pos.sum(s)
        cnt[sl] = pos.count(s.shape[0], cd, x.device)
        sum_r[sl] = s.sum(1)
    return lse_r, lse_c, pos_r, cnt, sum_r


def infonce_backward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset,
                     lse_r, lse_c, g_lse_r, g_lse_c, g_pos, g_sum):
    N = y.shape[0]

    def grad_block(sl, s):
        g = torch.sub(s, lse_r[sl, None]).exp_().mul_(g_lse_r[sl, None]).add_(g_sum[sl, None])
        if lse_c.numel():  # empty: the forward ran with columns=False
            g.add_(s.sub_(lse_c[None, :]).exp_().mul_(g_lse_c[None, :]))
        return Positives(sl, N, row_groups, col_groups, pos_offset, x.device).add_(g, g_pos[sl])

    return gradient_pieces(x, y, rx, ry, scale, grad_block)


def _fill_diagonal_(block: torch.Tensor, sl: slice, value: float) -> torch.Tensor:
    """Set the positive pairs (i, i) of a block of rows of a square grid to `value`, in place."""
    rows = torch.arange(block.shape[0], device=block.device)
    block[rows, rows + sl.start] = value
    return block


def _active_hinges(s, d_rows, d_cols, margin, sl):
    """[margin + s_ij − d_i]₊ and [margin + s_ij − d_j]₊ over the negatives of a block of rows."""
    h_r = _fill_diagonal_((s - d_rows[:, None]).add_(margin).clamp_(min=0), sl, 0.0)
    h_c = _fill_diagonal_((s - d_cols[None, :]).add_(margin).clamp_(min=0), sl, 0.0)
    return h_r, h_c


def triplet_hardest(x, y, rx, ry):
    cd = compute_dtype(x)
    B = x.shape[0]
    idx_r = torch.full((B,), -1, dtype=torch.int64, device=x.device)
    col_best = torch.full((B,), float("-inf"), dtype=cd, device=x.device)
    idx_c = torch.full((B,), -1, dtype=torch.int64, device=x.device)
    for sl, _, s in row_chunks(x, y, rx, ry):
        s = _fill_diagonal_(s, sl, float("-inf"))  # negatives only
        val, arg = s.max(dim=1)
        idx_r[sl] = torch.where(val > float("-inf"), arg, -1)
        val, arg = s.max(dim=0)
        better = val > col_best  # strict: earlier rows win ties, as in the kernel
        idx_c = torch.where(better, arg + sl.start, idx_c)
        col_best = torch.where(better, val, col_best)
    return idx_r, idx_c


def triplet_all(x, y, rx, ry, diag, margin):
    cd = compute_dtype(x)
    B = x.shape[0]
    dc = diag.to(cd)
    hinge_r, cnt_r = torch.empty(B, dtype=cd, device=x.device), torch.empty(B, dtype=cd, device=x.device)
    hinge_c, cnt_c = torch.zeros(B, dtype=cd, device=x.device), torch.zeros(B, dtype=cd, device=x.device)
    for sl, _, s in row_chunks(x, y, rx, ry):
        h_r, h_c = _active_hinges(s, dc[sl], dc, margin, sl)
        hinge_r[sl], cnt_r[sl] = h_r.sum(1), (h_r > 0).sum(1).to(cd)
        hinge_c += h_c.sum(0)
        cnt_c += (h_c > 0).sum(0).to(cd)
    return hinge_r, hinge_c, cnt_r, cnt_c


def triplet_all_backward(x, y, rx, ry, diag, margin, g_hinge_r, g_hinge_c):
    dc = diag.to(compute_dtype(x))

    def grad_block(sl, s):
        h_r, h_c = _active_hinges(s, dc[sl], dc, margin, sl)
        return h_r.gt_(0).mul_(g_hinge_r[sl, None]).add_(h_c.gt_(0).mul_(g_hinge_c[None, :]))

    return gradient_pieces(x, y, rx, ry, None, grad_block)
