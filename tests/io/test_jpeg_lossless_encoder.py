"""The library's vectorised JPEG Lossless encoder (cxrfast/io/jpeg_lossless.py) writes the same bytes as the
original bit-by-bit one (tests/io/jpeg_lossless_encoder.py: encode_reference), and its streams decode exactly."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # jpeg_lossless_encoder, the tests' own helpers

from cxrfast.io import jpeg_lossless  # noqa: E402


@pytest.mark.parametrize("precision", [2, 8, 12, 16])
@pytest.mark.parametrize("predictor", [1, 4, 7])
@pytest.mark.parametrize("restart_lines", [0, 3])
def test_vectorised_encoder_equals_the_reference_byte_for_byte(precision, predictor, restart_lines):
    from jpeg_lossless_encoder import _predict, encode_reference

    rng = np.random.default_rng(precision * 100 + predictor * 10 + restart_lines)
    img = rng.integers(0, 1 << precision, (23, 17))
    img[5:9] = (1 << precision) - 1  # flat runs and the top value
    img[12, :] = 0
    assert np.array_equal(jpeg_lossless.predict(img, predictor, precision, restart_lines),
                          _predict(img, predictor, precision, restart_lines))
    assert jpeg_lossless.encode(img, precision=precision, predictor=predictor, restart_lines=restart_lines) == \
        encode_reference(img, precision=precision, predictor=predictor, restart_lines=restart_lines)


@pytest.mark.parametrize("table", ["tail", "head", "all16"])
def test_vectorised_encoder_with_given_long_codes(table):
    from jpeg_lossless_encoder import LONG_CODE_LENGTHS, encode_reference, image_with_categories

    lengths = LONG_CODE_LENGTHS[16][table]
    cats = np.random.default_rng(3).integers(0, len(lengths), (11, 29))
    img = image_with_categories(cats, precision=16, predictor=1, restart_lines=4, seed=2)
    kw = dict(precision=16, predictor=1, restart_lines=4, code_lengths=lengths)
    assert jpeg_lossless.encode(img, **kw) == encode_reference(img, **kw)


def test_skewed_counts_keep_codes_within_16_bits():
    """Counts doubling over the 17 categories of 16-bit samples: the plain Huffman code would be 17 bits."""
    freq = {c: 2**c for c in range(17)}
    assert max(jpeg_lossless._huffman_lengths(freq).values()) > 16
    lengths = jpeg_lossless.code_lengths_for(freq)
    assert max(lengths.values()) <= 16 and jpeg_lossless._kraft_ok(lengths)


def test_a_radiograph_sized_image_round_trips_through_read_dicom_and_pydicom():
    """A 12-bit 300 × 257 image as DICOM .70 (written by cxrfast.io.write) reads back exactly."""
    pytest.importorskip("pydicom")
    import pydicom

    from cxrfast.io import read_dicom
    from cxrfast.io.write import JPEG_LOSSLESS_SV1, dicom_bytes

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:257]
    img = np.clip(2000 + 900 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 40, x.shape), 0, 4095)
    img = img.astype(np.uint16)
    data = dicom_bytes(img, syntax=JPEG_LOSSLESS_SV1, bits_stored=12, attributes={"SOPInstanceUID": "2.25.7"})
    assert np.array_equal(read_dicom(data).pixels, img)
    import io

    assert np.array_equal(pydicom.dcmread(io.BytesIO(data)).pixel_array, img)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="precision"):
        jpeg_lossless.encode(np.zeros((2, 2), np.uint16), precision=1)
    with pytest.raises(ValueError, match="img"):
        jpeg_lossless.encode(np.full((2, 2), 4096), precision=12)
    with pytest.raises(ValueError, match="predictor"):
        jpeg_lossless.encode(np.zeros((2, 2)), precision=8, predictor=0)
