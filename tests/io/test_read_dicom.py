"""cxrfast.io.read_dicom: the C++ Part 10 parser and its decoders (native, RLE, JPEG lossless) against
pydicom, and malformed input. Every file of pydicom's test files and pydicom-data against pydicom, the
deflated syntax, extended offset tables, LUT sequences and the imagecodecs-backed syntaxes:
tests/io/test_dicom_codecs.py.
"""

import os
import random
import sys
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom is the reference for the DICOM tests")
io = pytest.importorskip("cxrfast.io")

from cxrfast import _ext  # noqa: E402
from cxrfast.io.testing import grayscale_dataset  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))  # jpeg_lossless_encoder, the tests' own encoder


def _file(name):
    return pydicom.data.get_testdata_file(name, download=False)  # offline: never try the network


def _pydicom(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        return ds, ds.pixel_array


def test_frames_and_meta():
    path = _file("rtdose.dcm")
    ds, ref = _pydicom(path)
    np.testing.assert_array_equal(io.read_dicom(path, frame=3).pixels, ref[3])
    with pytest.raises(io.DicomError, match="frame 15 out of range for 15 frame"):
        io.read_dicom(path, frame=15)
    path = _file("CT_small.dcm")
    ds, _ = _pydicom(path)
    meta = io.read_dicom(path).meta
    assert (meta["rows"], meta["columns"], meta["bits_stored"]) == (ds.Rows, ds.Columns, ds.BitsStored)
    assert meta["rescale_intercept"] == float(ds.RescaleIntercept) and meta["rescale_slope"] == float(ds.RescaleSlope)
    assert meta["sop_instance_uid"] == ds.SOPInstanceUID and meta["patient_id"] == ds.PatientID
    assert meta["study_date"] == ds.StudyDate and meta["modality"] == ds.Modality
    assert meta["photometric_interpretation"] == ds.PhotometricInterpretation
    assert meta["has_preamble"] and meta["transfer_syntax"] == ds.file_meta.TransferSyntaxUID


def test_negative_frame_is_out_of_range_not_all_frames():
    """frame=-1 used to reach the binding's "all frames" sentinel and return every frame of a multi-frame file
    (frame=-2 was refused): a negative index is out of range, whichever; numpy integers are indices too."""
    path = _file("rtdose.dcm")
    for frame in (-1, -2, np.int64(-1)):
        with pytest.raises(io.DicomError, match=rf"rtdose\.dcm: frame {int(frame)} out of range"):
            io.read_dicom(path, frame=frame)
    np.testing.assert_array_equal(io.read_dicom(path, frame=np.int64(3)).pixels, _pydicom(path)[1][3])


def _write(ds, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, **kw)
    return path


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"])
def test_synthetic_12_bit_radiograph_in_each_uncompressed_syntax(syntax, tmp_path):
    """A 12-bit MONOCHROME1 radiograph with garbage above BitsStored, windows with several values and
    an undefined-length sequence, written by pydicom in each syntax."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (37, 29), dtype=np.uint16)
    raw = stored | (rng.integers(0, 16, stored.shape, dtype=np.uint16) << 12)  # high bits must be masked
    ds = grayscale_dataset(stored.shape, syntax=syntax, photometric="MONOCHROME1", sop_instance_uid="1.2.3.4")
    ds.StudyInstanceUID, ds.PatientID, ds.ViewPosition = "1.2.3", "p10", "PA"
    ds.WindowCenter, ds.WindowWidth = [2048, 1500], [4096, 1000]
    item = Dataset()
    item.LUTExplanation = "a nested item"
    ds.ReferencedImageSequence = Sequence([item])
    ds.PixelData = raw.astype(">u2" if syntax.endswith(".2.2") else "<u2").tobytes()
    path = _write(ds, tmp_path / "cxr.dcm", enforce_file_format=True)
    img = io.read_dicom(path)
    np.testing.assert_array_equal(img.pixels, stored)
    assert img.meta["window_center"] == [2048.0, 1500.0] and img.meta["window_width"] == [4096.0, 1000.0]
    assert img.meta["view_position"] == "PA" and img.meta["photometric_interpretation"] == "MONOCHROME1"
    # the same dataset without preamble and file meta group (a bare dataset, as some archives store them)
    bare = _write(ds, tmp_path / "bare.dcm", enforce_file_format=False) if syntax != "1.2.840.10008.1.2.2" else None
    if bare is not None:
        data = open(bare, "rb").read()
        if data[128:132] == b"DICM":  # this pydicom wrote the file format anyway: strip it ourselves
            meta_len = int.from_bytes(data[140:144], "little")
            data = data[144 + meta_len:]
        np.testing.assert_array_equal(io.read_dicom(data).pixels, stored)


def test_synthetic_12_bit_radiograph_rle(tmp_path):
    """A 12-bit signed radiograph, RLE-encoded by pydicom (its own encoder), 2 frames."""
    from pydicom.uid import RLELossless, ExplicitVRLittleEndian

    rng = np.random.default_rng(1)
    stored = rng.integers(-2048, 2048, (2, 45, 31), dtype=np.int16)
    stored[:, 10:20] = 7  # runs, so the PackBits repeat path is used too
    ds = grayscale_dataset(stored.shape[1:], syntax=ExplicitVRLittleEndian, signed=True, frames=2,
                           sop_instance_uid="1.2.3.5")
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.compress(RLELossless)
    path = _write(ds, tmp_path / "rle.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(io.read_dicom(path).pixels, stored)
    np.testing.assert_array_equal(io.read_dicom(path, frame=1).pixels, stored[1])


def test_malformed_input_raises_dicom_error_naming_the_problem(tmp_path):
    data = open(_file("MR_small.dcm"), "rb").read()
    with pytest.raises(io.DicomError, match=r"<bytes>: tag \(7FE0,0010\) at byte \d+: native pixel data needs"):
        io.read_dicom(data[:9000])  # truncated inside the pixel data (bytes 1512..9704)
    with pytest.raises(io.DicomError, match="too short to be DICOM"):
        io.read_dicom(b"\x00" * 5)
    with pytest.raises(FileNotFoundError, match="missing.dcm: no such file"):
        io.read_dicom(tmp_path / "missing.dcm")
    ds, _ = _pydicom(_file("MR_small.dcm"))
    del ds.PixelData
    with pytest.raises(io.NotAnImageError, match=r"not an image: no Pixel Data \(7FE0,0010\)"):
        io.read_dicom(_write(ds, tmp_path / "nopixels.dcm"))
    ds, _ = _pydicom(_file("MR_small.dcm"))
    ds.Rows = 60000  # absurd: far more pixels than the data holds
    with pytest.raises(io.DicomError, match="pixel data holds 8192 bytes but"):
        io.read_dicom(_write(ds, tmp_path / "absurd.dcm"))
    lying = bytearray(data)
    at = lying.find(b"\x28\x00\x10\x00")  # (0028,0010) Rows, explicit VR LE: tag, VR 'US', 2-byte length
    lying[at + 6:at + 8] = (0xFFF0).to_bytes(2, "little")  # a length far past the next elements
    with pytest.raises(io.DicomError):
        io.read_dicom(bytes(lying))
    # an encapsulated syntax nothing here decodes (JPEG 2000 Part 2 multi-component, .92, in place of .91)
    part2 = open(_file("JPEG2000.dcm"), "rb").read().replace(b"1.2.840.10008.1.2.4.91", b"1.2.840.10008.1.2.4.92", 1)
    with pytest.raises(io.DicomError, match=r"transfer syntax 1\.2\.840\.10008\.1\.2\.4\.92 \(an unknown compressed "
                                            r"syntax\) has encapsulated pixel data, which cxrfast does not decode"):
        io.read_dicom(part2)
    rle = bytearray(open(_file("MR_small_RLE.dcm"), "rb").read())
    header = rle.find(b"\x02\x00\x00\x00\x40\x00\x00\x00")  # RLE header: 2 segments, the first at 64
    rle[header] = 3
    with pytest.raises(io.DicomError, match="RLE header lists 3 segments, BitsAllocated 16 × SamplesPerPixel 1 needs 2"):
        io.read_dicom(bytes(rle))


def test_random_truncation_and_corruption_never_crash():
    """The parser's bounds checks: every outcome is an image or a DicomError (a crash kills the run)."""
    rng = random.Random(0)
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtdose.dcm", "JPEG2000.dcm"):
        data = open(_file(name), "rb").read()
        cuts = sorted({rng.randrange(len(data)) for _ in range(150)} | set(range(0, 400, 3)))
        mutants = [data[:c] for c in cuts]
        for _ in range(300):
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(min(len(b), 2000))] = rng.randrange(256)  # the header region
            mutants.append(bytes(b))
        for m in mutants:
            try:
                img = io.read_dicom(m)
            except io.DicomError:
                continue
            assert img.pixels is not None


