"""cxrfast.triplet_loss: every impl against the float64 reference (DESIGN's earned tolerance)."""

import pytest
import torch
from numerics import assert_earned, force_16bit_operands, loss_and_grads, poison_new_tensors

import cxrfast
from cxrfast import reference as R

SHAPES = [(1, 5), (2, 3), (17, 33), (37, 19)]


def _inputs(b, d, dtype, device):
    return (torch.randn(b, d, dtype=torch.float64).to(dtype).to(device),
            torch.randn(b, d, dtype=torch.float64).to(dtype).to(device))


def _check(impl, x, y, dtype, k=2.0, **kw):
    got, got_g = loss_and_grads(lambda a, b: cxrfast.triplet_loss(a, b, impl=impl, **kw), (x, y))
    cpu = [t.detach().cpu() for t in (x, y)]
    ref64, ref64_g = loss_and_grads(lambda a, b: R.triplet_loss(a, b, **kw), [t.double() for t in cpu])
    ref_lo, ref_lo_g = loss_and_grads(lambda a, b: R.triplet_loss(a, b, **kw), cpu)
    assert_earned("loss", got, ref64, ref_lo, dtype, k)
    for name, g, g64, glo in zip(("d image_emb", "d text_emb"), got_g, ref64_g, ref_lo_g):
        assert g.dtype == dtype
        assert_earned(name, g, g64, glo, dtype, k)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
@pytest.mark.parametrize("b,d", SHAPES)
@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_matches_reference_fp32(impl, b, d, negatives, device):
    dev = device if impl == "triton" else "cpu"
    x, y = _inputs(b, d, torch.float32, dev)
    _check(impl, x, y, torch.float32, negatives=negatives)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision(negatives, dtype, device, pair_methods):
    """16-bit inputs: products are exact in fp32 and accumulated in fp32, so the kernel picks the
    same hardest negatives as the float64 reference whenever the gap exceeds fp32 rounding; the
    16-bit reference (which rounds every score) earns a wide tolerance."""
    x, y = _inputs(29, 24, dtype, device)
    _check("triton", x, y, dtype, negatives=negatives)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
@pytest.mark.parametrize("opts", [dict(distance="dot", margin=0.1), dict(margin=0.5, reduction="mean"),
                                  dict(negatives="all", distance="dot", reduction="mean")],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options(impl, opts, device):
    dev = device if impl == "triton" else "cpu"
    x, y = _inputs(21, 13, torch.float64 if impl == "chunked" else torch.float32, dev)
    if opts.get("distance") == "dot":
        x, y = x * 0.3, y * 0.3
    _check(impl, x, y, x.dtype, **opts)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_non_contiguous_and_deterministic_indices(impl, device):
    dev = device if impl == "triton" else "cpu"
    x = torch.randn(40, 25, device=dev)[::2]  # stride (50, 1)
    y = torch.randn(25, 20, device=dev).t()  # stride (1, 20)
    assert not x.is_contiguous() and not y.is_contiguous()
    _check(impl, x, y, torch.float32, negatives="hardest")
    rx, ry = torch.ones(20, device=dev), torch.ones(20, device=dev)
    a = torch.ops.cxrfast.triplet_hardest(x, y, rx, ry, impl)
    b = torch.ops.cxrfast.triplet_hardest(x, y, rx, ry, impl)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_hardest_indices_are_argmax_over_negatives(device):
    x, y = _inputs(23, 8, torch.float32, device)
    rx, ry = 1 / x.norm(dim=1), 1 / y.norm(dim=1)
    s = (x * rx[:, None]) @ (y * ry[:, None]).t()
    s.fill_diagonal_(float("-inf"))
    for impl in ("chunked", "triton"):
        idx_r, idx_c = torch.ops.cxrfast.triplet_hardest(x, y, rx, ry, impl)
        assert torch.equal(idx_r, s.argmax(1)), impl
        assert torch.equal(idx_c, s.argmax(0)), impl


def test_triton_writes_every_output(device, monkeypatch, pair_methods):
    poison_new_tensors(monkeypatch)
    for negatives in ("hardest", "all"):
        x, y = _inputs(19, 18, torch.float32, device)
        _check("triton", x, y, torch.float32, negatives=negatives)


def test_errors():
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    for kwargs, match in [(dict(negatives="semi-hard"), r"`negatives` must be one of \('hardest', 'all', 'random'\) or an integer tensor"),
                          (dict(reduction="batch"), r"`reduction` must be one of"),
                          (dict(distance="euclidean"), r"`distance` must be one of"),
                          (dict(margin=float("nan")), r"`margin` must be a finite number"),
                          (dict(margin=float("inf")), r"`margin` must be a finite number, got inf"),
                          (dict(margin=True), r"`margin` must be a finite number, got True"),
                          (dict(margin=torch.tensor(0.2)), r"`margin` must be a finite number")]:
        with pytest.raises(ValueError, match=match):
            cxrfast.triplet_loss(x, y, **kwargs)
    with pytest.raises(ValueError, match=r"batch sizes differ"):
        cxrfast.triplet_loss(x, y[:2])
    bad = y.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`text_emb` contains 1 non-finite"):
        cxrfast.triplet_loss(x, bad)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_compile_fullgraph_chunked(negatives):
    x, y = _inputs(9, 7, torch.float32, "cpu")

    def f(a, b):
        return cxrfast.triplet_loss(a, b, impl="chunked", negatives=negatives, margin=0.3)

    eager = loss_and_grads(f, (x, y))
    compiled = loss_and_grads(torch.compile(f, fullgraph=True), (x, y))
    torch.testing.assert_close(compiled[0], eager[0])
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, h)


