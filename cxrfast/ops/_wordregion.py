"""Word–region similarity S [B_img, B_txt] in bounded memory: the shared skeleton of the "chunked" and
"triton" implementations.

The (image × report) pair grid is walked in chunks of Bb images × Bc reports, the reports taken in
order of length so that a chunk is computed at its own longest report L (not the padded maximum).
Per chunk, with the reports' padding words zeroed (so they are never read, whatever they hold):

    s  = V Wᵀ                     [Bb, R, Bc, L]   one GEMM, [Bb·R, D] × [D, Bc·L]
    α, c·w = attention(s)         [Bb, R, Bc, L]   the "middle": softmaxes, α, c_t·w_t = Σ_r α s
    C  = αᵀ V                     [Bb, Bc·L, D]    batched GEMM over images; ‖c_t‖² = ‖C_t‖²

c·w and ‖c‖² of every pair and word (O(B²·L), kept for the backward) then give, over the whole grid at
once, the cosines R_t and S = log-sum-exp over the report's words. The backward turns them into the
per-word d(c·w) and k = (∂/∂‖c‖)/‖c‖ (also at once), then recomputes each chunk's s, α, C and

    H  = V Cᵀ                     [Bb, R, Bc·L]    v_r · c_t, the ‖c‖ term of ∂α
    ∂s, α·k = attention_backward(s, α, H, …)        the middle again, backwards (δ = Σ_r α ∂α inside)
    ∂V += ∂s W + (α·k) C          ∂W += ∂sᵀ V + (norm term)      GEMMs

Only the middle differs between implementations: `TorchMiddle` (pure PyTorch, the CPU default) and
`kernels.wordregion.TritonMiddle` (one fused program per pair). The GEMMs run in the input dtype
with fp32 outputs on CUDA (fp32 everywhere on CPU), everything between them in fp32 (fp64 for fp64
input). Extra memory: the chunk working set (`chunk_bytes`) + O(B·(R+L)·D) for the gradients + the
per-word statistics, O(B²·L); nothing B×B×L×R or B×B×L×D. ‖c‖ is taken from C directly, not from a Gram
form αᵀ(VVᵀ)α: the Gram form is cheaper when R < D but cancels (relative error ~eps·R when the
regions average out), which the fp32 tolerance does not allow.

FLOPs per (image, report) pair, L its chunk's length: forward 4·R·L·D (s, C), backward 12·R·L·D (s, C
recomputed; H, ∂s W, ∂sᵀ V, (α·k) C).
"""

from __future__ import annotations

import math

import torch

COSINE_EPS = 1e-8  # GLoRIA's cosine_similarity clamp of ‖c‖·‖w‖
MAX_GRID_Y = 65535  # the Triton middle launches (images, reports): CUDA's limit on the second grid axis


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fp32_out_gemms(t: torch.Tensor) -> bool:
    """16-bit CUDA inputs: GEMMs keep 16-bit operands (tensor cores) and write fp32 (mm.dtype)."""
    return (t.is_cuda and t.dtype in (torch.float16, torch.bfloat16)
            and hasattr(torch.ops.aten.mm, "dtype") and hasattr(torch.ops.aten.bmm, "dtype"))


class Gemm:
    """Matrix products with fp32 (fp64) results whatever the operands: 16-bit operands stay 16-bit
    on CUDA (out_dtype=fp32, tensor cores); elsewhere they are computed in the accumulation dtype."""

    def __init__(self, like: torch.Tensor):
        self.acc = acc_dtype(like.dtype)
        self.operand = like.dtype if _fp32_out_gemms(like) else self.acc

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.operand == self.acc:
            return torch.matmul(a.to(self.acc), b.to(self.acc))
        scale = None
        if self.operand == torch.float16 and a.dtype == self.acc:
            # an fp32 intermediate (α, ∂s) cast to fp16: scale it by a power of two taken from its own
            # largest value first, so that neither AMP-scaled gradients overflow 65504 nor small ones
            # fall into fp16's subnormals; the product is unscaled exactly
            amax = a.detach().abs().amax().clamp_min(torch.finfo(torch.float32).tiny)
            scale = torch.exp2(torch.floor(torch.log2(amax)) - 12.0)  # max |a/scale| in [2¹², 2¹³)
            a = a / scale
        a, b = a.to(self.operand), b.to(self.operand)
        out = torch.mm(a, b, out_dtype=self.acc) if a.dim() == 2 else torch.bmm(a, b, out_dtype=self.acc)
        return out if scale is None else out.mul_(scale)


