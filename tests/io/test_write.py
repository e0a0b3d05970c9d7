"""cxrfast.io.write, the dependency-free DICOM writer: every syntax it writes reads back pixel-exact with
cxrfast.io.read_dicom and with pydicom (its own RLE decoder, pylibjpeg for JPEG lossless), attributes
included; the PackBits encoder at run and row boundaries; equal inputs, equal bytes; clear errors."""

import io

import numpy as np
import pytest

from cxrfast.io import read_dicom
from cxrfast.io import write as W

pydicom = pytest.importorskip("pydicom")

ATTRS = {"SOPInstanceUID": "2.25.11", "StudyInstanceUID": "2.25.12", "SeriesInstanceUID": "2.25.13",
         "PatientID": "10000032", "StudyDate": "21800506", "StudyTime": "213014.531", "ViewPosition": "PA",
         "WindowCenter": 2000.5, "WindowWidth": [3000, 2500], "RescaleSlope": 0.5, "RescaleIntercept": -1024,
         "Modality": "DX", "ImageType": ["ORIGINAL", "PRIMARY"], "PatientName": "Doe^Jane",
         "ViewCodeSequence": [{"CodeValue": "R-10206", "CodingSchemeDesignator": "SRT",
                               "CodeMeaning": "postero-anterior"}],
         "PatientOrientationCodeSequence": [{"CodeValue": "F-10440", "CodingSchemeDesignator": "SRT",
                                             "CodeMeaning": "erect"}]}


def _image(shape, dtype, seed, top):
    """Noise, flat runs of every length around 128, a row of one value and the extremes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, top + 1, shape)
    rows, cols = shape
    for r, n in enumerate((1, 2, 3, 127, 128, 129, 255, 256, 257, 300)):
        if r < rows:
            img[r, :min(n, cols)] = top if r % 2 else 0
    if rows > 11:
        img[11] = 7  # a whole row: the run ends at the row's end, the next row starts a new one
    if rows > 12 and cols > 3:
        img[12, ::2] = 5  # alternating: all literal
    return img.astype(dtype)


def _pydicom(data):
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("syntax", sorted(W.SYNTAXES))
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_every_syntax_reads_back_exactly(syntax, photometric):
    for k, (shape, dtype, bits) in enumerate([((64, 301), np.uint16, 12), ((1, 1), np.uint16, 12),
                                              ((13, 1), np.uint16, 16), ((17, 130), np.uint8, 8),
                                              ((5, 7), np.uint16, 10)]):
        img = _image(shape, dtype, k, (1 << bits) - 1)
        data = W.dicom_bytes(img, syntax=syntax, photometric=photometric, bits_stored=bits, attributes=ATTRS)
        ours = read_dicom(data)
        assert ours.pixels.dtype == img.dtype and np.array_equal(ours.pixels, img), (shape, bits)
        m = ours.meta
        assert m["transfer_syntax"] == syntax and m["photometric_interpretation"] == photometric
        assert (m["bits_stored"], m["rows"], m["columns"]) == (bits, *shape)
        assert m["window_center"] == [2000.5] and m["window_width"] == [3000.0, 2500.0]
        assert (m["rescale_slope"], m["rescale_intercept"], m["has_rescale"]) == (0.5, -1024.0, True)
        assert m["view_position"] == "PA" and m["patient_id"] == "10000032" and m["sop_instance_uid"] == "2.25.11"
        ds = _pydicom(data)
        assert np.array_equal(ds.pixel_array.reshape(shape), img), (shape, bits)
        assert ds.file_meta.TransferSyntaxUID == syntax and ds.file_meta.MediaStorageSOPInstanceUID == "2.25.11"
        assert ds.ViewCodeSequence[0].CodeMeaning == "postero-anterior"
        assert ds.PatientOrientationCodeSequence[0].CodeMeaning == "erect"
        assert ds.StudyTime == "213014.531" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
        assert ds.PatientName == "Doe^Jane" and ds.HighBit == bits - 1 and ds.PixelRepresentation == 0


def test_rle_segments_are_packbits_rows():
    """The fragment's header and segments as PS3.5 Annex G lays them out: two segments (high bytes, then
    low), even lengths, each row decodable on its own (no run crosses a row)."""
    img = _image((20, 300), np.uint16, 3, 4095)
    frag = W.encode_rle(img)
    header = np.frombuffer(frag[:64], "<u4")
    assert header[0] == 2 and header[1] == 64 and not header[3:].any()
    segs = [frag[header[1]:header[2]], frag[header[2]:]]
    assert all(len(s) % 2 == 0 for s in segs)
    for seg, plane in zip(segs, [(img >> 8).astype(np.uint8), (img & 0xFF).astype(np.uint8)]):
        pos, rows = 0, []
        for _ in range(plane.shape[0]):  # decode row by row: each row's packets end exactly at its end
            row = bytearray()
            while len(row) < plane.shape[1]:
                h = seg[pos]
                if h < 128:
                    row += seg[pos + 1:pos + 2 + h]
                    pos += 2 + h
                elif h > 128:
                    row += bytes([seg[pos + 1]]) * (257 - h)
                    pos += 2
                else:
                    pos += 1
            assert len(row) == plane.shape[1]
            rows.append(bytes(row))
        assert b"".join(rows) == plane.tobytes()


def test_equal_inputs_give_equal_bytes():
    img = _image((40, 50), np.uint16, 5, 4095)
    for syntax in W.SYNTAXES:
        a = W.dicom_bytes(img, syntax=syntax, bits_stored=12, attributes=ATTRS)
        assert a == W.dicom_bytes(img.copy(), syntax=syntax, bits_stored=12, attributes=dict(ATTRS))


def test_write_dicom_writes_the_file(tmp_path):
    img = _image((9, 8), np.uint16, 6, 4095)
    n = W.write_dicom(tmp_path / "a.dcm", img, syntax=W.RLE_LOSSLESS, bits_stored=12, attributes=ATTRS)
    assert n == (tmp_path / "a.dcm").stat().st_size
    assert np.array_equal(read_dicom(tmp_path / "a.dcm").pixels, img)


def test_errors_name_the_argument():
    img = np.zeros((4, 4), np.uint16)
    with pytest.raises(ValueError, match="`syntax`"):
        W.dicom_bytes(img, syntax="1.2.840.10008.1.2.4.50", attributes=ATTRS)
    with pytest.raises(ValueError, match="`photometric`"):
        W.dicom_bytes(img, photometric="RGB", attributes=ATTRS)
    with pytest.raises(ValueError, match="`pixels`"):
        W.dicom_bytes(img.astype(np.float32), attributes=ATTRS)
    with pytest.raises(ValueError, match="beyond bits_stored=12"):
        W.dicom_bytes(img + 4096, bits_stored=12, attributes=ATTRS)
    with pytest.raises(ValueError, match="unknown keyword 'Colour'"):
        W.dicom_bytes(img, attributes={**ATTRS, "Colour": "red"})
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        W.dicom_bytes(img, attributes={})
