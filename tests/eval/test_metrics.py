"""cxrfast.eval.metrics against brute force: AUC by counting pairs (ties ½), weighted AUC by expanding the
weights into repeated samples, bootstrap intervals (contain the estimate, deterministic per seed, NaN labels
left out), retrieval ranks by sorting with the match placed after its ties, Dice by hand."""

import itertools
import math

import numpy as np
import pytest
import torch

from cxrfast.eval.metrics import (bootstrap_aucs, dice, pooled_dice, recall_at_k, retrieval_ranks, roc_auc,
                                  weighted_auc)


def brute_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_the_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    scores = rng.integers(0, 5, n).astype(float) if seed % 2 else rng.normal(size=n).round(1)  # many ties
    labels = (rng.random(n) < 0.4).astype(float)
    labels[:2] = [0, 1]
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


def test_auc_edge_cases():
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5  # every pair tied
    assert math.isnan(roc_auc([1, 2, 3], [1, 1, 1]))  # no negative
    # NaN labels (uncertain / unknown) are left out, whatever their scores
    assert roc_auc([1, 2, 100, 3], [0, 1, math.nan, 1]) == roc_auc([1, 2, 3], [0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="`labels` must be 0, 1 or NaN"):
        roc_auc([1, 2], [0, 2])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([1, math.inf], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([1, 2, 3], [0, 1])


def test_weighted_auc_is_the_auc_of_the_repeated_sample():
    rng = np.random.default_rng(1)
    n = 25
    scores, labels = rng.integers(0, 6, n).astype(float), (rng.random(n) < 0.5).astype(float)
    weights = rng.integers(0, 4, (7, n))
    got = weighted_auc(scores, labels, weights)
    for w, g in zip(weights, got):
        idx = np.repeat(np.arange(n), w)
        assert g == pytest.approx(brute_auc(scores[idx], labels[idx]), abs=1e-12, nan_ok=True)


def _bootstrap_data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < 0.4).astype(float)
    scores = labels * 0.8 + rng.normal(size=(n, 3))
    labels[rng.random((n, 3)) < 0.2] = np.nan  # unknown labels
    return scores, labels


def test_bootstrap_intervals_contain_the_estimate_and_are_deterministic():
    scores, labels = _bootstrap_data()
    names = ("a", "b", "c")
    r = bootstrap_aucs(scores, labels, names, n_boot=300, seed=5)
    again = bootstrap_aucs(scores, labels, names, n_boot=300, seed=5)
    other = bootstrap_aucs(scores, labels, names, n_boot=300, seed=6)
    assert r == again
    assert r["per_finding"]["a"]["ci"] != other["per_finding"]["a"]["ci"]
    for k, name in enumerate(names):
        d = r["per_finding"][name]
        known = ~np.isnan(labels[:, k])
        assert d["auc"] == pytest.approx(brute_auc(scores[known, k], labels[known, k]))
        assert d["n_pos"] == int((labels[known, k] == 1).sum()) and d["n_neg"] == int((labels[known, k] == 0).sum())
        lo, hi = d["ci"]
        assert 0 <= lo <= d["auc"] <= hi <= 1 and hi - lo > 0.05
        assert 250 <= d["n_boot_used"] <= 300
    m = r["mean"]
    assert m["auc"] == pytest.approx(np.mean([r["per_finding"][n]["auc"] for n in names]))
    assert m["ci"][0] <= m["auc"] <= m["ci"][1]
    # the mean's interval is narrower than the findings' (it averages three noisy estimates)
    assert m["ci"][1] - m["ci"][0] < max(d["ci"][1] - d["ci"][0] for d in r["per_finding"].values())


def test_bootstrap_resamples_studies_not_findings():
    """Two identical finding columns give identical replicates (one draw of studies for all findings), so
    their intervals coincide; with separate draws per finding they would differ."""
    scores, labels = _bootstrap_data(seed=2)
    s2 = np.stack([scores[:, 0], scores[:, 0]], 1)
    y2 = np.stack([labels[:, 0], labels[:, 0]], 1)
    r = bootstrap_aucs(s2, y2, ("x", "y"), n_boot=200, seed=0)
    assert r["per_finding"]["x"] == r["per_finding"]["y"]


def test_bootstrap_undefined_finding_and_errors():
    scores, labels = _bootstrap_data()
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 1.0)  # no negatives: AUC undefined
    r = bootstrap_aucs(scores, labels, ("a", "b", "c"), n_boot=50, seed=0)
    assert math.isnan(r["per_finding"]["b"]["auc"]) and r["per_finding"]["b"]["n_boot_used"] == 0
    assert r["mean"]["findings"] == ["a", "c"]
    with pytest.raises(ValueError, match=r"must both be \[N, 2\]"):
        bootstrap_aucs(scores, labels, ("a", "b"))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_aucs(scores, labels, ("a", "b", "c"), n_boot=0)


def brute_rank(row, i) -> int:
    """Sort candidates by score, descending, the match after every candidate tied with it: its position."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j == i))
    return order.index(i) + 1


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_ranks_against_sorting(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    sim = rng.integers(0, 4, (n, n)).astype(float)  # coarse: many ties with the match
    ranks = retrieval_ranks(torch.tensor(sim))
    assert ranks.tolist() == [brute_rank(sim[i], i) for i in range(n)]
    rec = recall_at_k(sim, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert rec[f"R@{k}"] == pytest.approx(np.mean([brute_rank(sim[i], i) <= k for i in range(n)]))


def test_retrieval_ties_are_pessimistic():
    n = 12
    flat = np.zeros((n, n))  # a collapsed model: every pair scores the same
    assert retrieval_ranks(flat).tolist() == [n] * n
    assert recall_at_k(flat, ks=(1, 5, 10)) == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "median_rank": float(n)}
    assert recall_at_k(np.eye(n))["R@1"] == 1.0
    with pytest.raises(ValueError, match="square"):
        retrieval_ranks(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(np.eye(3), ks=(0,))


def test_dice():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    d = dice(a, b)
    assert d[0] == pytest.approx(2 * 4 / 16) and math.isnan(d[1])  # image 1: both empty
    b[1, 0, 0] = True  # a miss on image 1 lowers the pooled figure
    assert pooled_dice(a, b) == pytest.approx(2 * 4 / (8 + 9))
    assert math.isnan(pooled_dice(torch.zeros(3, 3), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, b[:1])
