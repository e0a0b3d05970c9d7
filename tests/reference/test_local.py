"""The word–region similarity definition against GLoRIA's released loop, and its own properties."""

import pytest
import torch

from cxrfast.bench.baselines import gloria_local_loss
from cxrfast.reference.local import local_contrastive_loss, word_region_similarity


def _batch(b=5, r=7, l=6, d=4, dtype=torch.float64):
    regions = torch.randn(b, r, d, dtype=dtype)
    words = torch.randn(b, l, d, dtype=dtype)
    lengths = torch.randint(1, l + 1, (b,))
    lengths[0], lengths[-1] = 1, l  # both extremes
    return regions, words, lengths


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_gloria_variant_is_gloria_local_loss(aggregate):
    regions, words, lengths = _batch()
    loss0, loss1, maps, sims = gloria_local_loss(regions, words, lengths, agg=aggregate)
    got, attn = word_region_similarity(regions, words, lengths, aggregate=aggregate, return_attention=True)
    torch.testing.assert_close(got, sims, rtol=1e-12, atol=1e-12)
    for i, m in enumerate(maps):  # matched-pair attention maps: [1, n_i, R] in GLoRIA
        torch.testing.assert_close(attn[i, : lengths[i]], m[0], rtol=1e-12, atol=1e-12)
        assert torch.all(attn[i, lengths[i]:] == 0)
    loss = local_contrastive_loss(regions, words, lengths, aggregate=aggregate)
    torch.testing.assert_close(loss, loss0 + loss1, rtol=1e-12, atol=1e-12)


def test_single_variant_matches_a_pair_loop():
    regions, words, lengths = _batch()
    got = word_region_similarity(regions, words, lengths, variant="single", temp_attention=3.0, temp_aggregate=2.0)
    for b in range(regions.shape[0]):
        for i in range(words.shape[0]):
            w = words[i, : lengths[i]]  # [n, D]
            alpha = torch.softmax(3.0 * (regions[b] @ w.t()), dim=0)  # over regions: [R, n]
            c = alpha.t() @ regions[b]  # [n, D]
            cos = (c * w).sum(1) / (c.norm(dim=1) * w.norm(dim=1)).clamp(min=1e-8)
            torch.testing.assert_close(got[b, i], torch.logsumexp(2.0 * cos, 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["gloria", "single"])
def test_padding_is_never_read(variant):
    regions, words, lengths = _batch()
    words = words.requires_grad_()
    ref = word_region_similarity(regions, words, lengths, variant=variant)
    poisoned = words.detach().clone()
    for i, n in enumerate(lengths):
        poisoned[i, n:] = float("nan")
    poisoned.requires_grad_()
    got = word_region_similarity(regions, poisoned, lengths, variant=variant)
    torch.testing.assert_close(got, ref)
    got.sum().backward()
    assert torch.isfinite(poisoned.grad).all()
    for i, n in enumerate(lengths):
        assert torch.all(poisoned.grad[i, n:] == 0)


def test_rectangular_batches():
    regions, words, lengths = _batch(b=3)
    words2, lengths2 = torch.randn(5, 6, 4, dtype=torch.float64), torch.tensor([1, 6, 3, 2, 5])
    got = word_region_similarity(regions, words2, lengths2)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got[:, 2], word_region_similarity(regions, words2[2:3], lengths2[2:3])[:, 0])


@pytest.mark.parametrize("variant", ["gloria", "single"])
def test_gradcheck(variant):
    regions, words, lengths = _batch(b=3, r=4, l=3, d=3)
    regions.requires_grad_(), words.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, w: word_region_similarity(v, w, lengths, variant=variant, aggregate="mean"), (regions, words))


def test_bad_variant_and_aggregate():
    regions, words, lengths = _batch()
    with pytest.raises(ValueError, match="`variant` must be one of"):
        word_region_similarity(regions, words, lengths, variant="double")
    with pytest.raises(ValueError, match="`aggregate` must be one of"):
        word_region_similarity(regions, words, lengths, aggregate="max")
