"""Writing DICOM files: a small Part 10 writer for one-frame grayscale images, numpy and the standard
library only (no pydicom), used by the synthetic dataset (cxrfast.data.synth).

    data = dicom_bytes(pixels, syntax=RLE_LOSSLESS, photometric="MONOCHROME1", bits_stored=12,
                       attributes={"SOPInstanceUID": "2.25.1234", "ViewPosition": "PA",
                                   "WindowCenter": 2048, "WindowWidth": 4096,
                                   "ViewCodeSequence": [{"CodeValue": "R-10206", "CodeMeaning": "postero-anterior"}]})
    write_dicom("a.dcm", pixels, syntax=EXPLICIT_LE)

Transfer syntaxes (SYNTAXES): explicit VR little endian, implicit VR little endian, deflated explicit VR
little endian (the dataset after the file meta as one raw deflate stream, PS3.5 A.5), RLE Lossless (PS3.5
Annex G: one segment per byte plane, most significant first, each row PackBits-encoded on its own) and
JPEG Lossless SV1 (first-order prediction, cxrfast.io.jpeg_lossless). Encapsulated pixel data is one
fragment after an empty basic offset table. Pixels are uint8 or uint16 (BitsAllocated 8 / 16), unsigned,
values below 2^bits_stored.

`attributes` maps DICOM keywords (those of `TAGS`) to values: str, int, float, a list of them (a
multi-valued element), or a list of dicts (a sequence of items). An unknown keyword raises, naming it.
The output depends on the arguments only (no time stamps), so equal inputs give equal bytes.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from cxrfast.io import jpeg_lossless

__all__ = ["dicom_bytes", "write_dicom", "encode_rle", "TAGS", "SYNTAXES", "EXPLICIT_LE", "IMPLICIT_LE",
           "DEFLATED_LE", "RLE_LOSSLESS", "JPEG_LOSSLESS_SV1"]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
SYNTAXES = {
    EXPLICIT_LE: "Explicit VR Little Endian",
    IMPLICIT_LE: "Implicit VR Little Endian",
    DEFLATED_LE: "Deflated Explicit VR Little Endian",
    RLE_LOSSLESS: "RLE Lossless",
    JPEG_LOSSLESS_SV1: "JPEG Lossless SV1",
}
DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1448.1"  # cxrfast's writer
IMPLEMENTATION_NAME = "CXRFAST_010"

# keyword -> (tag, VR): what the writer knows (the file meta, the patient / study / series / image and
# image pixel modules of a radiograph, and the code items of its sequences)
TAGS = {
    "FileMetaInformationGroupLength": (0x00020000, "UL"),
    "FileMetaInformationVersion": (0x00020001, "OB"),
    "MediaStorageSOPClassUID": (0x00020002, "UI"),
    "MediaStorageSOPInstanceUID": (0x00020003, "UI"),
    "TransferSyntaxUID": (0x00020010, "UI"),
    "ImplementationClassUID": (0x00020012, "UI"),
    "ImplementationVersionName": (0x00020013, "SH"),
    "SpecificCharacterSet": (0x00080005, "CS"),
    "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "ContentDate": (0x00080023, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "ContentTime": (0x00080033, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"),
    "CodeValue": (0x00080100, "SH"),
    "CodingSchemeDesignator": (0x00080102, "SH"),
    "CodeMeaning": (0x00080104, "LO"),
    "StudyDescription": (0x00081030, "LO"),
    "ProcedureCodeSequence": (0x00081032, "SQ"),
    "SeriesDescription": (0x0008103E, "LO"),
    "ManufacturerModelName": (0x00081090, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "PatientAge": (0x00101010, "AS"),
    "BodyPartExamined": (0x00180015, "CS"),
    "KVP": (0x00180060, "DS"),
    "ExposureInuAs": (0x00181153, "IS"),
    "ViewPosition": (0x00185101, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "PatientOrientation": (0x00200020, "CS"),
    "Laterality": (0x00200060, "CS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "HighBit": (0x00280102, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "WindowCenter": (0x00281050, "DS"),
    "WindowWidth": (0x00281051, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleType": (0x00281054, "LO"),
    "WindowCenterWidthExplanation": (0x00281055, "LO"),
    "LossyImageCompression": (0x00282110, "CS"),
    "PerformedProcedureStepDescription": (0x00400254, "LO"),
    "ViewCodeSequence": (0x00540220, "SQ"),
    "PatientOrientationCodeSequence": (0x00540410, "SQ"),
    "PresentationLUTShape": (0x20500020, "CS"),
    "PixelData": (0x7FE00010, "OW"),
}
_LONG_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UC", "UR", "UT", "UN", "SV", "UV"}  # 4-byte lengths
_STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def _ds(value) -> str:
    """A DS value (at most 16 characters)."""
    v = float(value)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    for digits in range(12, 5, -1):
        text = f"{v:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value!r} does not fit a DS value of 16 characters")


def _value_bytes(keyword: str, vr: str, value, explicit: bool) -> bytes:
    values = value if isinstance(value, (list, tuple)) else [value]
    if vr in ("US", "UL", "SS", "SL"):
        fmt = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}[vr]
        return b"".join(struct.pack(fmt, int(v)) for v in values)
    if vr in ("OB", "OW"):
        data = bytes(value)
        return data + b"\0" * (len(data) % 2)
    if vr == "SQ":
        return b"".join(_element(_ITEM, None, _dataset_bytes(item, explicit), explicit) for item in values)
    if vr in _STRING_VRS or vr == "UI":
        texts = [_ds(v) if vr == "DS" else str(int(v)) if vr == "IS" else str(v) for v in values]
        text = "\\".join(texts).encode("ascii" if vr != "PN" else "utf-8")
        return text + (b"\0" if vr == "UI" else b" ") * (len(text) % 2)
    raise ValueError(f"attribute {keyword!r}: VR {vr} is not written by cxrfast.io.write")


def _element(tag: int, vr: str | None, value: bytes, explicit: bool) -> bytes:
    """One data element (or an item, vr None) with a defined length."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if vr is None or not explicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack("<I", len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: {len(value)} bytes do not fit a "
                         "16-bit length")
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def _dataset_bytes(attributes: dict, explicit: bool) -> bytes:
    """The elements of `attributes` (keyword -> value) in tag order."""
    elements = []
    for keyword, value in attributes.items():
        if keyword not in TAGS:
            raise ValueError(f"attributes: unknown keyword {keyword!r} (cxrfast.io.write.TAGS lists the known ones)")
        tag, vr = TAGS[keyword]
        if value is None:
            continue
        elements.append((tag, _element(tag, vr, _value_bytes(keyword, vr, value, explicit), explicit)))
    return b"".join(e for _, e in sorted(elements))


