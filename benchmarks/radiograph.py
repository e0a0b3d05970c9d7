"""Decode + window + resize to a model input: cxrfast.io against what users run today, same files, same run.

    python -m pytest benchmarks/test_bench_radiograph.py --benchmark-only -q     (part of `make bench`)
    python benchmarks/radiograph.py                                           (the same)

1. One core (the process pinned to one CPU, OpenCV and torch to one thread), a 2500 × 2048 12-bit
   MONOCHROME1 chest radiograph with a window, → 224 × 224 uint8 (aspect kept, padded):
     cxrfast          cxrfast.io.load_radiograph(path, 224)
     pydicom+cv2      pydicom.dcmread(path).pixel_array → the window in numpy (float32, vectorised) →
                      MONOCHROME1 inversion → uint8 → cv2.resize(INTER_AREA) → pad: the usual loop
     pydicom-lut+cv2  the same with pydicom's apply_modality_lut + apply_voi_lut (float64) for the window
   for the raw file (explicit VR little endian) and the same image as JPEG Lossless SV1 (pydicom's default
   JPEG path: the pylibjpeg-libjpeg plugin here; and imagecodecs' libjpeg-turbo as the fastest library).
   Targets (issue 4): raw ≥ 4× pydicom+cv2; JPEG lossless ≥ 5× pydicom+cv2.
2. All cores: load_radiographs over --files raw files (in the page cache) with workers=1 and workers=all.
3. CUDA (when present): load_radiographs(device="cuda") end to end over the same files (read, parse, stage in
   pinned memory, copy, one fused kernel), with the pinned host→device bandwidth measured on the same bytes
   beside it (it bounds the end-to-end rate), and the kernel alone. Target: ≥ 2000 images/s on an H100.

Every implementation's output is checked against cxrfast's before timing (within 2 grey levels: the
baselines quantise to uint8 before resizing, cxrfast after). The suite (test_bench_radiograph.py) writes
benchmarks/results/<device>/radiograph.json; this module holds its files and baselines.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from dicom_decode import (JPEG_LOSSLESS_SV1, SHAPE, _dataset, _pin_one_core, _radiograph, _stats,  # noqa: E402
                          _time_interleaved)

CENTER, WIDTH = 2000.0, 3000.0  # the window written into the files


def _with_window(data: bytes) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.WindowCenter, ds.WindowWidth = CENTER, WIDTH
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pad_square(img: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size), img.dtype)
    y, x = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def baseline(path: str, size: int, luts: bool = False) -> np.ndarray:
    """What a training script does today: pydicom decode, window, invert, uint8, OpenCV area resize, pad."""
    import cv2
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    if luts:
        y = apply_voi_lut(apply_modality_lut(arr, ds), ds)
        v = y / (2.0 ** ds.BitsStored - 1)
    else:
        c, w = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1.0
        v = np.clip((arr.astype(np.float32) - c) / w + 0.5, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        v = 1.0 - v
    u8 = np.round(v * 255).astype(np.uint8)
    h, w = u8.shape
    s = size / max(h, w)
    small = cv2.resize(u8, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return _pad_square(small, size)


def library_baseline(path: str, size: int) -> np.ndarray:
    """The fastest CPU JPEG library (imagecodecs' libjpeg-turbo) on the frame, then the same window + cv2."""
    import cv2
    import imagecodecs
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    arr = imagecodecs.jpeg8_decode(next(generate_frames(ds.PixelData, number_of_frames=1)))
    c, w = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1.0
    v = 1.0 - np.clip((arr.astype(np.float32) - c) / w + 0.5, 0.0, 1.0)
    u8 = np.round(v * 255).astype(np.uint8)
    h, w_ = u8.shape
    s = size / max(h, w_)
    return _pad_square(cv2.resize(u8, (max(1, round(w_ * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA),
                       size)


def write_files(folder: str, n_many: int) -> dict:
    """The benchmark's files: raw.dcm and jpeg_ll.dcm (one image, two syntaxes; the JPEG file only where
    imagecodecs, its encoder, is installed) and n_many raw copies of another image (many_*.dcm), read
    once so they sit in the page cache."""
    from pydicom.encaps import encapsulate

    img = _radiograph(SHAPE)
    files = {"raw": os.path.join(folder, "raw.dcm")}
    with open(files["raw"], "wb") as f:
        f.write(_with_window(_dataset(SHAPE, "1.2.840.10008.1.2.1", img.astype("<u2").tobytes())))
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None
    if imagecodecs is not None:
        files["jpeg"] = os.path.join(folder, "jpeg_ll.dcm")
        frame = imagecodecs.jpeg8_encode(img, lossless=True, bitspersample=12, predictor=1)
        with open(files["jpeg"], "wb") as f:
            f.write(_with_window(_dataset(SHAPE, JPEG_LOSSLESS_SV1, encapsulate([frame]))))
    data = _with_window(_dataset(SHAPE, "1.2.840.10008.1.2.1", _radiograph(SHAPE, seed=2).astype("<u2").tobytes()))
    files["many"] = []
    for i in range(n_many):
        p = os.path.join(folder, f"many_{i:04d}.dcm")
        with open(p, "wb") as f:
            f.write(data)
        files["many"].append(p)
    for p in [files["raw"], *([files["jpeg"]] if "jpeg" in files else []), *files["many"]]:
        with open(p, "rb") as f:
            f.read()
    return files


if __name__ == "__main__":
    import pytest

    sys.exit(pytest.main([os.path.join(HERE, "test_bench_radiograph.py"), "--benchmark-only", "-q",
                          "-p", "no:cacheprovider", *sys.argv[1:]]))
