"""reduction="none": per-sample losses of every loss op, each implementation against the float64 reference
(DESIGN's earned tolerance), values and gradients. The gradient check weighs the B losses with random
coefficients, so a per-sample value that is right only in the sum fails."""

import pytest
import torch
from numerics import assert_earned, loss_and_grads

import cxrfast
from cxrfast import reference as R
from cxrfast.ops.lovt import lovt_local_loss
from cxrfast.reference import lovt as RL
from cxrfast.reference.local import local_contrastive_loss as ref_local_contrastive
from cxrfast.reference.triplet import triplet_from_scores


def _earned(fn_got, fn_ref, tensors, dtype, names, shape, amplification=1.0):
    """fn_got / fn_ref: (*tensors) -> per-sample [B]. Values and the gradients of a random combination."""
    coef = torch.rand(shape, dtype=torch.float64) + 0.5
    got = fn_got(*tensors)
    assert got.shape == shape, f"shape {tuple(got.shape)}, expected {shape}"
    cpu = [t.detach().cpu() for t in tensors]
    ref64 = fn_ref(*[t.double() if t.is_floating_point() else t for t in cpu])
    ref_lo = fn_ref(*cpu)
    assert_earned("per-sample losses", got, ref64, ref_lo, dtype, amplification=amplification)

    def mix(fn, ts):
        return loss_and_grads(lambda *a: (fn(*a) * coef.to(a[0].device, torch.promote_types(a[0].dtype,
                                                                                         torch.float32))).sum(), ts)
    _, g = mix(fn_got, tensors)
    _, g64 = mix(fn_ref, [t.double() if t.is_floating_point() else t for t in cpu])
    _, g_lo = mix(fn_ref, cpu)
    for name, a, b, c in zip(names, g, g64, g_lo):
        assert_earned(name, a, b, c, dtype, amplification=amplification)


CONTRASTIVE = [dict(), dict(weights=(0.75, 0.25)), dict(label_smoothing=0.1), dict(groups="views"),
               dict(groups="views", label_smoothing=0.2, weights=(0.3, 0.7)), dict(normalize=False)]


