"""cxrfast.io.read_dicom against pydicom on every file of pydicom's test files and of pydicom-data, and the
parts of issue 4 around them: the deflated syntax, the extended offset table, the Modality / VOI LUT
sequences, and the syntaxes decoded through imagecodecs (cxrfast/io/_codecs.py), each on a synthetic
radiograph the tests encode themselves.

The oracle is pydicom's pixel_array (pydicom 3 with pylibjpeg-libjpeg / -openjpeg): equal dtype, shape and
values for the lossless syntaxes, and for JPEG-LS near-lossless and lossy JPEG 2000 / HTJ2K too (decoding
those is deterministic and pydicom uses the same OpenJPEG); within ±4 grey levels (mean under 0.15) for
lossy JPEG, whose IDCT differs between libjpeg-turbo and libjpeg (±1 on real files; ±3 on signed 12-bit
data; ±6 for colour, whose chroma upsampling differs too).
"""

import glob
import io as _bytesio
import os
import sys
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom is the reference for the DICOM tests")
io = pytest.importorskip("cxrfast.io")

from cxrfast import _ext  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

from cxrfast import _C  # noqa: E402
from cxrfast.io.testing import grayscale_dataset, to_bytes  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.encaps import encapsulate, encapsulate_extended  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import UID  # noqa: E402

try:
    import imagecodecs
except ImportError:  # the codec tests skip; the refusal test below still runs
    imagecodecs = None
needs_imagecodecs = pytest.mark.skipif(imagecodecs is None, reason="needs the optional package imagecodecs")

# setup.py links zlib only where it finds zlib.h; a build without it refuses the deflated syntax (that refusal is
# tested in tests/csrc/test_dicom_no_zlib.py), so the tests that inflate skip there instead of failing
WITH_ZLIB = bool(getattr(_C, "zlib_compiled", lambda: True)())
needs_zlib = pytest.mark.skipif(not WITH_ZLIB, reason="cxrfast._C was built without zlib (setup.py found no zlib.h): "
                                                      "the deflated syntax is refused, see test_dicom_no_zlib.py")

TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
try:
    import data_store

    PYDICOM_DATA = os.path.join(os.path.dirname(data_store.__file__), "data")
except ImportError:
    PYDICOM_DATA = None

EXPLICIT, IMPLICIT, BIG, DEFLATED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
                                     "1.2.840.10008.1.2.1.99")
RLE, JPEG_LL, JPEG_LL_SV1 = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"
JPEG_BASELINE, JPEG_EXTENDED = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"
JLS, JLS_NEAR = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS, HTJ2K_RPCL, HTJ2K = "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"
LOSSY_JPEG = {JPEG_BASELINE, JPEG_EXTENDED}

# what read_dicom refuses among the files pydicom decodes, and why (the message must say it)
REFUSED = {
    **({} if WITH_ZLIB else {"image_dfl.dcm": "is not supported by this build (built without zlib)"}),
    "liver.dcm": "BitsAllocated 1 is not supported",  # bit-packed segmentation-style images, not radiographs
    "liver_1frame.dcm": "BitsAllocated 1 is not supported",
    "liver_expb.dcm": "BitsAllocated 1 is not supported",
    "liver_expb_1frame.dcm": "BitsAllocated 1 is not supported",
}


def _file(name):
    return pydicom.data.get_testdata_file(name, download=False)  # offline: never try the network


def _data_file(name):
    if PYDICOM_DATA is None:
        pytest.skip("needs the pydicom-data package")
    return os.path.join(PYDICOM_DATA, name)


def _pydicom(source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source if isinstance(source, (str, os.PathLike)) else _bytesio.BytesIO(source))
        return ds, ds.pixel_array


def _diff(a, b):
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return int(d.max()), float(d.mean())


def _check_against_pydicom(name, ts, ours, ref, colour):
    assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
    assert ours.dtype == ref.dtype.newbyteorder("="), (name, ours.dtype, ref.dtype)
    if ts in LOSSY_JPEG:
        worst, mean = _diff(ours, ref)
        # colour: chroma upsampling differs too (libjpeg-turbo's fancy upsampling vs libjpeg's)
        # IDCT rounding; signed data stored as 12-bit patterns jumps 0 <-> 4095 around zero: up to ±3
        assert worst <= (6 if colour else 4) and mean <= 0.15, (name, worst, mean)
    else:
        np.testing.assert_array_equal(ours, ref, err_msg=name)


def _corpus():
    files = [(f, False) for f in glob.glob(os.path.join(TEST_FILES, "**", "*"), recursive=True)]
    if PYDICOM_DATA is not None:
        files += [(f, True) for f in glob.glob(os.path.join(PYDICOM_DATA, "*.dcm"))]
    return sorted((f, grey_only) for f, grey_only in files if os.path.isfile(f))