def default_chunk_bytes(device: torch.device) -> int:
    """CUDA 256 MiB: a chunk still holds ~180 pairs at GLoRIA's shapes (GEMMs of several GFLOP each),
    while the working set stays a small fraction of what the looped baseline keeps. CPU 16 MiB: the
    middle is memory-bound, and chunks that stay in cache ran 1.5–2.3× faster than 256 MiB ones
    (B = 32 and 96, R = 100, L = 97, D = 64, this repository's 2-core CI machine)."""
    return (256 << 20) if device.type == "cuda" else (16 << 20)


def chunks(n_img: int, n_txt: int, R: int, L: int, D: int, elem: int, chunk_bytes: int):
    """(b0, b1, i0, i1) blocks of the pair grid, reports outer. A pair's working set is about
    six [R, L] slabs (s, α, H and the middle's temporaries) and two [L, D] rows of C."""
    per_pair = elem * (6 * R * L + 2 * L * D)
    pairs = max(1, chunk_bytes // per_pair)
    bc = max(1, min(n_txt, pairs // n_img, MAX_GRID_Y))
    bb = n_img if bc > 1 or pairs >= n_img else max(1, pairs)
    for i0 in range(0, n_txt, bc):
        for b0 in range(0, n_img, bb):
            yield b0, min(b0 + bb, n_img), i0, min(i0 + bc, n_txt)


class TorchMiddle:
    """The attention middle in PyTorch. Layout [Bb, R, Bc, L]; `valid` bool, broadcastable as
    [*, 1, Bc, L] (True on a report's real words)."""

    name = "chunked"

    @staticmethod
    def attention(s, valid, lengths, temp_attention, gloria):
        """(α [Bb, R, Bc, L] with zeros at padded words, c·w [Bb, Bc, L])."""
        if gloria:  # AttnGAN / GLoRIA: softmax over the report's words first, then over regions
            # every report has ≥ 1 real word, so no row is all −inf
            x = torch.softmax(s.masked_fill(~valid, -math.inf), dim=3).mul_(temp_attention)
        else:
            x = s * temp_attention
        alpha = torch.softmax(x, dim=1).masked_fill_(~valid, 0.0)
        return alpha, (alpha * s).sum(1)

    @staticmethod
    def attention_backward(s, alpha, H, valid, lengths, dcw, k, temp_attention, gloria):
        """(∂s, α·k), both [Bb, R, Bc, L], zeros at padded words. dcw, k: [Bb, Bc, L]."""
        dcw, k = dcw[:, None], k[:, None]
        dalpha = dcw * s + k * H
        # through the softmax over regions. δ = Σ_r α ∂α equals dcw·(c·w) + k·‖c‖² in exact arithmetic,
        # but summed directly it cancels exactly against ∂α where α is one-hot (a sharp softmax): the
        # identity's rounding would be multiplied by temp_attention there.
        dx = alpha * (dalpha - (alpha * dalpha).sum(1, keepdim=True))
        if gloria:  # and through the softmax over words (a = 0 at padding)
            a = torch.softmax(s.masked_fill(~valid, -math.inf), dim=3)
            da = dx.mul_(temp_attention)
            ds_att = a * (da - (a * da).sum(3, keepdim=True))
        else:
            ds_att = dx.mul_(temp_attention)
        ds = ds_att.add_(dcw * alpha).masked_fill_(~valid, 0.0)
        return ds, alpha * k


def word_scores(cw, nc2, nw, valid3, temp_aggregate, mean, log_n):
    """S [Bb, Bc] and the per-word pieces. cw, nc2 [Bb, Bc, L] (c·w, ‖c‖²), nw [Bc, L] (‖w‖)."""
    nc = nc2.clamp_min(0.0).sqrt()
    den = nc * nw
    cos = cw / den.clamp_min(COSINE_EPS)
    z = (temp_aggregate * cos).masked_fill(~valid3, -math.inf)
    S = z.logsumexp(-1)
    if mean:
        S = S - log_n
    return S, nc, den, cos, z


def word_grads(g_S, cw, nc2, nw, valid3, temp_aggregate, mean, log_n):
    """Per-word gradient pieces of Σ g_S·S: (∂(c·w), k = (∂/∂‖c‖)/‖c‖, ∂‖w‖), each [Bb, Bc, L] and
    zero at padded words. The "mean" aggregate only shifts S by a constant."""
    _, nc, den, cos, z = word_scores(cw, nc2, nw, valid3, temp_aggregate, mean, log_n)
    d_cos = g_S[..., None] * temp_aggregate * torch.softmax(z, dim=-1)
    big = den > COSINE_EPS  # below the clamp, the cosine is c·w / eps: no gradient to the norms
    dcw = d_cos / den.clamp_min(COSINE_EPS)
    d_den = torch.where(big, -d_cos * cos / den.clamp_min(COSINE_EPS), 0.0)
    # divide by the true norms where the clamp is inactive: ‖c‖·‖w‖ > eps does not make either norm > eps
    k = torch.where(big, d_den * nw / torch.where(big, nc, 1.0), 0.0)
    d_nw = torch.where(big, d_den * nc, 0.0)
    return dcw, k, d_nw


def _words(W, lengths, acc):
    """Reports with padding zeroed (so it is never read), the validity mask [I, L] and word norms [I, L]."""
    valid = torch.arange(W.shape[1], device=W.device)[None, :] < lengths[:, None]
    w = W.masked_fill(~valid[:, :, None], 0)
    return w, valid, torch.linalg.vector_norm(w, dim=-1, dtype=acc)


def _chunk(gemm, middle, V, w, valid, lengths_c, temp_attention, gloria):
    """s, α, c·w and C of one chunk (V [Bb, R, D], w [Bc, L, D])."""
    (Bb, R, D), (Bc, L) = V.shape, valid.shape
    s = gemm(V.reshape(Bb * R, D), w.reshape(Bc * L, D).t()).view(Bb, R, Bc, L)
    alpha, cw = middle.attention(s, valid[None, None], lengths_c, temp_attention, gloria)
    C = gemm(alpha.view(Bb, R, Bc * L).transpose(1, 2), V)  # [Bb, Bc·L, D]
    return s, alpha, cw, C


def _grid_chunks(V, W, lengths, chunk_bytes, acc):
    """(b0, b1, reports, L_c) blocks of the pair grid. Reports are taken in order of length, so that a
    chunk of similar reports is computed at its own longest length L_c, not at L: with words ragged
    20–97 that removes ~40% of the GEMM FLOPs and of the middle's traffic. `reports` is an index tensor
    (a chunk's reports are gathered), L_c a host int (one sync per call for the sorted lengths)."""
    (B, R, D), (I, L) = V.shape, W.shape[:2]
    order = torch.argsort(lengths, stable=True)
    longest = lengths[order].tolist()
    for b0, b1, i0, i1 in chunks(B, I, R, L, D, torch.finfo(acc).bits // 8, chunk_bytes):
        yield b0, b1, order[i0:i1], int(longest[i1 - 1])


def similarity(V, W, lengths, temp_attention, temp_aggregate, mean, gloria, chunk_bytes, middle):
    """(S [B_img, B_txt], c·w and ‖c‖² [B_img, B_txt, L]) in the accumulation dtype. The per-word pair
    statistics are O(B²·L): the backward takes them instead of recomputing its word-level terms chunk by
    chunk, and the word-level arithmetic runs once over the whole grid (a few launches, not per chunk)."""
    B, I, L = V.shape[0], W.shape[0], W.shape[1]
    gemm = Gemm(V)
    w, valid, nw = _words(W, lengths, gemm.acc)
    cw = torch.zeros(B, I, L, dtype=gemm.acc, device=V.device)  # words past a chunk's L_c: padding, 0
    nc2 = torch.zeros(B, I, L, dtype=gemm.acc, device=V.device)
    for b0, b1, idx, Lc in _grid_chunks(V, W, lengths, chunk_bytes, gemm.acc):
        _, _, cw_c, C = _chunk(gemm, middle, V[b0:b1], w[idx, :Lc], valid[idx, :Lc], lengths[idx],
                               temp_attention, gloria)
        cw[b0:b1, idx, :Lc] = cw_c
        nc2[b0:b1, idx, :Lc] = C.square().sum(-1).view(b1 - b0, idx.shape[0], Lc)
    S = word_scores(cw, nc2, nw, valid[None], temp_aggregate, mean, torch.log(lengths.to(gemm.acc)))[0]
    return S, cw, nc2


def similarity_backward(V, W, lengths, cw, nc2, g_S, temp_attention, temp_aggregate, mean, gloria, chunk_bytes,
                        middle):
    """(∂V [B, R, D], ∂W [I, L, D]) in the input dtypes, for the upstream gradient g_S [B, I]."""
    (B, R, D), (I, L) = V.shape, W.shape[:2]
    gemm = Gemm(V)
    w, valid, nw = _words(W, lengths, gemm.acc)
    dcw, k, d_nw = word_grads(g_S.to(gemm.acc), cw, nc2, nw, valid[None], temp_aggregate, mean,
                              torch.log(lengths.to(gemm.acc)))
    dV = torch.zeros(B, R, D, dtype=gemm.acc, device=V.device)
    # ∂‖w‖/∂w = w/‖w‖; d_nw is zero wherever ‖c‖·‖w‖ is below the clamp, and ‖w‖ > 0 wherever it is not
    # (but possibly < eps: divide by the norm itself)
    dW = (d_nw.sum(0) / torch.where(nw > 0, nw, 1.0))[..., None] * w.to(gemm.acc)
    for b0, b1, idx, Lc in _grid_chunks(V, W, lengths, chunk_bytes, gemm.acc):
        Vb, wc = V[b0:b1], w[idx, :Lc]
        Bb, Bc = b1 - b0, idx.shape[0]
        s, alpha, _, C = _chunk(gemm, middle, Vb, wc, valid[idx, :Lc], lengths[idx], temp_attention, gloria)
        H = gemm(Vb, C.transpose(1, 2)).view(Bb, R, Bc, Lc)
        ds, alpha_k = middle.attention_backward(s, alpha, H, valid[idx, :Lc][None, None], lengths[idx],
                                                dcw[b0:b1, idx, :Lc], k[b0:b1, idx, :Lc], temp_attention, gloria)
        ds2 = ds.view(Bb * R, Bc * Lc)
        dV[b0:b1] += gemm(ds2, wc.reshape(Bc * Lc, D)).view(Bb, R, D)
        dV[b0:b1] += gemm(alpha_k.view(Bb, R, Bc * Lc), C)
        dW[idx, :Lc] += gemm(ds2.t(), Vb.reshape(Bb * R, D)).view(Bc, Lc, D)
    return dV.to(V.dtype), dW.to(W.dtype)


def matched_attention(V, W, lengths, temp_attention, gloria):
    """α of the matched pairs (image b, report b) as [B, L, R], zeros at padded words: O(B·R·L·D)."""
    B, R, D = V.shape
    L = W.shape[1]
    gemm = Gemm(V)
    valid = torch.arange(L, device=W.device)[None, :] < lengths[:, None]  # [B, L]
    w = W.masked_fill(~valid[:, :, None], 0)
    s = gemm(V, w.transpose(1, 2)).view(B, R, 1, L)
    alpha, _ = TorchMiddle.attention(s, valid[:, None, None, :], lengths, temp_attention, gloria)
    return alpha.view(B, R, L).transpose(1, 2)
