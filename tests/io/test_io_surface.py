"""cxrfast.io as a new user meets it: the namespace, errors that say what the file is (not DICOM, missing,
truncated), one exception base class, careless arguments to load_radiographs, and the files of pydicom's test
set that used to read as corrupt."""

import os
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom is the reference for the DICOM tests")
import cxrfast.io as cio  # noqa: E402
from cxrfast import _ext  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 300


def _file(name):
    return pydicom.data.get_testdata_file(name, download=False)


def test_the_namespace_holds_only_the_api():
    public = {n for n in vars(cio) if not n.startswith("_")}
    submodules = {"radiograph", "testing"}  # modules of the package (cxrfast.io.testing: synthetic files)
    assert public - submodules <= set(cio.__all__), sorted(public - submodules - set(cio.__all__))
    assert sorted(dir(cio)) == sorted(cio.__all__)
    for name in ("np", "os", "dataclass", "field", "annotations"):
        assert not hasattr(cio, name), name


@pytest.mark.parametrize("data,looks", [(PNG, "a PNG image"), (b"hello world, a text file\n" * 20, "text"),
                                        (b"\xff\xd8\xff\xe0" + b"\x00" * 200, "a JPEG image"),
                                        (b"PK\x03\x04" + b"\x14\x00" * 100, "a ZIP archive")],
                         ids=["png", "text", "jpeg", "zip"])
def test_a_file_that_is_not_dicom_says_so(data, looks, tmp_path):
    expected = r"not a DICOM file \(no DICM prefix and no plausible first element\)"
    with pytest.raises(cio.DicomError, match=rf"^<bytes>: {expected}; it looks like {looks}"):
        cio.read_dicom(data)
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    with pytest.raises(cio.DicomError, match=rf"x\.dcm: {expected}"):
        cio.read_dicom(path)


def test_a_text_file_given_to_load_radiograph_is_not_dicom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("findings: none\n" * 10)
    with pytest.raises(cio.DicomError, match=r"notes\.txt: not a DICOM file \(no DICM prefix"):
        cio.load_radiograph(path, 16)


def test_bare_datasets_are_still_read():
    """A dataset without preamble and file meta (as some archives store them) has a plausible first element."""
    ds = pydicom.dcmread(_file("CT_small.dcm"))
    ref = ds.pixel_array
    from io import BytesIO

    buf = BytesIO()
    del ds.file_meta
    ds.preamble = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False, implicit_vr=True, little_endian=True)
    data = buf.getvalue()
    assert data[128:132] != b"DICM" and data[:4] != b"DICM"
    np.testing.assert_array_equal(cio.read_dicom(data).pixels, ref)


def test_truncated_element_error_gives_the_element_start_and_numbers_that_agree():
    path = _file("MR_truncated.dcm")
    size = os.path.getsize(path)
    with pytest.raises(cio.DicomError) as exc:
        cio.read_dicom(path)
    msg = str(exc.value)
    # the element header (tag, VR, reserved, 4-byte length) is 12 bytes before its value
    import re

    m = re.search(r"tag \(7FE0,0010\) at byte (\d+): native pixel data needs (\d+) bytes from byte (\d+) \(to byte "
                  r"(\d+)\) but the file ends at byte (\d+)", msg)
    assert m, msg
    start, n, value, end, eof = map(int, m.groups())
    assert value == start + 12 and end == value + n and eof == size and end > eof


def test_multiframe_fragment_errors_give_the_pixel_data_offset():
    """Three frames in two fragments and no offset table: the error points at the Pixel Data element."""
    from pydicom.encaps import encapsulate

    from cxrfast.io.testing import grayscale_dataset, to_bytes

    ds = grayscale_dataset((4, 4), syntax="1.2.840.10008.1.2.4.70", bits_allocated=8, bits_stored=8, frames=3)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 30] * 2, has_bot=False)
    ds["PixelData"].VR = "OB"
    data = to_bytes(ds)
    at = data.find(b"\xe0\x7f\x10\x00")
    with pytest.raises(cio.DicomError, match=rf"tag \(7FE0,0010\) at byte {at}: 2 fragments for 3 frames"):
        cio.read_dicom(data, frame=1)


