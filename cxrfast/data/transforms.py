"""Augmentation of radiographs, drawn once and applied by either pipeline (torch or DALI).

Every image's augmentation is a set of numbers drawn from a generator seeded by (seed, epoch, sample,
view), so that the torch DataLoader fallback and the DALI pipeline apply the *same* crop to the same
sample: `draw` gives them, `warp_torch` (here) and cxrfast.data.dali apply them.

    params = draw(Augment(), sample_generator(seed, epoch, index, view), height, width)
    out = warp_torch(image_01, params)                       # [1, H, W] float in [0, 1] → [1, size, size]

The geometry is one affine map from output pixels to input pixels: a random resized crop (area fraction
`scale`, aspect `ratio`) resampled to size × size, composed with a small rotation and translation about the
crop's centre; one bilinear resampling does all of it (outside the image: black). Then brightness and
contrast, as DALI's brightness_contrast: out = brightness · (contrast · (x − ½) + ½), clipped to [0, 1]. No
horizontal flip unless asked: in a radiograph, left and right are anatomy (the heart is on the left).
Evaluation (`Augment(train=False)`) resizes the whole image, aspect kept and padded, with no jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Augment", "WarpParams", "draw", "sample_generator", "warp_torch", "normalize"]


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; the defaults are a mild CXR recipe (GLoRIA / LoVT use similar ranges)."""

    size: int = 224
    train: bool = True
    scale: tuple[float, float] = (0.6, 1.0)       # crop area, fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)   # crop aspect (width / height)
    degrees: float = 5.0                          # rotation, ± degrees
    translate: float = 0.03                       # shift, ± fraction of the output size
    brightness: float = 0.2                       # factor in [1 − b, 1 + b]
    contrast: float = 0.2                         # factor in [1 − c, 1 + c]
    hflip: float = 0.0                            # probability of a horizontal flip

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"Augment.size must be >= 1, got {self.size}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"Augment.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"Augment.ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        for name in ("degrees", "translate", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"Augment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"Augment.hflip is a probability, got {self.hflip}")


@dataclass(frozen=True)
class WarpParams:
    """matrix: 2×3, output pixel centre (x + ½, y + ½) ↦ input coordinates (pixel edges at integers);
    brightness, contrast: factors; size: the output side."""

    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    brightness: float
    contrast: float
    size: int

    def as_array(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float32)


def sample_generator(seed: int, epoch: int, index: int, view: int) -> np.random.Generator:
    """The generator of one image's augmentation: a function of (seed, epoch, sample index, view) only, so
    any worker, process or pipeline draws the same numbers for the same image."""
    return np.random.default_rng([int(seed), int(epoch), int(index), int(view), 0x43585246])


def draw(aug: Augment, rng: np.random.Generator, height: int, width: int) -> WarpParams:
    """One image's augmentation for an input of height × width (see the module docstring)."""
    S = aug.size
    if not aug.train:  # whole image, aspect kept, centred with black padding
        s = max(height, width) / S
        cx, cy = width / 2, height / 2
        return WarpParams(((s, 0.0, cx - s * S / 2), (0.0, s, cy - s * S / 2)), 1.0, 1.0, S)
    area = height * width
    for _ in range(10):  # torchvision's RandomResizedCrop rule: a box inside the image, else the centre crop
        target = area * rng.uniform(*aug.scale)
        log_r = rng.uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1]))
        r = math.exp(log_r)
        w = math.sqrt(target * r)
        h = math.sqrt(target / r)
        if w <= width and h <= height:
            x0 = rng.uniform(0, width - w)
            y0 = rng.uniform(0, height - h)
            break
    else:
        w = h = float(min(height, width))
        x0, y0 = (width - w) / 2, (height - h) / 2
    angle = math.radians(rng.uniform(-aug.degrees, aug.degrees))
    tx, ty = rng.uniform(-aug.translate, aug.translate, size=2) * S
    flip = rng.uniform() < aug.hflip
    b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    # output (u, v) → centred, rotated, shifted → crop box: x = x0 + w/2 + (sx·cos·(u' ) − ...)
    sx, sy = w / S, h / S
    cos, sin = math.cos(angle), math.sin(angle)
    fx = -1.0 if flip else 1.0
    # u' = u − S/2 − tx, v' = v − S/2 − ty; (x, y) = centre + R(angle) · (fx·sx·u', sy·v')
    a11, a12 = cos * fx * sx, -sin * sy
    a21, a22 = sin * fx * sx, cos * sy
    ccx, ccy = x0 + w / 2, y0 + h / 2
    ox, oy = -(S / 2 + tx), -(S / 2 + ty)
    return WarpParams(((a11, a12, ccx + a11 * ox + a12 * oy), (a21, a22, ccy + a21 * ox + a22 * oy)), b, c, S)


def warp_torch(image: torch.Tensor, params: WarpParams) -> torch.Tensor:
    """image [C, H, W] float in [0, 1] → [C, size, size]: the affine resampling (bilinear, black outside),
    then brightness / contrast, clipped to [0, 1]."""
    C, H, W = image.shape
    S = params.size
    m = torch.tensor(params.matrix, dtype=torch.float64)
    u = torch.arange(S, dtype=torch.float64) + 0.5
    uu, vv = torch.meshgrid(u, u, indexing="xy")  # [S, S]: x varies along the last axis
    x = m[0, 0] * uu + m[0, 1] * vv + m[0, 2]
    y = m[1, 0] * uu + m[1, 1] * vv + m[1, 2]
    # grid_sample with align_corners=False: normalised −1 and 1 are the outer pixel edges (0 and W)
    grid = torch.stack([x / W * 2 - 1, y / H * 2 - 1], dim=-1).to(image.dtype)[None]
    out = torch.nn.functional.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)[0]
    if params.brightness != 1.0 or params.contrast != 1.0:
        out = (params.contrast * (out - 0.5) + 0.5) * params.brightness
    return out.clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    """(x − mean) / std: the models' input scale (x in [0, 1])."""
    return (x - mean) / std
