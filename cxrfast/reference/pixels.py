"""The radiograph pixel pipeline, defined in float64 numpy (the specification of csrc/cpu/pixels.cpp and the
CUDA kernel csrc/cuda/pixels.cu).

    stored values x ─ Modality LUT or rescale ─> y ─ VOI ─> v ∈ [0, 1] ─ MONOCHROME1: 1 - v ─> resize ─> pad/crop
    ─> uint8 round(v·255) | uint16 round(v·65535) | float (v - mean) / std

The Modality LUT / rescale and the VOI step follow PS3.3 C.11 as pydicom implements them
(``pydicom.pixels.apply_modality_lut`` and ``apply_voi_lut``); pydicom's windowed output y ∈ [y_min, y_max]
is v = (y - y_min) / (y_max - y_min) here, so v does not depend on the file's bit depth. The tests check
these functions against pydicom's.

Resize filters (separable, exact weights as dense matrices):
- ``"area"``: each output pixel is the exact average of the source area it covers, fractional pixels
  weighted by their overlap (OpenCV's INTER_AREA and PIL's BOX when downscaling);
- ``"bilinear"``: torch's ``interpolate(mode="bilinear", antialias=True, align_corners=False)``, a triangle
  filter whose support widens with the downscale factor.

Geometry: the aspect ratio is kept; ``fit="pad"`` scales the longer side to ``size`` and pads the shorter
one, ``fit="crop"`` scales the shorter side to ``size`` and centre-crops the longer one. Resized lengths are
``round(length · size / side)``; the excess (pad) or the overhang (crop) is split with its smaller half
first.

Needs only numpy: importable without the compiled extension, pydicom or torch.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["modality", "voi", "natural_range", "geometry", "resize_weights", "radiograph"]


def _lut_lookup(lut: dict, y: np.ndarray) -> np.ndarray:
    """LUT[y - first_mapped], values below the first mapped value to the first entry, past the last to the last."""
    data = np.asarray(lut["data"])
    idx = np.where(y >= lut["first_mapped"], np.floor(y - lut["first_mapped"]), 0)
    idx = np.clip(idx, 0, len(data) - 1).astype(np.int64)
    return data[idx].astype(np.float64)


def modality(x: np.ndarray, meta: dict) -> np.ndarray:
    """Stored values → modality output (Modality LUT Sequence, else Rescale Slope/Intercept, else x)."""
    x = np.asarray(x, dtype=np.float64)
    if meta.get("modality_lut") is not None:
        return _lut_lookup(meta["modality_lut"], x)
    if meta.get("has_rescale"):
        return x * meta["rescale_slope"] + meta["rescale_intercept"]
    return x


def natural_range(meta: dict) -> tuple[float, float]:
    """(y_min, y_max): the range of the modality output pydicom's apply_windowing maps a window onto."""
    bits = meta["bits_stored"]
    if meta.get("modality_lut") is not None:
        return 0.0, 2.0 ** meta["modality_lut"]["bits"] - 1
    if meta.get("pixel_representation", 0) == 0:
        lo, hi = 0.0, 2.0 ** bits - 1
    else:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    if meta.get("has_rescale"):
        lo, hi = lo * meta["rescale_slope"] + meta["rescale_intercept"], hi * meta["rescale_slope"] + meta["rescale_intercept"]
    return lo, hi


def _resolve(meta: dict, voi_mode: str, window, fallback: str) -> str:
    if voi_mode != "auto":
        return voi_mode
    if window is not None:
        return "window"
    if meta.get("voi_luts"):
        return "lut"
    if meta.get("window_center"):
        return "window"
    return fallback


