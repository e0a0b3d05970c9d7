"""Small synthetic seed files for the DICOM fuzz target (csrc/fuzz/run.sh), written with pydicom into the
directory given as the only argument: what pydicom's own test files lack or hold only in large files.

- Modality LUT Sequence (SS descriptor, OW data) and VOI LUT Sequences: implicit VR with undefined-length
  sequence and items, two items (16-bit, and 8-bit one entry per word); explicit VR big endian with an
  8-bit table packed two entries per word;
- a deflated dataset (12-bit image, both LUT sequences), re-deflated after mutation by the driver;
- multi-frame encapsulated data located by an extended offset table (7FE0,0001/0002), RLE (decoded by the
  target) and JPEG-LS (located only: what cxrfast.io hands to imagecodecs);
- multi-frame JPEG Lossless (decoded by the target) and JPEG-LS (located only) data with an empty basic offset
  table and each frame over 4 or 5 fragments (cxrfast.io.testing.cut_codestream), located by the end marker
  FF D9 that ends each frame's last fragment (pydicom's rule);
- one-component JPEG Lossless (process 14) streams, written by the tests' encoder (tests/io/
  jpeg_lossless_encoder.py), which reach the decoder's one-component fast path (pydicom's only lossless file
  is RGB, decoded by the interleaved path): 8-bit predictor 7 with a restart every 3 lines, 12-bit SV1,
  16-bit predictor 4 with a restart every line, and streams whose Huffman tables have codes of 13–16 bits
  used by their samples (16-bit with categories up to 16, 12-bit, 8-bit): the lookup table's slow paths.
"""

import os
import sys
import warnings

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate_extended
from pydicom.sequence import Sequence
from pydicom.encaps import encapsulate
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEGLosslessSV1, JPEGLSLossless, RLELossless)

# the tests' JPEG Lossless encoder
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "io"))
import jpeg_lossless_encoder as jpegll  # noqa: E402

from cxrfast.io.testing import cut_codestream, grayscale_dataset  # noqa: E402

JPEG_LOSSLESS_ANY_PREDICTOR = "1.2.840.10008.1.2.4.57"  # process 14, any predictor (SV1: predictor 1)


def image(syntax, rows=12, columns=10, bits_stored=12, signed=False, frames=1):
    rng = np.random.default_rng(rows * columns + bits_stored)
    lo, hi = (-(1 << (bits_stored - 1)), 1 << (bits_stored - 1)) if signed else (0, 1 << bits_stored)
    pixels = rng.integers(lo, hi, (frames, rows, columns)).astype(np.int16 if signed else np.uint16)
    ds = grayscale_dataset((rows, columns), syntax=syntax, bits_stored=bits_stored, signed=signed, frames=frames)
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(">i2" if big and signed else ">u2" if big else "<i2" if signed else "<u2").tobytes()
    return ds, pixels


def lut_item(entries, first, bits, data, vr="US", data_vr="OW", explanation="seed"):
    item = Dataset()
    item.add_new(0x00283002, vr, [entries, first, bits])
    item.add_new(0x00283006, data_vr, data)
    item.LUTExplanation = explanation
    return item


def write(ds, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)


def main(out):
    os.makedirs(out, exist_ok=True)
    ramp = np.arange(64, dtype="<u2") * 1000

    ds, _ = image(ExplicitVRLittleEndian, signed=True)
    m = lut_item(64, -32, 16, ramp.tobytes(), vr="SS")
    m.ModalityLUTType = "HU"
    ds.ModalityLUTSequence = Sequence([m])
    write(ds, os.path.join(out, "lut_modality_explicit.dcm"))

    ds, _ = image(ImplicitVRLittleEndian)
    ds.VOILUTSequence = Sequence([lut_item(64, 100, 16, ramp.tobytes()),
                                  lut_item(32, 0, 8, (np.arange(32, dtype="<u2") * 8).tobytes())])
    ds.VOILUTSequence.is_undefined_length = True
    for item in ds.VOILUTSequence:
        item.is_undefined_length_sequence_item = True
    write(ds, os.path.join(out, "lut_voi_implicit_undefined.dcm"))

    ds, _ = image(ExplicitVRBigEndian)
    # 8-bit entries packed two per OW word, padded to even length; big endian words hold them pairwise swapped
    packed = (bytes(range(0, 248, 8)) + b"\0")
    ds.VOILUTSequence = Sequence([lut_item(31, 5, 8, bytes(np.frombuffer(packed, np.uint8).reshape(-1, 2)[:, ::-1]))])
    write(ds, os.path.join(out, "lut_voi_bigendian_packed.dcm"))

    ds, _ = image(DeflatedExplicitVRLittleEndian)
    ds.ModalityLUTSequence = Sequence([lut_item(64, 0, 16, ramp.tobytes())])
    ds.VOILUTSequence = Sequence([lut_item(64, 0, 16, ramp.tobytes())])
    write(ds, os.path.join(out, "deflated_luts.dcm"))

    ds, pixels = image(ExplicitVRLittleEndian, frames=3)
    ds.compress(RLELossless)
    frames = list(_rle_frames(ds))
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    write(ds, os.path.join(out, "eot_rle.dcm"))

    ds, pixels = image(ExplicitVRLittleEndian, frames=3)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    try:
        import imagecodecs
        streams = [imagecodecs.jpegls_encode(f) for f in pixels]
    except ImportError:  # the target only locates these frames: any bytes serve
        streams = [bytes([0xFF, 0xD8, k]) * 7 for k in range(3)]
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(streams)
    ds["PixelData"].VR = "OB"
    write(ds, os.path.join(out, "eot_jpegls.dcm"))

    end_marker_seeds(out)
    jpeg_lossless_seeds(out)


