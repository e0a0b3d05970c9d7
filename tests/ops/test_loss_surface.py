"""What a new user meets around the losses: argument checks (the functional refuses what the modules
refuse), error prefixes, meta tensors, the nn modules (a fixed scale is never changed) and explain."""

import math
import warnings

import pytest
import torch

import cxrfast
from cxrfast import reference as R
from cxrfast.reference import lovt as RL

X, Y = torch.randn(4, 8), torch.randn(4, 8)


@pytest.mark.parametrize("scale", [-10.0, 0.0, torch.tensor(-1.0), torch.tensor(0.0)],
                         ids=["-10", "0", "tensor(-1)", "tensor(0)"])
def test_contrastive_refuses_a_scale_that_is_not_positive(scale):
    with pytest.raises(ValueError, match=r"contrastive_loss: `logit_scale` must be > 0 .*got -?[01]"):
        cxrfast.contrastive_loss(X, Y, scale)


@pytest.mark.parametrize("weights", [(-1, 2), (0, 0), (1, -0.5)])
@pytest.mark.parametrize("fn", ["contrastive_loss", "local_contrastive_loss"])
def test_weights_must_be_non_negative_with_a_positive_sum(weights, fn):
    if fn == "contrastive_loss":
        call = lambda: cxrfast.contrastive_loss(X, Y, 10.0, weights=weights)  # noqa: E731
    else:
        call = lambda: cxrfast.local_contrastive_loss(X[:, None], Y[:, None], [1] * 4, weights=weights)  # noqa: E731
    with pytest.raises(ValueError, match=rf"{fn}: `weights` must be ≥ 0 with a positive sum"):
        call()


def test_one_direction_only_is_allowed():
    torch.testing.assert_close(cxrfast.contrastive_loss(X, Y, 10.0, weights=(1, 0)),
                               R.contrastive_loss(X, Y, 10.0, weights=(1, 0)))


@pytest.mark.parametrize("temp", [0.0, -3.0])
def test_local_contrastive_refuses_a_temperature_that_is_not_positive(temp):
    with pytest.raises(ValueError, match="local_contrastive_loss: `temp_logits` must be > 0"):
        cxrfast.local_contrastive_loss(X[:, None], Y[:, None], [1] * 4, temp_logits=temp)


@pytest.mark.parametrize("lengths,exc,match", [
    (None, TypeError, r"`word_lengths` must be a 1-D integer tensor or a list of ints .*got NoneType"),
    ("abc", TypeError, r"`word_lengths` must be a 1-D integer tensor or a list of ints .*got str"),
    ([0, 1, 1, 1], ValueError, r"`word_lengths\[0\]` = 0"),
])
@pytest.mark.parametrize("fn", ["word_region_similarity", "local_contrastive_loss", "local_triplet_loss"])
def test_local_errors_name_the_function_that_was_called(fn, lengths, exc, match):
    with pytest.raises(exc, match=rf"^{fn}: " + match):
        getattr(cxrfast, fn)(X[:, None], Y[:, None], lengths)


