"""DICOM decode speed, one core: cxrfast.io.read_dicom against pydicom and the fastest CPU JPEG libraries,
same files, same run.

    python benchmarks/dicom_decode.py [--rounds N] [--json PATH] [--quick]

Cases (2500 × 2048, the size of a chest radiograph; content: a smooth synthetic radiograph plus Gaussian
noise, which compresses like a real CR/DR image (≈ 7 bits per pixel at 12 bits), not like a constant or a
white-noise image):
- raw 12-bit, explicit VR little endian: cxrfast vs pydicom (dcmread + pixel_array);
- JPEG Lossless process 14, 12-bit precision with predictor 1 (SV1, what scanners write), 6 and 7, and 16-bit
  precision (the same image scaled to the 16-bit range, noise included) with predictor 1. The streams are
  written by libjpeg-turbo (imagecodecs.jpeg8_encode(lossless=True)). Decoders, all on the same bytes:
    cxrfast        cxrfast.io.read_dicom(file bytes): parse + decode + BitsStored masking
    pydicom        pydicom.dcmread(file).pixel_array, its default path (the pylibjpeg-libjpeg plugin here)
    jpeg8          imagecodecs.jpeg8_decode(frame bytes) (libjpeg-turbo 3, lossless process 14)
    ljpeg          imagecodecs.ljpeg_decode(frame bytes) (liblj92)
  Every decoder's output is checked equal to the encoded image before timing.

One core: the process is pinned to one CPU (os.sched_setaffinity) and torch to one thread; none of the
decoders starts threads for one frame. Rounds interleave the implementations (round r times each of them
once), so that a load change on the machine hits all of them alike. Figures: median and 20th/80th
percentiles of the wall time, Mpx/s and images/s from the median, ratios of medians. Decode only: the
resize of issue 4 is timed elsewhere. Writes benchmarks/results/<device>/dicom_decode.json.
"""

from __future__ import annotations

import argparse
import io as pyio
import json
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from cxrfast.bench import measure  # noqa: E402

# the files, the timing and the statistics are shared with `cxrfast bench decode` (cxrfast/bench/radiograph.py)
from cxrfast.bench.radiograph import JPEG_LOSSLESS, JPEG_LOSSLESS_SV1, SHAPE  # noqa: E402,F401
from cxrfast.bench.radiograph import pin_one_core as _pin_one_core  # noqa: E402
from cxrfast.bench.radiograph import stats as _stats  # noqa: E402
from cxrfast.bench.radiograph import synthetic_radiograph as _radiograph  # noqa: E402
from cxrfast.bench.radiograph import time_interleaved as _time_interleaved  # noqa: E402


def _dataset(shape, syntax, pixel_data, bits_stored=12):
    from cxrfast.bench.radiograph import dicom_bytes

    return dicom_bytes(shape, syntax, pixel_data, bits_stored=bits_stored)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="the 12-bit SV1 JPEG case only (a development loop)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cpu = _pin_one_core()
    import imagecodecs
    import pydicom
    import torch
    from pydicom.encaps import encapsulate

    import cxrfast.io as cio

    torch.set_num_threads(1)
    env = measure.environment(torch.device("cpu"))
    env.update(pinned_cpu=cpu, pydicom=pydicom.__version__, imagecodecs=imagecodecs.__version__,
               libjpeg_turbo=imagecodecs.jpeg8_version(), liblj92=imagecodecs.ljpeg_version())
    try:
        from pydicom.pixels.decoders import JPEGLosslessSV1Decoder

        env["pydicom_jpeg_lossless_plugins"] = list(JPEGLosslessSV1Decoder.available_plugins)
    except Exception:  # noqa: BLE001 - informative only
        pass

    def pyd(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(pyio.BytesIO(data)).pixel_array

    cases = []
    if not args.quick:
        raw_img = _radiograph(SHAPE)
        raw = _dataset(SHAPE, "1.2.840.10008.1.2.1", raw_img.astype("<u2").tobytes())
        cases.append(("raw 12-bit 2500x2048", raw_img, raw, None))
    jpeg_cases = [(12, 1)] if args.quick else [(12, 1), (16, 1), (12, 6), (12, 7)]
    for precision, predictor in jpeg_cases:
        img = _radiograph(SHAPE, seed=1, bits=precision)
        frame = imagecodecs.jpeg8_encode(img, lossless=True, bitspersample=precision, predictor=predictor)
        syntax = JPEG_LOSSLESS_SV1 if predictor == 1 else JPEG_LOSSLESS
        data = _dataset(SHAPE, syntax, encapsulate([frame]), bits_stored=precision)
        cases.append((f"JPEG lossless SV{predictor} {precision}-bit 2500x2048", img, data, frame))

    rows = []
    for name, img, data, frame in cases:
        fns = {"cxrfast": lambda d=data: cio.read_dicom(d).pixels, "pydicom": lambda d=data: pyd(d)}
        if frame is not None:
            fns["jpeg8"] = lambda f=frame: imagecodecs.jpeg8_decode(f)
            fns["ljpeg"] = lambda f=frame: imagecodecs.ljpeg_decode(f)
        row = {"case": name, "file_bytes": len(data), "pixels": int(img.size)}
        if frame is not None:
            row.update(frame_bytes=len(frame), bits_per_pixel=8 * len(frame) / img.size)
        for impl, fn in fns.items():  # every decoder gives the image, exactly
            got = fn()
            if not (got.shape == img.shape and np.array_equal(got, img)):
                raise AssertionError(f"{name}: {impl} does not decode the image exactly")
        times = _time_interleaved(fns, args.rounds)
        for impl, samples in times.items():
            row[impl] = _stats(samples, img.size)
        ours = row["cxrfast"]["median_s"]
        row["speedup"] = {impl: row[impl]["median_s"] / ours for impl in fns if impl != "cxrfast"}
        if frame is not None:
            fastest = min(("jpeg8", "ljpeg"), key=lambda k: row[k]["median_s"])
            row["fastest_library"] = fastest
            row["targets"] = {"vs_pydicom_ge_5x": row["speedup"]["pydicom"] >= 5.0,
                              "not_slower_than_fastest_library": row["speedup"][fastest] >= 1.0}
        rows.append(row)
        line = f"{name:36} cxrfast {ours * 1e3:7.2f} ms ({row['cxrfast']['mpixels_per_s']:6.1f} Mpx/s)"
        for impl in fns:
            if impl != "cxrfast":
                line += f"  {impl} {row[impl]['median_s'] * 1e3:7.2f} ms x{row['speedup'][impl]:.2f}"
        print(line, flush=True)
    path = args.json or os.path.join(HERE, "results", env["device_slug"], "dicom_decode.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"suite": "dicom_decode", "env": env, "threads": 1, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