def test_native_ybr_full_422_is_decoded_as_pydicom_does():
    path = _file("SC_ybr_full_422_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    got = cio.read_dicom(path)
    np.testing.assert_array_equal(got.pixels, ds.pixel_array)  # pydicom: YBR_FULL_422 → RGB by default
    assert got.meta["decoded_photometric_interpretation"] == "RGB"
    assert got.meta["photometric_interpretation"] == "YBR_FULL_422"
    # the radiograph pipeline takes grayscale only, and says so (colour PNG/JPEG become luminance, DICOM does not)
    with pytest.raises(cio.DicomError, match=r"Photometric Interpretation \(0028,0004\) YBR_FULL_422 with 3 sample\(s\) "
                                             "per pixel: the radiograph pipeline takes grayscale"):
        cio.load_radiograph(path, 16)


def test_one_base_class_and_a_missing_file_is_file_not_found(tmp_path):
    assert issubclass(cio.DicomError, cio.ReadError) and issubclass(cio.ImageError, cio.ReadError)
    assert issubclass(cio.ReadError, ValueError)
    missing = tmp_path / "nope.dcm"
    for fn in (cio.read_dicom, cio.load_radiograph):
        with pytest.raises(FileNotFoundError, match=r"nope\.dcm: no such file") as exc:
            fn(missing)
        assert isinstance(exc.value, cio.ReadError) and exc.value.filename == str(missing)
    batch = cio.load_radiographs([missing], 8, errors="skip")
    assert list(batch.failed) == [0] and "no such file" in batch.failed[0]


@pytest.mark.parametrize("source", ["one/path.dcm", b"DICM", "pathlib"])
def test_load_radiographs_wants_a_list(source):
    if source == "pathlib":
        from pathlib import Path

        source = Path("one/path.dcm")
    with pytest.raises(TypeError, match=r"load_radiographs: `sources` must be a list .* got a single "):
        cio.load_radiographs(source, 32)


@pytest.mark.parametrize("device,exc,match", [
    ("gpu", ValueError, r"load_radiographs: `device` must be 'cpu' or 'cuda' \(or 'cuda:N'\), got 'gpu'"),
    ("mps", ValueError, r"`device` must be 'cpu' or 'cuda' .*got 'mps'"),
])
def test_load_radiographs_device_errors_say_what_came(device, exc, match):
    with pytest.raises(exc, match=match):
        cio.load_radiographs([_file("CT_small.dcm")], 16, device=device)


def test_load_radiographs_names_the_cuda_device_it_was_given():
    import torch

    n = torch.cuda.device_count()
    with pytest.raises(RuntimeError, match=rf"device='cuda:{n + 1}'"):
        cio.load_radiographs([_file("CT_small.dcm")], 16, device=f"cuda:{n + 1}")


def test_files_without_pixel_data_raise_the_no_pixel_data_error():
    """DICOMDIR, RT Plan, Structured Reports: not images (a DicomError subclass, so prepare can tell them apart
    from broken images), naming the SOP class."""
    for name, what in (("DICOMDIR", "Media Storage Directory"), ("rtplan.dcm", "RT Plan"),
                       ("test-SR.dcm", "Structured Report")):
        path = _file(name)
        with pytest.raises(cio.NotAnImageError, match=rf"not an image: no Pixel Data \(7FE0,0010\); .*{what}"):
            cio.read_dicom(path)
        with pytest.raises(cio.NotAnImageError, match=what):
            cio.load_radiograph(path, 8)
    assert issubclass(cio.NotAnImageError, cio.DicomError)


def test_a_source_that_is_not_a_path_names_the_function_and_the_position():
    with pytest.raises(TypeError, match=r"^read_dicom: `source` must be a path \(str or os.PathLike\) or the file's "
                                        r"bytes, got NoneType"):
        cio.read_dicom(None)
    with pytest.raises(TypeError, match=r"^load_radiograph: `source` must be a path"):
        cio.load_radiograph(3, 16)
    with pytest.raises(TypeError, match=r"^load_radiographs: `sources\[1\]` must be a path .* got NoneType"):
        cio.load_radiographs([_file("CT_small.dcm"), None], 16)
    batch = cio.load_radiographs([_file("CT_small.dcm"), None], 16, errors="skip")  # skipped like a bad file
    assert batch.indices == [0] and "got NoneType" in batch.failed[1]
