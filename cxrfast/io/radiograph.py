"""Radiographs as model inputs: decode, window, invert, resize, pad or crop, convert — in C++ on the CPU
(csrc/cpu/pixels.cpp) or in one CUDA kernel for a batch (csrc/cuda/pixels.cu).

    r = cxrfast.io.load_radiograph("study/1.dcm", size=512)
    r.image                  # numpy uint8 [512, 512]
    r.meta                   # read_dicom's attributes (+ "format")
    b = cxrfast.io.load_radiographs(paths, size=224, dtype="float32", mean=0.5, std=0.25, device="cuda")
    b.images                 # torch.Tensor [B, 224, 224] on the GPU

The pipeline (its definition, in float64: cxrfast.reference.pixels):
1. Modality LUT Sequence or Rescale Slope/Intercept;
2. VOI → v ∈ [0, 1]: ``voi="auto"`` takes the file's VOI LUT, else its window (VOI LUT Function LINEAR,
   LINEAR_EXACT or SIGMOID), else ``fallback`` ("minmax", "percentile" or "none"); or force one of
   "window" (the file's, or ``window=(center, width)``), "lut", "minmax", "percentile" (``percentiles``),
   "none" (the full range of the stored bits). PNG/JPEG files take "none" under "auto";
3. MONOCHROME1 inversion (``invert="auto"``), so bone is bright in every output;
4. aspect-preserving antialiased resize (``resample="area"``: exact area average, OpenCV's INTER_AREA when shrinking;
   ``"bilinear"``: torch's antialiased bilinear) with ``fit="pad"`` (pad to a square with ``pad_value``) or
   ``fit="crop"`` (centre crop);
5. ``dtype`` uint8 (round(v · 255)), uint16, float16 or float32 (v, or (v - mean) / std).

Steps 1–3 depend only on the stored value: for samples of up to 16 bits they are one table lookup, built
once per image. Raw little-endian pixel data is read in place from the file's bytes (no decode copy).
"""

from __future__ import annotations

import inspect
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageError", "Radiograph", "RadiographBatch", "load_radiograph", "load_radiographs"]

_VOI = ("auto", "window", "lut", "minmax", "percentile", "none")
_FALLBACK = ("minmax", "percentile", "none")
_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_DTYPES = {"uint8": 0, "uint16": 1, "float16": 2, "float32": 3}
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


from cxrfast.io._dicom import DicomError, ReadError, decode_dicom, dicom_error, read_source, source_type_error


class ImageError(ReadError):
    """A PNG/JPEG file that cannot be read, or an image the pipeline cannot take; names the file."""


@dataclass
class Radiograph:
    image: np.ndarray  # [size, size] of the requested dtype
    meta: dict = field(default_factory=dict)


@dataclass
class RadiographBatch:
    images: object  # numpy [N, size, size] (device="cpu") or a torch.Tensor on the GPU
    metas: list  # one dict per image, in input order
    indices: list  # input position of each image (all of them unless errors="skip" dropped some)
    failed: dict = field(default_factory=dict)  # input position -> message (errors="skip")


def _dtype_name(dtype) -> str:
    if isinstance(dtype, type) and issubclass(dtype, np.generic):  # np.uint8: a scalar type, not a dtype
        dtype = np.dtype(dtype)
    name = getattr(dtype, "name", None) or str(dtype)
    name = {"torch.uint8": "uint8", "torch.uint16": "uint16", "torch.float16": "float16", "torch.float32": "float32",
            "half": "float16", "float": "float32"}.get(name, name)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return name


