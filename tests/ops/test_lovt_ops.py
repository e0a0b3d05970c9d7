"""cxrfast.ops.lovt_local_loss: the batched path against the float64 reference, padding, validation, compile."""

import pytest
import torch
from numerics import assert_earned, loss_and_grads, poison_new_tensors

from cxrfast.ops.lovt import lovt_local_loss
from cxrfast.reference import lovt as RL

# (B, grid, M, D): one of everything, odd, rectangular grids, a 1-sentence batch, LoVT's 7 × 7
SHAPES = [(1, (1, 1), 1, 1), (2, (2, 3), 4, 5), (3, (3, 5), 1, 7), (4, (7, 7), 9, 16), (5, (1, 6), 3, 2)]
OPTIONS = dict(temperature=0.11, attention_temperature=2.5, distance_threshold=0.3, smooth_lambda=3.0)


def _inputs(b, grid, m, d, dtype=torch.float64, device="cpu"):
    regions = torch.randn(b, grid[0] * grid[1], d, dtype=torch.float64)
    sentences = torch.randn(b, m, d, dtype=torch.float64)
    lengths = torch.randint(1, m + 1, (b,))
    lengths[0], lengths[-1] = m, 1  # both extremes
    return regions.to(device, dtype), sentences.to(device, dtype), lengths.to(device)


def _mix(out, coef):
    """A random combination of the four losses, so each one's gradient is checked, plus "loss"."""
    return sum(c * out[name] for c, name in zip(coef, RL.LOSS_NAMES)) + out["loss"]


def _compare(fn_got, fn_ref, tensors, coef, exact=True, dtype=torch.float64):
    got, got_g = loss_and_grads(lambda *t: _mix(fn_got(*t), coef), tensors)
    ref, ref_g = loss_and_grads(lambda *t: _mix(fn_ref(*t), coef), [t.cpu().double() if t.is_floating_point()
                                                                    else t.cpu() for t in tensors])
    if exact:
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-10, atol=1e-12)
        for g, r in zip(got_g, ref_g):
            torch.testing.assert_close(g.cpu(), r, rtol=1e-9, atol=1e-12)
        return
    low, low_g = loss_and_grads(lambda *t: _mix(fn_ref(*t), coef), [t.cpu() for t in tensors])
    assert_earned("loss", got, ref, low, dtype)
    for name, g, r, lo in zip(("d regions", "d sentences", "d weights"), got_g, ref_g, low_g):
        assert g.dtype == dtype, f"{name} dtype {g.dtype}"
        assert_earned(name, g, r, lo, dtype)


@pytest.mark.parametrize("b,grid,m,d", SHAPES)
@pytest.mark.parametrize("options", [{}, OPTIONS], ids=["lovt-defaults", "options"])
def test_batched_matches_reference_float64(b, grid, m, d, options):
    regions, sentences, lengths = _inputs(b, grid, m, d)
    coef = torch.rand(4).tolist()
    _compare(lambda v, u: lovt_local_loss(v, u, lengths, grid=grid, impl="batched", **options),
             lambda v, u: RL.lovt_local_loss(v, u, lengths, grid=grid, **options), (regions, sentences), coef)


def test_weights_and_their_gradients():
    regions, sentences, lengths = _inputs(4, (3, 4), 6, 5)
    rw, sw = torch.rand(4, 12, dtype=torch.float64) + 0.05, torch.rand(4, 6, dtype=torch.float64) + 0.05
    coef = torch.rand(4).tolist()
    _compare(lambda v, u, a, c: lovt_local_loss(v, u, lengths, grid=(3, 4), region_weights=a, sentence_weights=c),
             lambda v, u, a, c: RL.lovt_local_loss(v, u, lengths, grid=(3, 4), region_weights=a, sentence_weights=c),
             (regions, sentences, rw, sw), coef)


def _attended(regions, sentences):
    """z̃ as a model with its own attention layers makes it: anything of the right shapes."""
    return torch.randn_like(regions), torch.randn_like(sentences)


@pytest.mark.parametrize("b,grid,m,d", SHAPES[1:4])
def test_given_attended_vectors_match_reference_float64(b, grid, m, d):
    """attended=(z̃ regions, z̃ sentences) from the caller (LoVT's projected attention): batched vs reference,
    gradients to z and to both z̃."""
    regions, sentences, lengths = _inputs(b, grid, m, d)
    ar, asent = _attended(regions, sentences)
    coef = torch.rand(4).tolist()
    _compare(lambda v, u, x, y: lovt_local_loss(v, u, lengths, grid=grid, attended=(x, y), impl="batched"),
             lambda v, u, x, y: RL.lovt_local_loss(v, u, lengths, grid=grid, attended=(x, y)),
             (regions, sentences, ar, asent), coef)


