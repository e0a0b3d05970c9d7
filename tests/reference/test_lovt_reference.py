"""LoVT's local losses: the definition against a per-sample loop of LoVT's formulas, and its properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from cxrfast.reference.lovt import LOSS_NAMES, cross_attention, lovt_local_loss, region_positive_weights


def _batch(b=4, grid=(3, 4), m=5, d=6, dtype=torch.float64):
    regions = torch.randn(b, grid[0] * grid[1], d, dtype=dtype)
    sentences = torch.randn(b, m, d, dtype=dtype)
    lengths = torch.randint(1, m + 1, (b,))
    lengths[0], lengths[-1] = 1, m  # both extremes
    return regions, sentences, lengths


def _positives_by_hand(grid, threshold, lam):
    """[R, R] P[i, j] = [d ≤ θ] exp(−λ d), d = hypot(Δh, Δw) / hypot(H, W), cells in row-major order."""
    H, W = grid
    cells = [(h, w) for h in range(H) for w in range(W)]
    diag = math.hypot(H, W)
    rows = []
    for hi, wi in cells:
        row = []
        for hj, wj in cells:
            d = math.hypot(hi - hj, wi - wj) / diag
            row.append(math.exp(-lam * d) if d <= threshold else 0.0)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def _soft_ce(scores, targets, weights):
    """Σ_i w_i · CE(scores[i], soft target targets[i]): LoVT's loss, as a cross-entropy per anchor."""
    return (weights * -(targets * torch.log_softmax(scores, dim=1)).sum(1)).sum()


def _loop(regions, sentences, lengths, grid, tau=0.3, tau_att=1.0, threshold=0.5, lam=1.0, rw=None, sw=None):
    """One sample at a time, the padding sliced off: LoVT's attention and local loss written out."""
    B, R, D = regions.shape
    P = _positives_by_hand(grid, threshold, lam).to(regions.dtype)
    P = P / P.sum(1, keepdim=True)
    total = dict.fromkeys(LOSS_NAMES, 0.0)
    for b in range(B):
        n = int(lengths[b])
        v, u = regions[b], sentences[b, :n]
        s = v @ u.t() / (math.sqrt(D) * tau_att)  # [R, n]
        to_regions = torch.softmax(s, dim=1) @ u  # each region attends over the report's sentences
        to_sentences = torch.softmax(s, dim=0).t() @ v  # each sentence attends over the image's regions
        w_r = torch.full((R,), 1.0 / R, dtype=v.dtype) if rw is None else rw[b] / rw[b].sum()
        w_s = torch.full((n,), 1.0 / n, dtype=v.dtype) if sw is None else sw[b, :n] / sw[b, :n].sum()
        S_r = F.normalize(v, dim=1) @ F.normalize(to_regions, dim=1).t() / tau
        S_s = F.normalize(u, dim=1) @ F.normalize(to_sentences, dim=1).t() / tau
        eye = torch.eye(n, dtype=v.dtype)
        total["region_l2att"] = total["region_l2att"] + _soft_ce(S_r, P, w_r) / B
        total["region_att2l"] = total["region_att2l"] + _soft_ce(S_r.t(), P, w_r) / B
        total["sentence_l2att"] = total["sentence_l2att"] + _soft_ce(S_s, eye, w_s) / B
        total["sentence_att2l"] = total["sentence_att2l"] + _soft_ce(S_s.t(), eye, w_s) / B
    return total


@pytest.mark.parametrize("options", [
    {},
    dict(tau=0.07, tau_att=2.5, threshold=0.3, lam=3.0),
    dict(threshold=0.0),  # plain per-region InfoNCE
    dict(lam=0.0),  # LoVT's no_spatial ablation: the uniform disc
    dict(weights=True),  # LoVT_100: per-local weights from the attention pooling
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "lovt-defaults")
def test_matches_a_per_sample_loop(options):
    regions, sentences, lengths = _batch()
    options = dict(options)
    rw = sw = None
    if options.pop("weights", False):
        rw, sw = torch.rand(4, 12, dtype=torch.float64) + 0.1, torch.rand(4, 5, dtype=torch.float64) + 0.1
    expect = _loop(regions, sentences, lengths, (3, 4), rw=rw, sw=sw, **options)
    names = dict(tau="temperature", tau_att="attention_temperature", threshold="distance_threshold",
                 lam="smooth_lambda")
    got = lovt_local_loss(regions, sentences, lengths, grid=(3, 4), region_weights=rw, sentence_weights=sw,
                          **{names[k]: v for k, v in options.items()})
    for name in LOSS_NAMES:
        torch.testing.assert_close(got[name], expect[name], rtol=1e-12, atol=1e-12, msg=name)
    torch.testing.assert_close(got["loss"], sum(expect.values()) / 4, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid,threshold,lam", [((6, 8), 0.5, 1.0), ((7, 7), 0.5, 1.0), ((5, 3), 0.3, 0.0),
                                                ((4, 4), 0.0, 1.0), ((1, 9), 0.25, 2.0)])
def test_region_positive_weights_are_lovts_distance_formula(grid, threshold, lam):
    got = region_positive_weights(grid, distance_threshold=threshold, smooth_lambda=lam)
    torch.testing.assert_close(got, _positives_by_hand(grid, threshold, lam), rtol=1e-14, atol=0)
    assert torch.equal(got, got.t()) and torch.all(got.diagonal() == 1)