def _options(size, fit, voi, window, voi_function, voi_index, fallback, percentiles, invert, resample, dtype, mean,
             std, pad_value) -> dict:
    """Validate the keyword arguments once, with their names, into the dict the C++ code reads."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= 32768:
        raise ValueError(f"size must be an int in [1, 32768], got {size!r}")
    if fit not in ("pad", "crop"):
        raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
    if voi not in _VOI:
        raise ValueError(f"voi must be one of {_VOI}, got {voi!r}")
    if fallback not in _FALLBACK:
        raise ValueError(f"fallback must be one of {_FALLBACK}, got {fallback!r}")
    if window is not None:
        try:
            center, width = (float(w) for w in window)
        except (TypeError, ValueError):
            raise ValueError(f"window must be (center, width), got {window!r}") from None
        if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
            raise ValueError(f"window must be finite with width > 0, got {window!r}")
        window = (center, width)
    if voi_function is not None and voi_function not in _FUNCTIONS:
        raise ValueError(f"voi_function must be one of {_FUNCTIONS} or None, got {voi_function!r}")
    if isinstance(voi_index, bool) or not isinstance(voi_index, (int, np.integer)) or voi_index < 0:
        raise ValueError(f"voi_index must be an int >= 0, got {voi_index!r}")
    try:
        p_lo, p_hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be (low, high), got {percentiles!r}") from None
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    if invert not in ("auto", True, False):
        raise ValueError(f"invert must be 'auto', True or False, got {invert!r}")
    if resample not in ("area", "bilinear"):
        raise ValueError(f"resample must be 'area' or 'bilinear', got {resample!r}")
    dtype = _dtype_name(dtype)
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: pass both or neither")
    if mean is not None:
        if dtype in ("uint8", "uint16"):
            raise ValueError(f"mean/std normalisation needs a float dtype, got dtype={dtype!r}")
        mean, std = float(mean), float(std)
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise ValueError(f"mean must be finite and std finite and > 0, got mean={mean}, std={std}")
    if not (isinstance(pad_value, (int, float, np.number)) and 0.0 <= float(pad_value) <= 1.0):
        raise ValueError(f"pad_value is a v in [0, 1] (before mean/std), got {pad_value!r}")
    return {"size": int(size), "fit": fit, "voi": voi, "fallback": fallback, "window": window,
            "function": voi_function, "voi_index": int(voi_index), "percentiles": (p_lo, p_hi),
            "invert": -1 if invert == "auto" else int(invert), "resample": resample, "dtype": dtype,
            "mean": 0.0 if mean is None else mean, "std": 1.0 if std is None else std, "pad_value": float(pad_value)}


def _read(source) -> tuple[str, bytes]:
    return read_source(source, ImageError, "load_radiograph: `source`")


def _is_image(data: bytes) -> str | None:
    if data.startswith(_PNG):
        return "png"
    if data.startswith(_JPEG):
        return "jpeg"
    return None


_UID_KEYS = ("sop_instance_uid", "study_instance_uid", "series_instance_uid", "patient_id", "study_date",
             "view_position", "modality")


def _decode_image(name: str, data: bytes, fmt: str) -> tuple[np.ndarray, dict]:
    """PNG/JPEG → (grayscale stored values, meta). Colour images are converted to luminance (ITU-R 601)."""
    import io

    try:
        from PIL import Image
    except ImportError:
        raise ImageError(f"{name}: reading {fmt.upper()} needs Pillow (pip install pillow)") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(img, dtype=np.uint16)
            elif img.mode == "I":
                arr = np.asarray(img)
                if arr.min() < 0 or arr.max() > 65535:
                    raise ImageError(f"{name}: 32-bit {fmt.upper()} values outside [0, 65535]")
                arr = arr.astype(np.uint16)
            else:
                arr = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise ImageError(f"{name}: cannot decode the {fmt.upper()} file: {exc}") from None
    bits = 8 if arr.dtype == np.uint8 else 16
    meta = {"format": fmt, "rows": int(arr.shape[0]), "columns": int(arr.shape[1]), "bits_stored": bits,
            "bits_allocated": bits, "pixel_representation": 0, "samples_per_pixel": 1,
            "photometric_interpretation": "MONOCHROME2", "has_rescale": False}
    meta.update({k: "" for k in _UID_KEYS})
    return arr, meta


def _library_pixels(name: str, data: bytes, frame: int) -> tuple[np.ndarray, dict]:
    """Pixel data the C++ decoders do not take (library codecs): read_dicom's decode, errors included."""
    img = decode_dicom(name, data, frame)
    return img.pixels, img.meta


def _image_options(opts: dict) -> dict:
    """PNG / JPEG inputs have no VOI of their own: "auto" is their full stored range."""
    return {**opts, "voi": "none"} if opts["voi"] == "auto" else opts