def test_given_attended_vectors_are_what_the_losses_score():
    """The op's own attention passed back in gives the default result; other z̃ give another (so the
    argument is used), equal to intra_sample_contrastive on (z, z̃) by hand."""
    regions, sentences, lengths = _inputs(3, (3, 4), 5, 6)
    own = RL.cross_attention(regions, sentences, lengths)
    default = lovt_local_loss(regions, sentences, lengths, grid=(3, 4))
    passed = lovt_local_loss(regions, sentences, lengths, grid=(3, 4), attended=own)
    for name in default:
        torch.testing.assert_close(passed[name], default[name], rtol=1e-12, atol=1e-12)
    ar, asent = _attended(regions, sentences)
    other = lovt_local_loss(regions, sentences, lengths, grid=(3, 4), attended=(ar, asent))
    assert (other["loss"] - default["loss"]).abs() > 1e-3
    valid = torch.arange(5)[None, :] < lengths[:, None]
    pos = RL.region_positive_weights((3, 4))
    by_hand = (*RL.intra_sample_contrastive(regions, ar, pos),
               *RL.intra_sample_contrastive(sentences, asent, torch.eye(5, dtype=torch.float64), valid=valid))
    for name, want in zip(RL.LOSS_NAMES, by_hand):
        torch.testing.assert_close(other[name], want, rtol=1e-12, atol=1e-12)


def test_nan_in_padded_attended_rows_does_not_leak():
    regions, sentences, lengths = _inputs(3, (2, 2), 4, 5)
    lengths = torch.tensor([4, 1, 2])
    ar, asent = _attended(regions, sentences)
    clean = lovt_local_loss(regions, sentences, lengths, grid=(2, 2), attended=(ar, asent))
    poisoned = asent.clone()
    for i, n in enumerate(lengths):
        poisoned[i, n:] = float("nan")
    poisoned.requires_grad_()
    got = lovt_local_loss(regions, sentences, lengths, grid=(2, 2), attended=(ar, poisoned))
    torch.testing.assert_close(got["loss"], clean["loss"], rtol=1e-12, atol=1e-12)
    got["loss"].backward()
    assert torch.isfinite(poisoned.grad).all()
    assert all(torch.all(poisoned.grad[i, n:] == 0) for i, n in enumerate(lengths))


def test_float32_earns_its_tolerance():
    regions, sentences, lengths = _inputs(6, (7, 7), 8, 32, dtype=torch.float32)
    coef = torch.rand(4).tolist()
    _compare(lambda v, u: lovt_local_loss(v, u, lengths, grid=(7, 7)),
             lambda v, u: RL.lovt_local_loss(v, u, lengths, grid=(7, 7)), (regions, sentences), coef,
             exact=False, dtype=torch.float32)


def test_non_contiguous_views():
    regions, sentences, lengths = _inputs(3, (2, 5), 4, 6)
    v = regions.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    u = torch.cat([sentences, sentences], dim=2)[:, :, ::2]  # strided last dim
    assert not v.is_contiguous() and not u.is_contiguous()
    got = lovt_local_loss(v, u, lengths, grid=(2, 5))
    ref = RL.lovt_local_loss(regions, u.contiguous(), lengths, grid=(2, 5))
    for name in got:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=1e-12)


def test_nan_padding_does_not_leak(monkeypatch):
    regions, sentences, lengths = _inputs(4, (3, 3), 5, 4)
    lengths = torch.tensor([5, 1, 3, 2])
    sw = torch.rand(4, 5, dtype=torch.float64) + 0.1
    clean = lovt_local_loss(regions, sentences, lengths, grid=(3, 3), sentence_weights=sw)
    poisoned, sw_poisoned = sentences.clone(), sw.clone()
    for i, n in enumerate(lengths):
        poisoned[i, n:] = float("nan")
        sw_poisoned[i, n:] = float("nan")
    poisoned.requires_grad_(), sw_poisoned.requires_grad_()
    poison_new_tensors(monkeypatch)  # and every torch.empty the op allocates starts as NaN
    got = lovt_local_loss(regions, poisoned, lengths, grid=(3, 3), sentence_weights=sw_poisoned)
    for name in clean:
        torch.testing.assert_close(got[name], clean[name], rtol=1e-12, atol=1e-12)
    got["loss"].backward()
    for grad in (poisoned.grad, sw_poisoned.grad):
        assert torch.isfinite(grad).all()
        for i, n in enumerate(lengths):
            assert torch.all(grad[i, n:] == 0)


