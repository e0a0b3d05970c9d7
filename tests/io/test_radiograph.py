"""The radiograph pixel pipeline (cxrfast.io.load_radiograph / load_radiographs, csrc/cpu/pixels.cpp and the
kernel's computation cxrfast::radiograph_render) against its float64 definition cxrfast.reference.pixels,
and that definition against the tools it stands for: pydicom's LUT functions, OpenCV's INTER_AREA and
torch's antialiased interpolate.

Tolerances (issue 4): 1 grey level for uint8 (and uint16), 1e-3 for float outputs.
"""

import os
import warnings

import numpy as np
import pytest
import torch

pydicom = pytest.importorskip("pydicom", reason="pydicom is the reference for the DICOM tests")
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

import cxrfast.io as cio  # noqa: E402
from cxrfast import _ext  # noqa: E402
from cxrfast.io.testing import grayscale_dataset  # noqa: E402
from cxrfast.reference import pixels as ref  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

from cxrfast import _C  # noqa: E402
from cxrfast.io.radiograph import _options, _prepare, _render  # noqa: E402


def _file(name):
    return pydicom.data.get_testdata_file(name, download=False)


def _dicom(path, pixels, *, bits_stored=12, photometric="MONOCHROME2", signed=False, **attrs):
    """Write a grayscale DICOM with the given stored values and attributes."""
    ds = grayscale_dataset(pixels.shape, bits_allocated=pixels.dtype.itemsize * 8, bits_stored=bits_stored,
                           signed=signed, photometric=photometric, sop_instance_uid=generate_uid(),
                           sop_class_uid="1.2.840.10008.5.1.4.1.1.1")  # Computed Radiography
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _radiograph(rng, shape, bits=12, signed=False):
    """A smooth radiograph-like image with noise, using the full stored range."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.35 * np.sin(yy / max(h, 2) * 5) * np.cos(xx / max(w, 2) * 4) + rng.normal(0, 0.05, shape)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    vals = np.clip(np.round(lo + base * (hi - lo)), lo, hi)
    dtype = {8: np.int8, 16: np.int16}[8 if bits <= 8 else 16] if signed else (np.uint8 if bits <= 8 else np.uint16)
    return vals.astype(dtype)


def _close(got, want, dtype):
    """uint8/uint16 within 1 level, floats within 1e-3 (float16: its rounding, 1e-3 relative)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if dtype in ("uint8", "uint16"):
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= 1, f"max diff {diff.max()} grey levels"
    else:
        tol = 1e-3 + (1e-3 * np.abs(want.astype(np.float64)) if dtype == "float16" else 0)
        np.testing.assert_array_less(np.abs(got.astype(np.float64) - want.astype(np.float64)), tol + 1e-12)


# ---- the definition against pydicom, OpenCV and torch -------------------------------------------------------

def _pydicom_v(ds, arr):
    """pydicom's modality + VOI output as v ∈ [0, 1] (its windowed range normalised as the pipeline does)."""
    y = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    meta = cio.read_dicom(ds.filename).meta
    if meta["voi_luts"]:
        bits = meta["voi_luts"][0]["bits"]
        return np.clip(y / (2.0 ** bits - 1), 0, 1), meta
    lo, hi = ref.natural_range(meta)
    return np.clip((y - lo) / (hi - lo), 0, 1), meta


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("signed,rescale", [(False, None), (True, None), (False, (2.0, -1024.0)),
                                            (True, (0.5, 10.0))])
def test_reference_voi_matches_pydicom(function, signed, rescale, tmp_path):
    rng = np.random.default_rng(1)
    arr = _radiograph(rng, (23, 31), 12, signed)
    slope, intercept = rescale or (1.0, 0.0)
    center = float(np.median(arr) * slope + intercept)  # a window over the data, so it is not all clipped
    attrs = {"WindowCenter": [center, 10.0], "WindowWidth": [801.0 * slope, 55.0], "VOILUTFunction": function}
    if rescale:
        attrs.update(RescaleSlope=slope, RescaleIntercept=intercept)
    path = _dicom(str(tmp_path / "w.dcm"), arr, signed=signed, **attrs)
    ds = pydicom.dcmread(path)
    want, meta = _pydicom_v(ds, ds.pixel_array)
    got = ref.voi(ref.modality(arr, meta), meta)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got.min() < 0.1 and got.max() > 0.9 and ((got > 0.2) & (got < 0.8)).any(), "a window over the data"


