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
  `.pixels` equals pydicom's pixel_array bit for bit for every syntax except lossy JPEG (baseline .50,
  extended .51): libjpeg-turbo's IDCT and chroma upsampling differ from pydicom's libjpeg, by 1 grey level
  in 3,612 of 262,144 pixels of JPGExtended.dcm (12-bit) and up to 5 in colour files. Without imagecodecs
  these raise DicomError saying so.
Model inputs (cxrfast/io/radiograph.py): load_radiograph(path, size=512, ...) runs the whole pixel pipeline
(Modality LUT / rescale, VOI, MONOCHROME1 inversion, antialiased resize, pad / crop, output dtype) in C++;
load_radiographs(paths, ..., device="cuda") does a batch of any sizes in one fused CUDA kernel.

Files with or without the 128-byte preamble, undefined-length sequences and items, multi-frame (one frame or
all), encapsulated frames located by the extended offset table, the basic offset table, or one fragment per
frame. Malformed files raise DicomError naming the file, the tag and the problem; the parser never reads
outside the file.

Errors: every problem with a file is a ReadError (a ValueError): DicomError (a DICOM file that cannot be
read; NotAnImageError, its subclass, for a DICOM file without pixel data such as a DICOMDIR, an RT Plan or a
Structured Report), ImageError (PNG / JPEG), MissingFileError (also a FileNotFoundError). A file that is not
DICOM at all says so ("not a DICOM file"), and what it looks like.
"""

from cxrfast.io._dicom import (COMPRESSED, TRANSFER_SYNTAXES, DicomError, DicomImage, MissingFileError,
                               NotAnImageError, ReadError, read_dicom)
from cxrfast.io.radiograph import ImageError, Radiograph, RadiographBatch, load_radiograph, load_radiographs

__all__ = ["COMPRESSED", "TRANSFER_SYNTAXES", "DicomError", "DicomImage", "ImageError", "MissingFileError",
           "NotAnImageError", "Radiograph", "RadiographBatch", "ReadError", "load_radiograph", "load_radiographs",
           "read_dicom"]


def __dir__():
    return list(__all__)
