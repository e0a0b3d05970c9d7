"""The definitions themselves: against the papers' formulas, loops, and gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from cxrfast import reference as R


def _pair(b, d, dtype=torch.float64):
    return torch.randn(b, d, dtype=dtype), torch.randn(b, d, dtype=dtype)


def test_contrastive_is_clip_loss():
    x, y = _pair(9, 6)
    scale = 7.5
    s = scale * F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    labels = torch.arange(9)
    clip = (F.cross_entropy(s, labels) + F.cross_entropy(s.t(), labels)) / 2
    torch.testing.assert_close(R.contrastive_loss(x, y, scale), clip, rtol=1e-12, atol=1e-12)


def test_contrastive_weights_and_label_smoothing_match_cross_entropy():
    x, y = _pair(11, 5)
    s = 3.0 * x @ y.t()
    labels = torch.arange(11)
    expect = (0.75 * F.cross_entropy(s, labels, label_smoothing=0.2)
              + 0.25 * F.cross_entropy(s.t(), labels, label_smoothing=0.2))
    got = R.contrastive_loss(x, y, 3.0, normalize=False, weights=(0.75, 0.25), label_smoothing=0.2)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_contrastive_groups_is_mean_log_likelihood_over_positives():
    x, y = _pair(6, 4)
    groups = torch.tensor([3, 3, 8, 1, 8, 8])
    s = 2.0 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    i2t = t2i = 0.0
    for i in range(6):
        pos = [j for j in range(6) if groups[j] == groups[i]]
        i2t = i2t - torch.log_softmax(s[i], 0)[pos].mean()
        t2i = t2i - torch.log_softmax(s[:, i], 0)[pos].mean()
    expect = 0.5 * i2t / 6 + 0.5 * t2i / 6
    torch.testing.assert_close(R.contrastive_loss(x, y, 2.0, groups=groups), expect, rtol=1e-12, atol=1e-12)


def test_contrastive_distinct_groups_equal_no_groups():
    x, y = _pair(5, 3)
    torch.testing.assert_close(R.contrastive_loss(x, y, 4.0, groups=torch.tensor([9, 2, 7, 1, 0])),
                               R.contrastive_loss(x, y, 4.0))


def _vsepp_loop(x, y, margin, max_violation, cosine=True):
    """VSE++'s ContrastiveLoss, written as loops over anchors."""
    if cosine:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    s = x @ y.t()
    n = s.shape[0]
    total = 0.0
    for i in range(n):
        hinges_img = [(margin + s[i, j] - s[i, i]).clamp(min=0) for j in range(n) if j != i]
        hinges_txt = [(margin + s[j, i] - s[i, i]).clamp(min=0) for j in range(n) if j != i]
        if hinges_img:
            agg = max if max_violation else sum
            total = total + agg(hinges_img) + agg(hinges_txt)
    return torch.as_tensor(total, dtype=s.dtype)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_triplet_matches_vsepp_loop(negatives, distance):
    x, y = _pair(7, 5)
    got = R.triplet_loss(x, y, margin=0.3, negatives=negatives, distance=distance)
    expect = _vsepp_loop(x, y, 0.3, negatives == "hardest", cosine=distance == "cosine")
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_triplet_joimternet_cosine_distance_form():
    """JoImTeRNet writes [m + d(i,i) − d(i,j)]₊ with d = 1 − cos: the same loss."""
    x, y = _pair(6, 4)
    d = 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    eye = torch.eye(6, dtype=torch.bool)
    img = (0.5 + d.diagonal()[:, None] - d).clamp(min=0).masked_fill(eye, 0).sum()
    txt = (0.5 + d.diagonal()[None, :] - d).clamp(min=0).masked_fill(eye, 0).sum()
    torch.testing.assert_close(R.triplet_loss(x, y, margin=0.5, negatives="all"), img + txt)


def test_triplet_single_pair_has_no_negatives():
    x, y = _pair(1, 4)
    assert R.triplet_loss(x, y).item() == 0.0


def test_gradcheck_contrastive():
    x, y = _pair(5, 4)
    x.requires_grad_(), y.requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 1, 1, 2, 0])
    assert torch.autograd.gradcheck(
        lambda a, b, s: R.contrastive_loss(a, b, s, groups=groups, label_smoothing=0.1, weights=(0.7, 0.3)),
        (x, y, scale))


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_gradcheck_triplet(negatives):
    x, y = _pair(5, 4)
    x.requires_grad_(), y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: R.triplet_loss(a, b, margin=0.4, negatives=negatives), (x, y))
