"""The attention middle of the word–region similarity, fused: one Triton program per (image, report) pair.

Around these kernels, cxrfast.ops._wordregion runs the GEMMs (s = V Wᵀ, C = αᵀ V, H = V Cᵀ and the
gradient products) chunk by chunk. What is left between them is a chain of softmaxes, products and
reductions over [R, L] slabs of every pair; in PyTorch that is about a dozen kernels each reading and
writing the whole [Bb, R, Bc, L] chunk (TorchMiddle). Here each pair's slab is read once or twice
and written once:

  attention_fwd_kernel   s → α (zero at padded words), c·w = Σ_r α s
  attention_bwd_kernel   s, α, H, per-word (∂(c·w), k) → ∂s (written over s), α·k (written over H)

A program holds ALL of its pair's regions (BLOCK_R = next_pow2(R) rows) and walks the words in tiles
of BLOCK_L: the softmax over regions is then local to a tile, and GLoRIA's softmax over words (per
region) needs its row statistics first, one extra read pass. Layout: s, α, H are [Bb, R, Bc, L]
(row-major; the GEMM's natural output), per-word vectors [Bb, Bc, L]; everything is fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TILE = 2048  # fp32 elements of one [BLOCK_R, BLOCK_L] tile: spill-free on sm_90a up to R = 1024 (aot_sm90.py)


@triton.jit
def _row_softmax_stats(s_ptr, row_off, rmask, n, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """Per region r: (max_t s[r, t], Σ_t exp(s[r, t] − max)) over the report's n real words."""
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    for t0 in range(0, n, BLOCK_L):
        cols = t0 + tl.arange(0, BLOCK_L)
        s = tl.load(s_ptr + row_off + cols[None, :], mask=rmask[:, None] & (cols < n)[None, :],
                    other=float("-inf"))
        # −inf marks padded words: the first tile holds a real word (n ≥ 1), so a real row's maximum is
        # finite from the first tile on, whatever the scores' magnitude. Rows past R (BLOCK_R padding)
        # read 0 instead, so that no lane forms −inf − (−inf).
        s = tl.where(rmask[:, None], s, 0.0)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    return m, l


@triton.jit
def _attention_tile(s, m, l, rmask, temp_attention, GLORIA: tl.constexpr):
    """α of one [BLOCK_R, BLOCK_L] tile of scores (softmax over the regions, i.e. over axis 0), and the
    word-softmax a (GLORIA; else s itself, unused)."""
    if GLORIA:
        a = tl.exp(s - m[:, None]) / l[:, None]
        x = temp_attention * a
    else:
        a = s
        x = temp_attention * s
    x = tl.where(rmask[:, None], x, float("-inf"))  # padded rows; R ≥ 1 real rows keep the max finite
    e = tl.exp(x - tl.max(x, axis=0)[None, :])
    return e / tl.sum(e, axis=0)[None, :], a


