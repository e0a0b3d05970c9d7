"""Reading radiographs: DICOM Part 10 files decoded by the C++ parser in cxrfast._C (csrc/cpu/dicom.cpp).

    img = cxrfast.io.read_dicom("study/1.dcm")
    img.pixels      # numpy, the stored values: same dtype and values as pydicom's pixel_array
    img.meta        # Rows, BitsStored, PhotometricInterpretation, WindowCenter, UIDs, ViewPosition, ...

Transfer syntaxes (TRANSFER_SYNTAXES: native pixel data; COMPRESSED: encapsulated, with who decodes it):
- decoded in C++ (cxrfast._C): explicit VR little endian, implicit VR little endian, explicit VR big endian,
  deflated explicit VR little endian (zlib; a build without zlib refuses it saying so), RLE Lossless, JPEG
  Lossless process 14 (.57 and SV1 .70: every predictor, precision 2-16, restart markers);
- located in C++, decoded by the optional package imagecodecs (cxrfast/io/_codecs.py): JPEG baseline (.50)
  and extended (.51) through libjpeg-turbo, JPEG-LS lossless / near-lossless (.80 / .81) through CharLS,
  JPEG 2000 lossless / lossy (.90 / .91) and HTJ2K (.201 / .202 / .203) through OpenJPEG, with pydicom's
  corrections afterwards (bits-stored shift, JPEG-LS / JPEG 2000 sign, YBR → RGB for colour JPEG), so
  `.pixels` equals pydicom's pixel_array (exactly for the lossless syntaxes, JPEG-LS near-lossless and
  lossy JPEG 2000; within a few grey levels for lossy JPEG, whose IDCT differs from pydicom's libjpeg: ±1
  on pydicom's files). Without imagecodecs these raise DicomError saying so.
Model inputs (cxrfast/io/radiograph.py): load_radiograph(path, size=512, ...) runs the whole pixel pipeline
(Modality LUT / rescale, VOI, MONOCHROME1 inversion, antialiased resize, pad / crop, output dtype) in C++;
load_radiographs(paths, ..., device="cuda") does a batch of any sizes in one fused CUDA kernel.

Files with or without the 128-byte preamble, undefined-length sequences and items, multi-frame (one frame or
all), encapsulated frames located by the extended offset table, the basic offset table, one fragment per frame,
or, for the JPEG-family syntaxes without a table, as pydicom locates them: a frame ends with each fragment
whose last 10 bytes hold the end marker FF D9 (a frame count that disagrees with NumberOfFrames is an error).
Malformed files raise DicomError naming the file, the tag and the problem; the parser never reads outside the
file.

Writing (numpy and the standard library only, imported on demand): cxrfast.io.write.dicom_bytes / write_dicom
write one-frame grayscale files in explicit, implicit or deflated VR little endian, RLE Lossless or JPEG
Lossless SV1 (the encoder: cxrfast.io.jpeg_lossless); the synthetic dataset (cxrfast.data.synth) uses them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DicomError", "DicomImage", "read_dicom", "TRANSFER_SYNTAXES"]

TRANSFER_SYNTAXES = {  # native pixel data, decoded by cxrfast._C
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
}
COMPRESSED = {  # encapsulated pixel data: uid -> (name, meta["codec"] of the decoder)
    "1.2.840.10008.1.2.5": ("RLE Lossless", "rle"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless (process 14)", "jpeg-lossless"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "jpeg-lossless"),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "imagecodecs.jpeg8"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended", "imagecodecs.jpeg8"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "imagecodecs.jpegls"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-lossless", "imagecodecs.jpegls"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "imagecodecs.jpeg2k"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "imagecodecs.jpeg2k"),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", "imagecodecs.jpeg2k"),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", "imagecodecs.jpeg2k"),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", "imagecodecs.jpeg2k"),
}


class DicomError(ValueError):
    """A file that cannot be read: the message names the file, the tag and the problem."""


@dataclass
class DicomImage:
    pixels: np.ndarray | None  # stored values; [rows, cols] ([frames, rows, cols] for all frames of several)
    meta: dict = field(default_factory=dict)


def read_dicom(source, *, frame: int | None = None) -> DicomImage:
    """Read a DICOM file (a path or its bytes). frame: None for all frames, or one 0-based index.

    `.pixels`: the stored values with pydicom's pixel_array dtype (u/int 8/16/32 from BitsAllocated and
    PixelRepresentation) and shape: [rows, columns], [rows, columns, samples] for colour, a leading
    [frames] axis when frame is None and there are several.

    `.meta` (dict), the keys:
    - transfer_syntax, explicit_vr, big_endian, has_preamble, deflated (bool);
    - rows, columns, bits_allocated, bits_stored, high_bit, pixel_representation, samples_per_pixel,
      planar_configuration, number_of_frames (int); photometric_interpretation (str, the file's);
      decoded_photometric_interpretation: that of `.pixels`: "RGB" where YBR_FULL / YBR_FULL_422 samples
      (or a JPEG stream pydicom deems YBR: JFIF) were converted, as pydicom's pixel_array does by default;
      "RGB" for JPEG 2000's YBR_ICT / YBR_RCT (OpenJPEG inverts them); else the file's;
    - codec: the decoder used: "native", "rle", "jpeg-lossless" (cxrfast._C), "imagecodecs.jpeg8",
      "imagecodecs.jpegls", "imagecodecs.jpeg2k";
    - rescale_slope, rescale_intercept (float; 1 and 0 when absent), has_rescale (bool: both present, as
      pydicom's apply_modality_lut requires to rescale; it never rescales when there is a Modality LUT);
    - window_center, window_width (list[float], all values), voi_lut_function (str, "" when absent);
    - has_modality_lut_sequence, has_voi_lut_sequence (bool: the sequence is present, possibly empty);
    - modality_lut: None, or the first item of a non-empty Modality LUT Sequence (0028,3000) as a dict:
        first_mapped (int): LUT Descriptor (0028,3002) value 2, signed when its VR is SS or, for an implicit /
          ambiguous VR, when PixelRepresentation is 1 (pydicom's reading);
        bits (int): LUT Descriptor value 3, bits per entry (1..16);
        data (numpy 1-D): LUT Data (0028,3006), exactly LUT Descriptor value 1 entries (0 means 65536);
          uint8 when bits <= 8, else uint16 (the dtype pydicom's LUT functions return); 8-bit tables stored
          one entry per 16-bit word (what pydicom reads) or packed two per word (PS3.3 C.11.1.1.1);
        explanation (str): LUT Explanation (0028,3003); type (str): Modality LUT Type (0028,3004);
    - voi_luts: list of such dicts (without "type"), every item of the VOI LUT Sequence (0028,3010) in order.
      A table maps a value x to data[clip(x - first_mapped, 0, len(data) - 1)] (x below first_mapped: data[0]);
      this is pydicom.pixels.apply_modality_lut exactly, and apply_voi exactly for tables of more than 8
      bits or whose indices x - first_mapped stay below 256 (pydicom indexes 8-bit VOI tables through a uint8
      array, so larger indices wrap modulo 256 there: a pydicom defect, not reproduced here);
    - sop_instance_uid, study_instance_uid, series_instance_uid, patient_id, study_date, view_position,
      modality (str, "" when absent);
    - has_pixel_data, encapsulated (bool); fragments (list of (offset, length)), basic_offset_table,
      extended_offset_table, extended_offset_table_lengths (list[int]): offsets count in the file, or in
      the inflated dataset when deflated.
    A malformed or undecodable file raises DicomError naming the file, the tag and the problem.
    """
    from cxrfast import _ext

    if not _ext.load():
        raise RuntimeError(f"cxrfast.io.read_dicom needs the compiled extension: {_ext.unavailable_reason()}")
    name, data = read_source(source, DicomError)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))):
        raise TypeError(f"read_dicom: `frame` must be an int or None, got {type(frame).__name__}")
    if frame is not None:
        frame = int(frame)
        # the binding's frame -1 means "all frames": a negative index must not reach it
        if frame < 0:
            raise DicomError(f"{name}: frame {frame} out of range (frames are numbered from 0)")
    return decode_dicom(name, data, frame)


def read_source(source, error: type) -> tuple[str, bytes]:
    """(name for messages, bytes) of a path or of bytes; an unreadable file raises `error` naming it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    name = os.fspath(source)
    try:
        with open(name, "rb") as f:
            return name, f.read()
    except OSError as exc:
        raise error(f"{name}: cannot read the file: {exc.strerror or exc}") from exc


def decode_dicom(name: str, data: bytes, frame: int | None) -> DicomImage:
    """read_dicom on a file's bytes (frame: None or >= 0); `name` is what its errors call the file."""
    from cxrfast import _C

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
        what = COMPRESSED.get(ts, ("an unknown compressed syntax",))[0]
        raise DicomError(f"{name}: tag (0002,0010): transfer syntax {ts} ({what}) has encapsulated pixel data, "
                         "which cxrfast does not decode")
    if not meta["encapsulated"] and ts not in TRANSFER_SYNTAXES:
        raise DicomError(f"{name}: tag (0002,0010): transfer syntax {ts!r} is not supported with native pixel data")
    meta["decoded_photometric_interpretation"] = meta["photometric_interpretation"]
    if meta["codec"] == "external":  # pixels: the requested frames' encoded streams
        pixels = _decode_external(name, meta, pixels, frame)
    if meta["samples_per_pixel"] == 3 and meta["decoded_photometric_interpretation"] in ("YBR_FULL", "YBR_FULL_422"):
        from cxrfast.io._codecs import ybr_to_rgb

        pixels = ybr_to_rgb(pixels)  # pydicom's pixel_array does the same by default (as_rgb)
        meta["decoded_photometric_interpretation"] = "RGB"
    return DicomImage(pixels=pixels, meta=meta)


def _decode_external(name: str, meta: dict, streams: list, frame: int | None) -> np.ndarray:
    """The frames of a syntax decoded by imagecodecs (see cxrfast/io/_codecs.py), stacked as _C stacks them."""
    from cxrfast.io import _codecs

    ts = meta["transfer_syntax"]
    what, codec = COMPRESSED[ts]
    try:
        import imagecodecs
    except ImportError:
        raise DicomError(f"{name}: tag (0002,0010): transfer syntax {ts} ({what}) needs the optional package "
                         "imagecodecs (pip install imagecodecs)") from None
    first = 0 if frame is None else frame
    out = None
    for k, stream in enumerate(streams):
        try:
            arr, photometric = _codecs.decode_frame(stream, meta, imagecodecs)
        except _codecs.CodecError as exc:
            raise DicomError(f"{name}: tag (7FE0,0010), frame {first + k}: {what}: {exc}") from None
        if len(streams) == 1 and (frame is not None or meta["number_of_frames"] == 1):
            out = arr
        else:
            if out is None:
                out = np.empty((len(streams),) + arr.shape, arr.dtype)
            out[k] = arr
    meta["codec"] = codec
    meta["decoded_photometric_interpretation"] = photometric
    return out


from cxrfast.io.radiograph import (  # noqa: E402  (the pipeline uses read_dicom / DicomError above)
    ImageError, Radiograph, RadiographBatch, load_radiograph, load_radiographs)

__all__ += ["ImageError", "Radiograph", "RadiographBatch", "load_radiograph", "load_radiographs"]