def _packbits_rows(plane: np.ndarray) -> bytes:
    """PackBits (PS3.5 G.3.1) of a uint8 [rows, cols] plane, each row on its own: runs of 2 or more equal
    bytes (up to 128) as a replicate run (header 257 - n, the byte), the bytes between them as literal runs
    (header n - 1, n bytes, up to 128)."""
    cols = plane.shape[1]
    flat = plane.reshape(-1)
    n = flat.size
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(flat[1:], flat[:-1], out=new[1:])
    new[::cols] = True  # runs never cross a row
    starts = np.flatnonzero(new).astype(np.int32)
    lengths = np.diff(starts, append=np.int32(n))
    if lengths.max() > 128:  # runs longer than 128 become pieces of at most 128
        k = (lengths + 127) // 128
        run = np.repeat(np.arange(starts.size, dtype=np.int32), k)
        within = np.arange(run.size, dtype=np.int32) - np.repeat(np.cumsum(k, dtype=np.int32) - k, k)
        starts = starts[run] + within * 128
        lengths = np.minimum(128, lengths[run] - within * 128)
    repeat = lengths >= 2
    literal = ~repeat
    # literal pieces (single bytes) group into packets of up to 128: a packet starts after a replicate
    # piece, at a row start, or after 128 literals
    brk = np.empty(lengths.size, bool)
    brk[0] = True
    brk[1:] = repeat[:-1]
    brk |= starts % cols == 0
    first_of_group = np.flatnonzero(brk).astype(np.int32)
    j = np.arange(lengths.size, dtype=np.int32) - np.repeat(first_of_group, np.diff(first_of_group, append=np.int32(lengths.size)))
    opens = literal & (j % 128 == 0)
    size = np.where(repeat, 2, 1 + opens).astype(np.int32)
    offset = np.cumsum(size, dtype=np.int32) - size
    out = np.empty(int(offset[-1] + size[-1]), np.uint8)
    value = flat[starts]
    r = np.flatnonzero(repeat)
    out[offset[r]] = (257 - lengths[r]) & 0xFF
    out[offset[r] + 1] = value[r]
    lit = np.flatnonzero(literal)
    out[offset[lit] + opens[lit]] = value[lit]
    # a literal packet's header: its length - 1, the distance to the next packet's start (or the end of
    # the literal run) minus one
    o = np.flatnonzero(opens)
    packet = np.cumsum(opens[lit], dtype=np.int32) - 1  # packet number of each literal piece
    out[offset[o]] = np.bincount(packet, minlength=o.size) - 1
    return out.tobytes()


