"""Files, baselines and timing of the decode and radiograph benchmarks, shared by `cxrfast bench decode` /
`cxrfast bench radiograph` (cxrfast/cli.py) and the suites in benchmarks/ (dicom_decode.py, radiograph.py,
test_bench_radiograph.py).

    img = synthetic_radiograph((2500, 2048))               # a smooth 12-bit field with noise (compresses like a CR)
    data = dicom_bytes(img.shape, RAW, img.astype("<u2").tobytes(), window=(CENTER, WIDTH))
    pydicom_cv2(path, 224)                                   # what training scripts run today
    times = time_interleaved({"cxrfast": f, "pydicom": g}, rounds=15); stats(times["cxrfast"], img.size)

Needs pydicom to write files (cxrfast.io.testing) and for the baselines; imagecodecs to encode JPEG Lossless;
OpenCV for the resize baselines. Imported only by the benchmarks and the CLI's bench commands.
"""

from __future__ import annotations

import io
import os
import statistics
import time
import warnings

import numpy as np

SHAPE = (2500, 2048)  # rows × columns of a chest radiograph
RAW = "1.2.840.10008.1.2.1"  # explicit VR little endian
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"  # any predictor
CENTER, WIDTH = 2000.0, 3000.0  # the window written into the radiograph benchmark's files


def synthetic_radiograph(shape=SHAPE, seed: int = 0, bits: int = 12) -> np.ndarray:
    """A smooth image with noise (compresses like a radiograph, not like white noise or a constant).
    bits=16: the same picture on the 16-bit scale (×16, noise included)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = 2000 + 900 * np.sin(x / 170.0) * np.cos(y / 230.0) + rng.normal(0, 25, shape)
    img = np.clip(img, 0, 4095)
    if bits == 16:
        img = np.clip(img * 16 + rng.normal(0, 4, shape), 0, 65535)
    return img.astype(np.uint16)


def dicom_bytes(shape, syntax: str, pixel_data: bytes, bits_stored: int = 12, window=None) -> bytes:
    """A MONOCHROME1 Part 10 file of `shape` holding `pixel_data` (native bytes or an encapsulated stream);
    with `window` (center, width) also a VOI window and an identity rescale."""
    from cxrfast.io.testing import grayscale_dataset, to_bytes

    ds = grayscale_dataset(shape, syntax=syntax, bits_stored=bits_stored, photometric="MONOCHROME1",
                           sop_instance_uid="1.2.3.7")
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixel_data
    return to_bytes(ds)


def jpeg_lossless_frame(img: np.ndarray, precision: int = 12, predictor: int = 1) -> bytes | None:
    """A JPEG Lossless (process 14) stream of `img` written by libjpeg-turbo (imagecodecs); None without it."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs.jpeg8_encode(img, lossless=True, bitspersample=precision, predictor=predictor)


