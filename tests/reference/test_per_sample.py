"""reduction="none" in the reference: the per-sample losses are what the reductions add up, and each one is
the loss of its own pair written out with torch's cross-entropy / the VSE++ hinges."""

import pytest
import torch
import torch.nn.functional as F

from cxrfast import reference as R
from cxrfast.reference import lovt as RL
from cxrfast.reference.triplet import triplet_from_scores


def _pair(b=7, d=5):
    return torch.randn(b, d, dtype=torch.float64), torch.randn(b, d, dtype=torch.float64)


@pytest.mark.parametrize("kw", [{}, dict(weights=(0.75, 0.25)), dict(label_smoothing=0.2),
                                dict(groups=torch.tensor([3, 3, 1, 8, 8, 8, 2]), weights=(0.3, 0.9))],
                         ids=["plain", "weights", "smoothing", "groups"])
def test_contrastive_per_sample_adds_up_to_the_mean_and_the_sum(kw):
    x, y = _pair()
    per = R.contrastive_loss(x, y, 4.0, reduction="none", **kw)
    assert per.shape == (7,)
    torch.testing.assert_close(per.mean(), R.contrastive_loss(x, y, 4.0, **kw), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(per.sum(), R.contrastive_loss(x, y, 4.0, reduction="sum", **kw),
                               rtol=1e-13, atol=1e-13)


def test_contrastive_per_sample_is_the_two_cross_entropies_of_its_pair():
    x, y = _pair()
    s = 4.0 * F.normalize(x) @ F.normalize(y).t()
    labels = torch.arange(7)
    expected = 0.75 * F.cross_entropy(s, labels, reduction="none") + 0.25 * F.cross_entropy(s.t(), labels,
                                                                                          reduction="none")
    got = R.contrastive_loss(x, y, 4.0, weights=(0.75, 0.25), reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)


def test_contrastive_per_sample_with_groups_uses_each_columns_own_positives():
    """Column j's cross-entropy targets the images of j's group: not the row term of j mirrored."""
    x, y = _pair(5, 4)
    groups = torch.tensor([0, 0, 0, 1, 2])
    s = 3.0 * F.normalize(x) @ F.normalize(y).t()
    pos = (groups[:, None] == groups[None, :]).double()
    q = pos / pos.sum(1, keepdim=True)
    rows = -(q * torch.log_softmax(s, 1)).sum(1)
    cols = -(q * torch.log_softmax(s.t(), 1)).sum(1)
    got = R.contrastive_loss(x, y, 3.0, groups=groups, reduction="none")
    torch.testing.assert_close(got, 0.5 * rows + 0.5 * cols, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_triplet_per_sample_is_the_image_and_the_text_anchor_of_the_pair(negatives):
    x, y = _pair()
    s = F.normalize(x) @ F.normalize(y).t()
    eye = torch.eye(7, dtype=torch.bool)
    cost_img = (0.4 + s - s.diagonal()[:, None]).clamp(min=0).masked_fill(eye, 0)
    cost_txt = (0.4 + s - s.diagonal()[None, :]).clamp(min=0).masked_fill(eye, 0)
    if negatives == "hardest":
        expected = cost_img.max(1).values + cost_txt.max(0).values
    else:
        expected = cost_img.sum(1) + cost_txt.sum(0)
    got = R.triplet_loss(x, y, margin=0.4, negatives=negatives, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got.sum(), R.triplet_loss(x, y, margin=0.4, negatives=negatives), rtol=1e-13,
                               atol=1e-13)
    torch.testing.assert_close(got.mean(), R.triplet_loss(x, y, margin=0.4, negatives=negatives,
                                                          reduction="mean"), rtol=1e-13, atol=1e-13)
    assert triplet_from_scores(s, margin=0.4, negatives=negatives, reduction="none").shape == (7,)


def test_local_contrastive_per_sample():
    regions, words = torch.randn(4, 6, 5, dtype=torch.float64), torch.randn(4, 7, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5, 1])
    S = 3.0 * R.word_region_similarity(regions, words, lengths)
    labels = torch.arange(4)
    expected = 0.5 * F.cross_entropy(S, labels, reduction="none") + 2.0 * F.cross_entropy(S.t(), labels,
                                                                                        reduction="none")
    got = R.local_contrastive_loss(regions, words, lengths, temp_logits=3.0, weights=(0.5, 2.0), reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got.mean(), R.local_contrastive_loss(regions, words, lengths, temp_logits=3.0,
                                                                    weights=(0.5, 2.0)), rtol=1e-13, atol=1e-13)


def test_lovt_per_sample_parts_average_to_the_batch_losses():
    B, grid, M, D = 3, (2, 3), 4, 5
    regions, sentences = torch.randn(B, 6, D, dtype=torch.float64), torch.randn(B, M, D, dtype=torch.float64)
    lengths = torch.tensor([4, 1, 3])
    per = RL.lovt_local_loss(regions, sentences, lengths, grid=grid, reduction="none")
    full = RL.lovt_local_loss(regions, sentences, lengths, grid=grid)
    assert set(per) == set(full)
    for name in full:
        assert per[name].shape == (B,), name
        torch.testing.assert_close(per[name].mean(), full[name], rtol=1e-13, atol=1e-13)
    # each sample's losses are those of the sample alone
    for b in range(B):
        alone = RL.lovt_local_loss(regions[b:b + 1], sentences[b:b + 1], lengths[b:b + 1], grid=grid)
        for name in full:
            torch.testing.assert_close(per[name][b], alone[name], rtol=1e-12, atol=1e-13)


def test_reference_rejects_an_unknown_reduction():
    x, y = _pair()
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        R.contrastive_loss(x, y, 2.0, reduction="batch")
