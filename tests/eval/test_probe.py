"""The linear probe: the logistic fit is the minimum of the loss written out (its gradient vanishes), NaN labels
leave only their column, a planted signal is learned to AUC 1; split files are versioned, nested, reused."""

import json

import numpy as np
import pytest
import torch

from cxrfast.eval.features import Features
from cxrfast.eval.metrics import roc_auc
from cxrfast.eval.probe import SPLIT_VERSION, fit_logistic, linear_probe, probe_split, split_path


def planted(n, d=12, k=3, seed=0, signal=3.0):
    """Features whose first k coordinates encode the k labels (plus noise), some labels unknown."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, k, generator=g) < 0.4).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, :k] += signal * (2 * y - 1)
    y[torch.rand(n, k, generator=g) < 0.15] = float("nan")
    return x, y


def loss_written_out(x, y, W, b, l2):
    """Σ_k mean over labelled i of BCE + l2/2 ‖W‖², one column and one sample at a time."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    xs = (x - mean) / std
    total = 0.5 * l2 * (W * W).sum()
    for k in range(y.shape[1]):
        terms = []
        for i in range(x.shape[0]):
            if not torch.isnan(y[i, k]):
                z = xs[i] @ W[:, k] + b[k]
                terms.append(torch.nn.functional.softplus(z) - y[i, k] * z)
        total = total + torch.stack(terms).mean()
    return total


def test_fit_is_the_minimum_of_the_written_out_loss():
    x, y = planted(30, d=4)
    m = fit_logistic(x, y, l2=0.1)
    assert m.converged and m.grad_norm <= 1e-6 and m.iterations > 0
    W = m.weight.clone().requires_grad_(True)
    b = m.bias.clone().requires_grad_(True)
    loss_written_out(x, y, W, b, 0.1).backward()
    assert float(W.grad.abs().max()) < 1e-5 and float(b.grad.abs().max()) < 1e-5
    # and a nudge in any direction raises it
    base = float(loss_written_out(x, y, m.weight, m.bias, 0.1))
    for _ in range(2):
        d = torch.randn_like(m.weight) * 1e-2
        assert float(loss_written_out(x, y, m.weight + d, m.bias, 0.1)) > base


def test_nan_labels_leave_only_their_column():
    """The loss is a sum of per-column terms: column 0 fitted with NaN rows equals column 0 fitted alone on
    its labelled rows (with the same standardisation, i.e. the same x)."""
    x, y = planted(50, d=6)
    both = fit_logistic(x, y, l2=0.05)
    known = ~torch.isnan(y[:, 0])
    y_alone = torch.full_like(y[:, :1], float("nan"))
    y_alone[known, 0] = y[known, 0]
    alone = fit_logistic(x, y_alone, l2=0.05)
    torch.testing.assert_close(both.weight[:, 0], alone.weight[:, 0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="targets in \\[0, 1\\] or NaN"):
        fit_logistic(x, y * 2)
    with pytest.raises(ValueError, match="same N"):
        fit_logistic(x, y[:-1])


def test_planted_signal_is_learned_to_auc_one():
    x, y = planted(200, signal=4.0)
    m = fit_logistic(x[:120], y[:120])
    p = m.predict(x[120:]).numpy()
    for k in range(3):
        assert roc_auc(p[:, k], y[120:, k].numpy()) > 0.99
    g = torch.Generator().manual_seed(1)
    noise = fit_logistic(torch.randn(120, 12, generator=g, dtype=torch.float64), y[:120])  # no signal
    p = noise.predict(torch.randn(80, 12, generator=g, dtype=torch.float64)).numpy()
    assert np.mean([roc_auc(p[:, k], y[120:, k].numpy()) for k in range(3)]) < 0.8


def test_split_files_are_versioned_nested_and_reused(tmp_path):
    ids = [f"s{i}" for i in range(300)]
    subsets = {}
    for frac in (0.01, 0.1, 1.0):
        got, path, reused = probe_split(ids, frac, seed=7, folder=tmp_path)
        assert not reused and path == split_path(tmp_path, frac, 7) and f"_v{SPLIT_VERSION}_" in path.name
        data = json.loads(path.read_text())
        assert data == {"version": SPLIT_VERSION, "seed": 7, "fraction": frac, "n_total": 300, "study_ids": got}
        assert len(got) == max(1, round(frac * 300)) and len(set(got)) == len(got)
        subsets[frac] = got
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0]) == set(ids)
    assert probe_split(ids, 0.1, seed=8)[0] != subsets[0.1]  # another seed, another subset
    # reused as written, even when the training ids come in another order
    again, _, reused = probe_split(ids[::-1], 0.1, seed=7, folder=tmp_path)
    assert reused and again == subsets[0.1]
    # what the file says wins: edit it, the probe uses the edit
    path = split_path(tmp_path, 0.1, 7)
    data = json.loads(path.read_text())
    data["study_ids"] = ["s1", "s2", "s3"]
    path.write_text(json.dumps(data))
    assert probe_split(ids, 0.1, seed=7, folder=tmp_path)[0] == ["s1", "s2", "s3"]
    # a file of another version or another dataset is refused, naming the file
    path.write_text(json.dumps({**data, "version": SPLIT_VERSION + 1}))
    with pytest.raises(ValueError, match=f"probe split file {path}.*'version'"):
        probe_split(ids, 0.1, seed=7, folder=tmp_path)
    path.write_text(json.dumps({**data, "study_ids": ["elsewhere"]}))
    with pytest.raises(ValueError, match="not training studies"):
        probe_split(ids, 0.1, seed=7, folder=tmp_path)
    with pytest.raises(ValueError, match="fraction must be in"):
        probe_split(ids, 0.0)


def _features(x, y, prefix):
    n = x.shape[0]
    return Features(study_ids=[f"{prefix}{i}" for i in range(n)], findings=("a", "b", "c"), labels=y.float(),
                    has_image=torch.ones(n, dtype=torch.bool), has_text=torch.ones(n, dtype=torch.bool),
                    image=x.float())


def test_linear_probe_on_planted_features(tmp_path):
    x, y = planted(400, signal=4.0, seed=3)
    train, test = _features(x[:300], y[:300], "tr"), _features(x[300:], y[300:], "te")
    r = linear_probe(train, test, fractions=(0.1, 1.0), seed=0, folder=tmp_path)
    assert r["10%"]["n_train"] == 30 and r["100%"]["n_train"] == 300
    for key in ("10%", "100%"):
        assert r[key]["mean"] > 0.98 and r[key]["converged"], r[key]
        assert all(r[key]["per_finding"][f]["auc"] > 0.97 for f in "abc")
    assert not r["100%"]["reused"]
    assert linear_probe(train, test, fractions=(1.0,), folder=tmp_path)["100%"]["reused"]
    with pytest.raises(ValueError, match="findings differ"):
        linear_probe(train, Features(**{**test.__dict__, "findings": ("x", "y", "z")}))
