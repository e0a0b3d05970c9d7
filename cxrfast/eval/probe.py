"""Linear probes on frozen features: logistic regression in torch, and the label-fraction splits.

    model = fit_logistic(x [N, D], y [N, K])          # multi-label, L2, L-BFGS to convergence; NaN = no label
    probs = model.predict(x_test)                      # [M, K] in (0, 1)
    ids, path, reused = probe_split(train_ids, 0.1, seed=0, folder=OUT)   # a versioned split file
    linear_probe(train_features, test_features, fractions=(0.01, 0.1, 1.0), folder=OUT)

The probe reads the frozen global image features (cxrfast.eval.features), standardised with the training
subset's mean and standard deviation. Split files: the studies used at fraction p are the first
max(1, round(p · N)) of one seeded permutation of the training studies (so 1% ⊂ 10% ⊂ 100%), written as
JSON {"version", "seed", "fraction", "n_total", "study_ids"} to `probe_split_v{SPLIT_VERSION}_{pct}_seed{seed}.json`
beside the results. A file that exists is reused as it is (its ids must all be training studies), so runs
and models are compared on the same studies; SPLIT_VERSION changes whenever the rule above does, which gives
new file names rather than silently different subsets under old ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrfast.eval.features import Features
from cxrfast.eval.metrics import roc_auc

__all__ = ["SPLIT_VERSION", "FRACTIONS", "LogisticModel", "fit_logistic", "probe_split", "split_path", "linear_probe"]

SPLIT_VERSION = 1
FRACTIONS = (0.01, 0.1, 1.0)


@dataclass
class LogisticModel:
    """Standardisation (mean, std [D]) + weight [D, K] + bias [K]; iterations and the final gradient norm
    of the fit (converged: the gradient's largest component below the tolerance)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int
    grad_norm: float
    converged: bool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).to(self.weight.dtype)
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities [N, K]."""
        return torch.sigmoid(self.logits(x))


def fit_logistic(x, y, *, l2: float = 1e-2, max_iter: int = 1000, tol: float = 1e-6,
                 dtype=torch.float64) -> LogisticModel:
    """Multi-label logistic regression: x [N, D], y [N, K] with targets in [0, 1] (soft targets allowed)
    or NaN (no label: left out of that column's loss).

    loss = Σ_k mean over labelled i of BCE(x̂_i · W[:, k] + b_k, y_ik) + l2 / 2 · ‖W‖²   (x̂: standardised x;
    no penalty on the bias), minimised by L-BFGS with a strong-Wolfe line search until the largest gradient
    component falls below `tol` (or max_iter iterations; `converged` says which). Strictly convex for l2 > 0
    (with l2 = 0 separable data has no minimum), so the result does not depend on the start (zeros) beyond
    the tolerance. float32 (`dtype`) halves the memory of a large x; give it a tolerance it can reach (1e-4)."""
    x = torch.as_tensor(x).detach().to("cpu", dtype)
    y = torch.as_tensor(y).detach().to("cpu", dtype)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"fit_logistic: `x` must be [N, D] and `y` [N, K] with the same N, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("fit_logistic: `x` has no rows")
    if not torch.isfinite(x).all():
        raise ValueError("fit_logistic: `x` holds non-finite values")
    known = ~torch.isnan(y)
    if ((y[known] < 0) | (y[known] > 1)).any():
        raise ValueError("fit_logistic: `y` must hold targets in [0, 1] or NaN")
    if l2 < 0:
        raise ValueError(f"fit_logistic: l2 must be >= 0, got {l2}")
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=1e-6 if dtype == torch.float64 else 1e-4)
    xs = (x - mean) / std
    target = torch.where(known, y, torch.zeros_like(y))
    counts = known.sum(0).clamp(min=1).to(dtype)
    W = torch.zeros(x.shape[1], y.shape[1], dtype=dtype, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        bce = F.binary_cross_entropy_with_logits(xs @ W + b, target, reduction="none") * known
        loss = (bce.sum(0) / counts).sum() + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        closure()
    grad = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
    iterations = int(opt.state[W].get("n_iter", 0))  # L-BFGS keeps its state under the first parameter
    return LogisticModel(mean, std, W.detach(), b.detach(), iterations, grad, grad <= tol)


def split_path(folder, fraction: float, seed: int) -> Path:
    """The split file of (fraction, seed) in `folder` (the version is in the name)."""
    pct = f"{fraction * 100:g}pct".replace(".", "p")
    return Path(folder) / f"probe_split_v{SPLIT_VERSION}_{pct}_seed{seed}.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def probe_split(train_ids: Sequence[str], fraction: float, seed: int = 0,
                folder=None) -> tuple[list[str], Path | None, bool]:
    """(study ids, split file or None, reused) of the training subset at `fraction` (see the module
    docstring). With `folder`, an existing split file is read back (checked: version, seed, fraction, ids
    among `train_ids`) and a missing one written."""
    if not 0 < fraction <= 1:
        raise ValueError(f"probe_split: fraction must be in (0, 1], got {fraction}")
    train_ids = [str(i) for i in train_ids]
    if not train_ids:
        raise ValueError("probe_split: `train_ids` is empty")
    path = split_path(folder, fraction, seed) if folder is not None else None
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"probe split file {path}: not JSON ({e})") from None
        expect = {"version": SPLIT_VERSION, "seed": seed, "fraction": fraction}
        wrong = {k: data.get(k) for k, v in expect.items() if data.get(k) != v}
        if wrong:
            raise ValueError(f"probe split file {path}: expected {expect}, found {wrong}; delete it or use another "
                             "output folder")
        ids = [str(i) for i in data.get("study_ids", [])]
        unknown = sorted(set(ids) - set(train_ids))
        if not ids or unknown:
            raise ValueError(f"probe split file {path}: {len(unknown)} of its {len(ids)} study ids are not training "
                             f"studies of this dataset (e.g. {unknown[:3]}); it belongs to another dataset")
        return ids, path, True
    order = np.random.default_rng([int(seed), 0x50524F42]).permutation(len(train_ids))
    k = max(1, int(round(fraction * len(train_ids))))
    ids = [train_ids[i] for i in order[:k]]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps({"version": SPLIT_VERSION, "seed": seed, "fraction": fraction,
                                        "n_total": len(train_ids), "study_ids": ids}, indent=1) + "\n")
    return ids, path, False


def linear_probe(train: Features, test: Features, *, fractions: Sequence[float] = FRACTIONS, seed: int = 0,
                 folder=None, l2: float = 1e-2) -> dict:
    """A logistic-regression probe per label fraction on the frozen global image features: trained on the
    split's training studies (those with an image), AUC per finding on the test studies (NaN labels left
    out per finding, in training and in testing). Returns {"<pct>%": {"n_train", "split_file", "reused",
    "per_finding": {f: {"auc", "n_pos_train"}}, "mean", "iterations", "converged"}, "l2", "features"}."""
    findings = tuple(train.findings)
    if tuple(test.findings) != findings:
        raise ValueError(f"linear_probe: train and test findings differ: {findings} vs {tuple(test.findings)}")
    tr = [i for i in range(len(train)) if bool(train.has_image[i])]
    te = test.has_image
    if not tr or not te.any():
        return {"skipped": "no training or no test study has an image"}
    x_test, y_test = test.image[te], test.labels[te]
    row_of = {train.study_ids[i]: i for i in tr}
    out = {"l2": l2, "features": "global image features, standardised on the training subset"}
    for frac in fractions:
        ids, path, reused = probe_split([train.study_ids[i] for i in tr], frac, seed, folder)
        rows = torch.tensor([row_of[i] for i in ids])
        x, y = train.image[rows], train.labels[rows]
        model = fit_logistic(x, y, l2=l2)
        probs = model.predict(x_test).numpy()
        per = {f: {"auc": roc_auc(probs[:, k], y_test[:, k].numpy()),
                   "n_pos_train": int((y[:, k] == 1).sum())} for k, f in enumerate(findings)}
        aucs = [v["auc"] for v in per.values() if np.isfinite(v["auc"])]
        out[f"{frac * 100:g}%"] = {"n_train": len(ids), "split_file": str(path) if path else None, "reused": reused,
                                   "per_finding": per, "mean": float(np.mean(aucs)) if aucs else float("nan"),
                                   "iterations": model.iterations, "converged": model.converged}
    return out