def test_opcheck_chunked():
    x, y = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    rx, ry = (torch.rand(6) + 0.5).requires_grad_(), (torch.rand(6) + 0.5).requires_grad_()
    diag = torch.randn(6, requires_grad=True)
    torch.library.opcheck(torch.ops.cxrfast.triplet_all, (x, y, rx, ry, diag, 0.2, "chunked"))
    torch.library.opcheck(torch.ops.cxrfast.triplet_hardest, (x.detach(), y.detach(), rx.detach(), ry.detach(), "chunked"))


def test_module():
    loss_fn = cxrfast.nn.TripletLoss(margin=0.5, negatives="all")
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(loss_fn(x, y), R.triplet_loss(x, y, margin=0.5, negatives="all"))


def test_rowdot_products_are_fp32_exact(monkeypatch):
    """The diagonal scores of the hinge: bf16 products rounded to bf16 would be off by ~1e-3."""
    from cxrfast.ops import _pairwise

    monkeypatch.setattr(_pairwise, "ROWDOT_BLOCK", 7)  # several blocks
    x = torch.randn(30, 300).bfloat16().requires_grad_()
    y = torch.randn(30, 300).bfloat16().requires_grad_()
    d = _pairwise.rowdot(x, y)
    exact = (x.double() * y.double()).sum(-1)
    assert d.dtype == torch.float32
    assert (d.double() - exact).abs().max() < 1e-4  # fp32 accumulation of exact products
    assert ((x * y).sum(-1, dtype=torch.float32).double() - exact).abs().max() > 1e-3  # the naive form
    d.sum().backward()
    assert torch.equal(x.grad, y.detach()) and torch.equal(y.grad, x.detach())


def test_panels_with_several_row_blocks_and_an_empty_panel(device, pair_methods):
    """B = 130 under the interpreter: 3 row blocks per panel and an empty 4th panel."""
    for negatives in ("hardest", "all"):
        x, y = _inputs(130, 12, torch.float32, device)
        _check("triton", x, y, torch.float32, negatives=negatives)


def test_fp16_summed_hinges_never_overflow(device, monkeypatch, pair_methods):
    """negatives="all", reduction="sum": ∂loss/∂s is 0, 1 or 2 per pair (not ~1/B); times an upstream
    512 that is 1024 — the fp16 operands must still be scaled into range per tile."""
    if device == "cpu":
        force_16bit_operands(monkeypatch)
    x, y = _inputs(40, 16, torch.float16, device)
    got = loss_and_grads(lambda a, b: 512 * cxrfast.triplet_loss(a, b, negatives="all", impl="triton"), (x, y))
    ref = loss_and_grads(lambda a, b: 512 * R.triplet_loss(a, b, negatives="all"), (x.double().cpu(), y.double().cpu()))
    for g, r in zip(got[1], ref[1]):
        assert torch.isfinite(g).all()
        assert (g.double().cpu() - r).abs().max() / r.abs().max() < 5e-3
