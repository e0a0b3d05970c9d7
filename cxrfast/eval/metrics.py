"""The numbers of evaluation: ROC AUC with ties, study-bootstrap intervals, Recall@K, Dice.

    roc_auc(scores, labels)                       # P(score of a positive > score of a negative), ties count ½
    bootstrap_aucs(scores [N, F], labels [N, F], findings, n_boot=1000, seed=0)
    retrieval_ranks(similarity [N, N])            # rank of the match in each row, ties pessimistic
    dice(pred, target)                            # 2 |P ∩ G| / (|P| + |G|)

Everything here is numpy in float64 (or torch for Dice) and takes no model: the modules above compute
scores, these functions judge them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["roc_auc", "weighted_auc", "bootstrap_aucs", "interval", "retrieval_ranks", "recall_at_k", "dice",
           "dice_counts", "dice_ratio", "pooled_dice"]

# bootstrap replicates drawn per block: bounds the [block, N] count matrix whatever n_boot is
_BOOT_BLOCK = 250


def _scores_labels(scores, labels, name: str = "roc_auc"):
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{name}: `scores` ({s.size} values) and `labels` ({y.size} values) differ in length")
    if not np.isfinite(s).all():
        raise ValueError(f"{name}: `scores` holds {int((~np.isfinite(s)).sum())} non-finite value(s)")
    known = ~np.isnan(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        other = sorted(set(y[known].tolist()) - {0.0, 1.0})[:5]
        raise ValueError(f"{name}: `labels` must be 0, 1 or NaN (unknown), got {other}")
    return s, y


def weighted_auc(scores, labels, weights) -> np.ndarray:
    """ROC AUC under sample weights, for several weightings at once: weights [B, N] → [B] (NaN where a row
    has no positive or no negative weight). Labels 0 / 1 (no NaN here: the caller drops unknown labels).

    AUC = Σ_{i pos, j neg} w_i w_j ([s_i > s_j] + ½ [s_i = s_j]) / (Σ_pos w · Σ_neg w): the Mann–Whitney
    statistic, a tie between a positive and a negative counting one half. Integer weights are bootstrap
    multiplicities (a study drawn twice counts twice). Computed on the distinct score values in sorted
    order: with P_u, N_u the positive / negative weight at value u, the numerator is
    Σ_u P_u (N_{<u} + ½ N_u); O(N log N + B·N), no N × N pair matrix."""
    s, y = _scores_labels(scores, labels, "weighted_auc")
    if np.isnan(y).any():
        raise ValueError("weighted_auc: `labels` holds NaN; drop the unknown labels first")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != s.size:
        raise ValueError(f"weighted_auc: `weights` must be [B, {s.size}], got {tuple(w.shape)}")
    if s.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(s, kind="stable")
    ss, pos = s[order], y[order] == 1.0
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # first index of each distinct value
    ws = w[:, order]
    P = np.add.reduceat(ws * pos, starts, axis=1)
    Nn = np.add.reduceat(ws * ~pos, starts, axis=1)
    below = np.cumsum(Nn, axis=1) - Nn
    num = (P * (below + 0.5 * Nn)).sum(axis=1)
    den = P.sum(axis=1) * Nn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(scores, labels) -> float:
    """ROC AUC of `scores` against 0 / 1 `labels` (NaN labels are left out); ties count one half. NaN when
    there is no positive or no negative."""
    s, y = _scores_labels(scores, labels)
    known = ~np.isnan(y)
    return float(weighted_auc(s[known], y[known], np.ones((1, int(known.sum()))))[0])


def interval(replicates, level: float = 0.95) -> list[float]:
    """The percentile interval [lo, hi] of the finite replicates at `level` (NaN, NaN when none is finite)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return [float("nan"), float("nan")]
    a = (1.0 - level) / 2
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return [float(lo), float(hi)]