@pytest.mark.parametrize("name", ["mlut_18.dcm", "vlut_04.dcm"])
def test_reference_luts_match_pydicom(name):
    path = _file(name)
    ds = pydicom.dcmread(path)
    want, meta = _pydicom_v(ds, ds.pixel_array)
    got = ref.voi(ref.modality(cio.read_dicom(path).pixels, meta), meta)
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("shape,out", [((100, 77), (33, 25)), ((64, 64), (16, 16)), ((50, 41), (7, 13)),
                                       ((9, 10), (9, 3)), ((2500, 2048), (224, 184))])
def test_reference_area_is_opencv_inter_area(shape, out):
    """(INTER_AREA is the area average only when shrinking: every case shrinks or keeps each axis.)"""
    cv2 = pytest.importorskip("cv2")
    assert out[0] <= shape[0] and out[1] <= shape[1]
    img = np.random.default_rng(2).random(shape).astype(np.float32)
    want = cv2.resize(img, (out[1], out[0]), interpolation=cv2.INTER_AREA)
    got = ref.resize_weights(shape[0], out[0]) @ img.astype(np.float64) @ ref.resize_weights(shape[1], out[1]).T
    np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("shape,out", [((100, 77), (33, 25)), ((40, 30), (70, 45)), ((2500, 13), (224, 5))])
def test_reference_bilinear_is_torch_antialiased_interpolate(shape, out):
    img = np.random.default_rng(3).random(shape)
    want = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=out, mode="bilinear",
                                           antialias=True, align_corners=False)[0, 0].numpy()
    got = ref.resize_weights(shape[0], out[0], "bilinear") @ img @ ref.resize_weights(shape[1], out[1], "bilinear").T
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_reference_area_at_integer_factors_is_torch_area():
    img = np.random.default_rng(4).random((60, 36))
    want = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(20, 9), mode="area")[0, 0].numpy()
    got = ref.resize_weights(60, 20) @ img @ ref.resize_weights(36, 9).T
    np.testing.assert_allclose(got, want, atol=1e-12)


# ---- the C++ pipeline against the definition -----------------------------------------------------------------

CASES = [
    # shape, bits, signed, attrs, options
    ((250, 205), 12, False, {"WindowCenter": 2000.0, "WindowWidth": 3000.0}, {}),
    ((205, 250), 12, False, {"WindowCenter": 2000.0, "WindowWidth": 3000.0}, {"fit": "crop"}),
    ((97, 131), 16, False, {}, {"voi": "percentile", "percentiles": (2.0, 98.0), "resample": "bilinear"}),
    ((131, 97), 16, True, {"RescaleSlope": 0.5, "RescaleIntercept": -20.0}, {"voi": "minmax", "fit": "crop",
                                                                             "resample": "bilinear"}),
    ((64, 64), 10, True, {}, {"voi": "none", "invert": True}),
    ((40, 33), 12, False, {"WindowCenter": 900.0, "WindowWidth": 400.0, "VOILUTFunction": "SIGMOID"},
     {"size": 100}),  # upscaling
    ((40, 33), 12, False, {"WindowCenter": 900.0, "WindowWidth": 400.0, "VOILUTFunction": "LINEAR_EXACT"},
     {"size": 100, "resample": "bilinear", "fit": "crop"}),
    ((1, 57), 8, False, {}, {"size": 16}),  # one row
    ((301, 2), 8, True, {}, {"voi": "percentile", "size": 16, "fit": "crop"}),  # two columns, cropped
    ((77, 70), 12, False, {"WindowCenter": 1.0, "WindowWidth": 1.0}, {"size": 31}),  # width-1 window: a threshold
]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16", "float32"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_pipeline_matches_reference(case, dtype, tmp_path):
    shape, bits, signed, attrs, options = CASES[case]
    rng = np.random.default_rng(case)
    arr = _radiograph(rng, shape, bits, signed)
    path = _dicom(str(tmp_path / "c.dcm"), arr, bits_stored=bits, signed=signed,
                  photometric="MONOCHROME1" if case % 2 else "MONOCHROME2", **attrs)
    options = {"size": 29, **options}
    norm = {"mean": 0.4, "std": 0.2} if dtype.startswith("float") and case % 3 == 0 else {}
    got = cio.load_radiograph(path, dtype=dtype, **options, **norm)
    meta = cio.read_dicom(path).meta
    ro = {("voi_mode" if k == "voi" else k): v for k, v in options.items()}
    want = ref.radiograph(arr, meta, dtype=dtype, **ro, **norm)
    _close(got.image, want, dtype)
    assert got.meta["format"] == "dicom" and got.meta["rows"] == shape[0]


