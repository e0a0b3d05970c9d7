"""read_dicom: the Python face of the C++ Part 10 parser (csrc/cpu/dicom.cpp) and of the library codecs
(cxrfast/io/_codecs.py). Public names are re-exported by cxrfast.io, whose docstring describes them."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import numpy as np

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


class ReadError(ValueError):
    """A source (path or bytes) that cxrfast.io cannot read as a radiograph; the message names the file. The
    base of DicomError and ImageError: `except cxrfast.io.ReadError` catches every file problem."""


class DicomError(ReadError):
    """A DICOM file that cannot be read: the message names the file, the tag and the problem."""


class NotAnImageError(DicomError):
    """A DICOM file without pixel data (DICOMDIR, RT Plan, Structured Report, ...): not an image, rather than a
    broken one. The message says what the file is."""


class MissingFileError(ReadError, FileNotFoundError):
    """A path that does not exist: both a ReadError and a FileNotFoundError (errno ENOENT, filename set)."""

    def __init__(self, message: str, filename: str):
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno.ENOENT, os.strerror(errno.ENOENT), filename

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class DicomImage:
    pixels: np.ndarray | None  # stored values; [rows, cols] ([frames, rows, cols] for all frames of several)
    meta: dict = field(default_factory=dict)


def read_dicom(source, *, frame: int | None = None, pixels: bool = True) -> DicomImage:
    """Read a DICOM file (a path or its bytes). frame: None for all frames, or one 0-based index.
    pixels=False: the attributes only (`.pixels` None), without decoding or checking the pixel data; a file
    without pixel data is then no error (`cxrfast dicom info` reads files so).

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
    name, data = read_source(source, DicomError, "read_dicom: `source`")
    if not pixels:
        from cxrfast import _C

        try:
            meta, _ = _C.dicom_read(data, -1, decode=False)
        except (_C.DicomParseError, IndexError) as exc:
            raise dicom_error(name, exc, data) from None
        meta["decoded_photometric_interpretation"] = meta["photometric_interpretation"]
        return DicomImage(pixels=None, meta=meta)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))):
        raise TypeError(f"read_dicom: `frame` must be an int or None, got {type(frame).__name__}")
    if frame is not None:
        frame = int(frame)
        # the binding's frame -1 means "all frames": a negative index must not reach it
        if frame < 0:
            raise DicomError(f"{name}: frame {frame} out of range (frames are numbered from 0)")
    return decode_dicom(name, data, frame)


def source_type_error(label: str, source) -> str | None:
    """The message for a source that is neither a path nor bytes (None: it is one); label names it, e.g.
    "read_dicom: `source`"."""
    if isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike)):
        return None
    return f"{label} must be a path (str or os.PathLike) or the file's bytes, got {type(source).__name__}"


def read_source(source, error: type, label: str) -> tuple[str, bytes]:
    """(name for messages, bytes) of a path or of bytes. A path that does not exist raises MissingFileError;
    another unreadable file (a folder, no permission) raises `error` naming it; anything else is a TypeError
    naming `label` (the function and the argument)."""
    bad = source_type_error(label, source)
    if bad:
        raise TypeError(bad)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    name = os.fspath(source)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    try:
        with open(name, "rb") as f:
            return name, f.read()
    except FileNotFoundError:
        raise MissingFileError(f"{name}: no such file", name) from None
    except IsADirectoryError:
        raise error(f"{name}: is a folder, not a file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read the file: {exc.strerror or exc}") from exc


# The SOP classes of files without pixel data that a folder of radiographs commonly holds (uid prefix -> what)
_NOT_IMAGES = (
    ("1.2.840.10008.1.3.10", "a Media Storage Directory (DICOMDIR)"),
    ("1.2.840.10008.5.1.4.1.1.88.", "a Structured Report"),
    ("1.2.840.10008.5.1.4.1.1.481.5", "an RT Plan"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "an RT Structure Set"),
    ("1.2.840.10008.5.1.4.1.1.104.", "an encapsulated document (PDF, CDA, ...)"),
    ("1.2.840.10008.5.1.4.1.1.11.", "a Presentation State"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data or a registration"),
    ("1.2.840.10008.5.1.4.1.1.9.", "a waveform (ECG, audio, ...)"),
)


def what_it_is(meta: dict) -> str:
    """What a DICOM file without pixel data is, from its SOP class and modality: "it is an RT Plan (SOP Class
    1.2.840.10008.5.1.4.1.1.481.5, Modality RTPLAN)"."""
    uid, modality = meta.get("sop_class_uid", ""), meta.get("modality", "")
    what = next((w for prefix, w in _NOT_IMAGES if uid.startswith(prefix)), None)
    details = [f"SOP Class {uid}"] if uid else []
    if modality:
        details.append(f"Modality {modality}")
    said = f"it is {what}" if what else "a DICOM object that holds no image"
    return said + (f" ({', '.join(details)})" if details else "")


def not_an_image(name: str, meta: dict) -> NotAnImageError:
    """The error for a DICOM file without Pixel Data, saying what the file is."""
    return NotAnImageError(f"{name}: not an image: no Pixel Data (7FE0,0010); {what_it_is(meta)}")


_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
               (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip file"))


def looks_like(data: bytes) -> str | None:
    """What a file that is not DICOM seems to be, from its first bytes (None: no idea)."""
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return what
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if text and all(c.isprintable() or c in "\r\n\t" for c in text) else None


def dicom_error(name: str, exc: Exception, data: bytes) -> DicomError:
    """A C++ parse / pipeline error as a DicomError naming the file; for a file that is not DICOM at all, what
    it looks like."""
    msg = f"{name}: {exc}"
    if str(exc).startswith("not a DICOM file"):
        what = looks_like(data)
        if what:
            msg += f"; it looks like {what}"
            if what in ("a PNG image", "a JPEG image"):
                msg += " (cxrfast.io.load_radiograph reads PNG and JPEG files)"
    return DicomError(msg)


def decode_dicom(name: str, data: bytes, frame: int | None) -> DicomImage:
    """read_dicom on a file's bytes (frame: None or >= 0); `name` is what its errors call the file."""
    from cxrfast import _C

    try:
        meta, pixels = _C.dicom_read(data, -1 if frame is None else frame)
    except (_C.DicomParseError, IndexError) as exc:
        raise dicom_error(name, exc, data) from None
    ts = meta["transfer_syntax"]
    if not meta["has_pixel_data"]:
        raise not_an_image(name, meta)
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