def bootstrap_aucs(scores, labels, findings: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Per-finding ROC AUC and their mean, with bootstrap intervals from resampling studies.

    scores [N, F] (higher: more likely positive), labels [N, F] 1 / 0 / NaN; a NaN label (uncertain or not
    mentioned) leaves that study out of that finding only. Each replicate draws N studies with replacement
    (numpy's generator seeded by `seed`; the same draw for every finding, so the mean's interval carries the
    findings' correlation) and computes every finding's AUC on its labelled studies among them; a replicate
    in which a finding has no positive or no negative is undefined for that finding (and for the mean) and
    left out of its interval (`n_boot_used` counts the rest). The mean is over the findings whose AUC is
    defined on the full test set. Intervals: the percentile interval at `level`.

    Returns {"per_finding": {f: {"auc", "ci", "n_pos", "n_neg", "n_boot_used"}}, "mean": {"auc", "ci",
    "findings", "n_boot_used"}, "n": N, "n_boot", "seed", "level"}."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    findings = tuple(findings)
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(findings):
        raise ValueError(f"bootstrap_aucs: `scores` and `labels` must both be [N, {len(findings)}] (one column per "
                         f"finding), got {tuple(s.shape)} and {tuple(y.shape)}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_aucs: `n_boot` must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_aucs: `level` must be in (0, 1), got {level}")
    N, F = s.shape
    point = np.array([roc_auc(s[:, f], y[:, f]) for f in range(F)])
    reps = np.empty((n_boot, F))
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_BLOCK):
        b = min(_BOOT_BLOCK, n_boot - start)
        counts = rng.multinomial(N, np.full(N, 1.0 / N), size=b) if N else np.zeros((b, 0))
        for f in range(F):
            known = ~np.isnan(y[:, f])
            reps[start:start + b, f] = weighted_auc(s[known, f], y[known, f], counts[:, known])
    per = {}
    for f, name in enumerate(findings):
        known = ~np.isnan(y[:, f])
        per[name] = {"auc": float(point[f]), "ci": interval(reps[:, f], level),
                     "n_pos": int((y[known, f] == 1).sum()), "n_neg": int((y[known, f] == 0).sum()),
                     "n_boot_used": int(np.isfinite(reps[:, f]).sum())}
    defined = np.isfinite(point)
    mean_reps = reps[:, defined].mean(axis=1) if defined.any() else np.full(n_boot, np.nan)
    mean = {"auc": float(point[defined].mean()) if defined.any() else float("nan"),
            "ci": interval(mean_reps, level), "findings": [n for n, d in zip(findings, defined) if d],
            "n_boot_used": int(np.isfinite(mean_reps).sum())}
    return {"per_finding": per, "mean": mean, "n": int(N), "n_boot": int(n_boot), "seed": int(seed),
            "level": float(level)}


def retrieval_ranks(similarity) -> np.ndarray:
    """similarity [N, N], row i a query and column i its match → the 1-based rank of the match in each row,
    ties broken pessimistically: 1 + #{j ≠ i : sim[i, j] >= sim[i, i]} (a candidate scored equal to the
    match ranks above it, so a model that scores everything alike gets rank N, not 1)."""
    S = torch.as_tensor(similarity).detach().to("cpu", torch.float64)
    if S.dim() != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"retrieval_ranks: `similarity` must be square [N, N] (query i matches candidate i), "
                         f"got {tuple(S.shape)}")
    if not torch.isfinite(S).all():
        raise ValueError("retrieval_ranks: `similarity` holds non-finite values")
    diag = S.diagonal()[:, None]
    at_least = (S >= diag).sum(dim=1)  # counts the match itself once
    return at_least.numpy().astype(np.int64)


def recall_at_k(similarity, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """{"R@k": share of queries whose match ranks within k} over the rows of `similarity` [N, N]
    (retrieval_ranks' pessimistic ties), plus "median_rank"."""
    ranks = retrieval_ranks(similarity)
    bad = [k for k in ks if int(k) < 1]
    if bad:
        raise ValueError(f"recall_at_k: `ks` must be >= 1, got {bad}")
    out = {f"R@{int(k)}": float((ranks <= int(k)).mean()) if ranks.size else float("nan") for k in ks}
    out["median_rank"] = float(np.median(ranks)) if ranks.size else float("nan")
    return out


def dice_counts(pred: torch.Tensor, target: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    """(|P ∩ G|, |P| + |G|) of boolean masks summed over `dims` (float64): the two sums Dice is made of,
    which a caller can accumulate over chunks of images."""
    if pred.shape != target.shape:
        raise ValueError(f"dice: `pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} differ in shape")
    p, g = pred.bool(), target.bool()
    return (p & g).sum(dims).double(), p.sum(dims).double() + g.sum(dims).double()


def dice_ratio(inter: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """2 · inter / total, NaN where total is 0 (both masks empty: nothing to find and nothing found is no
    evidence either way)."""
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, float("nan")))


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice 2 |P ∩ G| / (|P| + |G|) of boolean masks [..., H, W] → [...] (NaN where both are empty)."""
    return dice_ratio(*dice_counts(pred, target, (-2, -1)))


def pooled_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of all images together [N, H, W]: 2 Σ|P ∩ G| / (Σ|P| + Σ|G|), so a prediction on an image
    without the finding costs as much as a miss on one with it (NaN when every mask is empty)."""
    return float(dice_ratio(*dice_counts(pred, target, tuple(range(pred.dim())))))
