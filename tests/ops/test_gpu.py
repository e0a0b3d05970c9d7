"""Compiled Triton kernels on a CUDA GPU at the papers' shapes (skip without CUDA).

The CPU suite runs the same kernels interpreted at tiny shapes; these tests cover what only a GPU
shows: autotuned compiled code, real tile counts, 16-bit tensor-core dots, atomics, memory bounds.
"""

import pytest
import torch
from numerics import assert_earned, loss_and_grads

import cxrfast
from cxrfast import reference as R

pytestmark = pytest.mark.gpu


def _pair(b, d, dtype, near=0.0):
    x = torch.randn(b, d, device="cuda", dtype=torch.float32)
    y = torch.randn(b, d, device="cuda", dtype=torch.float32)
    if near:
        y = x + near * y
    return x.to(dtype), y.to(dtype)


def _oracle(fn, tensors, dtype):
    """(float64 reference, reference in the kernel's dtype) — both on the GPU: B² fits at these B."""
    ref64 = loss_and_grads(fn, [t.double() for t in tensors])
    low = loss_and_grads(fn, list(tensors))
    return ref64, low


@pytest.fixture(params=[("fused", "atomic"), ("gemm", "gemm")], ids=lambda m: "-".join(m))
def pair_methods_gpu(request, monkeypatch):
    """The pair kernels' (forward, backward) methods (kernels.pairwise), at their real panel sizes."""
    monkeypatch.setenv("CXRFAST_PAIRWISE_FWD", request.param[0])
    monkeypatch.setenv("CXRFAST_PAIRWISE_BWD", request.param[1])
    return request.param


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("b,d", [(4096, 512), (3001, 768), (1000, 128), (257, 4096)])
def test_infonce_real_shapes(b, d, dtype, pair_methods_gpu):
    x, y = _pair(b, d, dtype, near=1.0)
    scale = torch.tensor(50.0, device="cuda")
    got = loss_and_grads(lambda p, q, s: cxrfast.contrastive_loss(p, q, s, impl="triton"), (x, y, scale))
    (r64, g64), (rlo, glo) = _oracle(lambda p, q, s: R.contrastive_loss(p, q, s), (x, y, scale.to(dtype)), dtype)
    assert_earned("loss", got[0], r64, rlo, dtype)
    for name, g, a, c in zip(("image", "text", "scale"), got[1], g64, glo):
        assert_earned(f"d {name}", g, a, c, dtype)


def test_infonce_groups_smoothing_weights_at_scale(pair_methods_gpu):
    b, d, dtype = 2048, 512, torch.bfloat16
    x, y = _pair(b, d, dtype, near=0.5)
    groups = torch.randint(0, b // 3, (b,), device="cuda")
    kw = dict(groups=groups, label_smoothing=0.1, weights=(0.75, 0.25))
    scale = torch.tensor(14.3, device="cuda")
    got = loss_and_grads(lambda p, q, s: cxrfast.contrastive_loss(p, q, s, impl="triton", **kw), (x, y, scale))
    (r64, g64), (rlo, glo) = _oracle(lambda p, q, s: R.contrastive_loss(p, q, s, **kw), (x, y, scale.to(dtype)), dtype)
    assert_earned("loss", got[0], r64, rlo, dtype)
    for g, a, c in zip(got[1], g64, glo):
        assert_earned("grad", g, a, c, dtype)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_triplet_real_shape(negatives, pair_methods_gpu):
    b, d, dtype = 4096, 1024, torch.float32
    x, y = _pair(b, d, dtype)
    got = loss_and_grads(lambda p, q: cxrfast.triplet_loss(p, q, negatives=negatives, impl="triton"), (x, y))
    (r64, g64), (rlo, glo) = _oracle(lambda p, q: R.triplet_loss(p, q, negatives=negatives), (x, y), dtype)
    assert_earned("loss", got[0], r64, rlo, dtype)
    for g, a, c in zip(got[1], g64, glo):
        assert_earned("grad", g, a, c, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_infonce_panels_of_several_row_blocks(dtype, pair_methods_gpu):
    """B = 20000: 157 row blocks of 128 over 132 panels, so panels carry their row state across two row
    blocks (through global memory, ordered by the kernel's barrier); the GEMM backward walks several Ĝ
    panels. Against the float64 reference (B² fits here)."""
    b, d = 20000, 256
    x, y = _pair(b, d, dtype, near=0.8)
    scale = torch.tensor(30.0, device="cuda")
    got = loss_and_grads(lambda p, q, s: cxrfast.contrastive_loss(p, q, s, impl="triton"), (x, y, scale))
    (r64, g64), (rlo, glo) = _oracle(lambda p, q, s: R.contrastive_loss(p, q, s), (x, y, scale.to(dtype)), dtype)
    assert_earned("loss", got[0], r64, rlo, dtype)
    for name, g, a, c in zip(("image", "text", "scale"), got[1], g64, glo):
        assert_earned(f"d {name}", g, a, c, dtype)


def test_score_panel_methods_are_deterministic_on_gpu(monkeypatch):
    """No atomics in the score-panel methods: bitwise-equal loss and gradients run to run."""
    monkeypatch.setenv("CXRFAST_PAIRWISE_FWD", "gemm")
    monkeypatch.setenv("CXRFAST_PAIRWISE_BWD", "gemm")
    x, y = _pair(8192, 512, torch.bfloat16, near=1.0)
    run = lambda: loss_and_grads(lambda p, q: cxrfast.contrastive_loss(p, q, 20.0, impl="triton"), (x, y))  # noqa: E731
    a, b = run(), run()
    assert torch.equal(a[0], b[0]) and all(torch.equal(g, h) for g, h in zip(a[1], b[1]))


def test_compile_fullgraph_triton(pair_methods_gpu):
    x, y = _pair(1024, 256, torch.bfloat16)
    scale = torch.tensor(10.0, device="cuda", requires_grad=True)

    def f(a, b, s):
        return cxrfast.contrastive_loss(a, b, s, impl="triton") + cxrfast.triplet_loss(a, b, impl="triton", negatives="all")

    eager = loss_and_grads(f, (x, y, scale))
    compiled = loss_and_grads(torch.compile(f, fullgraph=True), (x, y, scale))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-4)
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g.float(), h.float(), rtol=2e-2, atol=1e-4)


