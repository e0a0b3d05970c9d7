"""Pieces shared by every kernel over the B_img × B_txt pair grid (InfoNCE, triplet).

Scores. Every pair kernel scores a tile as s_ij = scale · rx_i · ry_j · (x_i · y_j), where rx, ry are
fp32 per-row multipliers (the inverse L2 norms when the loss normalises, else ones). Keeping the
normalisation as a multiplier means no normalised copy of either embedding is ever written, in any
precision; the gradient through rx, ry is returned to autograd as the per-row vectors V below.

Forward layout ("panels"). The forward kernels need statistics of every row AND every column (row and
column log-sum-exp, hardest negatives both ways). A program owns a panel of consecutive rows and walks
all columns once: per-row state is carried across column blocks in a [*, B] buffer that only this panel
touches; per-column state is reduced over the panel's rows in registers and written as one partial per
(panel, column). The host combines the ≤ #SM partials of each column. The number of panels is bounded
(about one per SM), so the extra memory is O(B), every tile is computed once, and nothing B × B exists.

Backward. Both methods recompute each score tile once and turn it into the gradient tile
G = ∂loss/∂s (a loss-specific epilogue, grad_tile), yielding
  A_x[i] = Σ_j G_ij ry_j y_j     A_y[j] = Σ_i G_ij rx_i x_i
  V_r[i] = Σ_j G_ij ry_j (x_i·y_j)   V_c[j] = Σ_i G_ij rx_i (x_i·y_j)
in fp32, so that
  ∂/∂x = scale·rx·A_x,   ∂/∂y = scale·ry·A_y,   ∂/∂rx = scale·V_r,   ∂/∂ry = scale·V_c,   ∂/∂scale = Σ rx·V_r.
  "atomic"  one program per (row block, column block) forms the two products from the same registers
            (tensor-core dots over D chunks) and adds them into A_x, A_y, V_r, V_c with fp32 atomics:
            deterministic only up to fp32 summation order.
  "gemm"    per panel of rows, a kernel writes Ĝ = σ·diag(rx)·G·diag(ry) (σ a power of two) in the input
            dtype and cuBLAS computes Ĝ·y and Ĝᵀ·x with fp32 output; V_r = x·A_x and V_c = y·A_y are row
            dots afterwards. Deterministic; one Ĝ panel of extra memory.
FLOPs: forward 2·B²·D, backward 6·B²·D (recompute + two gradient products): 8·B²·D in all.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

# Set before triton is imported (tests do it in conftest). Under the interpreter: one autotune config,
# tiny tiles, and 16-bit operands upcast before tl.dot (the interpreter multiplies bf16 bit patterns
# wrongly there).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def configs(gpu: list[tuple[int, int, int, int, int]], interpret: tuple[int, int, int]):
    """Autotune configs from (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) tuples."""
    if INTERPRET:
        bm, bn, bk = interpret
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=1, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in gpu
    ]


def dot_flags(dtype: torch.dtype) -> dict:
    """Constexpr flags for the dtype. fp32 inputs follow torch's own switch,
    torch.get_float32_matmul_precision(): "highest" (torch's default) keeps IEEE fp32 dots (FMA, no
    tensor cores; TF32 would cost ~1e-3 relative, far outside the fp32 tolerance), "high" or "medium"
    allow TF32 tensor cores, as they do for torch.matmul. 16-bit inputs use the tensor cores and are
    upcast only under the interpreter."""
    fp32_precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return {
        "UPCAST": INTERPRET and dtype in (torch.bfloat16, torch.float16),
        "PRECISION": fp32_precision if dtype == torch.float32 else "tf32",
    }


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_panels(x: torch.Tensor, block_m: int) -> int:
    """Programs of a panel-layout forward: about one per SM, never more than there are row blocks."""
    target = _sm_count(x.device.index or 0) if x.is_cuda else 4
    return max(1, min(triton.cdiv(x.shape[0], block_m), target))





# Forward kernels fix BLOCK_M on the host (it sets the panel count, hence the partial buffers' size);
# autotuning chooses the rest.
GPU_PANEL_BLOCK_M = 128
PANEL_BLOCK_M = 16 if INTERPRET else GPU_PANEL_BLOCK_M

# GPU autotune candidates, (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): each compiles for sm_90a
# without register spills in 16-bit (benchmarks/aot_sm90.py, which reads these lists).
# The backward prefers large tiles (fewer atomics per FLOP).
BWD_CONFIGS = [(128, 128, 64, 8, 2), (128, 64, 64, 8, 3), (64, 128, 64, 8, 3), (64, 64, 64, 4, 3), (64, 64, 32, 4, 4)]
# The score-panel backward's Ĝ kernel (kernels.panels; BLOCK_K unused there): spill-free on sm_90a.
GRAD_CONFIGS = [(128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (64, 128, 64, 4, 4), (128, 64, 64, 4, 3)]

# Forward and backward methods (forward_method, backward_method) and the "auto" rule's thresholds.
FWD_METHODS = ("auto", "fused", "gemm")
BWD_METHODS = ("auto", "atomic", "gemm")
GEMM_MIN_PAIRS = 8192 * 8192
GEMM_MIN_ROWS = 1024


@triton.jit
def panel_rows(pid, M, n_panels, BLOCK_M: tl.constexpr):
    """Row range [start, end) of panel `pid`: whole BLOCK_M blocks, spread evenly."""
    per = tl.cdiv(tl.cdiv(M, BLOCK_M), n_panels)
    start = pid * per * BLOCK_M
    end = tl.minimum(start + per * BLOCK_M, M)
    return start, end


@triton.jit
def scores_tile(
    x_ptr, y_ptr,
    rows, cols, M, N, D,
    stride_xb, stride_xd, stride_yb, stride_yd,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """fp32 [BLOCK_M, BLOCK_N] tile of x[rows] · y[cols]ᵀ; out-of-range rows/cols give 0."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    row_off = rows.to(tl.int64) * stride_xb  # int64: B·D exceeds 2³¹ at B = 1M, D = 4096
    col_off = cols.to(tl.int64) * stride_yb
    rmask = rows < M
    cmask = cols < N
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < D
        k_off = ks.to(tl.int64)  # column-major views: stride_xd = B, and (D-1)·B exceeds 2³¹ at B = 1M
        xt = tl.load(x_ptr + row_off[:, None] + k_off[None, :] * stride_xd,
                     mask=rmask[:, None] & kmask[None, :], other=0.0)
        yt = tl.load(y_ptr + col_off[:, None] + k_off[None, :] * stride_yd,
                     mask=cmask[:, None] & kmask[None, :], other=0.0)
        if UPCAST:
            xt = xt.to(tl.float32)
            yt = yt.to(tl.float32)
        acc = tl.dot(xt, tl.trans(yt), acc, input_precision=PRECISION)
    return acc