@triton.jit
def attention_fwd_kernel(
    # pointers
    s_ptr, alpha_ptr, cw_ptr, lengths_ptr,
    # shapes
    R, L, Bc,
    # scalars
    temp_attention,
    # constexpr
    GLORIA: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """alpha[b, :, i, t] = softmax_r(temp_attention · x[b, :, i, t]) (0 for t ≥ n_i), with x = s (single) or
    softmax_t(s[b, r, i, :n_i]) (GLORIA); cw[b, i, t] = Σ_r alpha · s.   Grid: (Bb, Bc)."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    n = tl.load(lengths_ptr + i)
    rows = tl.arange(0, BLOCK_R)
    rmask = rows < R
    pair = (b * R * Bc + i) * L  # element (b, 0, i, 0)
    row_off = pair + rows.to(tl.int64)[:, None] * (Bc * L)
    m = tl.zeros([BLOCK_R], tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    if GLORIA:
        m, l = _row_softmax_stats(s_ptr, row_off, rmask, n, BLOCK_R, BLOCK_L)
    for t0 in range(0, L, BLOCK_L):
        cols = t0 + tl.arange(0, BLOCK_L)
        real = rmask[:, None] & (cols < n)[None, :]
        s = tl.load(s_ptr + row_off + cols[None, :], mask=real, other=0.0)
        alpha, _ = _attention_tile(s, m, l, rmask, temp_attention, GLORIA)
        alpha = tl.where(real, alpha, 0.0)  # padded words: α = 0, so C, α·k and ∂s are 0 there
        tl.store(alpha_ptr + row_off + cols[None, :], alpha, mask=rmask[:, None] & (cols < L)[None, :])
        tl.store(cw_ptr + (b * Bc + i) * L + cols, tl.sum(alpha * s, axis=0), mask=cols < L)


@triton.jit
def _softmax_grad_tile(s_ptr, alpha_ptr, h_ptr, dcw_ptr, k_ptr, row_off, word, cols, real, n):
    """One word tile of the backward: (s, α, dcw, k, dx) with dα = dcw·s + k·h and dx = α (dα − Σ_r α dα).
    Both passes of attention_bwd_kernel take dx from here, so GLoRIA's Σ_t a·da and the write pass
    round identically (for a one-word report a·(da − Σ_t a·da) must cancel exactly)."""
    s = tl.load(s_ptr + row_off + cols[None, :], mask=real, other=0.0)
    alpha = tl.load(alpha_ptr + row_off + cols[None, :], mask=real, other=0.0)
    h = tl.load(h_ptr + row_off + cols[None, :], mask=real, other=0.0)
    dcw = tl.load(dcw_ptr + word + cols, mask=cols < n, other=0.0)
    k = tl.load(k_ptr + word + cols, mask=cols < n, other=0.0)
    dalpha = dcw[None, :] * s + k[None, :] * h
    dx = alpha * (dalpha - tl.sum(alpha * dalpha, axis=0)[None, :])
    return s, alpha, dcw, k, dx


@triton.jit
def attention_bwd_kernel(
    # pointers (ds is written over s, α·k over h)
    s_ptr, alpha_ptr, h_ptr, dcw_ptr, k_ptr, lengths_ptr,
    # shapes
    R, L, Bc,
    # scalars
    temp_attention,
    # constexpr
    GLORIA: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """With dα = dcw·s + k·h (h = v_r·c_t) and δ = Σ_r α dα (a column sum: every region is in the tile;
    summed directly, not as dcw·(c·w) + k·‖c‖², so that it cancels exactly where α is one-hot):
        dx = α (dα − δ);   ∂s = dcw·α + temp_attention·dx                               (single)
        da = temp_attention·dx;   ∂s = dcw·α + a (da − Σ_t a da)                          (GLORIA)
    and α·k. Both 0 at padded words.   Grid: (Bb, Bc)."""
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    n = tl.load(lengths_ptr + i)
    rows = tl.arange(0, BLOCK_R)
    rmask = rows < R
    pair = (b * R * Bc + i) * L
    row_off = pair + rows.to(tl.int64)[:, None] * (Bc * L)
    word = (b * Bc + i) * L
    m = tl.zeros([BLOCK_R], tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    rho = tl.zeros([BLOCK_R], tl.float32)
    if GLORIA:  # Σ_t a[r, t] da[r, t] spans every word tile: one pass before the writes
        m, l = _row_softmax_stats(s_ptr, row_off, rmask, n, BLOCK_R, BLOCK_L)
        for t0 in range(0, n, BLOCK_L):
            cols = t0 + tl.arange(0, BLOCK_L)
            real = rmask[:, None] & (cols < n)[None, :]
            s, alpha, dcw, k, dx = _softmax_grad_tile(s_ptr, alpha_ptr, h_ptr, dcw_ptr, k_ptr, row_off, word,
                                                      cols, real, n)
            a = tl.where(real, tl.exp(s - m[:, None]) / l[:, None], 0.0)
            rho += tl.sum(a * (temp_attention * dx), axis=1)
    for t0 in range(0, L, BLOCK_L):
        cols = t0 + tl.arange(0, BLOCK_L)
        real = rmask[:, None] & (cols < n)[None, :]
        inside = rmask[:, None] & (cols < L)[None, :]
        s, alpha, dcw, k, dx = _softmax_grad_tile(s_ptr, alpha_ptr, h_ptr, dcw_ptr, k_ptr, row_off, word,
                                                  cols, real, n)
        if GLORIA:
            a = tl.exp(s - m[:, None]) / l[:, None]
            ds = a * (temp_attention * dx - rho[:, None])
        else:
            ds = temp_attention * dx
        ds = tl.where(real, ds + dcw[None, :] * alpha, 0.0)
        tl.store(s_ptr + row_off + cols[None, :], ds, mask=inside)
        tl.store(h_ptr + row_off + cols[None, :], alpha * k[None, :], mask=inside)


def tiles(R: int, L: int) -> dict:
    """BLOCK_R covers every region; BLOCK_L words per tile so that a tile stays ≤ MAX_TILE elements."""
    block_r = max(16, triton.next_power_of_2(R))
    block_l = max(2, min(triton.next_power_of_2(L), MAX_TILE // block_r))
    return {"BLOCK_R": block_r, "BLOCK_L": block_l, "num_warps": 8 if block_r * block_l >= 1024 else 4}


class TritonMiddle:
    """cxrfast.ops._wordregion's middle (see TorchMiddle there for the contract), one program per pair."""

    name = "triton"

    @staticmethod
    def attention(s, valid, lengths, temp_attention, gloria):
        from torch.library import wrap_triton

        Bb, R, Bc, L = s.shape
        s = s.contiguous()
        alpha = torch.empty_like(s)
        cw = torch.empty((Bb, Bc, L), dtype=s.dtype, device=s.device)
        wrap_triton(attention_fwd_kernel)[(Bb, Bc)](
            s, alpha, cw, lengths, R, L, Bc, float(temp_attention), GLORIA=gloria, **tiles(R, L))
        return alpha, cw

    @staticmethod
    def attention_backward(s, alpha, H, valid, lengths, dcw, k, temp_attention, gloria):
        from torch.library import wrap_triton

        Bb, R, Bc, L = s.shape
        s, H = s.contiguous(), H.contiguous()  # the GEMMs' outputs: already contiguous, so in place
        wrap_triton(attention_bwd_kernel)[(Bb, Bc)](
            s, alpha, H, dcw.contiguous(), k.contiguous(), lengths, R, L, Bc,
            float(temp_attention), GLORIA=gloria, **tiles(R, L))
        return s, H