def _load_one(source, opts: dict, frame: int) -> Radiograph:
    from cxrfast import _ext

    if not _ext.load():
        raise RuntimeError(f"cxrfast.io.load_radiograph needs the compiled extension: {_ext.unavailable_reason()}")
    from cxrfast import _C

    name, data = _read(source)
    fmt = _is_image(data)
    if fmt is not None:
        pixels, meta = _decode_image(name, data, fmt)
        try:
            return Radiograph(_C.radiograph_pixels(pixels, meta, _image_options(opts)), meta)
        except _C.PipelineError as exc:
            raise ImageError(f"{name}: {exc}") from None
    try:
        meta, image = _C.radiograph_dicom(data, frame, opts)
        if image is None:
            pixels, meta = _library_pixels(name, data, frame)
            image = _C.radiograph_pixels(pixels, meta, opts)
    except (_C.DicomParseError, _C.PipelineError, IndexError) as exc:
        raise dicom_error(name, exc, data) from None
    meta["format"] = "dicom"
    return Radiograph(image, meta)


def load_radiograph(source, size: int = 512, *, fit: str = "pad", voi: str = "auto", window=None,
                    voi_function: str | None = None, voi_index: int = 0, fallback: str = "minmax",
                    percentiles=(0.5, 99.5), invert="auto", resample: str = "area", dtype="uint8",
                    mean: float | None = None, std: float | None = None, pad_value: float = 0.0,
                    frame: int = 0) -> Radiograph:
    """One radiograph (a DICOM, PNG or JPEG path, or its bytes) → Radiograph(image [size, size], meta).

    The module docstring describes the steps and options; ``cxrfast.reference.pixels.radiograph`` is their
    float64 definition. Raises DicomError / ImageError (ValueError) naming the file and the problem, and
    ValueError naming a bad argument. ``frame``: which frame of a multi-frame file.
    Errors: every file problem is a cxrfast.io.ReadError (DicomError, NotAnImageError, ImageError, and
    MissingFileError, also a FileNotFoundError).
    """
    opts = _options(size, fit, voi, window, voi_function, voi_index, fallback, percentiles, invert, resample, dtype,
                    mean, std, pad_value)
    return _load_one(source, opts, _frame(frame))


def _frame(frame) -> int:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame must be an int >= 0, got {frame!r}")
    return int(frame)


def _prepare(source, opts: dict, frame: int):
    """One image readied for the batched kernel (_C.Prepared), errors as in load_radiograph."""
    from cxrfast import _C

    name, data = _read(source)
    fmt = _is_image(data)
    try:
        if fmt is not None:
            pixels, meta = _decode_image(name, data, fmt)
            return _C.radiograph_prepare_pixels(pixels, meta, _image_options(opts))
        prepared = _C.radiograph_prepare(data, frame, opts)
        if not prepared.ready:
            pixels, meta = _library_pixels(name, data, frame)
            prepared = _C.radiograph_prepare_pixels(pixels, meta, opts)
        prepared.meta["format"] = "dicom"
        return prepared
    except (_C.DicomParseError, _C.PipelineError, IndexError) as exc:
        raise (ImageError(f"{name}: {exc}") if fmt is not None else dicom_error(name, exc, data)) from None


def _render(prepared: list, opts: dict, device, workers: int):
    """Pack the prepared images into (pinned, on CUDA) staging buffers, copy them to `device` and run
    cxrfast::radiograph_render once for the batch. Returns a tensor [B, size, size] on `device`."""
    import torch

    device = torch.device(device)
    pin = device.type == "cuda"
    sample_offsets = np.concatenate([[0], np.cumsum([p.sample_count for p in prepared])]).astype(np.int64)
    table_offsets = np.concatenate([[0], np.cumsum([p.table_count for p in prepared])]).astype(np.int64)
    samples = torch.empty(int(sample_offsets[-1]), dtype=torch.int16, pin_memory=pin)
    tables = torch.empty(int(table_offsets[-1]), dtype=torch.float32, pin_memory=pin)
    s_ptr, t_ptr = samples.data_ptr(), tables.data_ptr()

    def write(i):
        prepared[i].write(s_ptr, int(sample_offsets[i]), t_ptr, int(table_offsets[i]))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, range(len(prepared))))
    descriptors = b"".join(p.descriptor() for p in prepared)
    images = torch.frombuffer(bytearray(descriptors), dtype=torch.uint8).view(len(prepared), -1)
    samples = samples.to(device, non_blocking=True)
    tables = tables.to(device, non_blocking=True)
    return torch.ops.cxrfast.radiograph_render(samples, tables, images, opts["size"],
                                               0 if opts["resample"] == "area" else 1, _DTYPES[opts["dtype"]],
                                               opts["mean"], 1.0 / opts["std"])