def encapsulated(frame: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    return encapsulate([frame])


def pad_square(img: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size), img.dtype)
    y, x = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def _window_resize(arr: np.ndarray, ds, size: int, luts: bool) -> np.ndarray:
    import cv2
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if luts:
        y = apply_voi_lut(apply_modality_lut(arr, ds), ds)
        v = y / (2.0 ** ds.BitsStored - 1)
    else:
        c, w = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1.0
        v = np.clip((arr.astype(np.float32) - c) / w + 0.5, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        v = 1.0 - v
    u8 = np.round(v * 255).astype(np.uint8)
    h, w_ = u8.shape
    s = size / max(h, w_)
    small = cv2.resize(u8, (max(1, round(w_ * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return pad_square(small, size)


def _dcmread(source):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(source if isinstance(source, (str, os.PathLike)) else io.BytesIO(source))


def pydicom_cv2(source, size: int, luts: bool = False) -> np.ndarray:
    """What a training script does today: pydicom decode, window (vectorised numpy, or pydicom's LUT functions
    with luts=True), invert, uint8, OpenCV area resize, pad."""
    ds = _dcmread(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    return _window_resize(arr, ds, size, luts)


def libjpeg_turbo_cv2(source, size: int) -> np.ndarray:
    """The fastest CPU JPEG library (imagecodecs' libjpeg-turbo) on the frame, then the same window + cv2."""
    import imagecodecs
    from pydicom.encaps import generate_frames

    ds = _dcmread(source)
    arr = imagecodecs.jpeg8_decode(next(generate_frames(ds.PixelData, number_of_frames=1)))
    return _window_resize(arr, ds, size, False)


def pydicom_pixels(source) -> np.ndarray:
    """pydicom's default decode: dcmread + pixel_array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dcmread(source).pixel_array


def pin_one_core():
    """Pin this process to one CPU (the first it may run on); returns it, or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def stats(samples, pixels: int) -> dict:
    """median, p20, p80 (seconds), rounds, images/s and Mpx/s from the median."""
    s = sorted(samples)
    q = statistics.quantiles(s, n=5) if len(s) > 1 else [s[0]] * 4
    med = statistics.median(s)
    return {"median_s": med, "p20_s": q[0], "p80_s": q[-1], "rounds": len(s), "images_per_s": 1.0 / med,
            "mpixels_per_s": pixels / med / 1e6}


def time_interleaved(fns: dict, rounds: int, step=None) -> dict:
    """{name: [seconds]}: one warm-up call each, then `rounds` rounds that call every fn once (a load change
    on the machine hits all of them alike). step(): called after each round (a progress bar)."""
    for fn in fns.values():
        fn()
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
        if step is not None:
            step()
    return out


def write_files(folder: str, n_many: int, shape=SHAPE) -> dict:
    """The radiograph benchmark's files: raw.dcm and jpeg_ll.dcm (one image, two syntaxes; the JPEG file only
    where imagecodecs, its encoder, is installed) and n_many raw copies of another image (many_*.dcm), read
    once so they sit in the page cache."""
    img = synthetic_radiograph(shape)
    files = {"raw": os.path.join(folder, "raw.dcm")}
    window = (CENTER, WIDTH)
    with open(files["raw"], "wb") as f:
        f.write(dicom_bytes(shape, RAW, img.astype("<u2").tobytes(), window=window))
    frame = jpeg_lossless_frame(img)
    if frame is not None:
        files["jpeg"] = os.path.join(folder, "jpeg_ll.dcm")
        with open(files["jpeg"], "wb") as f:
            f.write(dicom_bytes(shape, JPEG_LOSSLESS_SV1, encapsulated(frame), window=window))
    data = dicom_bytes(shape, RAW, synthetic_radiograph(shape, seed=2).astype("<u2").tobytes(), window=window)
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


# --------------------------------------------------------------------------------------------------
# the suites of `cxrfast bench decode` / `cxrfast bench radiograph`: lists of rows
#   {"case", "impl", "median_s", "p20_s", "p80_s", "rounds", "images_per_s", "mpixels_per_s", "note"}


def _missing(module: str) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec(module) is not None else f"needs {module} (not installed)"


def _skipped(case: str, impl: str, note: str) -> dict:
    return {"case": case, "impl": impl, "median_s": None, "p20_s": None, "p80_s": None, "rounds": 0, "note": note}


def _timed(case: str, fns: dict, rounds: int, pixels: int, step) -> list[dict]:
    times = time_interleaved(fns, rounds, step)
    return [{"case": case, "impl": impl, **stats(samples, pixels), "note": ""} for impl, samples in times.items()]


def _cases(shape) -> list[tuple[str, np.ndarray, bytes]]:
    """(name, image, file bytes): raw 12-bit, and JPEG Lossless SV1 where imagecodecs can encode it."""
    img = synthetic_radiograph(shape)
    label = f"{shape[0]}x{shape[1]}"
    window = (CENTER, WIDTH)
    cases = [(f"raw 12-bit {label}", img, dicom_bytes(shape, RAW, img.astype("<u2").tobytes(), window=window))]
    frame = jpeg_lossless_frame(img)
    if frame is not None:
        cases.append((f"JPEG lossless SV1 12-bit {label}", img,
                      dicom_bytes(shape, JPEG_LOSSLESS_SV1, encapsulated(frame), window=window)))
    else:
        cases.append((f"JPEG lossless SV1 12-bit {label}", img, None))
    return cases


def decode_rows(shape=SHAPE, rounds: int = 15, step=None) -> list[dict]:
    """read_dicom vs pydicom (dcmread + pixel_array) on the same bytes, raw and JPEG Lossless SV1; every
    decoder's output checked equal to the image first."""
    import cxrfast.io as cio

    rows = []
    no_pydicom = _missing("pydicom")
    for name, img, data in _cases(shape):
        if data is None:
            rows.append(_skipped(name, "cxrfast", "needs imagecodecs to encode the JPEG file"))
            continue
        fns = {"cxrfast": lambda d=data: cio.read_dicom(d).pixels}
        if not no_pydicom:
            fns["pydicom"] = lambda d=data: pydicom_pixels(d)
        for impl, fn in fns.items():
            if not np.array_equal(fn(), img):
                raise AssertionError(f"{name}: {impl} does not decode the image exactly")
        rows += _timed(name, fns, rounds, img.size, step)
        if no_pydicom:
            rows.append(_skipped(name, "pydicom", no_pydicom))
    return rows


def radiograph_rows(shape=SHAPE, size: int = 224, rounds: int = 15, files: int = 32, step=None) -> list[dict]:
    """load_radiograph (decode, window, invert, area resize, pad, uint8) vs pydicom + OpenCV on one file at a
    time, raw and JPEG Lossless SV1; then load_radiographs over `files` raw files with 1 worker and with all
    cores (and on CUDA when there is one). Outputs are checked within 2 grey levels first (the baseline
    quantises to uint8 before resizing, cxrfast after), when shrinking."""
    import tempfile

    import cxrfast.io as cio

    rows = []
    baseline_missing = _missing("pydicom") or _missing("cv2")
    with tempfile.TemporaryDirectory(prefix="cxrfast-bench-") as folder:
        for name, img, data in _cases(shape):
            case = f"{name} -> {size}"
            if data is None:
                rows.append(_skipped(case, "cxrfast", "needs imagecodecs to encode the JPEG file"))
                continue
            path = os.path.join(folder, "one.dcm")
            with open(path, "wb") as f:
                f.write(data)
            fns = {"cxrfast": lambda p=path: cio.load_radiograph(p, size).image}
            if not baseline_missing:
                fns["pydicom+cv2"] = lambda p=path: pydicom_cv2(p, size)
            if not baseline_missing and size < max(shape):  # enlarging, OpenCV's INTER_AREA is bilinear: no check
                ours, theirs = fns["cxrfast"](), fns["pydicom+cv2"]()
                worst = int(np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).max())
                if worst > 2:
                    raise AssertionError(f"{case}: pydicom+cv2 differs from cxrfast by {worst} grey levels")
            rows += _timed(case, fns, rounds, img.size, step)
            if baseline_missing:
                rows.append(_skipped(case, "pydicom+cv2", baseline_missing))
        many = write_files(folder, files, shape)["many"]
        case = f"load_radiographs, {files} raw files -> {size}"
        cores = os.cpu_count() or 1
        fns = {"workers=1": lambda: cio.load_radiographs(many, size, workers=1),
               f"workers={cores}": lambda: cio.load_radiographs(many, size, workers=cores)}
        import torch

        if torch.cuda.is_available():
            fns["device=cuda"] = lambda: cio.load_radiographs(many, size, device="cuda")
        for row in _timed(case, fns, max(3, rounds // 3), img.size * files, step):
            row["images_per_s"] *= files
            rows.append(row)
    return rows