@triton.jit
def pow2_scale(amax):
    """A power of two that brings a tile's largest magnitude `amax` into [2¹³, 2¹⁴): far from fp16's
    maximum (65504) and from its subnormals, exact to undo. Per tile, because the size of ∂loss/∂s is
    not known in advance (an AMP loss scale of 2¹⁶, summed hinges of 0–2, 1/B softmax terms)."""
    e = tl.floor(tl.log2(16384.0 / amax))
    e = tl.minimum(tl.maximum(e, -100.0), 100.0)  # stays a normal fp32 power of two
    return tl.where(amax > 0, tl.exp2(e), 1.0)


@triton.jit
def positive_pairs(rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr, pos_offset, HAS_GROUPS: tl.constexpr):
    """[BLOCK_M, BLOCK_N] bool: (i, j) is a positive pair — equal group ids, else j == i + pos_offset
    (the offset places a rank's rows inside the global batch in the rank-local distributed form)."""
    if HAS_GROUPS:
        gr = tl.load(row_groups_ptr + rows, mask=rmask, other=0)
        gc = tl.load(col_groups_ptr + cols, mask=cmask, other=0)
        return gr[:, None] == gc[None, :]
    else:
        return (rows[:, None] + pos_offset) == cols[None, :]


@triton.jit
def _infonce_grad_tile(
    s, rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr, pos_offset,
    lse_r_ptr, g_lse_r_ptr, g_pos_ptr, g_sum_ptr, lse_c_ptr, g_lse_c_ptr,
    HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
):
    """∂loss/∂s_ij for the InfoNCE statistics (see kernels.contrastive):
    G = g_lse_r[i]·softmax_row(s)_ij + g_lse_c[j]·softmax_col(s)_ij + g_pos[i]·[pos(i,j)] + g_sum[i].
    Evaluated in fp32 before any rounding: at the positives softmax ≈ 1 and g_pos ≈ −(g_lse_r + g_lse_c),
    so the small difference that is the gradient is formed here, not after a cast."""
    lse_r = tl.load(lse_r_ptr + rows, mask=rmask, other=0.0)
    g_r = tl.load(g_lse_r_ptr + rows, mask=rmask, other=0.0)
    g_pos = tl.load(g_pos_ptr + rows, mask=rmask, other=0.0)
    g_sum = tl.load(g_sum_ptr + rows, mask=rmask, other=0.0)
    s2 = s * 1.4426950408889634
    g = g_r[:, None] * tl.exp2(s2 - lse_r[:, None] * 1.4426950408889634) + g_sum[:, None]
    if COLUMNS:  # the column softmax term (absent in the rank-local distributed form)
        lse_c = tl.load(lse_c_ptr + cols, mask=cmask, other=0.0)
        g_c = tl.load(g_lse_c_ptr + cols, mask=cmask, other=0.0)
        g += g_c[None, :] * tl.exp2(s2 - lse_c[None, :] * 1.4426950408889634)
    pos = positive_pairs(rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr, pos_offset, HAS_GROUPS)
    return tl.where(pos, g + g_pos[:, None], g)


