"""The localized probe (LoVT's point): how much of a finding's location frozen local features carry.

For every region of a frozen local feature map (encode_image's "local" [B, R, E] on its grid (h, w)), a
linear (1×1) probe predicts, per finding, the fraction of the region covered by the finding's mask (a soft
target, the mask average-pooled onto the grid); it is cxrfast.eval.probe.fit_logistic on the rows of all
regions of the training studies. On a test study its logits [h, w] per finding are upsampled bilinearly to
the mask's resolution and thresholded at probability ½; Dice against the mask, per finding:

    dice          pooled over the test images, 2 Σ|P ∩ G| / (Σ|P| + Σ|G|): a false alarm on an image without
                  the finding costs as a miss does (the headline figure; NaN if no image has it or predicts it)
    dice_present  the mean per-image Dice over the test images that have the finding

and the mean of the pooled Dice over the findings where it is defined.

The masks are the synthetic dataset's (cxrfast.data.synth: masks/<dicom_id>.npz, one 0/1 array per drawn
finding, frontal views only): `study.extra["masks"][image_id]` when an adapter set it (the loader's
convention), else <dataset root>/masks/<image_id>.npz. Each is brought to the model's input frame by the
same evaluation transform as its image (Augment(train=False): whole image, aspect kept, centred; exact for
the synthetic data's square images). A finding without an array in the file is absent (all zeros).
Presets without spatial local features are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrfast.data.transforms import Augment, draw, warp_torch
from cxrfast.eval.metrics import dice, dice_counts, dice_ratio
from cxrfast.eval.probe import fit_logistic

__all__ = ["mask_file", "load_finding_masks", "mask_rows", "region_targets", "upsample_logits", "localized_probe"]


def mask_file(study, image_id: str | None, root) -> Path | None:
    """The region-mask file of one image of `study`, or None (see the module docstring)."""
    if image_id is None:
        return None
    files = study.extra.get("masks") if isinstance(study.extra, dict) else None
    if isinstance(files, dict) and image_id in files:
        return Path(files[image_id])
    if root is None:
        return None
    path = Path(root) / "masks" / f"{image_id}.npz"
    return path if path.is_file() else None


def load_finding_masks(path, findings: Sequence[str], size: int) -> torch.Tensor:
    """bool [F, size, size]: the file's mask of each finding (zeros where it has none) in the evaluation
    frame at `size` pixels."""
    with np.load(path) as z:
        if not z.files:
            raise ValueError(f"mask file {path}: holds no array")
        shape = z[z.files[0]].shape
        stack = np.zeros((len(findings),) + tuple(shape), np.float32)
        for k, f in enumerate(findings):
            if f in z.files:
                if z[f].shape != shape:
                    raise ValueError(f"mask file {path}: {f!r} is {z[f].shape}, {z.files[0]!r} is {shape}")
                stack[k] = z[f] > 0
    if len(shape) != 2:
        raise ValueError(f"mask file {path}: expected 2-d masks, got shape {shape}")
    params = draw(Augment(size=size, train=False), None, *shape)  # the eval transform draws nothing
    return warp_torch(torch.from_numpy(stack), params) > 0.5


def mask_rows(studies, first_image_id: Callable, root, limit: int | None = None,
              seed: int = 0) -> list[tuple[int, Path]]:
    """[(row, mask file)] of the studies whose first view has a mask file: all of them, or `limit` drawn with
    a seeded generator (kept in row order)."""
    rows = [(i, p) for i, s in enumerate(studies) for p in [mask_file(s, first_image_id(s), root)] if p is not None]
    if limit is not None and len(rows) > limit:
        pick = np.sort(np.random.default_rng([int(seed), 0x4C4F4341]).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in pick]
    return rows


def region_targets(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """masks [M, F, H, W] (bool or float) → [M, R, F]: the covered fraction of each region of the (h, w)
    grid, regions row-major (as the presets flatten their maps)."""
    return F.adaptive_avg_pool2d(masks.float(), tuple(grid)).flatten(2).transpose(1, 2)


def upsample_logits(logits: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Region logits [M, R, F] → [M, F, H, W], bilinear."""
    M, R, K = logits.shape
    h, w = grid
    maps = logits.transpose(1, 2).reshape(M, K, h, w)
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def localized_probe(train_local: torch.Tensor, train_masks: torch.Tensor, test_local: torch.Tensor,
                    test_masks: torch.Tensor, grid: tuple[int, int], findings: Sequence[str], *, l2: float = 1e-3,
                    max_rows: int = 100_000, seed: int = 0, chunk: int = 64) -> dict:
    """Train the 1×1 probe on (train_local [M, R, E], train_masks [M, F, H, W]) and measure Dice on the test
    pair (see the module docstring). max_rows: at most this many training regions (a seeded sample), so
    the fit fits in memory at the paper's grid."""
    findings = tuple(findings)
    h, w = (int(v) for v in grid)
    for name, loc, m in (("train", train_local, train_masks), ("test", test_local, test_masks)):
        if loc.dim() != 3 or loc.shape[1] != h * w:
            raise ValueError(f"localized_probe: `{name}_local` must be [M, {h * w}, E] for the grid {h}×{w}, "
                             f"got {tuple(loc.shape)}")
        if m.dim() != 4 or m.shape[0] != loc.shape[0] or m.shape[1] != len(findings):
            raise ValueError(f"localized_probe: `{name}_masks` must be [{loc.shape[0]}, {len(findings)}, H, W], "
                             f"got {tuple(m.shape)}")
    E = train_local.shape[-1]
    x = train_local.reshape(-1, E)
    y = region_targets(train_masks, (h, w)).reshape(-1, len(findings))
    if x.shape[0] > max_rows:
        keep = torch.from_numpy(np.sort(np.random.default_rng([int(seed), 0x524F5753]).choice(
            x.shape[0], size=max_rows, replace=False)))
        x, y = x[keep], y[keep]
    probe = fit_logistic(x, y, l2=l2, dtype=torch.float32, tol=1e-4)
    size = tuple(test_masks.shape[-2:])
    inter = torch.zeros(len(findings), dtype=torch.float64)
    total = torch.zeros(len(findings), dtype=torch.float64)
    per_image = []
    for s in range(0, test_local.shape[0], chunk):
        loc = test_local[s:s + chunk]
        logits = probe.logits(loc.reshape(-1, E)).reshape(loc.shape[0], h * w, -1)
        pred = upsample_logits(logits, (h, w), size) > 0
        gt = test_masks[s:s + chunk].bool()
        i, t = dice_counts(pred, gt, (0, 2, 3))
        inter, total = inter + i, total + t
        per_image.append(torch.where(gt.any(-1).any(-1), dice(pred, gt), torch.full(gt.shape[:2], float("nan"),
                                                                                     dtype=torch.float64)))
    per_image = torch.cat(per_image)  # [M, F]: NaN where the image lacks the finding
    pooled = dice_ratio(inter, total)
    per = {}
    for k, f in enumerate(findings):
        present = ~torch.isnan(per_image[:, k])
        per[f] = {"dice": float(pooled[k]),
                  "dice_present": float(per_image[present, k].mean()) if present.any() else float("nan"),
                  "n_present": int(present.sum())}
    defined = [v["dice"] for v in per.values() if np.isfinite(v["dice"])]
    return {"per_finding": per, "mean": float(np.mean(defined)) if defined else float("nan"), "grid": [h, w],
            "mask_size": list(size), "n_train": int(train_local.shape[0]), "n_test": int(test_local.shape[0]),
            "train_regions": int(x.shape[0]), "iterations": probe.iterations, "converged": probe.converged,
            "target": "per region and finding, the covered fraction of the region (soft BCE); logits upsampled "
                      "bilinearly, threshold ½"}