def encode_rle(pixels: np.ndarray) -> bytes:
    """The RLE Lossless fragment of one frame (uint8 or uint16 [rows, cols]): the 64-byte header (segment
    count, offsets), then one PackBits segment per byte plane, most significant first, each padded to an
    even length."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_rle: `pixels` must be a uint8 or uint16 [rows, cols] array, got "
                         f"{pixels.dtype} {pixels.shape}")
    planes = [pixels] if pixels.dtype == np.uint8 else [(pixels >> 8).astype(np.uint8), (pixels & 0xFF).astype(np.uint8)]
    segments = []
    for plane in planes:
        seg = _packbits_rows(plane)
        segments.append(seg + b"\0" * (len(seg) % 2))
    offsets, at = [], 64
    for seg in segments:
        offsets.append(at)
        at += len(seg)
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(segments))))
    return header + b"".join(segments)


def _encapsulated(fragment: bytes) -> bytes:
    """Pixel Data (7FE0,0010) OB of undefined length: an empty basic offset table, one fragment, the
    sequence delimiter."""
    fragment = fragment + b"\0" * (len(fragment) % 2)
    return (struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
            + struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def dicom_bytes(pixels: np.ndarray, *, syntax: str = EXPLICIT_LE, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, attributes: dict | None = None, preamble: bool = True,
                deflate_level: int = 6) -> bytes:
    """The Part 10 file of one grayscale frame `pixels` (uint8 / uint16 [rows, cols], unsigned) in
    `syntax` (one of SYNTAXES). The Image Pixel module (rows, columns, bits, photometric interpretation),
    the file meta and SOP Class (Digital X-Ray for presentation, unless attributes give SOPClassUID) are
    filled in; `attributes` adds the rest (SOPInstanceUID is needed; see the module docstring)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16) or pixels.size == 0:
        raise ValueError(f"dicom_bytes: `pixels` must be a non-empty uint8 or uint16 [rows, cols] array, got "
                         f"{pixels.dtype} {pixels.shape}")
    if syntax not in SYNTAXES:
        raise ValueError(f"dicom_bytes: `syntax` must be one of {sorted(SYNTAXES)}, got {syntax!r}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"dicom_bytes: `photometric` must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    allocated = pixels.dtype.itemsize * 8
    bits_stored = allocated if bits_stored is None else int(bits_stored)
    if not 1 <= bits_stored <= allocated:
        raise ValueError(f"dicom_bytes: `bits_stored` must be in 1..{allocated} for {pixels.dtype}, got {bits_stored}")
    if int(pixels.max()) >= 1 << bits_stored:
        raise ValueError(f"dicom_bytes: `pixels` reach {int(pixels.max())}, beyond bits_stored={bits_stored}")
    attributes = dict(attributes or {})
    if "SOPInstanceUID" not in attributes:
        raise ValueError("dicom_bytes: `attributes` must give SOPInstanceUID")
    if syntax == JPEG_LOSSLESS_SV1 and bits_stored < 2:
        raise ValueError("dicom_bytes: JPEG lossless needs bits_stored >= 2")
    attributes.setdefault("SOPClassUID", DIGITAL_XRAY)
    rows, cols = pixels.shape
    attributes.update(SamplesPerPixel=1, PhotometricInterpretation=photometric, Rows=rows, Columns=cols,
                      BitsAllocated=allocated, BitsStored=bits_stored, HighBit=bits_stored - 1, PixelRepresentation=0)
    explicit = syntax != IMPLICIT_LE
    body = _dataset_bytes(attributes, explicit)
    le = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if syntax == RLE_LOSSLESS:
        body += _encapsulated(encode_rle(pixels))
    elif syntax == JPEG_LOSSLESS_SV1:
        body += _encapsulated(jpeg_lossless.encode(pixels, precision=bits_stored, predictor=1))
    else:
        body += _element(0x7FE00010, "OW" if allocated == 16 else "OB", le + b"\0" * (len(le) % 2), explicit)
    if syntax == DEFLATED_LE:
        packer = zlib.compressobj(deflate_level, zlib.DEFLATED, -15)
        body = packer.compress(body) + packer.flush()
        body += b"\0" * (len(body) % 2)  # PS3.5 A.5: padded to an even length
    meta = _dataset_bytes({
        "FileMetaInformationVersion": b"\x00\x01",
        "MediaStorageSOPClassUID": attributes["SOPClassUID"],
        "MediaStorageSOPInstanceUID": attributes["SOPInstanceUID"],
        "TransferSyntaxUID": syntax,
        "ImplementationClassUID": IMPLEMENTATION_UID,
        "ImplementationVersionName": IMPLEMENTATION_NAME,
    }, True)
    meta = _element(0x00020000, "UL", struct.pack("<I", len(meta)), True) + meta
    return (b"\0" * 128 if preamble else b"") + b"DICM" + meta + body


def write_dicom(path, pixels: np.ndarray, **kwargs) -> int:
    """Write dicom_bytes(pixels, **kwargs) to `path`; returns the number of bytes written."""
    data = dicom_bytes(pixels, **kwargs)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return len(data)