def test_boundary_of_the_disc_is_inside():
    """(3, 4) cells apart on a 6 × 8 grid is exactly half the diagonal (10): `<=` keeps it a positive."""
    P = region_positive_weights((6, 8), distance_threshold=0.5, smooth_lambda=1.0)
    i, j = 0, 3 * 8 + 4
    assert P[i, j] == pytest.approx(math.exp(-0.5), rel=1e-15)
    assert P[i, 3 * 8 + 5] == 0  # (3, 5): hypot = 5.83 > 5


def test_spatial_weighting_changes_only_the_region_losses():
    regions, sentences, lengths = _batch(grid=(4, 4))
    lovt = lovt_local_loss(regions, sentences, lengths, grid=(4, 4))
    plain = lovt_local_loss(regions, sentences, lengths, grid=(4, 4), distance_threshold=0.0)
    disc = lovt_local_loss(regions, sentences, lengths, grid=(4, 4), smooth_lambda=0.0)
    for name in ("region_l2att", "region_att2l"):
        assert (lovt[name] - plain[name]).abs() > 1e-3, f"{name}: the spatial positives make no difference"
        assert (lovt[name] - disc[name]).abs() > 1e-6, f"{name}: the exp(−λd) smoothing makes no difference"
    for name in ("sentence_l2att", "sentence_att2l"):
        torch.testing.assert_close(lovt[name], plain[name], rtol=0, atol=0)


def test_threshold_zero_is_per_region_infonce():
    regions, sentences, lengths = _batch(b=3)
    to_regions, _ = cross_attention(regions, sentences, lengths)
    S = F.normalize(regions, dim=-1) @ F.normalize(to_regions, dim=-1).transpose(1, 2) / 0.3
    labels = torch.arange(12).repeat(3)
    got = lovt_local_loss(regions, sentences, lengths, grid=(3, 4), distance_threshold=0.0)
    torch.testing.assert_close(got["region_l2att"], F.cross_entropy(S.reshape(-1, 12), labels), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["region_att2l"], F.cross_entropy(S.transpose(1, 2).reshape(-1, 12), labels),
                               rtol=1e-12, atol=1e-12)


def test_samples_are_independent():
    """Intra-sample: the batch loss is the mean of the one-sample losses (no cross-sample term)."""
    regions, sentences, lengths = _batch(b=5)
    whole = lovt_local_loss(regions, sentences, lengths, grid=(3, 4))
    parts = [lovt_local_loss(regions[i:i + 1], sentences[i:i + 1], lengths[i:i + 1], grid=(3, 4)) for i in range(5)]
    for name in whole:
        torch.testing.assert_close(whole[name], sum(p[name] for p in parts) / 5, rtol=1e-12, atol=1e-12)


def test_padding_is_never_read():
    regions, sentences, lengths = _batch()
    sw = torch.rand(4, 5, dtype=torch.float64) + 0.1
    ref = lovt_local_loss(regions, sentences, lengths, grid=(3, 4), sentence_weights=sw)
    poisoned, sw_poisoned = sentences.clone(), sw.clone()
    for i, n in enumerate(lengths):
        poisoned[i, n:] = float("nan")
        sw_poisoned[i, n:] = float("nan")
    poisoned.requires_grad_()
    got = lovt_local_loss(regions, poisoned, lengths, grid=(3, 4), sentence_weights=sw_poisoned)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=0)
    got["loss"].backward()
    assert torch.isfinite(poisoned.grad).all()
    for i, n in enumerate(lengths):
        assert torch.all(poisoned.grad[i, n:] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_padding_stays_finite(dtype):
    """fp16 rounds F.normalize's eps (1e-12) to 0: a zeroed padded row would be 0/0."""
    regions, sentences, lengths = _batch(dtype=dtype)
    regions.requires_grad_(), sentences.requires_grad_()
    out = lovt_local_loss(regions, sentences, lengths, grid=(3, 4))
    out["loss"].backward()
    assert all(torch.isfinite(v) for v in out.values())
    assert torch.isfinite(regions.grad).all() and torch.isfinite(sentences.grad).all()
    ref = lovt_local_loss(regions.detach().double(), sentences.detach().double(), lengths, grid=(3, 4))
    assert abs(out["loss"].item() - ref["loss"].item()) < 0.1


def test_padded_sentences_attend_to_nothing():
    regions, sentences, lengths = _batch()
    to_regions, to_sentences = cross_attention(regions, sentences, lengths)
    assert to_regions.shape == regions.shape and to_sentences.shape == sentences.shape
    for i, n in enumerate(lengths):
        assert torch.all(to_sentences[i, n:] == 0)


def test_gradcheck():
    regions, sentences, lengths = _batch(b=2, grid=(2, 2), m=3, d=3)
    rw = torch.rand(2, 4, dtype=torch.float64) + 0.1
    for t in (regions, sentences, rw):
        t.requires_grad_()

    def f(v, u, w):
        out = lovt_local_loss(v, u, lengths, grid=(2, 2), temperature=0.5, region_weights=w)
        return torch.stack([out[name] for name in LOSS_NAMES])

    assert torch.autograd.gradcheck(f, (regions, sentences, rw))