# ------------------------------------------------------------------------------------ JPEG lossless

def _jpeg_ll_dicom(frames, precision, signed, tmp_path, *, bits_stored=None, basic_offset_table=False,
                   syntax="1.2.840.10008.1.2.4.70", edit=None, **encode_kw):
    """A DICOM file of `frames` encoded by the tests' encoder; edit(stream) -> stream alters each stream."""
    from jpeg_lossless_encoder import encode
    from pydicom.encaps import encapsulate

    ds = grayscale_dataset(frames[0].shape, syntax=syntax, bits_allocated=16 if precision > 8 else 8,
                           bits_stored=bits_stored or precision, signed=signed, frames=len(frames),
                           sop_instance_uid="1.2.3.6")
    mask = (1 << precision) - 1
    streams = [encode(f.astype(np.int64) & mask, precision=precision, **encode_kw) for f in frames]
    if edit is not None:
        streams = [edit(s) for s in streams]
    ds.PixelData = encapsulate(streams, has_bot=basic_offset_table)
    ds["PixelData"].VR = "OB"
    return _write(ds, tmp_path / "jpegll.dcm", enforce_file_format=True)


@pytest.mark.parametrize("precision", [2, 8, 12, 16])
@pytest.mark.parametrize("predictor", [1, 2, 3, 4, 5, 6, 7])
def test_jpeg_lossless_every_predictor_and_precision(precision, predictor, tmp_path):
    """Streams written by the tests' own encoder (tests/io/jpeg_lossless_encoder.py): edges of the range,
    flat runs, noise; restart markers every 3 lines for odd predictors."""
    rng = np.random.default_rng(precision * 10 + predictor)
    img = rng.integers(0, 1 << precision, (23, 17)).astype(np.uint16 if precision > 8 else np.uint8)
    img[5:9] = (1 << precision) - 1
    img[12] = 0
    path = _jpeg_ll_dicom([img], precision, False, tmp_path, predictor=predictor,
                          restart_lines=3 if predictor % 2 else 0)
    got = io.read_dicom(path).pixels
    assert got.dtype == img.dtype
    np.testing.assert_array_equal(got, img)


