"""Decode + window + resize to a model input: cxrfast.io against what users run today, same files, same run.

    python -m pytest benchmarks/test_bench_radiograph.py --benchmark-only -q     (part of `make bench`)
    python benchmarks/radiograph.py                                           (the same)

1. One core (the process pinned to one CPU, OpenCV and torch to one thread), a 2500 × 2048 12-bit
   MONOCHROME1 chest radiograph with a window, → 224 × 224 uint8 (aspect kept, padded):
     cxrfast          cxrfast.io.load_radiograph(path, 224)
     pydicom+cv2      pydicom.dcmread(path).pixel_array → the window in numpy (float32, vectorised) →
                      MONOCHROME1 inversion → uint8 → cv2.resize(INTER_AREA) → pad: the usual loop
     pydicom-lut+cv2  the same with pydicom's apply_modality_lut + apply_voi_lut (float64) for the window
   for the raw file (explicit VR little endian) and the same image as JPEG Lossless SV1 (pydicom's default
   JPEG path: the pylibjpeg-libjpeg plugin here; and imagecodecs' libjpeg-turbo as the fastest library).
   Targets (issue 4): raw ≥ 4× pydicom+cv2; JPEG lossless ≥ 5× pydicom+cv2.
2. All cores: load_radiographs over --files raw files (in the page cache) with workers=1 and workers=all.
3. CUDA (when present): load_radiographs(device="cuda") end to end over the same files (read, parse, stage in
   pinned memory, copy, one fused kernel), with the pinned host→device bandwidth measured on the same bytes
   beside it (it bounds the end-to-end rate), and the kernel alone. Target: ≥ 2000 images/s on an H100.

Every implementation's output is checked against cxrfast's before timing (within 2 grey levels: the
baselines quantise to uint8 before resizing, cxrfast after). The suite (test_bench_radiograph.py) writes
benchmarks/results/<device>/radiograph.json; its files and baselines are in cxrfast/bench/radiograph.py
(shared with `cxrfast bench radiograph`), re-exported here.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

# the files and baselines are shared with `cxrfast bench radiograph` (cxrfast/bench/radiograph.py)
from cxrfast.bench.radiograph import CENTER, WIDTH, write_files  # noqa: E402,F401
from cxrfast.bench.radiograph import libjpeg_turbo_cv2 as library_baseline  # noqa: E402,F401
from cxrfast.bench.radiograph import pin_one_core as _pin_one_core  # noqa: E402,F401
from cxrfast.bench.radiograph import pydicom_cv2 as baseline  # noqa: E402,F401


if __name__ == "__main__":
    import pytest

    sys.exit(pytest.main([os.path.join(HERE, "test_bench_radiograph.py"), "--benchmark-only", "-q",
                          "-p", "no:cacheprovider", *sys.argv[1:]]))
