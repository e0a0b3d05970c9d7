"""Compressed DICOM syntaxes decoded by a codec library (imagecodecs) rather than by cxrfast._C.

cxrfast._C parses the file and locates each frame's encoded stream (basic / extended offset table,
fragments); this module checks the stream's own header against the dataset, decodes it with imagecodecs
and then applies exactly the corrections pydicom applies after its decoders (pydicom.pixels.decoders.base),
so that the result has the dtype and values of pydicom's ``pixel_array``:

- JPEG baseline / extended (libjpeg-turbo): the bits above BitsStored are shifted out, sign-extending
  when PixelRepresentation is 1 (pydicom's ``correct_unused_bits``).
- JPEG-LS (CharLS): the codec knows no sign; with PixelRepresentation 1 the samples are sign-extended from
  the stream's precision (pydicom's ``apply_jls_sign_correction``).
- JPEG 2000 and HTJ2K (OpenJPEG): monochrome samples whose codestream signedness disagrees with
  PixelRepresentation are re-read at the codestream's precision (``apply_j2k_sign_correction``).
- Colour: the components are decoded without a colour transform; the photometric interpretation they are in
  follows pydicom's JFIF / component-ID conformance, and cxrfast.io converts YBR_FULL / YBR_FULL_422 to RGB
  with pydicom's matrix and rounding (ybr_to_rgb), as pydicom's default ``as_rgb`` does; JPEG 2000's
  YBR_ICT / YBR_RCT are inverted by OpenJPEG itself.

Never a silent wrong image: a stream whose size, component count or precision disagrees with Rows,
Columns, SamplesPerPixel or BitsAllocated is refused before decoding (this also bounds the allocation the
codec makes); a JPEG stream without its EOI marker is refused as truncated (libjpeg-turbo only warns and
fills in the rest); the decoded array's shape is checked; and a lossless stream that decodes to all zeros
although it is larger than any all-zero image of that size encodes to is refused (some GPU decoders return
zeros for 12-bit lossless streams; the check costs one pass over the output).
"""

from __future__ import annotations

import numpy as np

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"

# transfer syntax -> (codestream family, imagecodecs function)
EXTERNAL = {
    JPEG_BASELINE: ("jpeg", "jpeg8_decode"),
    JPEG_EXTENDED: ("jpeg", "jpeg8_decode"),
    JPEG_LS_LOSSLESS: ("jpegls", "jpegls_decode"),
    JPEG_LS_NEAR_LOSSLESS: ("jpegls", "jpegls_decode"),
    J2K_LOSSLESS: ("j2k", "jpeg2k_decode"),
    J2K: ("j2k", "jpeg2k_decode"),
    # HTJ2K through OpenJPEG (>= 2.5), the library pydicom's plugin uses for it too
    HTJ2K_LOSSLESS: ("j2k", "jpeg2k_decode"),
    HTJ2K_LOSSLESS_RPCL: ("j2k", "jpeg2k_decode"),
    HTJ2K: ("j2k", "jpeg2k_decode"),
}
LOSSLESS = {JPEG_LS_LOSSLESS, J2K_LOSSLESS, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL}

# pydicom.pixels.processing._convert_YBR_FULL_to_RGB: float32 matrix, +0.5, floor, clip
_YBR_TO_RGB = np.asarray(
    [[1.000, 1.000, 1.000], [0.000, -0.114 * 1.772 / 0.587, 1.772], [1.402, -0.299 * 1.402 / 0.587, 0.000]],
    dtype=np.float32,
)


class CodecError(ValueError):
    """A frame that cannot be decoded; cxrfast.io turns it into a DicomError naming the file."""


def _u16(b: bytes, at: int) -> int:
    return b[at] << 8 | b[at + 1]


def _u32(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 4], "big")


