"""Small synthetic radiograph files for the `prepare` tests: 12-bit DICOMs written with pydicom, PNG and
JPEG written with Pillow, and the bad files `prepare` must skip (a truncated DICOM, a text file named
.dcm, a zero-byte PNG). Imported by tests/data and tests/cli (sys.path), not collected itself."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def radiograph(rows: int, cols: int, seed: int, bits: int = 12) -> np.ndarray:
    """A smooth image with noise, different for every seed, in [0, 2**bits)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    top = 2 ** bits - 1
    img = top * (0.5 + 0.35 * np.sin(x / (3 + seed % 7) + seed) * np.cos(y / (5 + seed % 5)))
    img += rng.normal(0, top / 60, (rows, cols))
    return np.clip(img, 0, top).astype(np.uint16)


def dicom_bytes(pixels: np.ndarray, seed: int, *, syntax: str = EXPLICIT_LE, photometric: str = "MONOCHROME2",
                bits_stored: int = 12, preamble: bool = True, with_pixels: bool = True) -> bytes:
    from cxrfast.io.testing import DIGITAL_XRAY, grayscale_dataset

    ds = grayscale_dataset(pixels.shape, syntax=syntax, bits_stored=bits_stored, photometric=photometric,
                           sop_instance_uid=f"1.2.826.0.1.3680043.99.{seed}.3", sop_class_uid=DIGITAL_XRAY)
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.{seed // 2}.1"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.{seed}.2"
    ds.PatientID = f"p{seed // 4:04d}"
    ds.StudyDate = f"2020{1 + seed % 12:02d}{1 + seed % 28:02d}"
    ds.ViewPosition = ("PA", "AP", "LATERAL")[seed % 3]
    ds.Modality = "DX"
    if with_pixels:
        ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, implicit_vr=syntax == IMPLICIT_LE, little_endian=True, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[128:]


def write_png(path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG")


def write_jpeg(path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=90)


def make_tree(root, n_dicom: int = 12, *, shape=(64, 80), bad: bool = True, extras: bool = True) -> dict:
    """A folder of sources. Returns {"good": [relative paths in sorted order], "bad": {path: what}}.

    n_dicom 12-bit DICOMs (a few MONOCHROME1, a few implicit VR, one extensionless) in two sub-folders;
    with `extras` also two PNGs (8- and 16-bit), a JPEG, and files prepare must not pick up; with `bad`
    a truncated DICOM, a text file named .dcm and a zero-byte PNG ("bad"), and a DICOM without pixel data
    ("not_images")."""
    root = Path(root)
    good, bad_files, not_images = [], {}, {}
    rows, cols = shape
    for i in range(n_dicom):
        sub = root / ("study_a" if i % 2 else "study_b")
        sub.mkdir(parents=True, exist_ok=True)
        name = f"img{i:04d}.dcm" if i != 3 else f"1.2.840.{i}"  # one DICOM without a suffix
        kw = {}
        if i % 5 == 2:
            kw["photometric"] = "MONOCHROME1"
        if i % 4 == 1:
            kw["syntax"] = IMPLICIT_LE
        (sub / name).write_bytes(dicom_bytes(radiograph(rows + i % 3, cols - i % 4, seed=i), seed=i, **kw))
        good.append(f"{sub.name}/{name}")
    if extras:
        (root / "png").mkdir(exist_ok=True)
        write_png(root / "png" / "eight.png", (radiograph(50, 70, 100, bits=8)).astype(np.uint8))
        write_png(root / "png" / "sixteen.PNG", radiograph(70, 50, 101, bits=16))
        write_jpeg(root / "png" / "photo.jpg", radiograph(60, 60, 102, bits=8))
        good += ["png/eight.png", "png/photo.jpg", "png/sixteen.PNG"]
        (root / "README").write_text("not an image\n" * 20)  # no suffix, no preamble: not a source
        (root / "notes.txt").write_text("ignored")
    if bad:
        (root / "bad").mkdir(exist_ok=True)
        whole = dicom_bytes(radiograph(rows, cols, 200), seed=200)
        (root / "bad" / "truncated.dcm").write_bytes(whole[: len(whole) - rows * cols])
        (root / "bad" / "text.dcm").write_text("this is not a DICOM file\n" * 10)
        (root / "bad" / "empty.png").write_bytes(b"")
        (root / "bad" / "nopixels.dcm").write_bytes(dicom_bytes(radiograph(rows, cols, 201), 201, with_pixels=False))
        bad_files = {"bad/empty.png": "zero bytes", "bad/text.dcm": "not DICOM", "bad/truncated.dcm": "truncated"}
        not_images = {"bad/nopixels.dcm": "no pixel data"}  # skipped as "not an image", not as a bad file
    good.sort()
    return {"good": good, "bad": bad_files, "not_images": not_images if bad else {},
            "sources": sorted(good + list(bad_files) + (list(not_images) if bad else []))}


def direct(root, relpath: str, size: int, fit: str = "pad") -> np.ndarray:
    """What `prepare` must have stored for this file: cxrfast.io.load_radiograph of it."""
    from cxrfast.io import load_radiograph

    return load_radiograph(os.path.join(root, relpath), size=size, fit=fit, dtype="uint8").image
