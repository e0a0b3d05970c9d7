"""DICOM decode speed, one core: cxrfast.io.read_dicom vs pydicom (dcmread + pixel_array), same files, same run.

    python benchmarks/dicom_decode.py [--rounds N] [--json PATH]

Files are made here: a raw 12-bit 2500 × 2048 radiograph (explicit VR little endian) and a 1024 × 1024
12-bit JPEG Lossless SV1 one (written by the tests' encoder, tests/io/jpeg_lossless_encoder.py; pydicom
has no JPEG lossless decoder in this environment, so that row has no baseline). Decode only: the resize
of issue 4 is not built yet. Writes benchmarks/results/<device>/dicom_decode.json.
"""

from __future__ import annotations

import argparse
import io as pyio
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "io"))

from cxrfast.bench import measure  # noqa: E402


def _dataset(shape, syntax, pixel_data):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.7"
    ds.SOPInstanceUID = "1.2.3.7"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.PixelData = pixel_data
    buf = pyio.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _radiograph(shape, seed=0):
    """A smooth 12-bit image with noise (compresses like a radiograph, not like white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = 2000 + 900 * np.sin(x / 170.0) * np.cos(y / 230.0) + rng.normal(0, 25, shape)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _time(fn, rounds):
    fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import pydicom
    import torch

    import cxrfast.io as cio
    from jpeg_lossless_encoder import encode
    from pydicom.encaps import encapsulate

    torch.set_num_threads(1)
    env = measure.environment(torch.device("cpu"))
    raw_img = _radiograph((2500, 2048))
    raw = _dataset(raw_img.shape, "1.2.840.10008.1.2.1", raw_img.astype("<u2").tobytes())
    jll_img = _radiograph((1024, 1024), seed=1)
    jll = _dataset(jll_img.shape, "1.2.840.10008.1.2.4.70", encapsulate([encode(jll_img, precision=12)]))
    assert np.array_equal(cio.read_dicom(raw).pixels, raw_img) and np.array_equal(cio.read_dicom(jll).pixels, jll_img)

    def pyd(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(pyio.BytesIO(data)).pixel_array

    rows = []
    cases = [("raw 12-bit 2500x2048", raw, raw_img, True), ("JPEG lossless SV1 12-bit 1024x1024", jll, jll_img, False)]
    for name, data, img, baseline in cases:
        row = {"case": name, "file_bytes": len(data), "pixels": int(img.size)}
        for impl, fn in (("cxrfast", lambda d=data: cio.read_dicom(d)), ("pydicom", lambda d=data: pyd(d))):
            if impl == "pydicom" and not baseline:
                row["pydicom_note"] = "pydicom has no JPEG lossless decoder in this environment"
                continue
            s = _time(fn, args.rounds)
            q = statistics.quantiles(s, n=5)
            row[impl] = {"median_s": statistics.median(s), "p20_s": q[0], "p80_s": q[-1], "rounds": len(s),
                         "images_per_s": 1.0 / statistics.median(s),
                         "mpixels_per_s": img.size / statistics.median(s) / 1e6}
        rows.append(row)
        c = row["cxrfast"]
        line = f"{name:36} cxrfast {c['median_s'] * 1e3:8.2f} ms ({c['mpixels_per_s']:6.1f} Mpx/s)"
        if "pydicom" in row:
            line += f"   pydicom {row['pydicom']['median_s'] * 1e3:8.2f} ms   x{row['pydicom']['median_s'] / c['median_s']:.2f}"
        print(line)
    path = args.json or os.path.join(HERE, "results", env["device_slug"], "dicom_decode.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"suite": "dicom_decode", "env": env, "threads": 1, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