def test_local_option_errors_name_the_function_that_was_called():
    with pytest.raises(ValueError, match="^local_triplet_loss: `temp_attention` must be > 0"):
        cxrfast.local_triplet_loss(X[:, None], Y[:, None], [1] * 4, temp_attention=0.0)
    with pytest.raises(ValueError, match=r"^local_contrastive_loss: `variant` must be one of"):
        cxrfast.local_contrastive_loss(X[:, None], Y[:, None], [1] * 4, variant="x")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_meta_tensors_give_shapes_without_data(reduction):
    """Shape inference on the meta device: every loss runs without reading a value."""
    x, y = torch.empty(6, 8, device="meta"), torch.empty(6, 8, device="meta")
    out = cxrfast.contrastive_loss(x, y, torch.tensor(10.0, device="meta"), reduction=reduction,
                                   groups=torch.empty(6, dtype=torch.long, device="meta"))
    expected = () if reduction == "mean" else (6,)
    assert out.device.type == "meta" and out.shape == expected
    red = "sum" if reduction == "mean" else "none"
    assert cxrfast.triplet_loss(x, y, reduction=red).shape == expected
    assert cxrfast.triplet_loss(x, y, negatives="all", reduction=red).shape == expected
    v, w = torch.empty(6, 5, 8, device="meta"), torch.empty(6, 7, 8, device="meta")
    n = torch.empty(6, dtype=torch.long, device="meta")
    assert cxrfast.word_region_similarity(v, w, n).shape == (6, 6)
    assert cxrfast.local_contrastive_loss(v, w, n, reduction=reduction).shape == expected
    assert cxrfast.local_triplet_loss(v, w, n, reduction=red).shape == expected
    lovt = cxrfast.lovt_local_loss(v[:, :4], w, n, grid=(2, 2), reduction=reduction)
    assert lovt["loss"].shape == expected and lovt["loss"].device.type == "meta"


# ---------------------------------------------------------------------------------------------- modules

def test_a_fixed_scale_is_never_clamped_or_changed():
    loss_fn = cxrfast.nn.ContrastiveLoss(logit_scale=1000.0, learnable=False)
    torch.testing.assert_close(loss_fn(X, Y), cxrfast.contrastive_loss(X, Y, 1000.0))
    assert loss_fn.logit_scale.item() == pytest.approx(1000.0, rel=1e-6)
    assert not list(loss_fn.parameters())


def test_the_default_scale_is_fixed():
    """The documented default (README, docstring): a fixed scale of 10 (ConVIRT / LoVT's τ = 0.1); CLIP's
    learnable temperature is asked for with learnable=True."""
    loss_fn = cxrfast.nn.ContrastiveLoss()
    assert not list(loss_fn.parameters())
    assert loss_fn.logit_scale.item() == pytest.approx(10.0)
    torch.testing.assert_close(loss_fn(X, Y), cxrfast.contrastive_loss(X, Y, 10.0))


def test_a_learnable_scale_starting_above_its_bound_is_refused():
    with pytest.raises(ValueError, match=r"ContrastiveLoss: `logit_scale` 1000.0 exceeds `max_logit_scale` 100.0"):
        cxrfast.nn.ContrastiveLoss(logit_scale=1000.0, learnable=True)
    cxrfast.nn.ContrastiveLoss(logit_scale=1000.0, learnable=True, max_logit_scale=2000.0)


def test_max_logit_scale_without_a_learnable_scale_is_refused():
    with pytest.raises(ValueError, match="`max_logit_scale` bounds a learnable scale"):
        cxrfast.nn.ContrastiveLoss(logit_scale=10.0, max_logit_scale=50.0)


@pytest.mark.parametrize("kw,match", [
    (dict(logit_scale=-1.0), r"`logit_scale` must be > 0"),
    (dict(logit_scale=float("nan")), r"`logit_scale` must be a finite number"),
    (dict(weights=(0, 0)), r"`weights` must be ≥ 0 with a positive sum"),
    (dict(reduction="batch"), r"`reduction` must be one of"),
])
def test_module_arguments_are_checked_when_it_is_built(kw, match):
    with pytest.raises(ValueError, match=match):
        cxrfast.nn.ContrastiveLoss(**kw)


def test_module_repr_and_readme_example_emit_no_warning():
    loss_fn = cxrfast.nn.ContrastiveLoss(logit_scale=1 / 0.07, learnable=True)
    img, txt = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = repr(loss_fn)
        loss_fn(img, txt).backward()
    assert "logit_scale=14.29" in text and "learnable=True" in text and "max_logit_scale=100" in text