def test_every_file_pydicom_decodes_matches_it_or_is_refused_for_a_stated_reason():
    """pydicom's test files (every one, colour included) and pydicom-data's (every single-sample one: the
    colour ones there are large and add nothing the small ones miss): whatever pydicom decodes, read_dicom
    decodes to the same dtype, shape and values (within ±2 for lossy JPEG), or refuses with the reason in
    REFUSED; never another exception. The real chest radiographs (RG1, RG3: JPEG 2000 lossless, lossy and
    uncompressed) are among them."""
    matched, refused = {}, []
    for path, grey_only in _corpus():
        name = os.path.basename(path)
        try:
            ds, ref = _pydicom(path)
        except Exception:
            continue  # pydicom cannot decode it: no oracle (JPEG-lossy.dcm is checked below)
        if grey_only and ds.get("SamplesPerPixel", 1) != 1:
            continue
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        try:
            img = io.read_dicom(path)
        except io.DicomError as exc:
            assert name in REFUSED and REFUSED[name] in str(exc), (name, str(exc))
            refused.append(name)
            continue
        _check_against_pydicom(name, ts, img.pixels, ref, colour=ds.get("SamplesPerPixel", 1) == 3)
        matched[name] = img.meta["codec"]
    codecs = set(matched.values())
    expected = {"native", "rle", "jpeg-lossless"} | (
        {"imagecodecs.jpeg8", "imagecodecs.jpegls", "imagecodecs.jpeg2k"} if imagecodecs else set())
    assert expected <= codecs, codecs
    assert len(matched) >= (120 if imagecodecs else 75), (len(matched), refused)
    assert ("image_dfl.dcm" in matched) == WITH_ZLIB  # pydicom's deflated file (else refused, saying why)
    assert "SC_ybr_full_422_uncompressed.dcm" in matched  # native YBR_FULL_422: 2 luma + 2 chroma per 2 pixels
    if imagecodecs and PYDICOM_DATA:
        for name in ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG1_UNCR.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "RG3_UNCI.dcm",
                     "JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "mlut_18.dcm", "vlut_04.dcm"):
            assert name in matched, name


@needs_imagecodecs
def test_chest_radiographs_jpeg2000_equal_their_uncompressed_twins():
    """pydicom-data's computed radiographs: the lossless JPEG 2000 files decode to exactly the pixels of the
    uncompressed ones (MONOCHROME1, 15 and 10 bits stored), the lossy ones close to them."""
    for stem, bits in (("RG1", 15), ("RG3", 10)):
        raw = io.read_dicom(_data_file(f"{stem}_UNCR.dcm"))
        lossless = io.read_dicom(_data_file(f"{stem}_J2KR.dcm"))
        lossy = io.read_dicom(_data_file(f"{stem}_J2KI.dcm"))
        assert lossless.meta["codec"] == "imagecodecs.jpeg2k" and lossless.meta["bits_stored"] == bits
        assert lossless.meta["photometric_interpretation"] == "MONOCHROME1"
        np.testing.assert_array_equal(lossless.pixels, raw.pixels)
        worst, mean = _diff(lossy.pixels, raw.pixels)
        assert 0 < worst < (1 << bits) // 8 and mean < 0.01 * (1 << bits), (stem, worst, mean)


@needs_imagecodecs
def test_jpeg_lossy_file_pydicom_cannot_decode_equals_its_twin():
    """JPEG-lossy.dcm (12-bit extended JPEG) is refused by pydicom's libjpeg plugin (a scan header libjpeg
    rejects); libjpeg-turbo decodes it to the same image as JPGExtended.dcm, which pydicom does decode."""
    ours = io.read_dicom(_file("JPEG-lossy.dcm")).pixels
    _, ref = _pydicom(_file("JPGExtended.dcm"))
    _check_against_pydicom("JPEG-lossy.dcm", JPEG_EXTENDED, ours, ref, colour=False)


# ------------------------------------------------------------------------------------ synthetic files

def _dataset(syntax, pixels, bits_stored, signed=False, photometric="MONOCHROME2"):
    frames = pixels if pixels.ndim == 3 else pixels[None]
    ds = grayscale_dataset(frames.shape[1:3], syntax=syntax, bits_allocated=8 if pixels.dtype.itemsize == 1 else 16,
                           bits_stored=bits_stored, signed=signed, photometric=photometric,
                           frames=len(frames) if len(frames) > 1 else None, sop_instance_uid="1.2.3.9")
    ds.PatientID, ds.ViewPosition = "p9", "PA"
    return ds


_save = to_bytes