def test_pipeline_on_pixels_of_every_sample_width():
    """radiograph_pixels on uint8/int8/uint16/int16/uint32/int32 arrays (32-bit: the per-sample path)."""
    rng = np.random.default_rng(5)
    opts = _options(23, "pad", "minmax", None, None, 0, "minmax", (0.5, 99.5), "auto", "area", "float32", None, None,
                    0.0)
    for dtype, bits in [(np.uint8, 8), (np.int8, 8), (np.uint16, 16), (np.int16, 12), (np.uint32, 20),
                        (np.int32, 32)]:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -(2 ** (bits - 1)) if info.min < 0 else 0), min(info.max, 2 ** bits - 1 if
                                                                             info.min == 0 else 2 ** (bits - 1) - 1)
        arr = rng.integers(lo, hi, size=(41, 30), endpoint=True).astype(dtype)
        meta = {"bits_stored": bits, "pixel_representation": int(info.min < 0)}
        got = _C.radiograph_pixels(arr, meta, opts)
        want = ref.radiograph(arr, meta, size=23, voi_mode="minmax", dtype="float32")
        _close(got, want, "float32")
        for mode in ("percentile", "none"):
            got = _C.radiograph_pixels(arr, meta, {**opts, "voi": mode})
            _close(got, ref.radiograph(arr, meta, size=23, voi_mode=mode, dtype="float32"), "float32")


def test_garbage_above_the_high_bit_is_masked(tmp_path):
    """Raw words with bits set above BitsStored (read in place from the file) read as pydicom reads them."""
    rng = np.random.default_rng(6)
    arr = _radiograph(rng, (50, 40), 12)
    dirty = arr | (rng.integers(0, 16, arr.shape).astype(np.uint16) << 12)
    path = _dicom(str(tmp_path / "g.dcm"), dirty, bits_stored=12, WindowCenter=2048.0, WindowWidth=4096.0)
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, arr)
    got = cio.load_radiograph(path, size=32, dtype="float32").image
    _close(got, ref.radiograph(arr, cio.read_dicom(path).meta, size=32, dtype="float32"), "float32")


def test_float16_output_rounds_like_numpy():
    """The kernel's own float → half conversion: bit-identical to numpy's on values spanning subnormals,
    normals, ties and overflow (mean/std stretch v over the whole half range)."""
    arr = np.arange(0, 4096, dtype=np.uint16).reshape(64, 64)
    meta = {"bits_stored": 12}
    for mean, std in [(0.5, 1e-5), (0.0, 1e-8), (0.3, 3e-2), (1.0, 7e-6), (0.25, 4.2e-9)]:
        opts = _options(64, "pad", "none", None, None, 0, "minmax", (0.5, 99.5), False, "area", "float32", mean, std,
                        0.0)
        f32 = _C.radiograph_pixels(arr, meta, opts)
        f16 = _C.radiograph_pixels(arr, meta, {**opts, "dtype": "float16"})
        with np.errstate(over="ignore"):  # numpy warns where it rounds to inf, as the kernel must too
            np.testing.assert_array_equal(f16.view(np.uint16), f32.astype(np.float16).view(np.uint16))
    big = _C.radiograph_pixels(arr, meta, {**_options(64, "pad", "none", None, None, 0, "minmax", (0.5, 99.5), False,
                                                       "area", "float16", 0.0, 1e-5, 0.0)})
    assert np.isinf(big).any() and np.isfinite(big).any(), "values past 65504 must round to inf, as numpy's"


def test_library_codec_files_go_through_the_same_pipeline():
    """A JPEG 2000 chest radiograph (pydicom-data's RG1, decoded by the library codec) and its uncompressed
    twin give the same image, and the uncompressed one matches the reference on pydicom's pixels."""
    data_store = pytest.importorskip("data_store", reason="pydicom-data carries the real radiographs")
    folder = os.path.join(os.path.dirname(data_store.__file__), "data")
    pytest.importorskip("imagecodecs", reason="JPEG 2000 is decoded by imagecodecs")
    raw = cio.load_radiograph(os.path.join(folder, "RG1_UNCR.dcm"), size=128, dtype="float32")
    j2k = cio.load_radiograph(os.path.join(folder, "RG1_J2KR.dcm"), size=128, dtype="float32")
    assert j2k.meta["codec"] == "imagecodecs.jpeg2k" and raw.meta["codec"] == "native"
    np.testing.assert_array_equal(j2k.image, raw.image)
    ds = pydicom.dcmread(os.path.join(folder, "RG1_UNCR.dcm"))
    want = ref.radiograph(ds.pixel_array, raw.meta, size=128, dtype="float32")
    _close(raw.image, want, "float32")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "mlut_18.dcm", "vlut_04.dcm",
                                  "JPEG-LL.dcm", "MR_small_RLE.dcm"])