@triton.jit
def _hinge_grad_tile(
    s, rows, cols, rmask, cmask, margin,
    diag_ptr, g_row_ptr, g_col_ptr,
):
    """∂loss/∂s_ij for summed triplet hinges (see kernels.triplet):
    G = g_row[i]·[margin + s_ij − d_i > 0] + g_col[j]·[margin + s_ij − d_j > 0], i ≠ j."""
    d_r = tl.load(diag_ptr + rows, mask=rmask, other=0.0)
    d_c = tl.load(diag_ptr + cols, mask=cmask, other=0.0)
    g_r = tl.load(g_row_ptr + rows, mask=rmask, other=0.0)
    g_c = tl.load(g_col_ptr + cols, mask=cmask, other=0.0)
    g = (tl.where(margin + s - d_r[:, None] > 0, g_r[:, None], 0.0)
         + tl.where(margin + s - d_c[None, :] > 0, g_c[None, :], 0.0))
    return tl.where(rows[:, None] == cols[None, :], 0.0, g)


@triton.jit
def grad_of_scores(
    acc, rows, cols, rmask, cmask, rx, ry, scale_ptr, row_groups_ptr, col_groups_ptr,
    row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr, pos_offset, margin,
    MODE: tl.constexpr, HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
):
    """G = ∂loss/∂s of one tile in fp32 (0 outside the rows/columns masks) from its x·y products `acc`.
    Every backward kernel (atomic here, score panels in kernels.panels) ends its tile here, so all methods
    differentiate exactly the same expression.

    MODE 0 rows: lse_r, g_lse_r, g_pos, g_sum; cols: lse_c, g_lse_c.
    MODE 1 rows: diag, g_row, -, -;           cols: diag (same), g_col.   (square, M == N)
    """
    scale = tl.load(scale_ptr).to(tl.float32)
    s = acc * (scale * rx)[:, None] * ry[None, :]
    if MODE == 0:
        g = _infonce_grad_tile(s, rows, cols, rmask, cmask, row_groups_ptr, col_groups_ptr, pos_offset,
                               row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr, HAS_GROUPS, COLUMNS)
    else:
        g = _hinge_grad_tile(s, rows, cols, rmask, cmask, margin, row0_ptr, row1_ptr, col1_ptr)
    return tl.where(rmask[:, None] & cmask[None, :], g, 0.0)


@triton.jit
def grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """(row block, column block) of program `pid` in grouped order: GROUP_M row blocks sweep the columns
    together, so their x and y tiles are re-read from L2 rather than HBM."""
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    group_size = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (pid % width) % group_size, (pid % width) // group_size