def load_radiographs(sources, size: int = 512, *, device="cpu", workers: int | None = None, errors: str = "raise",
                     frame: int = 0, **options) -> RadiographBatch:
    """Many radiographs of any sizes → RadiographBatch(images [N, size, size], metas, indices, failed).

    ``device="cpu"``: each image runs the C++ pipeline on a thread pool of ``workers`` threads (default: all
    cores; the GIL is released while an image is read, decoded and resized). ``device="cuda"``: the threads
    read, parse and decode; the stored samples go into one pinned staging buffer, are copied to the GPU and
    one fused kernel (cxrfast::radiograph_render) windows, resizes and converts the whole batch.
    ``errors="skip"`` leaves failed files out (``failed`` maps their input position to the message) instead
    of raising the first error. Other keyword arguments are load_radiograph's.
    """
    import torch

    defaults = _defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"load_radiographs() got an unexpected keyword argument {unknown[0]!r}")
    opts = _options(size, **{**defaults, **options})
    frame = _frame(frame)
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    sources = _source_list(sources)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ValueError(f"load_radiographs: `workers` must be an int >= 1 or None (all cores), got {workers!r}")
    workers = int(workers or os.cpu_count() or 1)
    dev = _device(device)

    not_sources = {i: msg for i, s in enumerate(sources)
                   if (msg := source_type_error(f"load_radiographs: `sources[{i}]`", s))}
    if not_sources and errors == "raise":
        raise TypeError(next(iter(not_sources.values())))

    def run(fn):
        results, failed = [None] * len(sources), {}

        def one(i):
            if i in not_sources:
                failed[i] = not_sources[i]
                return
            try:
                results[i] = fn(sources[i])
            except (ValueError, OSError) as exc:
                if errors == "raise":
                    raise
                failed[i] = str(exc)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(one, i) for i in range(len(sources))]:
                fut.result()
        indices = [i for i, r in enumerate(results) if r is not None]
        return [results[i] for i in indices], indices, failed

    if dev.type == "cpu":
        loaded, indices, failed = run(lambda s: _load_one(s, opts, frame))
        out = np.empty((len(loaded), opts["size"], opts["size"]), dtype=opts["dtype"])
        for k, r in enumerate(loaded):
            out[k] = r.image
        return RadiographBatch(out, [r.meta for r in loaded], indices, failed)

    from cxrfast import _ext

    if not _ext.load():
        raise RuntimeError(f"load_radiographs needs the compiled extension: {_ext.unavailable_reason()}")
    prepared, indices, failed = run(lambda s: _prepare(s, opts, frame))
    if not prepared:
        dtype = {"uint8": torch.uint8, "uint16": torch.uint16, "float16": torch.float16,
                 "float32": torch.float32}[opts["dtype"]]
        images = torch.empty((0, opts["size"], opts["size"]), dtype=dtype, device=dev)
    else:
        images = _render(prepared, opts, dev, workers)
    return RadiographBatch(images, [dict(p.meta) for p in prepared], indices, failed)


def _source_list(sources) -> list:
    """The sources as a list; one path or one file's bytes is a TypeError (iterating it would read its
    characters as files)."""
    if isinstance(sources, (str, bytes, bytearray, memoryview, os.PathLike)):
        kind = "path" if isinstance(sources, (str, os.PathLike)) else "file's bytes"
        shown = repr(sources) if kind == "path" else f"<{len(sources)} bytes>"
        raise TypeError(f"load_radiographs: `sources` must be a list (or another iterable) of paths or bytes, got a "
                        f"single {kind} {shown}: pass [{shown}], or use load_radiograph for one image")
    try:
        return list(sources)
    except TypeError:
        raise TypeError(f"load_radiographs: `sources` must be a list of paths or bytes, got "
                        f"{type(sources).__name__}") from None


def _device(device):
    """torch.device for 'cpu', 'cuda' or 'cuda:N' (a torch.device too), checked against this machine."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"load_radiographs: `device` must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if dev.type == "cuda":
        shown = str(dev)
        if not torch.cuda.is_available():
            raise RuntimeError(f"load_radiographs(device={shown!r}): torch has no CUDA device here "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise RuntimeError(f"load_radiographs(device={shown!r}): this machine has {n} CUDA device(s), "
                               f"numbered 0..{n - 1}")
    return dev


def _defaults() -> dict:
    """load_radiograph's keyword defaults (one definition of them, for load_radiographs)."""
    params = inspect.signature(load_radiograph).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name != "frame"}