def _ids(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "plain"


@pytest.mark.parametrize("impl", ["chunked", "triton", "reference"])
@pytest.mark.parametrize("opts", CONTRASTIVE, ids=_ids)
def test_contrastive_per_sample(impl, opts, device):
    dev = device if impl == "triton" else "cpu"
    B, D = 23, 19
    opts = dict(opts)
    if opts.get("groups") == "views":
        opts["groups"] = (torch.arange(B, device=dev) // 3) * 7 - 5
    spread = 0.3 if opts.get("normalize") is False else 1.0
    x = (torch.randn(B, D, dtype=torch.float64) * spread).float().to(dev)
    y = (torch.randn(B, D, dtype=torch.float64) * spread).float().to(dev)
    scale = torch.tensor(3.0, device=dev)
    ref_opts = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    _earned(lambda a, b, s: cxrfast.contrastive_loss(a, b, s, reduction="none", impl=impl, **opts),
            lambda a, b, s: R.contrastive_loss(a, b, s, reduction="none", **ref_opts),
            (x, y, scale), torch.float32, ("d image_emb", "d text_emb", "d logit_scale"), (B,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_contrastive_per_sample_16bit_triton(dtype, device):
    x, y = torch.randn(29, 24, device=device).to(dtype), torch.randn(29, 24, device=device).to(dtype)
    groups = torch.arange(29, device=device) // 2
    _earned(lambda a, b: cxrfast.contrastive_loss(a, b, 5.0, groups=groups, label_smoothing=0.1, reduction="none",
                                                  impl="triton"),
            lambda a, b: R.contrastive_loss(a, b, torch.tensor(5.0, dtype=torch.promote_types(a.dtype, torch.float32)),
                                            groups=groups.cpu(), label_smoothing=0.1, reduction="none"),
            (x, y), dtype, ("d image_emb", "d text_emb"), (29,))


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_contrastive_sum_is_the_sum_of_the_per_sample_losses(impl, device):
    dev = device if impl == "triton" else "cpu"
    x, y = torch.randn(11, 7, device=dev), torch.randn(11, 7, device=dev)
    per = cxrfast.contrastive_loss(x, y, 2.0, reduction="none", impl=impl)
    total = cxrfast.contrastive_loss(x, y, 2.0, reduction="sum", impl=impl)
    mean = cxrfast.contrastive_loss(x, y, 2.0, impl=impl)
    torch.testing.assert_close(per.sum(), total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per.mean(), mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["chunked", "triton", "reference"])
@pytest.mark.parametrize("negatives", ["hardest", "all"])
@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_triplet_per_sample(impl, negatives, distance, device):
    dev = device if impl == "triton" else "cpu"
    x, y = torch.randn(21, 13, device=dev) * 0.3, torch.randn(21, 13, device=dev) * 0.3
    kw = dict(margin=0.5, negatives=negatives, distance=distance, reduction="none")
    _earned(lambda a, b: cxrfast.triplet_loss(a, b, impl=impl, **kw), lambda a, b: R.triplet_loss(a, b, **kw),
            (x, y), torch.float32, ("d image_emb", "d text_emb"), (21,))


def _local_inputs(B=5, R_=6, L=7, D=5, dtype=torch.float64):
    regions, words = torch.randn(B, R_, D, dtype=dtype), torch.randn(B, L, D, dtype=dtype)
    lengths = torch.randint(1, L + 1, (B,))
    lengths[0] = L
    return regions, words, lengths


@pytest.mark.parametrize("impl", ["chunked", "triton", "reference"])
def test_local_contrastive_per_sample(impl, device):
    dev = device if impl == "triton" else "cpu"
    regions, words, lengths = _local_inputs(dtype=torch.float32)
    kw = dict(temp_logits=4.0, weights=(0.5, 2.0), reduction="none")
    _earned(lambda v, w: cxrfast.local_contrastive_loss(v, w, lengths.to(dev), impl=impl, **kw),
            lambda v, w: ref_local_contrastive(v, w, lengths, **kw),
            (regions.to(dev), words.to(dev)), torch.float32, ("d regions", "d words"), (5,))


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_local_triplet_per_sample(negatives):
    regions, words, lengths = _local_inputs()
    kw = dict(margin=1.5, negatives=negatives)
    got, g = loss_and_grads(lambda v, w: cxrfast.local_triplet_loss(v, w, lengths, reduction="none", **kw)
                            @ torch.arange(1.0, 6.0, dtype=torch.float64), (regions, words))
    ref, g_ref = loss_and_grads(lambda v, w: triplet_from_scores(R.word_region_similarity(v, w, lengths),
                                                                 reduction="none", **kw)
                                @ torch.arange(1.0, 6.0, dtype=torch.float64), (regions, words))
    assert ref > 0
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert cxrfast.local_triplet_loss(regions, words, lengths, reduction="none").shape == (5,)


@pytest.mark.parametrize("impl", ["batched", "reference"])
def test_lovt_per_sample(impl):
    B, grid, M, D = 4, (2, 3), 5, 6
    regions, sentences = torch.randn(B, 6, D), torch.randn(B, M, D)
    lengths = torch.tensor([5, 1, 3, 2])
    for name in RL.LOSS_NAMES + ("loss",):
        _earned(lambda v, u: lovt_local_loss(v, u, lengths, grid=grid, reduction="none", impl=impl)[name],
                lambda v, u: RL.lovt_local_loss(v, u, lengths, grid=grid, reduction="none")[name],
                (regions, sentences), torch.float32, ("d regions", "d sentences"), (B,))


@pytest.mark.parametrize("fn", [
    lambda x, y: cxrfast.contrastive_loss(x, y, 2.0, reduction="batch"),
    lambda x, y: cxrfast.triplet_loss(x, y, reduction="batch"),
    lambda x, y: cxrfast.local_contrastive_loss(x[:, None], y[:, None], [1, 1, 1], reduction="batch"),
    lambda x, y: cxrfast.local_triplet_loss(x[:, None], y[:, None], [1, 1, 1], reduction="batch"),
    lambda x, y: lovt_local_loss(x[:, None], y[:, None], torch.ones(3, dtype=torch.long), grid=(1, 1),
                                 reduction="batch"),
], ids=["contrastive", "triplet", "local_contrastive", "local_triplet", "lovt"])
def test_unknown_reduction_is_refused_by_name(fn):
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"`reduction` must be one of \(.*'none'.*\), got 'batch'"):
        fn(x, y)
