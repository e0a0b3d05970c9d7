"""Pictures of word–region attention: a radiograph with one word's heat map on it, as a PNG.

    S, maps = cxrfast.word_region_similarity(regions, words, lengths, return_attention=True)
    cxrfast.viz.save_word_attention("att.png", image[b], maps[b], words=["effusion", "left", "base"])

Needs matplotlib (``pip install cxrfast[viz]``); imported on first use only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _as_image(image) -> np.ndarray:
    """[H, W] float array in [0, 1] from a [H, W], [1, H, W] or [3, H, W] tensor / array (any range)."""
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).detach().cpu()
    img = img.to(torch.float64)
    if img.dim() == 3 and img.shape[0] in (1, 3):
        img = img.mean(0)
    if img.dim() != 2:
        raise ValueError(f"save_word_attention: `image` must be [H, W], [1, H, W] or [3, H, W], got {tuple(img.shape)}")
    lo, hi = img.min(), img.max()
    return ((img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)).numpy()


def _grid(n_regions: int, grid) -> tuple[int, int]:
    if grid is None:
        side = math.isqrt(n_regions)
        if side * side != n_regions:
            raise ValueError(f"save_word_attention: R={n_regions} regions is not a square grid; pass grid=(h, w)")
        return side, side
    h, w = (int(v) for v in grid)
    if h * w != n_regions:
        raise ValueError(f"save_word_attention: grid {h}×{w} = {h * w} does not match R={n_regions} regions")
    return h, w


def heat_maps(attention, image_size: tuple[int, int], grid=None) -> np.ndarray:
    """Attention [n, R] (or [R]) → [n, H, W] maps bilinearly upsampled to the image, each scaled to [0, 1]."""
    att = torch.as_tensor(attention).detach().cpu().to(torch.float64)
    if att.dim() == 1:
        att = att[None]
    if att.dim() != 2:
        raise ValueError(f"save_word_attention: `attention` must be [n_words, R] or [R], got {tuple(att.shape)}")
    h, w = _grid(att.shape[1], grid)
    up = F.interpolate(att.view(-1, 1, h, w), size=image_size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo).clamp_min(1e-12)).numpy()


def save_word_attention(path, image, attention, words=None, *, grid=None, max_words: int = 8,
                        opacity: float = 0.45, cmap: str = "jet") -> Path:
    """Write a PNG: the image, then one panel per word (up to max_words) with that word's attention over
    the regions laid on the image. attention: [n_words, R] (one matched pair from
    word_region_similarity(..., return_attention=True), padding rows are dropped when `words` is given)
    or [R] for a single word; words: their strings, for the panel titles. Returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("cxrfast.viz needs matplotlib: pip install 'cxrfast[viz]'") from e
    img = _as_image(image)
    att = torch.as_tensor(attention).detach().cpu()
    if att.dim() == 1:
        att = att[None]
    if words is not None:
        words = list(words)
        if len(words) > att.shape[0]:
            raise ValueError(f"save_word_attention: {len(words)} words given but `attention` has {att.shape[0]} rows")
        att = att[: len(words)]
    maps = heat_maps(att[:max_words], img.shape, grid)
    panels = 1 + len(maps)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image")
    for t, (ax, m) in enumerate(zip(axes[1:], maps)):
        ax.imshow(img, cmap="gray")
        ax.imshow(m, cmap=cmap, alpha=opacity)
        ax.set_title(words[t] if words is not None else f"word {t}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