def _radiograph(rows=1000, columns=800, bits=12, signed=False, seed=0):
    """A smooth radiograph-like field with noise over the full range of `bits`, edges included."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    top = (1 << bits) - 1
    img = top / 2 + top * 0.4 * np.sin(x / 90.0) * np.cos(y / 130.0) + rng.normal(0, top / 100, (rows, columns))
    img = img.clip(0, top).astype(np.int64)
    edge = max(rows // 50, 1)  # flat bands at both ends of the range
    img[:edge] = top
    img[-edge:] = 0
    if signed:
        img -= 1 << (bits - 1)
    return img.astype((np.int8 if signed else np.uint8) if bits <= 8 else (np.int16 if signed else np.uint16))


def _set_streams(ds, streams):
    ds.PixelData = encapsulate(list(streams))
    ds["PixelData"].VR = "OB"


def _encapsulated(syntax, streams, pixels, bits_stored, signed=False):
    ds = _dataset(syntax, pixels, bits_stored, signed)
    _set_streams(ds, streams)
    return _save(ds)


def _masked(img, bits):
    """The bit pattern of `img` in `bits` bits, unsigned: what a codec that knows no sign stores."""
    return (img.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint16 if bits > 8 else np.uint8)


# syntax, bits, signed, how the test encodes one frame, whether the result equals the input exactly
SYNTHETIC = [
    (RLE, 12, True, "rle", True),
    (JPEG_LL_SV1, 12, False, "jpeg8-lossless", True),
    (JPEG_LL, 16, False, "jpeg8-lossless", True),
    (JPEG_BASELINE, 8, False, "jpeg8", False),
    (JPEG_EXTENDED, 12, False, "jpeg8", False),
    (JPEG_EXTENDED, 12, True, "jpeg8", False),  # signed: the 12-bit pattern is sign-extended afterwards
    (JLS, 12, False, "jpegls", True),
    (JLS, 16, True, "jpegls", True),
    (JLS_NEAR, 12, False, "jpegls-near", False),
    (J2K_LOSSLESS, 12, False, "jpeg2k", True),
    (J2K_LOSSLESS, 16, True, "jpeg2k", True),
    (J2K, 12, False, "jpeg2k-lossy", False),
    (HTJ2K_LOSSLESS, 12, False, "htj2k", True),
    (HTJ2K_RPCL, 16, True, "htj2k", True),
    (HTJ2K, 12, False, "htj2k-lossy", False),
]


def _encode(how, img, bits, signed):
    from pydicom.pixels.encoders import RLELosslessEncoder

    if how == "rle":
        return RLELosslessEncoder.encode(
            img, rows=img.shape[0], columns=img.shape[1], samples_per_pixel=1, bits_allocated=16,
            bits_stored=bits, pixel_representation=int(signed), photometric_interpretation="MONOCHROME2",
            number_of_frames=1)
    if how == "jpeg8-lossless":
        return imagecodecs.jpeg8_encode(img, lossless=True, bitspersample=bits, predictor=6)
    if how == "jpeg8":  # signed: the bit pattern goes in (DICOM's JPEG extended CT images)
        return imagecodecs.jpeg8_encode(_masked(img, bits) if signed else img, level=90, bitspersample=bits)
    if how in ("jpegls", "jpegls-near"):  # JPEG-LS has no sign: the bit pattern goes in
        return imagecodecs.jpegls_encode(_masked(img, bits), level=2 if how == "jpegls-near" else 0)
    if how == "jpeg2k":
        return imagecodecs.jpeg2k_encode(img, level=0, codecformat="J2K", bitspersample=bits, reversible=True)
    if how == "jpeg2k-lossy":
        return imagecodecs.jpeg2k_encode(img, level=50, codecformat="J2K", bitspersample=bits, reversible=False)
    if how == "htj2k":
        return imagecodecs.htj2k_encode(img, reversible=True)
    if how == "htj2k-lossy":
        return imagecodecs.htj2k_encode(img, level=0.0005, reversible=False)
    raise AssertionError(how)


@pytest.mark.parametrize("syntax,bits,signed,how,exact", SYNTHETIC,
                         ids=[f"{s.rsplit('.', 1)[-1]}-{b}bit-{'s' if g else 'u'}" for s, b, g, _, _ in SYNTHETIC])
def test_synthetic_radiograph_in_every_compressed_syntax(syntax, bits, signed, how, exact):
    """A 1000×800 radiograph encoded by the tests (pydicom's RLE encoder; libjpeg-turbo's lossless, baseline
    and 12-bit extended JPEG; CharLS; OpenJPEG; OpenJPH for HTJ2K), 2 frames, one fragment each: equal to
    pydicom's decoding, and to the input for the lossless syntaxes (close to it for the lossy ones)."""
    if how != "rle" and imagecodecs is None:
        pytest.skip("the test encodes with imagecodecs")
    frames = np.stack([_radiograph(bits=bits, signed=signed, seed=s) for s in (1, 2)])
    if signed and not exact:  # keep lossy errors from carrying a pattern across the sign boundary
        frames = frames.clip(-(1 << (bits - 1)) + 64, (1 << (bits - 1)) - 64)
    data = _encapsulated(syntax, [_encode(how, f, bits, signed) for f in frames], frames, bits, signed)
    img = io.read_dicom(data)
    assert img.meta["transfer_syntax"] == syntax
    _, ref = _pydicom(data)
    _check_against_pydicom(how, syntax, img.pixels, ref, colour=False)
    if exact:
        np.testing.assert_array_equal(img.pixels, frames)
    else:
        worst, mean = _diff(img.pixels, frames)
        top = (1 << bits) - 1
        assert worst <= (2 if how == "jpegls-near" else top // 8) and mean <= top / 64, (worst, mean)
    np.testing.assert_array_equal(io.read_dicom(data, frame=1).pixels, img.pixels[1])


@needs_imagecodecs
def test_codec_names_in_meta():
    frame = _radiograph(64, 48)
    for syntax, codec, stream in ((JLS, "imagecodecs.jpegls", imagecodecs.jpegls_encode(frame)),
                                  (J2K_LOSSLESS, "imagecodecs.jpeg2k", _encode("jpeg2k", frame, 12, False)),
                                  (JPEG_EXTENDED, "imagecodecs.jpeg8", _encode("jpeg8", frame, 12, False)),
                                  (JPEG_LL_SV1, "jpeg-lossless", _encode("jpeg8-lossless", frame, 12, False))):
        assert io.read_dicom(_encapsulated(syntax, [stream], frame, 12)).meta["codec"] == codec
    ds = _dataset(EXPLICIT, frame, 12)
    ds.PixelData = frame.tobytes()
    assert io.read_dicom(_save(ds)).meta["codec"] == "native"


# ------------------------------------------------------------------------------------ imagecodecs: refusals

def test_without_imagecodecs_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs now raises ImportError
    with pytest.raises(io.DicomError, match=r"JPEG2000\.dcm: tag \(0002,0010\): transfer syntax 1\.2\.840\.10008\.1\.2\."
                                            r"4\.91 \(JPEG 2000\) needs the optional package imagecodecs "
                                            r"\(pip install imagecodecs\)"):
        io.read_dicom(_file("JPEG2000.dcm"))
    io.read_dicom(_file("MR_small_RLE.dcm"))  # the syntaxes decoded in C++ do not need it


@needs_imagecodecs
def test_stream_header_disagreeing_with_the_dataset_is_refused_before_decoding():
    frame = _radiograph(64, 48)
    stream = _encode("jpeg2k", frame, 12, False)
    ds = _dataset(J2K_LOSSLESS, frame[:63], 12)  # Rows 63, the codestream says 64
    _set_streams(ds, [stream])
    with pytest.raises(io.DicomError, match=r"tag \(7FE0,0010\), frame 0: JPEG 2000 Lossless: the stream holds a "
                                            r"64×48 image, the dataset says Rows 63 × Columns 48"):
        io.read_dicom(_save(ds))
    ds = _dataset(JLS, frame.astype(np.uint8), 8)  # BitsAllocated 8, the JPEG-LS stream has 16-bit samples
    _set_streams(ds, [imagecodecs.jpegls_encode(frame)])
    with pytest.raises(io.DicomError, match="the stream's precision is 16 bits, BitsAllocated is 8"):
        io.read_dicom(_save(ds))
    ds = _dataset(JPEG_BASELINE, frame.astype(np.uint8), 8)
    ds.SamplesPerPixel = 3  # and a grayscale stream
    _set_streams(ds, [imagecodecs.jpeg8_encode(frame.astype(np.uint8))])
    with pytest.raises(io.DicomError, match="the stream has 1 component.s., SamplesPerPixel is 3"):
        io.read_dicom(_save(ds))
    data = _encapsulated(J2K_LOSSLESS, [b"\x00" * 64], frame, 12)
    with pytest.raises(io.DicomError, match="does not start with the JPEG 2000 SOC and SIZ markers"):
        io.read_dicom(data)


@needs_imagecodecs
def test_corrupt_streams_raise_the_library_error_as_dicom_error():
    frame = _radiograph(64, 48)
    for syntax, stream, message in (
            (J2K_LOSSLESS, _encode("jpeg2k", frame, 12, False), r"imagecodecs\.jpeg2k_decode failed: Jpeg2kError"),
            (HTJ2K_LOSSLESS, _encode("htj2k", frame, 12, False), r"imagecodecs\.jpeg2k_decode failed"),
            (JLS, imagecodecs.jpegls_encode(frame), r"imagecodecs\.jpegls_decode failed: JpeglsError"),
            # libjpeg-turbo decodes a cut stream without an error (it warns and fills in): refused before
            (JPEG_EXTENDED, _encode("jpeg8", frame, 12, False), r"does not end with an EOI marker \(FFD9\): truncated"),
            (JPEG_BASELINE, imagecodecs.jpeg8_encode(frame.astype(np.uint8)), r"EOI marker")):
        for cut in (stream[:len(stream) // 3], stream[:-2]):  # entropy-coded data cut; only the EOI cut
            pixels = frame if syntax != JPEG_BASELINE else frame.astype(np.uint8)
            with pytest.raises(io.DicomError, match=r"<bytes>: tag \(7FE0,0010\), frame 0: .*" + message):
                io.read_dicom(_encapsulated(syntax, [cut], pixels, 12 if syntax != JPEG_BASELINE else 8))


@needs_imagecodecs
def test_a_lossless_stream_decoded_to_zeros_is_refused(monkeypatch):
    """The guard against decoders that return zeros for lossless streams (a known failure of some GPU
    decoders with 12-bit data): checked by making imagecodecs return zeros; and it never fires on a real
    all-zero image, however wide or narrow."""
    path = _data_file("RG3_J2KR.dcm")
    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", lambda stream, **kw: np.zeros((1760, 1760), np.uint16))
    with pytest.raises(io.DicomError, match=r"RG3_J2KR\.dcm: tag \(7FE0,0010\), frame 0: .*decoded a \d+-byte lossless "
                                            r"stream to all zeros .*refused as a decoder failure"):
        io.read_dicom(path)
    monkeypatch.undo()
    for shape in ((1000, 800), (4000, 16), (16, 4000)):
        zeros = np.zeros(shape, np.uint16)
        for syntax, how in ((JLS, "jpegls"), (J2K_LOSSLESS, "jpeg2k"), (HTJ2K_LOSSLESS, "htj2k")):
            img = io.read_dicom(_encapsulated(syntax, [_encode(how, zeros, 12, False)], zeros, 12))
            assert img.pixels.shape == shape and not img.pixels.any()


@needs_imagecodecs
def test_decoder_output_of_the_wrong_shape_is_refused(monkeypatch):
    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", lambda stream, **kw: np.ones((1024, 255), np.uint16))
    with pytest.raises(io.DicomError, match=r"imagecodecs\.jpeg2k_decode returned uint16 \(1024, 255\), "
                                            r"expected \(1024, 256\)"):
        io.read_dicom(_file("JPEG2000.dcm"))


# ------------------------------------------------------------------------------------ deflate

def _deflated_radiograph(frames=1):
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 4096, (frames, 301, 203), dtype=np.uint16)
    stored[:, 100:200] = 1234  # compressible runs, so the inflated data outgrows the first buffer
    raw = stored | (rng.integers(0, 16, stored.shape, dtype=np.uint16) << 12)  # garbage above BitsStored
    ds = _dataset(DEFLATED, raw, 12, photometric="MONOCHROME1")
    ds.WindowCenter, ds.WindowWidth = [2048, 1500], [4096, 1000]
    ds.ModalityLUTSequence = Sequence([_lut_item(4096, 0, 16, np.arange(4096, dtype=np.uint16)[::-1] * 16)])
    ds.PixelData = raw.tobytes()
    return _save(ds), stored[0] if frames == 1 else stored


def test_the_build_says_whether_it_inflates():
    """_C.zlib_compiled() (like _C.cuda_compiled()) tells a build that reads the deflated syntax from one
    that refuses it, which is what the skips above rely on."""
    assert isinstance(_C.zlib_compiled(), bool)
    try:
        io.read_dicom(_file("image_dfl.dcm"))
        inflates = True
    except io.DicomError as exc:
        assert "built without zlib" in str(exc), str(exc)
        inflates = False
    assert _C.zlib_compiled() is inflates


@needs_zlib
def test_deflated_12_bit_radiograph_written_by_pydicom():
    data, stored = _deflated_radiograph()
    img = io.read_dicom(data)
    assert img.meta["deflated"] and img.meta["transfer_syntax"] == DEFLATED and img.meta["codec"] == "native"
    np.testing.assert_array_equal(img.pixels, stored)
    ds, ref = _pydicom(data)
    np.testing.assert_array_equal(img.pixels, ref)
    assert img.meta["window_center"] == [2048.0, 1500.0] and img.meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_array_equal(_apply_lut(img.pixels, img.meta["modality_lut"]),
                                  pydicom.pixels.apply_modality_lut(ref, ds))
    data, stored = _deflated_radiograph(frames=3)
    np.testing.assert_array_equal(io.read_dicom(data, frame=2).pixels, stored[2])
    np.testing.assert_array_equal(io.read_dicom(data).pixels, stored)


@needs_zlib
def test_deflated_errors_bomb_truncation_corruption():
    import zlib

    data, _ = _deflated_radiograph()
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # preamble, DICM, (0002,0000) group length
    inflated = len(zlib.decompress(data[meta_end:], -15))
    with pytest.raises(_C.DicomParseError, match=r"deflated dataset \(transfer syntax 1\.2\.840\.10008\.1\.2\.1\.99\) "
                                                 r"starting at byte \d+: inflates to more than 65536 bytes, the "
                                                 r"limit against decompression bombs"):
        _C.dicom_read(data, -1, 1 << 16)
    assert _C.dicom_read(data, -1, inflated + 4096)[1] is not None  # the limit is on the inflated size only
    with pytest.raises(io.DicomError, match=r"<bytes>: deflated dataset .*: the stream ends before its last block "
                                            r"\(truncated\)"):
        io.read_dicom(data[:len(data) - 500])
    bad = bytearray(data)
    bad[meta_end] = 0x07  # the first block header: BFINAL 1, BTYPE 3 (reserved)
    with pytest.raises(io.DicomError, match=r"deflated dataset .* starting at byte \d+: zlib: invalid block type"):
        io.read_dicom(bytes(bad))
    # a corrupt element inside the inflated dataset: the error counts bytes of the inflated dataset
    body = bytearray(zlib.decompress(data[meta_end:], -15))
    at = body.index(b"\x28\x00\x50\x10DS")  # (0028,1050) WindowCenter
    body[at + 4:at + 6] = b"\x01\x02"
    packer = zlib.compressobj(wbits=-15)
    corrupt = data[:meta_end] + packer.compress(bytes(body)) + packer.flush()
    with pytest.raises(io.DicomError, match=rf"tag \(0028,1050\) at byte {at}: invalid VR bytes in an explicit-VR "
                                            r"dataset \(a byte of the inflated dataset\)"):
        io.read_dicom(corrupt)


# ------------------------------------------------------------------------------------ extended offset table

def _items(fragments):
    """Encapsulated pixel data from explicit fragments: empty basic offset table, then the items; and the
    offset of each fragment's item tag, counted like the (extended) offset table counts."""
    out, offsets, at = bytearray(b"\xfe\xff\x00\xe0\x00\x00\x00\x00"), [], 0
    for f in fragments:
        f = f + b"\0" * (len(f) % 2)
        offsets.append(at)
        out += b"\xfe\xff\x00\xe0" + len(f).to_bytes(4, "little") + f
        at += 8 + len(f)
    return bytes(out), offsets  # pydicom's writer adds the sequence delimiter


def _eot_file(syntax, pixels, bits, fragments, offsets, lengths):
    import struct

    ds = _dataset(syntax, pixels, bits)
    ds.PixelData = fragments
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
    ds.ExtendedOffsetTableLengths = struct.pack(f"<{len(lengths)}Q", *lengths)
    return _save(ds)


def test_extended_offset_table_locates_frames_stored_out_of_order():
    """One fragment per frame (the standard's rule), stored in the order 2, 0, 1: only the table gives the
    frame order back (one fragment per frame in file order would not). pydicom agrees."""
    from pydicom.pixels.encoders import RLELosslessEncoder

    frames = np.stack([_radiograph(40, 30, seed=s) for s in range(3)])
    streams = [RLELosslessEncoder.encode(f, rows=40, columns=30, samples_per_pixel=1, bits_allocated=16,
                                         bits_stored=12, pixel_representation=0,
                                         photometric_interpretation="MONOCHROME2", number_of_frames=1)
               for f in frames]
    stored, item_offsets = _items([streams[2], streams[0], streams[1]])
    offsets = [item_offsets[1], item_offsets[2], item_offsets[0]]
    lengths = [len(s) + len(s) % 2 for s in streams]
    data = _eot_file(RLE, frames, 12, stored, offsets, lengths)
    img = io.read_dicom(data)
    assert img.meta["extended_offset_table"] == offsets and img.meta["extended_offset_table_lengths"] == lengths
    np.testing.assert_array_equal(img.pixels, frames)
    np.testing.assert_array_equal(io.read_dicom(data, frame=0).pixels, frames[0])
    np.testing.assert_array_equal(_pydicom(data)[1], frames)
    # pydicom's own writer (encapsulate_extended), frames in order
    ds = _dataset(RLE, frames, 12)
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(streams)
    np.testing.assert_array_equal(io.read_dicom(_save(ds)).pixels, frames)


@needs_imagecodecs
def test_extended_offset_table_with_frames_split_over_fragments():
    """Frames of JPEG lossless (decoded here) and of JPEG-LS (handed to imagecodecs), each split over 3
    fragments, the basic offset table empty: 9 fragments for 3 frames, located only by the table (whose
    lengths count the frame's bytes: odd ones, the pad byte of the last fragment excluded)."""
    frames = np.stack([_radiograph(50, 37, seed=s) for s in range(3)])
    for syntax, encode in ((JPEG_LL_SV1, lambda f: _encode("jpeg8-lossless", f, 12, False)),
                           (JLS, imagecodecs.jpegls_encode)):
        streams = [encode(f) for f in frames]
        pieces = [[s[:100], s[100:len(s) // 2 * 2 - 40], s[len(s) // 2 * 2 - 40:]] for s in streams]
        stored, item_offsets = _items([p for frame in pieces for p in frame])
        offsets = item_offsets[::3]
        lengths = [len(s) for s in streams]
        data = _eot_file(syntax, frames, 12, stored, offsets, lengths)
        np.testing.assert_array_equal(io.read_dicom(data).pixels, frames)
        np.testing.assert_array_equal(io.read_dicom(data, frame=1).pixels, frames[1])
        if syntax == JLS:  # the streams handed to imagecodecs: exactly the table's lengths, pad bytes dropped
            assert [len(s) for s in _C.dicom_read(data)[1]] == lengths
    # the errors: too few entries, an offset inside a fragment, a length its fragments do not hold
    for offsets_, lengths_, message in (
            (offsets[:2], lengths[:2], r"tag \(7FE0,0001\).*2 offsets and 2 lengths \(7FE0,0002\) for 3 frames"),
            ([offsets[0], offsets[1] + 2, offsets[2]], lengths, r"tag \(7FE0,0001\).*frame 1: offset \d+ is not the "
                                                                 r"start of a fragment's item"),
            (offsets, [lengths[0], lengths[1] + 50, lengths[2]], r"tag \(7FE0,0002\).*frame 1: the extended offset "
                                                                 r"table gives \d+ bytes, its fragments hold \d+")):
        with pytest.raises(io.DicomError, match=message):
            io.read_dicom(_eot_file(JLS, frames, 12, stored, offsets_, lengths_))


# ------------------------------------------------------------------------------------ LUT sequences

def _apply_lut(x, lut):
    """The meta's LUT semantics, in numpy: what the pixel pipeline implements."""
    index = np.clip(x.astype(np.int64) - lut["first_mapped"], 0, len(lut["data"]) - 1)
    return lut["data"][index]


def _lut_item(entries, first, bits, data, descriptor_vr="US", data_vr="US", explanation=""):
    item = Dataset()
    item.add_new(0x00283002, descriptor_vr, [entries, first, bits])
    item.add_new(0x00283006, data_vr, [int(v) for v in data] if data_vr == "US" else data)
    if explanation:
        item.LUTExplanation = explanation
    return item


def test_pydicom_data_lut_files_apply_like_pydicom():
    """mlut_18.dcm (Modality LUT: SS descriptor, first mapped −2048, 4096 16-bit entries) and vlut_04.dcm
    (VOI LUT: 256 entries of 16 bits): the meta's tables applied in numpy equal pydicom's LUT functions."""
    for name in ("mlut_18.dcm", "vlut_04.dcm"):
        path = _data_file(name)
        ds, ref = _pydicom(path)
        meta = io.read_dicom(path).meta
        if name == "mlut_18.dcm":
            lut = meta["modality_lut"]
            assert (lut["first_mapped"], lut["bits"], len(lut["data"]), lut["type"]) == (-2048, 16, 4096, "US")
            want = pydicom.pixels.apply_modality_lut(ref, ds)
            assert meta["voi_luts"] == [] and meta["has_modality_lut_sequence"]
        else:
            (lut,) = meta["voi_luts"]
            assert (lut["first_mapped"], lut["bits"], len(lut["data"])) == (0, 16, 256)
            want = pydicom.pixels.apply_voi_lut(ref, ds)
            assert meta["modality_lut"] is None and meta["has_voi_lut_sequence"]
        got = _apply_lut(ref, lut)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# (syntax, PixelRepresentation, descriptor VR, first mapped, entries, bits, data VR)
LUT_CASES = [
    (EXPLICIT, 1, "SS", -300, 1000, 16, "OW"),
    (EXPLICIT, 0, "US", 200, 700, 16, "US"),
    (EXPLICIT, 1, "SS", -2048, 0, 16, "OW"),     # 0 entries means 65536
    (IMPLICIT, 1, "SS", -100, 600, 16, "OW"),    # ambiguous VR, read signed because PixelRepresentation is 1
    (IMPLICIT, 0, "US", 40000, 600, 16, "OW"),   # ... and unsigned (40000 > 32767) when it is 0
    (BIG, 1, "SS", -5, 300, 12, "OW"),
    (BIG, 0, "US", 7, 300, 8, "US"),             # 8-bit entries, one per 16-bit word
    pytest.param(DEFLATED, 0, "US", 9, 257, 8, "OW", marks=needs_zlib),
]


@pytest.mark.parametrize("syntax,pr,descriptor_vr,first,entries,bits,data_vr", LUT_CASES)
def test_lut_sequences_apply_like_pydicom(syntax, pr, descriptor_vr, first, entries, bits, data_vr):
    """Modality LUT and two VOI LUT items per case, in each syntax: the meta's tables applied in numpy equal
    pydicom's apply_modality_lut and apply_voi(index=0, 1)."""
    rng = np.random.default_rng(entries + bits)
    n = entries or 65536
    if pr:  # (pydicom subtracts first_mapped in the array's dtype: keep clear of int16 overflow there)
        pixels = rng.integers(first - 50, min(first + n + 50, 30000), (23, 17)).astype(np.int16)
    else:
        pixels = rng.integers(max(first - 50, 0), min(first + n + 50, 65535), (23, 17)).astype(np.uint16)
    table = rng.integers(0, 1 << bits, n).astype(np.uint16)
    word = ">u2" if syntax == BIG else "<u2"
    data = table.astype(word).tobytes() if data_vr == "OW" else table
    raw_first = first & 0xFFFF if descriptor_vr == "US" else first
    ds = _dataset(syntax, pixels, 16, signed=bool(pr))
    # a Modality LUT has 8 or 16 bits per entry (and pydicom makes its dtype uint<bits>)
    modality_bits = bits if bits in (8, 16) else 16
    modality = _lut_item(entries, raw_first, modality_bits, data, descriptor_vr, data_vr, "modality")
    modality.ModalityLUTType = "OD"
    ds.ModalityLUTSequence = Sequence([modality])
    # VOI: a second item that is a ramp, so index 1 is checked against a different table
    ramp = (np.arange(n) * ((1 << bits) - 1) // max(n - 1, 1)).astype(np.uint16)
    ds.VOILUTSequence = Sequence([
        _lut_item(entries, raw_first, bits, data, descriptor_vr, data_vr, "first"),
        _lut_item(entries, raw_first, bits, ramp.astype(word).tobytes() if data_vr == "OW" else ramp,
                  descriptor_vr, data_vr, "second")])
    ds.PixelData = pixels.astype(">" + pixels.dtype.str[1:] if syntax == BIG else pixels.dtype).tobytes()
    blob = _save(ds)
    meta = io.read_dicom(blob).meta
    ref_ds, ref = _pydicom(blob)
    lut = meta["modality_lut"]
    assert (lut["first_mapped"], lut["bits"], len(lut["data"]), lut["explanation"], lut["type"]) == \
        (first, modality_bits, n, "modality", "OD")
    assert [v["explanation"] for v in meta["voi_luts"]] == ["first", "second"]
    got, want = _apply_lut(ref, lut), pydicom.pixels.apply_modality_lut(ref, ref_ds)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)
    for index in (0, 1):
        got, want = _apply_lut(ref, meta["voi_luts"][index]), pydicom.pixels.apply_voi(ref, ref_ds, index=index)
        assert got.dtype == want.dtype
        if bits == 8:  # pydicom indexes 8-bit VOI tables through uint8: compare where the index fits in it
            fits = (ref.astype(np.int64) - first) < 256
            got, want = got[fits], want[fits]
            assert fits.sum() > 50
        np.testing.assert_array_equal(got, want)


def test_lut_8_bit_packed_two_per_word():
    """8-bit LUT Data packed two entries per OW word (PS3.3 C.11.1.1.1; pydicom reads one entry per word
    only): entries in byte order in little endian, pairwise swapped in big endian words; odd counts padded."""
    table = np.arange(0, 255, 3, dtype=np.uint8)  # 85 entries: odd, so the value has a pad byte
    padded = table.tobytes() + b"\0"
    for syntax, stored in ((EXPLICIT, padded),
                           (BIG, bytes(np.frombuffer(padded, np.uint8).reshape(-1, 2)[:, ::-1]))):
        ds = _dataset(syntax, np.zeros((4, 4), np.uint16), 12)
        ds.VOILUTSequence = Sequence([_lut_item(len(table), 3, 8, stored, "US", "OW")])
        ds.PixelData = b"\0" * 32
        (lut,) = io.read_dicom(_save(ds)).meta["voi_luts"]
        assert lut["data"].dtype == np.uint8 and lut["first_mapped"] == 3
        np.testing.assert_array_equal(lut["data"], table)


def test_lut_sequence_errors_name_the_tag():
    def build(**kw):
        ds = _dataset(EXPLICIT, np.zeros((4, 4), np.uint16), 12)
        item = _lut_item(kw.get("entries", 10), 0, kw.get("bits", 16), np.arange(kw.get("n", 10)) * kw.get("scale", 1))
        if kw.get("short_descriptor"):
            item.add_new(0x00283002, "US", [10, 0])
        if kw.get("no_data"):
            del item[0x00283006]
        ds.VOILUTSequence = Sequence([Dataset(), item] if kw.get("second") else [item])
        ds.PixelData = b"\0" * 32
        return _save(ds)

    with pytest.raises(io.DicomError, match=r"tag \(0028,3002\) at byte \d+: LUT Descriptor of 4 bytes in item 0 of "
                                            r"\(0028,3010\), 3 values of 2 bytes expected"):
        io.read_dicom(build(short_descriptor=True))
    with pytest.raises(io.DicomError, match=r"tag \(0028,3006\) at byte \d+: LUT Data holds 18 bytes in item 0 of "
                                            r"\(0028,3010\), too few for the 10 entries of 16 bits"):
        io.read_dicom(build(n=9))
    with pytest.raises(io.DicomError, match=r"tag \(0028,3010\) at byte \d+: no LUT Data \(0028,3006\) in item 0"):
        io.read_dicom(build(no_data=True))
    with pytest.raises(io.DicomError, match=r"no LUT Descriptor \(0028,3002\) in item 0 of \(0028,3010\)"):
        io.read_dicom(build(second=True))  # an empty first item
    with pytest.raises(io.DicomError, match=r"LUT Data entry 9 is 270 in item 0 of \(0028,3010\), more than the 8 "
                                            r"bits per entry"):
        io.read_dicom(build(bits=8, scale=30))
    with pytest.raises(io.DicomError, match=r"LUT Descriptor gives 17 bits per entry in item 0 of \(0028,3010\)"):
        io.read_dicom(build(bits=17))
    empty = _dataset(EXPLICIT, np.zeros((4, 4), np.uint16), 12)
    empty.ModalityLUTSequence = Sequence([])
    empty.PixelData = b"\0" * 32
    meta = io.read_dicom(_save(empty)).meta
    assert meta["has_modality_lut_sequence"] and meta["modality_lut"] is None  # pydicom then rescales


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
@pytest.mark.parametrize("signed", [False, True])
def test_high_bit_above_bits_stored_reads_as_pydicom_reads_it(syntax, signed):
    """HighBit 15 with BitsStored 12: pydicom (the oracle) takes the low 12 bits, whatever HighBit says."""
    rng = np.random.default_rng(11)
    words = rng.integers(0, 65536, size=(9, 7), dtype=np.uint16)
    ds = _dataset("1.2.840.10008.1.2.1", words.view(np.int16) if signed else words, 12, signed)
    ds.HighBit = 15
    ds.PixelData = words.tobytes()
    if syntax == "1.2.840.10008.1.2.5":
        ds.compress(UID(syntax), encoding_plugin="pydicom")
        ds.HighBit = 15
    else:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    data = _save(ds)
    ref = _pydicom(data)[1]
    got = io.read_dicom(data).pixels
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == ref.dtype.newbyteorder("=")


def test_rescale_needs_both_slope_and_intercept_like_pydicom():
    from pydicom.pixels import apply_modality_lut

    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    for attrs, expect in [({"RescaleSlope": 2.0}, False), ({"RescaleIntercept": -5.0}, False),
                          ({"RescaleSlope": 2.0, "RescaleIntercept": -5.0}, True)]:
        ds = _dataset("1.2.840.10008.1.2.1", img, 12)
        ds.PixelData = img.tobytes()
        for k, v in attrs.items():
            setattr(ds, k, v)
        data = _save(ds)
        meta = io.read_dicom(data).meta
        assert meta["has_rescale"] is expect, attrs
        pyds, arr = _pydicom(data)
        ours = arr * meta["rescale_slope"] + meta["rescale_intercept"] if meta["has_rescale"] else arr
        np.testing.assert_array_equal(ours, apply_modality_lut(arr, pyds))