def test_opcheck_triton():
    x = torch.randn(300, 64, device="cuda", requires_grad=True)
    y = torch.randn(333, 64, device="cuda", requires_grad=True)
    rx, ry = torch.rand(300, device="cuda") + 0.5, torch.rand(333, device="cuda") + 0.5
    scale = torch.tensor(2.0, device="cuda", requires_grad=True)
    for columns in (True, False):
        torch.library.opcheck(torch.ops.cxrfast.infonce_stats, (x, y, rx, ry, scale, None, None, 17, columns, "triton"))
    d = torch.randn(300, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.cxrfast.triplet_all, (x, y[:300], rx, ry[:300], d, 0.2, "triton"))


def _extra_memory(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _tune(b, d, dtype=torch.bfloat16):
    """One forward + backward at batch `b`: the autotuners' keys leave B out, so this picks the configs
    for every larger B of the same D and dtype in this process. Memory and time are measured after it:
    Triton's benchmarking allocates a 256 MiB cache-flush buffer while it tunes."""
    x, y = _pair(b, d, dtype)
    x.requires_grad_(), y.requires_grad_()
    cxrfast.contrastive_loss(x, y, 10.0, impl="triton").backward()
    torch.cuda.synchronize()


def _infonce_b32768_extra_memory():
    b, d = 32768, 512
    _tune(4096, d)
    x, y = _pair(b, d, torch.bfloat16)
    x.requires_grad_(), y.requires_grad_()
    return _extra_memory(lambda: cxrfast.contrastive_loss(x, y, 20.0, impl="triton").backward()), b, d


def _panel_allowance(b, dtype) -> int:
    """Bytes the score-panel methods keep besides O(B·D): one fp32 score panel and one Ĝ panel in the
    input dtype (kernels.panels), a fixed size whatever B; 0 for the fused forward + atomic backward."""
    from cxrfast.kernels import panels, pairwise

    if pairwise.forward_method(0, b, b) == "fused" and pairwise.backward_method(b, b) == "atomic":
        return 0
    rows = panels.panel_rows(b, b)
    return rows * b * (4 + torch.finfo(dtype).bits // 8)


def test_infonce_b32768_memory_is_linear(pair_methods_gpu):
    """B = 32768, D = 512, bf16: no B×B tensor. What this design keeps is O(B·D): two fp32 gradient
    accumulators (2·B·D·4 = 128 MiB), the bf16 gradients themselves (64 MiB), the transient of the
    norms' backward, and O(B) statistics; the score-panel methods add their two panels, whose size is
    fixed (SCORE_PANEL_BYTES and half of it), not a function of B."""
    extra, b, d = _infonce_b32768_extra_memory()
    from cxrfast.kernels.panels import SCORE_PANEL_BYTES

    allowance = _panel_allowance(b, torch.bfloat16)
    assert allowance <= 1.5 * SCORE_PANEL_BYTES
    assert extra < 4 * b * d * 4 + allowance, f"extra memory {extra / 2**20:.0f} MiB: more than O(B·D) + panels"
    assert extra - allowance < b * b * 2 / 4, "extra memory is a sizeable fraction of one B×B bf16 matrix"


@pytest.mark.xfail(strict=True, reason="issue 2 asks for ≤ 64 MB extra at B=32768, D=512; the backward's two "
                   "fp32 B×D accumulators alone are 128 MiB (see the issue's closing note)")
def test_infonce_b32768_memory_meets_the_issue_target():
    extra, _, _ = _infonce_b32768_extra_memory()
    assert extra <= 64 * 2**20, f"extra memory {extra / 2**20:.0f} MiB > 64 MiB"


def test_triplet_all_fp16_b32768_unit_norm_is_finite():
    """Summed hinges give ∂loss/∂s of 0–2 per pair: the per-tile power-of-two scaling must keep the
    fp16 operands in range at B = 32768 (a fixed ×B factor would overflow here)."""
    x, y = _pair(32768, 256, torch.float16)
    x.requires_grad_(), y.requires_grad_()
    cxrfast.triplet_loss(x, y, negatives="all", impl="triton").backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.slow
def test_infonce_one_million_pairs():
    """B = 1,048,576 completes on one GPU (a B×B bf16 matrix alone would be 2 TiB)."""
    b, d = 1 << 20, 512
    _tune(32768, d)  # tuning at B = 2^20 would time each config at seconds per launch
    x, y = _pair(b, d, torch.bfloat16)
    x.requires_grad_(), y.requires_grad_()
    loss = cxrfast.contrastive_loss(x, y, 10.0, impl="triton")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    # random unit vectors at scale 10: every logit ≈ 0, so loss ≈ log B
    assert abs(loss.item() - torch.log(torch.tensor(float(b))).item()) < 0.5


# ------------------------------------------------------------------ word–region similarity (issue 3)

def _local_batch(b, r, d, dtype, l=97, lo=20):
    regions = torch.randn(b, r, d, device="cuda") / d ** 0.25  # s = v·w ~ N(0, 1): GLoRIA's feature scale
    words = torch.randn(b, l, d, device="cuda") / d ** 0.25
    lengths = torch.randint(lo, l + 1, (b,), device="cuda")
    lengths[0], lengths[-1] = l, lo
    return regions.to(dtype), words.to(dtype), lengths


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("variant", ["gloria", "single"])
def test_word_region_real_shapes(variant, dtype):
    """GLoRIA's shapes (R = 19×19, D = 768, words ragged 20–97) at B = 12, against the float64 reference."""
    regions, words, lengths = _local_batch(12, 361, 768, dtype)
    G = torch.randn(12, 12, device="cuda", dtype=torch.float64)

    def fn(impl):
        return lambda v, w: (cxrfast.word_region_similarity(v, w, lengths, impl=impl, variant=variant) * G).sum()

    def ref(v, w):
        return (R.word_region_similarity(v, w, lengths, variant=variant) * G.to(v.dtype)).sum()

    got = loss_and_grads(fn("triton"), (regions, words))
    (r64, g64), (rlo, glo) = _oracle(ref, (regions, words), dtype)
    assert_earned("Σ G·S", got[0], r64, rlo, dtype)
    for name, g, a, c in zip(("regions", "words"), got[1], g64, glo):
        assert_earned(f"d {name}", g, a, c, dtype)


def test_word_region_compile_fullgraph_triton():
    regions, words, lengths = _local_batch(8, 49, 128, torch.bfloat16, l=16, lo=3)

    def f(v, w):
        return cxrfast.local_contrastive_loss(v, w, lengths, impl="triton")

    eager = loss_and_grads(f, (regions, words))
    compiled = loss_and_grads(torch.compile(f, fullgraph=True), (regions, words))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g.float(), h.float(), rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("gloria", [True, False])
def test_word_region_opcheck_triton(gloria):
    regions, words, lengths = _local_batch(3, 49, 64, torch.float32, l=9, lo=1)
    regions.requires_grad_(), words.requires_grad_()
    torch.library.opcheck(torch.ops.cxrfast.word_region_similarity,
                          (regions, words, lengths, 4.0, 5.0, False, gloria, 1 << 30, "triton"))


def test_word_region_b1024_memory():
    """Issue 3: B = 1024 at GLoRIA's shapes completes with ≤ 16 GB of extra memory (bf16, fwd + bwd)."""
    regions, words, lengths = _local_batch(1024, 361, 768, torch.bfloat16)
    regions.requires_grad_(), words.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = cxrfast.local_contrastive_loss(regions, words, lengths, impl="triton")
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert torch.isfinite(loss) and torch.isfinite(regions.grad).all() and torch.isfinite(words.grad).all()
    assert extra <= 16e9, f"extra memory {extra / 1e9:.2f} GB > 16 GB"