@pytest.mark.parametrize("module,fn,kw", [
    ("ContrastiveLoss", "contrastive_loss", dict(logit_scale=10.0)),
    ("TripletLoss", "triplet_loss", dict()),
])
def test_modules_take_reduction_none(module, fn, kw):
    m = getattr(cxrfast.nn, module)(reduction="none", **kw)
    args = (kw["logit_scale"],) if kw else ()
    torch.testing.assert_close(m(X, Y), getattr(cxrfast, fn)(X, Y, *args, reduction="none"))


def test_lovt_module_is_the_function():
    regions, sentences = torch.randn(3, 6, 5), torch.randn(3, 4, 5)
    lengths, rw = torch.tensor([4, 1, 2]), torch.rand(3, 6) + 0.1
    m = cxrfast.nn.LovtLocalLoss(grid=(2, 3), temperature=0.2, smooth_lambda=2.0)
    got = m(regions, sentences, lengths, region_weights=rw)
    ref = RL.lovt_local_loss(regions, sentences, lengths, grid=(2, 3), temperature=0.2, smooth_lambda=2.0,
                             region_weights=rw)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])
    assert "grid=(2, 3)" in repr(m) and "temperature=0.2" in repr(m)
    assert "LovtLocalLoss" in cxrfast.nn.__all__


def test_lovt_module_checks_its_arguments_when_built():
    with pytest.raises(ValueError, match="lovt_local_loss: `temperature` must be > 0"):
        cxrfast.nn.LovtLocalLoss(grid=(2, 3), temperature=0)
    with pytest.raises(ValueError, match="`grid` must be a pair of positive ints"):
        cxrfast.nn.LovtLocalLoss(grid=6)


# ---------------------------------------------------------------------------------------------- explain

def test_explain_covers_lovt_local_loss(monkeypatch):
    monkeypatch.delenv("CXRFAST_IMPL", raising=False)
    regions, sentences, lengths = torch.randn(2, 6, 4), torch.randn(2, 3, 4), torch.tensor([1, 3])
    text = cxrfast.explain("lovt_local_loss", regions, sentences, lengths, grid=(2, 3))
    assert text.startswith("lovt_local_loss: batched (auto; ")
    assert "no Triton kernel" in text
    monkeypatch.setenv("CXRFAST_IMPL", "reference")
    assert cxrfast.explain("lovt_local_loss", regions, sentences, lengths, grid=(2, 3)).startswith(
        "lovt_local_loss: reference (auto; CXRFAST_IMPL=reference")


def test_explain_lists_every_op_when_the_name_is_unknown():
    with pytest.raises(ValueError, match=r"explain: unknown op 'nope'; known: .*'lovt_local_loss'"):
        cxrfast.explain("nope")


def test_ops_and_nn_namespaces_export_only_their_api():
    import cxrfast.nn
    import cxrfast.ops

    for mod in (cxrfast.nn, cxrfast.ops):
        assert sorted(dir(mod)) == sorted(mod.__all__), mod.__name__


def test_per_sample_loss_mean_is_the_loss():
    per = cxrfast.contrastive_loss(X, Y, 10.0, reduction="none")
    assert math.isclose(per.mean().item(), cxrfast.contrastive_loss(X, Y, 10.0).item(), rel_tol=1e-5)


def test_lovt_takes_lengths_as_the_other_local_losses_do():
    """A list, or a CPU tensor for features elsewhere, as word_region_similarity takes word_lengths."""
    regions, sentences = torch.randn(3, 6, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    as_tensor = cxrfast.lovt_local_loss(regions, sentences, torch.tensor([4, 1, 2]), grid=(2, 3))
    as_list = cxrfast.lovt_local_loss(regions, sentences, [4, 1, 2], grid=(2, 3))
    for k in as_tensor:
        torch.testing.assert_close(as_list[k], as_tensor[k])
    with pytest.raises(TypeError, match=r"lovt_local_loss: `sentence_lengths` must be a 1-D integer tensor or a list "
                                        r"of ints .*got NoneType"):
        cxrfast.lovt_local_loss(regions, sentences, None, grid=(2, 3))