@pytest.mark.parametrize("basic_offset_table", [False, True])
def test_jpeg_lossless_signed_12_bit_multi_frame(basic_offset_table, tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(-2048, 2048, (3, 31, 22)).astype(np.int16)
    path = _jpeg_ll_dicom(list(frames), 12, True, tmp_path, basic_offset_table=basic_offset_table,
                          syntax="1.2.840.10008.1.2.4.57", predictor=6)
    np.testing.assert_array_equal(io.read_dicom(path).pixels, frames)
    np.testing.assert_array_equal(io.read_dicom(path, frame=2).pixels, frames[2])


def test_jpeg_lossless_real_file_matches_its_rle_twin():
    """pydicom's GDCM-encoded lossless RGB image (3 interleaved components) against the RLE file of the
    same image, decoded by pydicom: real-world streams, not only the tests' encoder."""
    got = io.read_dicom(_file("SC_rgb_jpeg_gdcm.dcm")).pixels
    _, ref = _pydicom(_file("SC_rgb_rle.dcm"))
    np.testing.assert_array_equal(got, ref)


def sof_in_stream(stream: bytes) -> int:
    return stream.find(b"\xff\xc3")


def test_jpeg_lossless_errors(tmp_path):
    img = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 30
    path = _jpeg_ll_dicom([img], 12, False, tmp_path)
    data = open(path, "rb").read()
    sof = data.find(b"\xff\xc3")
    wrong = bytearray(data)
    wrong[sof + 6] += 1  # the frame header says 13 rows
    with pytest.raises(io.DicomError, match=r"frame 0: JPEG lossless stream, byte \d+: frame 13×10×1 does not match"):
        io.read_dicom(bytes(wrong))
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(path)
    stream = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([stream[: len(stream) // 2]])  # a stream cut in its entropy-coded data
    with pytest.raises(io.DicomError, match="JPEG lossless stream, byte .*(ends|RST|Huffman)"):
        io.read_dicom(_write(ds, tmp_path / "cut.dcm"))
    ds.PixelData = encapsulate([stream[:sof_in_stream(stream) + 6]])  # cut inside the frame header
    with pytest.raises(io.DicomError, match="JPEG lossless stream, byte"):
        io.read_dicom(_write(ds, tmp_path / "cut2.dcm"))
    sos = data.find(b"\xff\xda")
    bad = bytearray(data)
    bad[sos + 7] = 9  # Ss, the predictor: FF DA, length (2), Ns, Cs, Td/Ta, then Ss
    with pytest.raises(io.DicomError, match="predictor 9 outside 1..7"):
        io.read_dicom(bytes(bad))


def _stream_code_lengths(stream: bytes) -> list:
    """The code lengths of the first Huffman table (DHT) of a stream, one per code."""
    at = stream.find(b"\xff\xc4")
    counts = stream[at + 5:at + 21]  # FF C4, length (2), Tc/Th, then 16 counts
    return [n + 1 for n in range(16) for _ in range(counts[n])]


def _categories(img, precision, predictor, restart_lines):
    """The difference category of every sample, as the encoder codes it."""
    from jpeg_lossless_encoder import _predict

    d = (img.astype(np.int64) - _predict(img, predictor, precision, restart_lines)) % 65536
    d = np.where(d >= 32768, d - 65536, d)
    c = np.where(d == 0, 0, np.floor(np.log2(np.maximum(np.abs(d), 1))).astype(np.int64) + 1)
    return np.where(d == 32768, 16, c)


@pytest.mark.parametrize("table", ["tail", "head", "all16"])
@pytest.mark.parametrize("precision", [8, 12, 16])
def test_jpeg_lossless_codes_and_magnitudes_beyond_the_lookup_table(precision, table, tmp_path):
    """Huffman codes of 13 to 16 bits (T.81 allows 16; the decoder's lookup resolves 12 bits of code +
    magnitude) and codes of ≤ 12 bits whose magnitude bits reach past 12 (category 15 after a 2-bit code at
    precision 16; category 16, no magnitude bits, with a 2-bit and a 16-bit code): every category of the
    table used at random, so that slow samples fall in each position of the fast path's groups of four, in
    the first column and the last ones (37 columns: a tail of 3 after the groups), and after restarts; rows
    where the slowest sample (up to 16 + 15 bits) is followed by the largest fast ones. "all16": no code in
    the lookup at all. The tables: LONG_CODE_LENGTHS in tests/io/jpeg_lossless_encoder.py."""
    from jpeg_lossless_encoder import LONG_CODE_LENGTHS, image_with_categories

    lengths = LONG_CODE_LENGTHS[precision][table]
    dtype = np.uint16 if precision > 8 else np.uint8
    # the slow sample of most bits, and the fast one (code + magnitude ≤ 12 bits) of most bits
    total = [n + (c % 16) for c, n in enumerate(lengths)]
    slowest = max(range(len(lengths)), key=lambda c: total[c])
    fast = [c for c in range(len(lengths)) if total[c] <= 12]
    for predictor, restart_lines in ((1, 0), (7, 4), (4, 5)):
        wanted = np.random.default_rng(precision + predictor).integers(0, len(lengths), (19, 37))
        if fast:  # every third row: the slowest sample, then four of the largest fast ones, over and over (a
            # group of four fast samples must start after a slow one: the bits left after it may not hold four)
            wanted[1::3] = np.resize([slowest] + [max(fast, key=lambda c: total[c])] * 4, 37)
        img = image_with_categories(wanted, precision=precision, predictor=predictor, restart_lines=restart_lines,
                                    seed=predictor).astype(dtype)
        cats = _categories(img, precision, predictor, restart_lines)
        if predictor != 4:  # predictor 4 may leave the range: there image_with_categories picks the nearest value
            np.testing.assert_array_equal(cats, wanted)
        long_codes = np.isin(cats, [c for c, n in enumerate(lengths) if n > 12]).sum()
        past_lookup = np.isin(cats, [c for c, n in enumerate(lengths) if n + (c % 16) > 12]).sum()
        assert long_codes > 80 and past_lookup > 150  # the slow paths are taken, many times
        streams = []
        path = _jpeg_ll_dicom([img], precision, False, tmp_path, predictor=predictor, restart_lines=restart_lines,
                              code_lengths=lengths, edit=lambda s: streams.append(s) or s)
        assert max(_stream_code_lengths(streams[0])) == 16
        got = io.read_dicom(path).pixels
        assert got.dtype == img.dtype
        np.testing.assert_array_equal(got, img, err_msg=f"predictor {predictor}, restart every {restart_lines} lines")


def _rst_markers(stream: bytes) -> list:
    """Offsets of the RSTn markers (FF D0–D7) in a stream's entropy-coded data."""
    sos = stream.find(b"\xff\xda")
    data_start = sos + 2 + int.from_bytes(stream[sos + 2:sos + 4], "big")
    return [i for i in range(data_start, len(stream) - 1) if stream[i] == 0xFF and 0xD0 <= stream[i + 1] <= 0xD7]


@pytest.mark.parametrize("interval,extra", [(0, b"\x00"), (0, b"\x5a\x00\x12"), (2, b"\x81\x7f"), (7, b"\xfe"),
                                            (8, b"\x01")])
def test_jpeg_lossless_restart_interval_with_whole_bytes_left_over_is_an_error(interval, extra, tmp_path):
    """Bytes after an interval's last sample, before its RSTn marker: the samples decode as before (the
    interval's bits are unchanged), but whole unread bytes mean corrupt data (jpeg_lossless.h), an error that
    names the count and the marker (interval 8 ends with RST0 again: n modulo 8). The controls pass: the same
    stream unedited (its intervals padded to a whole byte with 1-bits), and with fill bytes FF FF before every
    RSTn."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 4096, (20, 9)).astype(np.uint16)
    img[6:10] = 1234  # intervals of nearly no bits too
    path = _jpeg_ll_dicom([img], 12, False, tmp_path, restart_lines=2)
    np.testing.assert_array_equal(io.read_dicom(path).pixels, img)

    def fill(stream):  # fill bytes FF before every RSTn (T.81 B.1.1.2): part of the marker, not data left over
        for at in reversed(_rst_markers(stream)):
            stream = stream[:at] + b"\xff\xff" + stream[at:]
        return stream

    path = _jpeg_ll_dicom([img], 12, False, tmp_path, restart_lines=2, edit=fill)
    np.testing.assert_array_equal(io.read_dicom(path).pixels, img)

    def insert(stream):
        at = _rst_markers(stream)[interval]
        assert stream[at + 1] == 0xD0 + (interval & 7)
        return stream[:at] + extra + stream[at:]

    path = _jpeg_ll_dicom([img], 12, False, tmp_path, restart_lines=2, edit=insert)
    with pytest.raises(io.DicomError, match=rf"JPEG lossless stream, byte \d+: {len(extra)} bytes of entropy-coded "
                                            rf"data left over before RST{interval & 7}"):
        io.read_dicom(path)


def test_jpeg_lossless_restart_interval_must_be_whole_lines(tmp_path):
    """jpeg_lossless.h: restart intervals must be whole lines (what lossless encoders write). A DRI of part
    of a line or of a line and a part is refused by name before any decoding; a whole-line DRI that disagrees
    with the stream's RSTn markers fails on the markers, never decodes a wrong image."""
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (12, 10)).astype(np.uint8)

    def with_dri(samples):
        def edit(stream):
            dri = stream.find(b"\xff\xdd\x00\x04")
            assert int.from_bytes(stream[dri + 4:dri + 6], "big") == 20  # encoded: a restart every 2 lines
            return stream[:dri + 4] + samples.to_bytes(2, "big") + stream[dri + 6:]
        return _jpeg_ll_dicom([img], 8, False, tmp_path, predictor=5, restart_lines=2, edit=edit)

    np.testing.assert_array_equal(io.read_dicom(with_dri(20)).pixels, img)
    for samples in (5, 15, 21, 1):
        with pytest.raises(io.DicomError, match=rf"restart interval of {samples} samples is not a whole number of "
                                                rf"lines"):
            io.read_dicom(with_dri(samples))
    with pytest.raises(io.DicomError, match=r"\d+ bytes of entropy-coded data left over before RST0"):
        io.read_dicom(with_dri(10))  # one line: the first interval's data hold two
    with pytest.raises(io.DicomError, match="entropy-coded data ends before every sample is decoded"):
        io.read_dicom(with_dri(40))  # four lines: the first interval's data hold two