def voi(y: np.ndarray, meta: dict, *, mode: str = "auto", window=None, function: str | None = None,
        voi_index: int = 0, fallback: str = "minmax", percentiles=(0.5, 99.5)) -> np.ndarray:
    """Modality output y → v ∈ [0, 1]: the file's VOI LUT or window (``mode="auto"``: LUT, else window, else
    ``fallback``), an explicit ``window=(center, width)``, min-max, percentiles (numpy's linear method) or
    ``"none"`` (the natural range)."""
    y = np.asarray(y, dtype=np.float64)
    mode = _resolve(meta, mode, window, fallback)
    if mode == "window":
        c, w = window if window is not None else (meta["window_center"][voi_index], meta["window_width"][voi_index])
        func = function or meta.get("voi_lut_function") or "LINEAR"
        if func == "SIGMOID":
            v = 1.0 / (1.0 + np.exp(-4.0 * (y - c) / w))
        else:
            if func == "LINEAR":  # C.11.2.1.2.1: the window is shifted by ½ and narrowed by 1
                c, w = c - 0.5, w - 1.0
            v = np.where(y <= c - w / 2, 0.0, np.where(y > c + w / 2, 1.0, (y - c) / max(w, 1e-300) + 0.5))
    elif mode == "lut":
        lut = meta["voi_luts"][voi_index]
        v = _lut_lookup(lut, y) / (2.0 ** lut["bits"] - 1)
    else:
        if mode == "minmax":
            lo, hi = float(y.min()), float(y.max())
        elif mode == "percentile":
            lo, hi = (float(p) for p in np.percentile(y, percentiles))
        elif mode == "none":  # ordered: a negative slope swaps natural_range's ends
            lo, hi = sorted(natural_range(meta))
        else:
            raise ValueError(f"unknown voi mode {mode!r}")
        v = (y - lo) / (hi - lo) if hi != lo else np.zeros_like(y)
    return np.clip(v, 0.0, 1.0)


def geometry(rows: int, cols: int, size: int, fit: str = "pad") -> tuple[int, int, int, int]:
    """(n_rows, offset_rows, n_cols, offset_cols): resized lengths and their offsets in the size × size output
    (negative: cropped)."""
    f = size / (max(rows, cols) if fit == "pad" else min(rows, cols))

    def axis(length):
        n = max(1, int(math.floor(length * f + 0.5)))
        return n, ((size - n) // 2 if n <= size else -((n - size) // 2))

    (ny, oy), (nx, ox) = axis(rows), axis(cols)
    return ny, oy, nx, ox


def resize_weights(n_in: int, n_out: int, filter: str = "area") -> np.ndarray:
    """[n_out, n_in] float64: output sample r = Σ_k W[r, k] · input sample k."""
    s = n_in / n_out
    k = np.arange(n_in, dtype=np.float64)[None, :]
    r = np.arange(n_out, dtype=np.float64)[:, None]
    if filter == "area":
        overlap = np.minimum(k + 1, (r + 1) * s) - np.maximum(k, r * s)
        return np.clip(overlap, 0.0, None) / s
    if filter == "bilinear":
        # torch's _compute_indices_weights_aa with the triangle filter: support s (at least 1), the window
        # [int(center - support + ½), int(center + support + ½)) clipped to the input, weights normalised.
        center = s * (r + 0.5)
        support = max(s, 1.0)
        inv = 1.0 / s if s >= 1.0 else 1.0
        lo = np.maximum((center - support + 0.5).astype(np.int64), 0)
        hi = np.minimum((center + support + 0.5).astype(np.int64), n_in)
        w = np.clip(1.0 - np.abs((k - center + 0.5) * inv), 0.0, None)
        w = np.where((k >= lo) & (k < hi), w, 0.0)
        return w / w.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown filter {filter!r}")


def radiograph(stored: np.ndarray, meta: dict, *, size: int = 512, fit: str = "pad", voi_mode: str = "auto",
               window=None, function: str | None = None, voi_index: int = 0, fallback: str = "minmax",
               percentiles=(0.5, 99.5), invert="auto", resample: str = "area", dtype: str = "uint8",
               mean: float | None = None, std: float | None = None, pad_value: float = 0.0) -> np.ndarray:
    """The whole pipeline on a 2-D array of stored values (meta: read_dicom's keys). Returns [size, size]."""
    v = voi(modality(stored, meta), meta, mode=voi_mode, window=window, function=function, voi_index=voi_index,
            fallback=fallback, percentiles=percentiles)
    if invert == "auto":
        invert = meta.get("photometric_interpretation") == "MONOCHROME1"
    if invert:
        v = 1.0 - v
    rows, cols = v.shape
    ny, oy, nx, ox = geometry(rows, cols, size, fit)
    resized = resize_weights(rows, ny, resample) @ v @ resize_weights(cols, nx, resample).T
    out = np.full((size, size), float(pad_value))
    y0, y1, x0, x1 = max(oy, 0), min(oy + ny, size), max(ox, 0), min(ox + nx, size)
    out[y0:y1, x0:x1] = resized[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    if dtype in ("uint8", "uint16"):
        levels = 255 if dtype == "uint8" else 65535
        return np.round(np.clip(out, 0.0, 1.0) * levels).astype(dtype)
    if mean is not None:
        out = (out - mean) / std
    return out.astype(dtype)