def test_real_files_match_reference_on_pydicoms_pixels(name):
    path = _file(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = pydicom.dcmread(path).pixel_array
    meta = cio.read_dicom(path).meta
    for options in ({}, {"voi": "percentile", "fit": "crop", "resample": "bilinear"}):
        got = cio.load_radiograph(path, size=48, **options)
        ro = {("voi_mode" if k == "voi" else k): v for k, v in options.items()}
        _close(got.image, ref.radiograph(arr, meta, size=48, **ro), "uint8")


def test_png_and_jpeg_inputs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(7)
    a8 = _radiograph(rng, (60, 45), 8)
    a16 = _radiograph(rng, (45, 60), 16)
    Image.fromarray(a8).save(tmp_path / "a.png")
    Image.fromarray(a16).save(tmp_path / "b.png")
    Image.fromarray(np.stack([a8] * 3, -1)).save(tmp_path / "c.png")
    Image.fromarray(a8).save(tmp_path / "d.jpg", quality=95)
    meta8 = {"bits_stored": 8}
    for name, arr, bits in [("a.png", a8, 8), ("b.png", a16, 16), ("c.png", a8, 8)]:
        got = cio.load_radiograph(tmp_path / name, size=20, dtype="float32")
        want = ref.radiograph(arr, {"bits_stored": bits}, size=20, voi_mode="none", dtype="float32")
        _close(got.image, want, "float32")
        assert got.meta["format"] == "png" and got.meta["sop_instance_uid"] == ""
    jpg = cio.load_radiograph(tmp_path / "d.jpg", size=20, dtype="float32")
    decoded = np.asarray(Image.open(tmp_path / "d.jpg"))
    _close(jpg.image, ref.radiograph(decoded, meta8, size=20, voi_mode="none", dtype="float32"), "float32")
    assert jpg.meta["format"] == "jpeg"
    # the same PNG as bytes
    data = (tmp_path / "a.png").read_bytes()
    np.testing.assert_array_equal(cio.load_radiograph(data, size=20).image, cio.load_radiograph(tmp_path / "a.png",
                                                                                                 size=20).image)


# ---- the batched kernel's computation (cxrfast::radiograph_render on the CPU) ----------------------------------

def _files(tmp_path, n=5):
    rng = np.random.default_rng(8)
    paths = []
    for i in range(n):
        shape = [(120, 97), (64, 200), (33, 33), (250, 211), (17, 90)][i % 5]
        signed = i % 2 == 1
        arr = _radiograph(rng, shape, 12 if i % 3 else 16, signed)
        attrs = {"WindowCenter": 100.0, "WindowWidth": 900.0} if i % 2 == 0 else {}
        paths.append(_dicom(str(tmp_path / f"{i}.dcm"), arr, bits_stored=12 if i % 3 else 16, signed=signed,
                            photometric="MONOCHROME1" if i == 1 else "MONOCHROME2", **attrs))
    return paths


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
@pytest.mark.parametrize("options", [{}, {"fit": "crop", "resample": "bilinear", "voi": "percentile"}])
def test_render_op_matches_the_cpu_pipeline(dtype, options, tmp_path):
    """Staging + the op the CUDA kernel implements, run on the CPU, equal the fast CPU path on a batch of
    images of different sizes, signedness, bit depths and VOI sources."""
    paths = _files(tmp_path)
    norm = {"mean": 0.5, "std": 0.25} if dtype != "uint8" else {}
    opts = _options(**{**dict(size=37, fit="pad", voi="auto", window=None, voi_function=None, voi_index=0,
                              fallback="minmax", percentiles=(0.5, 99.5), invert="auto", resample="area", dtype=dtype,
                              mean=None, std=None, pad_value=0.1), **options, **norm})
    prepared = [_prepare(p, opts, 0) for p in paths]
    out = _render(prepared, opts, "cpu", 2)
    assert out.shape == (len(paths), 37, 37)
    want = cio.load_radiographs(paths, 37, workers=2, pad_value=0.1, dtype=dtype, **options, **norm).images
    _close(out.numpy(), want, dtype)


def test_render_op_checks_descriptors_and_opcheck(tmp_path):
    paths = _files(tmp_path, 2)
    opts = _options(16, "pad", "auto", None, None, 0, "minmax", (0.5, 99.5), "auto", "area", "float32", None, None,
                    0.0)
    prepared = [_prepare(p, opts, 0) for p in paths]
    n_samples = sum(p.sample_count for p in prepared)
    samples = torch.empty(n_samples, dtype=torch.int16)
    tables = torch.empty(sum(p.table_count for p in prepared), dtype=torch.float32)
    off_s = off_t = 0
    for p in prepared:
        p.write(samples.data_ptr(), off_s, tables.data_ptr(), off_t)
        off_s, off_t = off_s + p.sample_count, off_t + p.table_count
    images = torch.frombuffer(bytearray(b"".join(p.descriptor() for p in prepared)), dtype=torch.uint8).view(2, -1)
    op = torch.ops.cxrfast.radiograph_render
    torch.library.opcheck(op, (samples, tables, images, 16, 0, 3, 0.0, 1.0))
    with pytest.raises(RuntimeError, match="inconsistent with the buffers"):
        op(samples[: n_samples - 1], tables, images, 16, 0, 3, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="out_type"):
        op(samples, tables, images, 16, 0, 7, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="image descriptors"):
        op(samples, tables, images[:, :-1].contiguous(), 16, 0, 3, 0.0, 1.0)


def test_load_radiographs_cpu_batch_and_errors(tmp_path):
    paths = _files(tmp_path)
    batch = cio.load_radiographs(paths, 40, workers=3, dtype="float32")
    assert batch.images.shape == (5, 40, 40) and batch.indices == list(range(5)) and not batch.failed
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(batch.images[i], cio.load_radiograph(p, 40, dtype="float32").image)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(cio.DicomError, match="bad.dcm"):
        cio.load_radiographs([paths[0], bad], 40)
    skipped = cio.load_radiographs([paths[0], bad, paths[1]], 40, errors="skip")
    assert skipped.indices == [0, 2] and list(skipped.failed) == [1] and "bad.dcm" in skipped.failed[1]
    assert skipped.images.shape == (2, 40, 40)


# ---- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"size": 0}, "size must be"), ({"fit": "stretch"}, "fit must be"), ({"voi": "fancy"}, "voi must be"),
    ({"window": (1, 0)}, "width > 0"), ({"window": "wide"}, "window must be"), ({"voi_function": "LOG"}, "voi_function"),
    ({"percentiles": (50, 10)}, "percentiles"), ({"invert": "yes"}, "invert must be"),
    ({"resample": "cubic"}, "resample must be"), ({"dtype": "int32"}, "dtype must be"),
    ({"mean": 0.5}, "mean and std go together"), ({"mean": 0.5, "std": 0.2}, "needs a float dtype"),
    ({"dtype": "float32", "mean": 0.5, "std": 0.0}, "std finite and > 0"), ({"pad_value": 2}, "pad_value"),
    ({"frame": -1}, "frame must be"), ({"fallback": "lut"}, "fallback must be"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cio.load_radiograph(_file("CT_small.dcm"), **kwargs)


def test_bad_files_raise_errors_naming_the_file_and_problem(tmp_path):
    rng = np.random.default_rng(9)
    arr = _radiograph(rng, (20, 20), 12)
    nowin = _dicom(str(tmp_path / "nowin.dcm"), arr)
    with pytest.raises(cio.DicomError, match=r"nowin.dcm: voi='window': the file has no Window Center"):
        cio.load_radiograph(nowin, voi="window")
    with pytest.raises(cio.DicomError, match=r"no VOI LUT Sequence"):
        cio.load_radiograph(nowin, voi="lut")
    badw = _dicom(str(tmp_path / "badw.dcm"), arr, WindowCenter=10.0, WindowWidth=0.5)
    with pytest.raises(cio.DicomError, match=r"badw.dcm: window width \(0028,1051\) 0.5.* LINEAR \(needs >= 1\)"):
        cio.load_radiograph(badw)
    with pytest.raises(cio.DicomError, match=r"voi_index 3 out of range: the file has 1 window"):
        cio.load_radiograph(badw, voi_index=3, voi_function="SIGMOID")
    with pytest.raises(cio.DicomError, match=r"frame 1 out of range for 1 frame"):
        cio.load_radiograph(nowin, frame=1)
    with pytest.raises(cio.DicomError, match=r"SC_rgb.dcm: Photometric Interpretation \(0028,0004\) RGB"):
        cio.load_radiograph(_file("SC_rgb.dcm"))
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(cio.ImageError, match="broken.png: cannot decode the PNG"):
        cio.load_radiograph(png)
    with pytest.raises(cio.MissingFileError, match="missing.dcm: no such file"):  # a FileNotFoundError too
        cio.load_radiograph(tmp_path / "missing.dcm")
    with pytest.raises(cio.ImageError, match=f"{tmp_path}: is a folder, not a file"):
        cio.load_radiograph(tmp_path)
    with pytest.raises(cio.DicomError, match="trunc.dcm"):
        data = open(nowin, "rb").read()
        (tmp_path / "trunc.dcm").write_bytes(data[: len(data) - 100])
        cio.load_radiograph(tmp_path / "trunc.dcm")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16", "float32"])
def test_cuda_batch_matches_cpu(dtype, tmp_path):
    """The CUDA kernel against the CPU pipeline on a mixed batch (uint8 within 1 level, floats within 1e-3)."""
    paths = _files(tmp_path, 10)
    for options in ({}, {"fit": "crop", "resample": "bilinear", "voi": "percentile"}):
        norm = {"mean": 0.5, "std": 0.25} if dtype.startswith("float") else {}
        gpu = cio.load_radiographs(paths, 64, device="cuda", dtype=dtype, **options, **norm)
        cpu = cio.load_radiographs(paths, 64, dtype=dtype, **options, **norm)
        assert gpu.images.is_cuda and gpu.images.shape == (10, 64, 64)
        _close(gpu.images.cpu().numpy(), cpu.images, dtype)


# ---- review findings (each test failed before its fix) ---------------------------------------------------------

def _opts(**kw):
    base = dict(size=16, fit="pad", voi="minmax", window=None, voi_function=None, voi_index=0, fallback="minmax",
                percentiles=(0.5, 99.5), invert="auto", resample="area", dtype="float32", mean=None, std=None,
                pad_value=0.0)
    return _options(**{**base, **kw})


def _both_paths(path, size, **options):
    """The image of `path` from the CPU pipeline and from staging + the batched op (run on the CPU)."""
    cpu = cio.load_radiograph(path, size, dtype="float32", **options).image
    opts = _opts(size=size, **options)
    return cpu, _render([_prepare(path, opts, 0)], opts, "cpu", 1)[0].numpy()


@pytest.mark.skipif(not _C.zlib_compiled(), reason="cxrfast._C was built without zlib: the deflated syntax is refused")
def test_deflated_file_is_rendered_from_the_inflated_samples():
    """Deflated explicit VR LE: the pixel offset counts in the inflated dataset, so the samples cannot be read
    in place from the file's (compressed) bytes; they used to be, giving a garbage image (and reading past the
    end of the file when the inflated offset exceeds the file size)."""
    path = _file("image_dfl.dcm")
    img = cio.read_dicom(path)
    np.testing.assert_array_equal(img.pixels, pydicom.dcmread(path).pixel_array)
    want = ref.radiograph(img.pixels, img.meta, size=64, dtype="float32")
    for got in _both_paths(path, 64):
        _close(got, want, "float32")


def test_high_bit_above_bits_stored_reads_like_the_decoder(tmp_path):
    """BitsStored 12 at HighBit 15: read_dicom takes the low 12 bits of each word, as pydicom does, and the
    pipeline reads those same stored values whether the samples are read in place or decoded."""
    arr = _radiograph(np.random.default_rng(10), (50, 40), 12)
    words = arr | (np.random.default_rng(11).integers(0, 16, arr.shape).astype(np.uint16) << 12)
    path = _dicom(str(tmp_path / "hb.dcm"), words, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.HighBit = 15
    ds.save_as(path)
    img = cio.read_dicom(path)
    np.testing.assert_array_equal(img.pixels, pydicom.dcmread(path).pixel_array)
    np.testing.assert_array_equal(img.pixels, arr)
    want = ref.radiograph(arr, img.meta, size=32, voi_mode="minmax", dtype="float32")
    for got in _both_paths(path, 32, voi="minmax"):
        _close(got, want, "float32")


def test_render_op_rejects_descriptors_whose_offsets_overflow(tmp_path):
    """A descriptor whose sample / table offset is near 2^63 (offset + count wraps) or whose placement offset
    is absurd must be refused, not read outside the buffers."""
    import struct

    a = np.arange(100, dtype=np.uint16).reshape(10, 10)
    p = _C.radiograph_prepare_pixels(a, {"bits_stored": 12}, _opts())
    samples, tables = torch.zeros(100, dtype=torch.int16), torch.zeros(4096, dtype=torch.float32)
    p.write(samples.data_ptr(), 0, tables.data_ptr(), 0)
    good = p.descriptor()
    op = torch.ops.cxrfast.radiograph_render
    op(samples, tables, torch.frombuffer(bytearray(good), dtype=torch.uint8).view(1, -1), 16, 0, 3, 0.0, 1.0)
    # Image: int64 sample_offset @0, int64 table_offset @8, ..., Axis ay @32 (in, n, offset @40), ax @56 (@64)
    assert _C.radiograph_descriptor_bytes == len(good) == 88
    for fmt, at, value in [("<q", 0, 2 ** 63 - 50), ("<q", 8, 2 ** 63 - 1000), ("<q", 0, -1),
                           ("<i", 40, -2 ** 31), ("<i", 64, 2 ** 31 - 1)]:
        d = bytearray(good)
        struct.pack_into(fmt, d, at, value)
        with pytest.raises(RuntimeError, match="inconsistent with the buffers"):
            op(samples, tables, torch.frombuffer(d, dtype=torch.uint8).view(1, -1), 16, 0, 3, 0.0, 1.0)


def test_pixels_in_non_native_byte_order():
    """A big-endian numpy array holds the same values: it must give the same image (it used to be read as
    native words)."""
    a = np.random.default_rng(11).integers(0, 4096, (20, 30)).astype(np.uint16)
    meta = {"bits_stored": 12}
    want = _C.radiograph_pixels(a, meta, _opts())
    np.testing.assert_array_equal(_C.radiograph_pixels(a.astype(">u2"), meta, _opts()), want)
    prepared = _C.radiograph_prepare_pixels(a.astype(">u2"), meta, _opts())
    _close(_render([prepared], _opts(), "cpu", 1)[0].numpy(), want, "float32")


@pytest.mark.parametrize("key,value", [("rescale_slope", float("nan")), ("rescale_slope", float("inf")),
                                       ("rescale_intercept", float("-inf"))])
def test_non_finite_rescale_is_an_error(key, value):
    """A Rescale Slope / Intercept of NaN or inf (DS strings 'NaN', 'inf' parse as such) made every table entry
    NaN: NaN float outputs and an undefined float → uint8 conversion. It is refused, naming the tag."""
    a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    meta = {"bits_stored": 12, "has_rescale": True, "rescale_slope": 1.0, "rescale_intercept": 0.0, key: value}
    with pytest.raises(_C.PipelineError, match=r"Rescale (Slope|Intercept) \(0028,105[23]\)"):
        _C.radiograph_pixels(a, meta, _opts(dtype="uint8"))
    with pytest.raises(_C.PipelineError, match=r"Rescale"):
        _C.radiograph_prepare_pixels(a, meta, _opts())


def test_prepared_pixels_check_bits_stored_against_the_sample_width():
    """Staging takes what the CPU pipeline takes: 8-bit samples with Bits Stored 12 are refused by both (the
    kernel would have read the zero-extended byte pattern as a 12-bit value)."""
    a = np.full((4, 4), -3, dtype=np.int8)
    meta = {"bits_stored": 12, "pixel_representation": 1}
    with pytest.raises(_C.PipelineError, match="exceeds the 8-bit samples"):
        _C.radiograph_pixels(a, meta, _opts())
    with pytest.raises(_C.PipelineError, match="exceeds the 8-bit samples"):
        _C.radiograph_prepare_pixels(a, meta, _opts())


def test_resized_length_that_does_not_fit_an_int_is_an_error():
    """1 × 70000 centre-cropped to 32768: the resized width 2.3e9 overflowed int (a silent 1-pixel image)."""
    a = np.zeros((1, 70000), dtype=np.uint8)
    with pytest.raises(_C.PipelineError, match="resized"):
        _C.radiograph_prepare_pixels(a, {"bits_stored": 8}, _opts(size=32768, fit="crop"))


def test_explicit_window_too_narrow_for_linear_names_the_argument():
    a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    with pytest.raises(_C.PipelineError, match=r"window=\(10, 0.5\): width 0.5 is invalid for LINEAR"):
        _C.radiograph_pixels(a, {"bits_stored": 12}, _opts(voi="window", window=(10, 0.5)))


@pytest.mark.parametrize("dtype,name", [(np.uint8, "uint8"), (np.float32, "float32"), (np.dtype("<u2"), "uint16"),
                                        (torch.float16, "float16"), ("float32", "float32")])
def test_dtype_spellings(dtype, name):
    """numpy scalar types (np.uint8 — the usual spelling) are accepted like np.dtype objects and torch dtypes."""
    out = cio.load_radiograph(_file("CT_small.dcm"), 8, dtype=dtype).image
    assert out.dtype == np.dtype(name)


@pytest.mark.parametrize("voi", ["none", "minmax", "percentile", "window"])
def test_negative_rescale_slope_keeps_v_increasing_with_the_modality_value(voi):
    """With Rescale Slope -1 the stored value 0 is the largest modality value: every VOI mode maps it to v = 1
    (window, min-max and percentile did; "none" mapped the natural range unordered and inverted the image)."""
    a = np.array([[0, 4095]], dtype=np.uint16)
    meta = {"bits_stored": 12, "has_rescale": True, "rescale_slope": -1.0, "rescale_intercept": 100.0}
    kw = {"window": (100 - 2047.5, 4096.0)} if voi == "window" else {}
    got = _C.radiograph_pixels(a, meta, _opts(size=2, voi=voi, percentiles=(0, 100), **kw))[0]
    want = ref.radiograph(a, meta, size=2, voi_mode=voi, percentiles=(0, 100), dtype="float32", **kw)[0]
    for v in (got, want):
        assert v[0] > 0.99 and v[1] < 0.01, v


def test_lut_bits_outside_1_16_in_a_meta_dict_are_refused():
    """(The parser refuses them; a hand-made meta dict could carry bits 0, and v = LUT / (2^0 - 1) was NaN.)"""
    a = np.arange(16, dtype=np.uint16).reshape(4, 4)
    lut = {"first_mapped": 0, "bits": 0, "data": np.arange(16, dtype=np.uint16)}
    with pytest.raises(_C.PipelineError, match=r"VOI LUT Sequence \(0028,3010\).* 0 bits per entry"):
        _C.radiograph_pixels(a, {"bits_stored": 4, "voi_luts": [lut]}, _opts(voi="lut"))
    with pytest.raises(_C.PipelineError, match=r"Modality LUT Sequence \(0028,3000\).* 0 bits per entry"):
        _C.radiograph_pixels(a, {"bits_stored": 4, "modality_lut": lut}, _opts(voi="none"))


@pytest.mark.parametrize("signed", [False, True])
def test_32_bit_allocated_samples_of_at_most_16_bits_stage_for_the_kernel(signed, tmp_path):
    """BitsAllocated 32 with BitsStored 12: the CPU pipeline takes it, and so does staging for the kernel (the
    decoded values fit 16-bit patterns); it used to refuse it as "at most 16 bits, got Bits Stored 12"."""
    arr = _radiograph(np.random.default_rng(12), (30, 41), 12, signed).astype(np.int32 if signed else np.uint32)
    path = _dicom(str(tmp_path / "w32.dcm"), arr, bits_stored=12, signed=signed)
    cpu, staged = _both_paths(path, 24)
    _close(staged, cpu, "float32")
    _close(cpu, ref.radiograph(arr, cio.read_dicom(path).meta, size=24, dtype="float32"), "float32")
    wide = _dicom(str(tmp_path / "w20.dcm"), arr, bits_stored=20, signed=signed)
    with pytest.raises(cio.DicomError, match=r"w20.dcm: .*at most 16 bits.*Bits Stored \(0028,0101\) 20"):
        _prepare(wide, _opts(), 0)


def test_prepared_pixels_of_32_bit_arrays():
    a = np.random.default_rng(13).integers(-2048, 2048, (9, 14)).astype(np.int32)
    meta = {"bits_stored": 12, "pixel_representation": 1}
    staged = _render([_C.radiograph_prepare_pixels(a, meta, _opts())], _opts(), "cpu", 1)[0].numpy()
    _close(staged, _C.radiograph_pixels(a, meta, _opts()), "float32")
    with pytest.raises(_C.PipelineError, match="at most 16 bits"):
        _C.radiograph_prepare_pixels(a, {"bits_stored": 32, "pixel_representation": 1}, _opts())


def test_load_radiographs_checks_frame_and_keywords_up_front():
    """frame=-1 used to become one DicomError per file (with errors="skip": every file silently "failed"),
    frame=1.5 a pybind TypeError; an unknown keyword was reported against the private _options()."""
    path = _file("CT_small.dcm")
    for frame in (-1, 1.5, True):
        with pytest.raises(ValueError, match="frame must be an int >= 0"):
            cio.load_radiographs([path], 8, frame=frame, errors="skip")
    with pytest.raises(TypeError, match=r"load_radiographs\(\) got an unexpected keyword argument 'sise'"):
        cio.load_radiographs([path], sise=8)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16"])
def test_cuda_batch_keeps_the_dtype_when_empty_or_all_failed(dtype, tmp_path):
    """An empty batch (or one whose files all failed with errors="skip") used to come back float32 on CUDA."""
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    for sources in ([], [bad]):
        b = cio.load_radiographs(sources, 16, device="cuda", dtype=dtype, errors="skip")
        assert b.images.is_cuda and b.images.shape == (0, 16, 16) and b.images.dtype == getattr(torch, dtype)
    b = cio.load_radiographs(_files(tmp_path, 2), 16, device="cuda", dtype=dtype)
    assert b.images.dtype == getattr(torch, dtype) and b.images.shape == (2, 16, 16)