def jpeg_header(stream: bytes) -> dict:
    """The frame header of a JPEG (ISO 10918-1) or JPEG-LS (ISO 14495-1) stream: precision, rows, columns,
    component ids, and whether an APP0 JFIF segment precedes it. Raises CodecError when there is none."""
    if stream[:2] != b"\xff\xd8":
        raise CodecError("the stream does not start with a JPEG SOI marker (FFD8)")
    info = {"jfif": False}
    at, n = 2, len(stream)
    while at + 4 <= n:
        if stream[at] != 0xFF:
            raise CodecError(f"no JPEG marker at byte {at} of the stream")
        marker = stream[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            at += 2
            continue
        length = _u16(stream, at + 2)
        if length < 2 or at + 2 + length > n:
            break
        segment = stream[at + 4:at + 2 + length]
        if marker == 0xE0 and segment.startswith(b"JFIF"):
            info["jfif"] = True
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC); SOF55 (F7) is JPEG-LS
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            if len(segment) < 6:
                break
            components = segment[5]
            info.update(marker=marker, precision=segment[0], rows=_u16(segment, 1), columns=_u16(segment, 3),
                        components=components,
                        component_ids=[segment[6 + 3 * k] for k in range(components) if 6 + 3 * k < len(segment)])
            return info
        if marker == 0xDA:  # scan data before any frame header
            break
        at += 2 + length
    raise CodecError("no frame header (SOF marker) in the JPEG stream")


def j2k_header(stream: bytes) -> dict:
    """The SIZ segment of a JPEG 2000 / HTJ2K codestream (inside a JP2 file when wrapped in one): rows,
    columns, components, and the precision and signedness of the first component (what pydicom reads)."""
    at = 0
    if stream.startswith(b"\x00\x00\x00\x0cjP  "):  # JP2: find the contiguous codestream box (jp2c)
        at = 12
        while at + 8 <= len(stream):
            length = _u32(stream, at)
            if stream[at + 4:at + 8] == b"jp2c":
                at += 8
                break
            if length < 8:
                raise CodecError("a JP2 box of length < 8 before the codestream")
            at += length
    if stream[at:at + 4] != b"\xff\x4f\xff\x51" or len(stream) < at + 45:
        raise CodecError("the stream does not start with the JPEG 2000 SOC and SIZ markers (FF4F FF51)")
    xsiz, ysiz, xo, yo = (_u32(stream, at + 8 + 4 * k) for k in range(4))
    ssiz = stream[at + 42]
    return {"rows": ysiz - yo, "columns": xsiz - xo, "components": _u16(stream, at + 40),
            "precision": (ssiz & 0x7F) + 1, "signed": bool(ssiz & 0x80)}


def _check_header(family: str, info: dict, meta: dict) -> None:
    rows, columns, spp, bits = meta["rows"], meta["columns"], meta["samples_per_pixel"], meta["bits_allocated"]
    # a JPEG frame header may leave the number of lines to a DNL marker (0 here)
    if info["columns"] != columns or (info["rows"] != rows and not (family == "jpeg" and info["rows"] == 0)):
        raise CodecError(f"the stream holds a {info['rows']}×{info['columns']} image, the dataset says Rows {rows} × "
                         f"Columns {columns}")
    if info["components"] != spp:
        raise CodecError(f"the stream has {info['components']} component(s), SamplesPerPixel is {spp}")
    if not 1 <= info["precision"] <= bits:
        raise CodecError(f"the stream's precision is {info['precision']} bits, BitsAllocated is {bits}")


def _shift(arr: np.ndarray, bits: int) -> None:
    """Shift left then right by `bits`, in place: arithmetic for signed dtypes (sign extension from the
    remaining bits), logical for unsigned ones (masking)."""
    if bits > 0:
        np.left_shift(arr, bits, out=arr)
        np.right_shift(arr, bits, out=arr)