@triton.autotune(
    configs=configs(
        gpu=BWD_CONFIGS,
        interpret=(16, 16, 16),
    ),
    key=["D", "MODE", "HAS_GROUPS", "COLUMNS"],
    reset_to_zero=["ax_ptr", "ay_ptr", "vr_ptr", "vc_ptr"],
)
@triton.jit
def pairwise_bwd_kernel(
    # inputs
    x_ptr, y_ptr, rx_ptr, ry_ptr, scale_ptr, row_groups_ptr, col_groups_ptr,
    row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr,
    # outputs (fp32, zeroed, accumulated atomically)
    ax_ptr, ay_ptr, vr_ptr, vc_ptr,
    # shapes and scalars
    M, N, D, pos_offset, margin,
    # strides
    stride_xb, stride_xd, stride_yb, stride_yd,
    # constexpr
    MODE: tl.constexpr,  # 0: InfoNCE statistics, 1: summed triplet hinges
    HAS_GROUPS: tl.constexpr, COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Backward of a pair-statistics op over one (row block, column block) tile, "atomic" method (see the
    module docstring); the tile's G comes from grad_of_scores."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    acc = scores_tile(x_ptr, y_ptr, rows, cols, M, N, D, stride_xb, stride_xd, stride_yb, stride_yd,
                      BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
    rx = tl.load(rx_ptr + rows, mask=rmask, other=0.0)
    ry = tl.load(ry_ptr + cols, mask=cmask, other=0.0)
    g = grad_of_scores(acc, rows, cols, rmask, cmask, rx, ry, scale_ptr, row_groups_ptr, col_groups_ptr,
                       row0_ptr, row1_ptr, row2_ptr, row3_ptr, col0_ptr, col1_ptr, pos_offset, margin,
                       MODE, HAS_GROUPS, COLUMNS)

    g_acc = g * acc
    tl.atomic_add(vr_ptr + rows, tl.sum(g_acc * ry[None, :], axis=1), mask=rmask, sem="relaxed")
    tl.atomic_add(vc_ptr + cols, tl.sum(g_acc * rx[:, None], axis=0), mask=cmask, sem="relaxed")

    # Operands of the two gradient products, in the input dtype for the tensor cores, each scaled by a
    # power of two chosen from its own largest magnitude (pow2_scale) so the 16-bit cast neither
    # overflows nor flushes to subnormals; the scale is undone exactly on the fp32 products.
    # max |G·diag(ry)| = max_j ry_j·max_i |G_ij| (ry ≥ 0): two vector reductions, then the scale is
    # folded into the ry / rx multipliers rather than applied as another tile-wide product.
    g_abs = tl.abs(g)
    scale_x = pow2_scale(tl.max(tl.max(g_abs, axis=0) * ry, axis=0))
    scale_y = pow2_scale(tl.max(tl.max(g_abs, axis=1) * rx, axis=0))
    gx = g * (ry * scale_x)[None, :]
    gy = tl.trans(g * (rx * scale_y)[:, None])
    if not UPCAST:
        gx = gx.to(x_ptr.dtype.element_ty)
        gy = gy.to(x_ptr.dtype.element_ty)
    unscale_x = 1.0 / scale_x
    unscale_y = 1.0 / scale_y
    row_off = rows.to(tl.int64)
    col_off = cols.to(tl.int64)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < D
        k_off = ks.to(tl.int64)
        xt = tl.load(x_ptr + row_off[:, None] * stride_xb + k_off[None, :] * stride_xd,
                     mask=rmask[:, None] & kmask[None, :], other=0.0)
        yt = tl.load(y_ptr + col_off[:, None] * stride_yb + k_off[None, :] * stride_yd,
                     mask=cmask[:, None] & kmask[None, :], other=0.0)
        if UPCAST:
            xt = xt.to(tl.float32)
            yt = yt.to(tl.float32)
        dx = tl.dot(gx, yt, input_precision=PRECISION) * unscale_x
        dy = tl.dot(gy, xt, input_precision=PRECISION) * unscale_y
        tl.atomic_add(ax_ptr + row_off[:, None] * D + ks[None, :], dx,
                      mask=rmask[:, None] & kmask[None, :], sem="relaxed")
        tl.atomic_add(ay_ptr + col_off[:, None] * D + ks[None, :], dy,
                      mask=cmask[:, None] & kmask[None, :], sem="relaxed")


def _method(variable: str, methods: tuple) -> str:
    method = os.environ.get(variable, "") or "auto"
    if method not in methods:
        raise ValueError(f"environment variable {variable} must be one of {methods}, got {method!r}")
    return method


def _panels_pay(M: int, N: int) -> bool:
    """Whether the score-panel methods suit an M × N grid (the rule behind "auto"; measured on an H200 at
    B = 32768, benchmarks/results/nvidia-h200/probe.json): a grid of at least GEMM_MIN_PAIRS pairs, so that
    the GEMMs are large, cut into panels of at least min(M, GEMM_MIN_ROWS) rows, so that re-reading the fp32
    accumulator of Ĝᵀ·x once per panel (2·N·D·4 bytes against 2·P·N·D FLOPs) stays cheap. At B = 2^20 a
    256 MiB score panel holds 64 rows: there the fused kernels run."""
    from .panels import panel_rows

    return M * N >= GEMM_MIN_PAIRS and panel_rows(M, N) >= min(M, GEMM_MIN_ROWS)


def forward_method(mode: int, M: int, N: int) -> str:
    """The forward of a pair-statistics op (mode: 0 InfoNCE, 1 hardest negatives, 2 summed hinges) on an
    M × N grid: CXRFAST_PAIRWISE_FWD ("auto" | "fused" | "gemm") when set, else "auto".
    "fused": one Triton kernel per panel of rows (kernels.contrastive / kernels.triplet), O(B) extra memory;
    "gemm": cuBLAS score panels + a Triton reduction (kernels.panels), one score panel of extra memory.
    "auto" takes "gemm" for the hardest negatives where panels pay (_panels_pay; 9.98 ms against 12.95 ms
    at B = 32768, D = 1024 on an H200) and "fused" otherwise (InfoNCE: 8.03 ms against 16.08 ms at B = 32768,
    D = 512; summed hinges: not measured against each other yet)."""
    method = _method("CXRFAST_PAIRWISE_FWD", FWD_METHODS)
    if method == "auto":
        return "gemm" if mode == 1 and _panels_pay(M, N) else "fused"
    return method


def backward_method(M: int, N: int) -> str:
    """The backward of a pair-statistics op on an M × N grid: CXRFAST_PAIRWISE_BWD ("auto" | "atomic" |
    "gemm") when set, else "auto". "atomic": one Triton kernel, fp32 atomics (this module); "gemm": cuBLAS
    scores, a Triton kernel turns them into Ĝ, cuBLAS does the products (kernels.panels). "auto" takes
    "gemm" where panels pay (_panels_pay; InfoNCE at B = 32768, D = 512 on an H200: 8.3 ms against 19.4 ms)."""
    method = _method("CXRFAST_PAIRWISE_BWD", BWD_METHODS)
    if method == "auto":
        return "gemm" if _panels_pay(M, N) else "atomic"
    return method


def pairwise_backward(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, row_vectors, col_vectors,
                      *, mode: int, margin: float = 0.0, columns: bool = True):
    """Gradient pieces of a pair-statistics op: fp32 (A_x [M, D], A_y [N, D], V_r [M], V_c [N]), by the
    method backward_method() names (see the module docstring)."""
    args = (x, y, rx, ry, scale, row_groups, col_groups, pos_offset, row_vectors, col_vectors)
    if backward_method(x.shape[0], y.shape[0]) == "atomic":
        return pairwise_backward_atomic(*args, mode=mode, margin=margin, columns=columns)
    from .panels import panel_backward

    return panel_backward(*args, mode=mode, margin=margin, columns=columns)


def _vector_slots(rx, row_vectors, col_vectors):
    """The kernels' four row-vector and two column-vector pointers (unused slots: any valid fp32 pointer)."""
    return list(row_vectors) + [rx] * (4 - len(row_vectors)), list(col_vectors)


def pairwise_backward_atomic(x, y, rx, ry, scale, row_groups, col_groups, pos_offset, row_vectors, col_vectors,
                             *, mode: int, margin: float = 0.0, columns: bool = True):
    """"atomic": one tile kernel, products accumulated into fp32 buffers with atomics."""
    from torch.library import wrap_triton

    (M, D), N = x.shape, y.shape[0]
    ax = torch.zeros((M, D), dtype=torch.float32, device=x.device)
    ay = torch.zeros((N, D), dtype=torch.float32, device=x.device)
    vr = torch.zeros((M,), dtype=torch.float32, device=x.device)
    vc = torch.zeros((N,), dtype=torch.float32, device=x.device)
    r, c = _vector_slots(rx, row_vectors, col_vectors)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    has_groups = row_groups is not None
    wrap_triton(pairwise_bwd_kernel)[grid](
        x, y, rx, ry, scale, row_groups if has_groups else rx, col_groups if has_groups else ry,
        r[0], r[1], r[2], r[3], c[0], c[1],
        ax, ay, vr, vc,
        M, N, D, pos_offset, float(margin),
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        MODE=mode, HAS_GROUPS=has_groups, COLUMNS=columns, GROUP_M=8, **dot_flags(x.dtype),
    )
    return ax, ay, vr, vc
