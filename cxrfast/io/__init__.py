"""Reading radiographs: DICOM Part 10 files decoded by the C++ parser in cxrfast._C (csrc/cpu/dicom.cpp).

    img = cxrfast.io.read_dicom("study/1.dcm")
    img.pixels      # numpy, the stored values: same dtype and values as pydicom's pixel_array
    img.meta        # Rows, BitsStored, PhotometricInterpretation, WindowCenter, UIDs, ViewPosition, ...

Supported here: the uncompressed transfer syntaxes (explicit VR little endian, implicit VR little
endian, explicit VR big endian), RLE Lossless and JPEG Lossless (process 14, any predictor), with or without the 128-byte preamble,
undefined-length sequences, multi-frame. The other compressed syntaxes are parsed (their fragments are
located) but not decoded yet, and raise DicomError saying so; so do deflated files. Malformed files raise DicomError naming the file, the
tag and the problem; the parser never reads outside the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DicomError", "DicomImage", "read_dicom", "TRANSFER_SYNTAXES"]

TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
}
COMPRESSED = {
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}


class DicomError(ValueError):
    """A file that cannot be read: the message names the file, the tag and the problem."""


@dataclass
class DicomImage:
    pixels: np.ndarray | None  # stored values; [rows, cols] ([frames, rows, cols] for all frames of several)
    meta: dict = field(default_factory=dict)


def read_dicom(source, *, frame: int | None = None) -> DicomImage:
    """Read a DICOM file (a path or its bytes). frame: None for all frames, or one 0-based index."""
    from cxrfast import _ext

    if not _ext.load():
        raise RuntimeError(f"cxrfast.io.read_dicom needs the compiled extension: {_ext.unavailable_reason()}")
    from cxrfast import _C

    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fspath(source)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise DicomError(f"{name}: cannot read the file: {exc.strerror or exc}") from exc
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int)):
        raise TypeError(f"read_dicom: `frame` must be an int or None, got {type(frame).__name__}")
    try:
        meta, pixels = _C.dicom_read(data, -1 if frame is None else frame)
    except _C.DicomParseError as exc:
        raise DicomError(f"{name}: {exc}") from None
    except IndexError as exc:
        raise DicomError(f"{name}: {exc}") from None
    ts = meta["transfer_syntax"]
    if not meta["has_pixel_data"]:
        raise DicomError(f"{name}: no Pixel Data (7FE0,0010) element")
    if meta["encapsulated"] and pixels is None:
        what = COMPRESSED.get(ts, "an unknown compressed syntax")
        raise DicomError(f"{name}: tag (0002,0010): transfer syntax {ts} ({what}) has encapsulated pixel data, "
                         "which this build does not decode yet")
    if not meta["encapsulated"] and ts not in TRANSFER_SYNTAXES:
        raise DicomError(f"{name}: tag (0002,0010): transfer syntax {ts!r} is not supported with native pixel data")
    return DicomImage(pixels=pixels, meta=meta)