def ybr_to_rgb(arr: np.ndarray) -> np.ndarray:
    """YBR_FULL → RGB over the last axis, as pydicom.pixels.convert_color_space does it (float32 matrix,
    round half up, clip to 0..255, back to the input dtype)."""
    out = arr.astype(np.float32)
    out -= np.asarray([0, 128, 128], dtype=np.float32)
    np.matmul(out, _YBR_TO_RGB, out=out)
    out += 0.5
    np.floor(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(arr.dtype)


def _effective_photometric(family: str, ts: str, info: dict, meta: dict) -> str:
    """pydicom's DecodeRunner._conform_jpg_colorspace: a 3-component JPEG / JPEG-LS stream with component
    ids 'R','G','B' is RGB whatever the dataset says; one with a JFIF APP0 segment is YBR."""
    pi = meta["photometric_interpretation"]
    if family == "j2k":
        return "RGB" if pi in ("YBR_ICT", "YBR_RCT") else pi  # OpenJPEG inverts the component transform
    if meta["samples_per_pixel"] != 3:
        return pi
    if info.get("component_ids") in ([82, 71, 66], [114, 103, 98]):
        return "RGB"
    if info.get("jfif") and "YBR" not in pi:
        return "YBR_FULL_422" if ts == JPEG_BASELINE else "YBR_FULL"
    return pi


def decode_frame(stream: bytes, meta: dict, imagecodecs) -> tuple[np.ndarray, str]:
    """One frame of syntax meta["transfer_syntax"] → (array [rows, columns(, samples)] of the dtype pydicom
    gives, the photometric interpretation of the returned values: YBR_FULL(_422) ones are converted to RGB
    by the caller, for every codec). Raises CodecError."""
    ts = meta["transfer_syntax"]
    family, func_name = EXTERNAL[ts]
    info = j2k_header(stream) if family == "j2k" else jpeg_header(stream)
    _check_header(family, info, meta)
    if family == "jpeg" and b"\xff\xd9" not in stream[-8:]:
        # libjpeg-turbo only warns about a stream cut short and fills the rest of the image: a truncated
        # stream would decode "successfully" to a wrong image (JPEG-LS and OpenJPEG fail on one). FF D9
        # occurs only as EOI (entropy-coded FF bytes are followed by 00 or RSTn); pad bytes may follow it.
        raise CodecError("the JPEG stream does not end with an EOI marker (FFD9): truncated")
    rows, columns, spp = meta["rows"], meta["columns"], meta["samples_per_pixel"]
    func = getattr(imagecodecs, func_name, None)
    if func is None:
        raise CodecError(f"this imagecodecs has no {func_name}")
    kwargs = {}
    if family == "jpeg" and spp == 3:
        # the components as coded, no colour transform: pydicom's libjpeg plugin decodes with colourspace 0
        kwargs = {"colorspace": "YCbCr", "outcolorspace": "YCbCr"}
    try:
        decoded = func(stream, **kwargs)
    except Exception as exc:  # the library's own error types (Jpeg8Error, JpeglsError, Jpeg2kError, ...)
        raise CodecError(f"imagecodecs.{func_name} failed: {type(exc).__name__}: {exc}") from None
    expected = (rows, columns) if spp == 1 else (rows, columns, spp)
    if decoded.shape != expected or decoded.dtype.kind not in "ui":
        raise CodecError(f"imagecodecs.{func_name} returned {decoded.dtype} {decoded.shape}, expected {expected}")
    if ts in LOSSLESS and not decoded.any():
        # all zeros: credible only from a stream about as small as an all-zero image encodes to (JPEG-LS run
        # mode: a few bytes per line; JPEG 2000: empty code-blocks)
        bound = 4096 + rows * (8 + columns * spp // 64)
        if len(stream) > bound:
            raise CodecError(f"imagecodecs.{func_name} decoded a {len(stream)}-byte lossless stream to all zeros "
                             f"(an all-zero {rows}×{columns} image encodes to under {bound} bytes): refused as a "
                             "decoder failure")
    # pydicom reads the decoded bytes with the dataset's signedness at the decoded sample size, then widens
    # them into an array of the dataset's BitsAllocated
    pr, bits_allocated = meta["pixel_representation"], meta["bits_allocated"]
    itemsize = decoded.dtype.itemsize
    dtype = np.dtype(f"{'ui'[pr]}{bits_allocated // 8}")
    arr = decoded.view(f"{'ui'[pr]}{itemsize}").astype(dtype)
    monochrome = meta["photometric_interpretation"] in ("MONOCHROME1", "MONOCHROME2")
    if family == "j2k":
        if monochrome and info["signed"] != bool(pr):
            _shift(arr, 8 * dtype.itemsize - info["precision"])
    elif family == "jpegls":
        if pr == 1:
            _shift(arr, 8 * dtype.itemsize - info["precision"])
    else:
        _shift(arr, bits_allocated - meta["bits_stored"])
    return arr, _effective_photometric(family, ts, info, meta)