def test_spatial_weighting_is_applied():
    """Fails if the batched path dropped the spatial positives (or their exp(−λd) smoothing)."""
    regions, sentences, lengths = _inputs(3, (5, 5), 4, 8)
    lovt = lovt_local_loss(regions, sentences, lengths, grid=(5, 5))
    plain = lovt_local_loss(regions, sentences, lengths, grid=(5, 5), distance_threshold=0.0)
    disc = lovt_local_loss(regions, sentences, lengths, grid=(5, 5), smooth_lambda=0.0)
    ref = RL.lovt_local_loss(regions, sentences, lengths, grid=(5, 5))
    for name in ("region_l2att", "region_att2l"):
        torch.testing.assert_close(lovt[name], ref[name], rtol=1e-12, atol=1e-12)
        assert (lovt[name] - plain[name]).abs() > 1e-3 and (lovt[name] - disc[name]).abs() > 1e-6, name


def test_impl_reference_and_env(monkeypatch):
    regions, sentences, lengths = _inputs(2, (2, 2), 3, 4)
    calls = []
    real = RL.lovt_local_loss
    monkeypatch.setattr(RL, "lovt_local_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref = lovt_local_loss(regions, sentences, lengths, grid=(2, 2), impl="reference")
    assert calls == [1]
    monkeypatch.setenv("CXRFAST_IMPL", "reference")
    lovt_local_loss(regions, sentences, lengths, grid=(2, 2))
    assert calls == [1, 1]
    monkeypatch.setenv("CXRFAST_IMPL", "triton")  # a path this op does not have: batched
    got = lovt_local_loss(regions, sentences, lengths, grid=(2, 2))
    assert calls == [1, 1]
    torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_compute_in_fp32(dtype):
    regions, sentences, lengths = _inputs(3, (3, 3), 4, 8, dtype=dtype)
    regions.requires_grad_(), sentences.requires_grad_()
    out = lovt_local_loss(regions, sentences, lengths, grid=(3, 3))
    assert all(v.dtype == torch.float32 for v in out.values())
    out["loss"].backward()
    assert regions.grad.dtype == dtype and sentences.grad.dtype == dtype
    ref = RL.lovt_local_loss(regions.detach().double(), sentences.detach().double(), lengths, grid=(3, 3))
    assert abs(out["loss"].item() - ref["loss"].item()) < 1e-4  # exact inputs, fp32 arithmetic


def test_compile_fullgraph():
    """fullgraph capture (no graph break) and AOT autograd of the batched path. backend="aot_eager":
    inductor's C++ codegen takes ~20 s cold on a 2-core CPU (3 s warm), over this file's budget; the
    inductor run is test_compile_inductor_cuda on the GPU machine."""
    regions, sentences, lengths = _inputs(3, (3, 4), 5, 6, dtype=torch.float32)
    sw = torch.rand(3, 5) + 0.1

    def f(v, u, w):
        return _mix(lovt_local_loss(v, u, lengths, grid=(3, 4), sentence_weights=w), [0.1, 0.2, 0.3, 0.4])

    eager = loss_and_grads(f, (regions, sentences, sw))
    compiled = loss_and_grads(torch.compile(f, fullgraph=True, backend="aot_eager"), (regions, sentences, sw))
    torch.testing.assert_close(compiled[0], eager[0])
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, h)


@pytest.mark.gpu
def test_cuda_matches_reference():
    regions, sentences, lengths = _inputs(16, (7, 7), 12, 128, dtype=torch.float32, device="cuda")
    coef = torch.rand(4).tolist()
    _compare(lambda v, u: lovt_local_loss(v, u, lengths, grid=(7, 7)),
             lambda v, u: RL.lovt_local_loss(v, u, lengths, grid=(7, 7)), (regions, sentences), coef,
             exact=False, dtype=torch.float32)


@pytest.mark.gpu
def test_compile_inductor_cuda():
    regions, sentences, lengths = _inputs(8, (7, 7), 9, 64, dtype=torch.float32, device="cuda")

    def f(v, u):
        return _mix(lovt_local_loss(v, u, lengths, grid=(7, 7)), [0.1, 0.2, 0.3, 0.4])

    eager = loss_and_grads(f, (regions, sentences))
    compiled = loss_and_grads(torch.compile(f, fullgraph=True), (regions, sentences))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- validation

def _ok():
    return torch.randn(2, 6, 4), torch.randn(2, 3, 4), torch.tensor([1, 3])


def _call(v=None, u=None, n=None, **kw):
    dv, du, dn = _ok()
    kw.setdefault("grid", (2, 3))
    return lovt_local_loss(dv if v is None else v, du if u is None else u, dn if n is None else n, **kw)


