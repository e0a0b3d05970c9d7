"""Synthetic DICOM datasets for tests, benchmarks and fuzz seeds (needs pydicom; not imported by cxrfast.io).

    ds = grayscale_dataset((2500, 2048), bits_stored=12, photometric="MONOCHROME1", sop_instance_uid="1.2.3.7")
    ds.WindowCenter, ds.WindowWidth = 2000, 3000   # the caller adds what its case needs
    ds.PixelData = pixels.astype("<u2").tobytes()
    data = to_bytes(ds)                             # a Part 10 file, with the preamble
    pieces = cut_codestream(jpeg_stream)            # one frame's fragments, for encapsulated pixel data
"""

from __future__ import annotations

import io
import warnings

__all__ = ["DIGITAL_XRAY", "cut_codestream", "grayscale_dataset", "to_bytes"]

DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def grayscale_dataset(shape, *, syntax: str = "1.2.840.10008.1.2.1", bits_allocated: int = 16,
                      bits_stored: int = 12, signed: bool = False, photometric: str = "MONOCHROME2",
                      frames: int | None = None, sop_instance_uid: str = "1.2.3.4",
                      sop_class_uid: str | None = None):
    """A pydicom Dataset with file meta and the Image Pixel module of one-sample grayscale frames of `shape`
    (rows, columns), HighBit = BitsStored - 1; no Pixel Data. NumberOfFrames is written when `frames` is
    given. SOPClassUID is written (equal to the file meta's) only when `sop_class_uid` is given; the file meta
    then names it too, else Digital X-Ray."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid or DIGITAL_XRAY
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    if sop_class_uid is not None:
        ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.Rows, ds.Columns = shape
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    return ds


def to_bytes(ds) -> bytes:
    """The Part 10 file of `ds` (pydicom's warnings about the synthetic content silenced)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def cut_codestream(stream: bytes) -> list[bytes]:
    """One frame's codestream (JPEG, JPEG-LS, JPEG 2000: ending with the marker FF D9) cut into fragments as
    writers may cut it: uneven lengths, every cut at an even offset (items have even lengths, so only a frame's
    last fragment may be padded, after its end marker), one cut right after an FF byte (the next fragment starts
    with the byte that follows it), a 2-byte fragment, and a last fragment of 6 or 7 bytes holding the end
    marker (7: padded with 00 when encapsulated). 4 or 5 fragments; ValueError when the stream has no FF byte
    at an odd offset before its last 8 bytes."""
    after_ff = [i + 1 for i in range(1, len(stream) - 8, 2) if stream[i] == 0xFF]  # (not the end marker's)
    if not after_ff:
        raise ValueError("cut_codestream: no FF byte at an odd offset to cut after")
    ff = after_ff[len(after_ff) // 2]
    cuts = sorted({2 * (len(stream) // 7), ff, ff + 2, len(stream) - 6 - len(stream) % 2})
    return [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