def end_marker_seeds(out):
    """3 frames, each cut into 4 or 5 fragments, the basic offset table empty: the frames are found by the end
    marker FF D9 in their last fragments. JPEG Lossless (tests' encoder, decoded by the target) and JPEG-LS
    (located only: any stream ending with FF D9 serves without imagecodecs)."""
    ds, pixels = image(ExplicitVRLittleEndian, rows=16, columns=13, frames=3)
    ds.file_meta.TransferSyntaxUID = UID(JPEG_LOSSLESS_ANY_PREDICTOR)
    streams = [jpegll.encode(f, precision=12, predictor=6) for f in pixels]
    _write_fragmented(ds, streams, os.path.join(out, "no_bot_jpegll_fragments.dcm"))

    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    try:
        import imagecodecs
        streams = [imagecodecs.jpegls_encode(f) for f in pixels]
    except ImportError:
        streams = [b"\xff\xd8" + bytes([k, 0xFF]) * 20 + b"\xff\xd9" for k in range(3)]
    _write_fragmented(ds, streams, os.path.join(out, "no_bot_jpegls_fragments.dcm"))


def _write_fragmented(ds, streams, path):
    ds.PixelData = encapsulate([p for s in streams for p in cut_codestream(s)], has_bot=False)
    ds["PixelData"].VR = "OB"
    write(ds, path)


def jpeg_lossless_seeds(out):
    """Small one-component JPEG Lossless files: (name, precision, rows, columns, predictor, restart lines,
    code lengths or None for the optimal table). Noise, a flat band and the range's ends; the long-code
    streams use every category of their table at random."""
    cases = [
        ("jpegll_8bit_p7_rst3.dcm", 8, 12, 10, 7, 3, None),
        ("jpegll_12bit_sv1.dcm", 12, 14, 11, 1, 0, None),
        ("jpegll_16bit_p4_rst1.dcm", 16, 8, 10, 4, 1, None),
        ("jpegll_16bit_long_codes_rst4.dcm", 16, 12, 21, 1, 4, jpegll.LONG_CODE_LENGTHS[16]["tail"]),
        ("jpegll_12bit_long_codes_p5.dcm", 12, 10, 17, 5, 0, jpegll.LONG_CODE_LENGTHS[12]["head"]),
        ("jpegll_8bit_long_codes.dcm", 8, 9, 13, 1, 0, jpegll.LONG_CODE_LENGTHS[8]["tail"]),
    ]
    for k, (name, precision, rows, columns, predictor, restart_lines, lengths) in enumerate(cases):
        rng = np.random.default_rng(100 + k)
        if lengths is None:
            img = rng.integers(0, 1 << precision, (rows, columns))
            img[rows // 3:rows // 2] = (1 << precision) - 1 if k % 2 else 0
            img[-1, : columns // 2] = img[-1, 0]
        else:
            cats = rng.integers(0, len(lengths), (rows, columns))
            img = jpegll.image_with_categories(cats, precision=precision, predictor=predictor,
                                               restart_lines=restart_lines, seed=k)
        stream = jpegll.encode(img, precision=precision, predictor=predictor, restart_lines=restart_lines,
                               code_lengths=lengths)
        ds, _ = image(ExplicitVRLittleEndian, rows=rows, columns=columns, bits_stored=precision)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1 if predictor == 1 else UID(JPEG_LOSSLESS_ANY_PREDICTOR)
        if precision <= 8:
            ds.BitsAllocated = 8
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        write(ds, os.path.join(out, name))


def _rle_frames(ds):
    from pydicom.encaps import generate_frames

    return generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)


if __name__ == "__main__":
    main(sys.argv[1])