ERRORS = [
    (dict(v=[[1.0]]), TypeError, "`regions` must be a torch.Tensor"),
    (dict(v=torch.randn(6, 4)), ValueError, r"`regions` must be 3-D \[B, N, D\]"),
    (dict(u=torch.ones(2, 3, 4, dtype=torch.int64)), TypeError, "`sentences` must be a floating-point"),
    (dict(u=torch.randn(2, 0, 4)), ValueError, "`sentences` must be non-empty"),
    (dict(u=torch.randn(3, 3, 4)), ValueError, "batch sizes differ: `regions` has B=2, `sentences` has B=3"),
    (dict(u=torch.randn(2, 3, 5)), ValueError, "feature dims differ: `regions` has D=4, `sentences` has D=5"),
    (dict(u=torch.randn(2, 3, 4, device="meta")), ValueError, "`sentences` is on meta but `regions` is on cpu"),
    (dict(u=torch.randn(2, 3, 4, dtype=torch.float64)), TypeError, "`regions` is torch.float32 but `sentences`"),
    (dict(n="13"), TypeError, "`sentence_lengths` must be a 1-D integer tensor or a list of ints"),
    (dict(n=torch.tensor([1, 2, 3])), ValueError, r"`sentence_lengths` must have shape \[2\]"),
    (dict(n=torch.tensor([1.0, 3.0])), TypeError, "`sentence_lengths` must hold integers"),
    (dict(n=torch.tensor([1, 3], device="meta")), ValueError, "`sentence_lengths` is on meta"),
    (dict(n=torch.tensor([0, 3])), ValueError, r"`sentence_lengths` must lie in 1..M = 3 .* from 0 to 3"),
    (dict(n=torch.tensor([1, 4])), ValueError, r"`sentence_lengths` must lie in 1..M = 3 .* from 1 to 4"),
    (dict(grid=(3, 3)), ValueError, r"`grid` \(3, 3\) has H·W = 9 cells but `regions` has R = 6"),
    (dict(grid=6), ValueError, "`grid` must be a pair of positive ints"),
    (dict(grid=(2.0, 3)), ValueError, "`grid` must be a pair of positive ints"),
    (dict(temperature=0.0), ValueError, "`temperature` must be > 0, got 0.0"),
    (dict(temperature=-0.3), ValueError, "`temperature` must be > 0"),
    (dict(temperature=float("nan")), ValueError, "`temperature` must be a finite number"),
    (dict(attention_temperature=0), ValueError, "`attention_temperature` must be > 0"),
    (dict(distance_threshold=-0.1), ValueError, "`distance_threshold` must be ≥ 0"),
    (dict(smooth_lambda=-1.0), ValueError, "`smooth_lambda` must be ≥ 0"),
    (dict(region_weights=torch.rand(2, 5)), ValueError, r"`region_weights` must have shape \[2, 6\]"),
    (dict(sentence_weights=torch.ones(2, 3, dtype=torch.int64)), TypeError, "`sentence_weights` must be a float"),
    (dict(sentence_weights=torch.rand(2, 3, device="meta")), ValueError, "`sentence_weights` is on meta"),
    (dict(region_weights=-torch.rand(2, 6)), ValueError, "`region_weights` must be ≥ 0"),
    (dict(sentence_weights=torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])), ValueError,
     "`sentence_weights` must have a positive sum over each sample's valid positions"),
    (dict(v=torch.full((2, 6, 4), float("inf"))), ValueError, "`regions` contains 48 non-finite"),
    (dict(u=torch.tensor([[[float("nan")] * 4] * 3] * 2)), ValueError, "`sentences` contains 16 non-finite"),
    (dict(impl="triton"), ValueError, r"`impl` must be one of \('auto', 'batched', 'reference'\)"),
    (dict(attended=torch.randn(2, 6, 4)), TypeError, "`attended` must be None or a pair"),
    (dict(attended=(torch.randn(2, 6, 4), None)), TypeError, r"`attended\[1\]` must be a torch.Tensor"),
    (dict(attended=(torch.randn(2, 6, 4), torch.randn(2, 2, 4))), ValueError,
     r"`attended\[1\]` must have the shape of `sentences` \[2, 3, 4\]"),
    (dict(attended=(torch.randn(2, 6, 4, dtype=torch.float64), torch.randn(2, 3, 4))), TypeError,
     r"`regions` is torch.float32 but `attended\[0\]` is torch.float64"),
    (dict(attended=(torch.randn(2, 6, 4, device="meta"), torch.randn(2, 3, 4))), ValueError,
     r"`attended\[0\]` is on meta"),
    (dict(attended=(torch.full((2, 6, 4), float("nan")), torch.randn(2, 3, 4))), ValueError,
     r"`attended\[0\]` contains 48 non-finite"),
]


@pytest.mark.parametrize("kwargs,exc,match", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_errors_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _call(**kwargs)
