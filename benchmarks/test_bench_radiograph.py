"""pytest-benchmark suite: decode + window + resize of chest radiographs, cxrfast.io against pydicom + OpenCV
(benchmarks/radiograph.py describes the cases, files and baselines). Writes results/<device>/radiograph.json
with the ratios of medians measured in this run, and asserts the issue's targets:
- one core: raw 12-bit 2500×2048 → 224 ≥ 4× pydicom+cv2; JPEG lossless ≥ 5× pydicom+cv2 and no slower than
  libjpeg-turbo+cv2;
- CUDA: load_radiographs(device="cuda") ≥ 2000 images/s end to end (with the pinned H2D bound beside it).

One-core cases pin the process to one CPU for their duration (OpenCV and torch to one thread) and restore
the affinity afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

pytest.importorskip("pydicom")
pytest.importorskip("cv2")
try:  # writes the JPEG lossless file and is its library baseline; the raw and CUDA cases run without it
    import imagecodecs
except ImportError:
    imagecodecs = None

import radiograph as rg  # noqa: E402

import cxrfast.io as cio  # noqa: E402
from cxrfast.bench import measure  # noqa: E402

SIZE = 224
ROUNDS = 15
N_FILES = 64
ROWS: dict = {}  # (case, impl) -> stats


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return rg.write_files(str(tmp_path_factory.mktemp("radiographs")), N_FILES)


@contextlib.contextmanager
def one_core():
    import cv2

    saved_aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    saved_cv, saved_torch = cv2.getNumThreads(), torch.get_num_threads()
    rg._pin_one_core()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if saved_aff is not None:
            os.sched_setaffinity(0, saved_aff)
        cv2.setNumThreads(saved_cv)
        torch.set_num_threads(saved_torch)


def _stats(benchmark) -> dict:
    st = benchmark.stats.stats
    data = sorted(st.data)
    return {"median_s": st.median, "p20_s": measure.percentile(data, 20), "p80_s": measure.percentile(data, 80),
            "rounds": len(data)}


IMPLS = {
    "cxrfast": lambda path: cio.load_radiograph(path, SIZE).image,
    "pydicom+cv2": lambda path: rg.baseline(path, SIZE),
    "pydicom-lut+cv2": lambda path: rg.baseline(path, SIZE, luts=True),
    "libjpeg-turbo+cv2": lambda path: rg.library_baseline(path, SIZE),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", ["raw", "jpeg"])
def test_one_core(benchmark, files, case, impl):
    if impl == "libjpeg-turbo+cv2" and case == "raw":
        pytest.skip("a JPEG library baseline: the JPEG case only")
    if case == "jpeg" and imagecodecs is None:
        pytest.skip("imagecodecs is not installed: it writes the JPEG lossless file")
    path = files[case]
    fn = IMPLS[impl]
    diff = int(np.abs(fn(path).astype(int) - IMPLS["cxrfast"](path).astype(int)).max())
    assert diff <= 2, f"{impl} differs from cxrfast by {diff} grey levels"
    with one_core():
        benchmark.pedantic(fn, args=(path,), rounds=ROUNDS, warmup_rounds=1)
    ROWS[(case, impl)] = _stats(benchmark)


@pytest.mark.parametrize("workers", ["1", "all"])
def test_all_cores(benchmark, files, workers):
    w = 1 if workers == "1" else len(os.sched_getaffinity(0))
    paths = files["many"]
    benchmark.pedantic(lambda: cio.load_radiographs(paths, SIZE, workers=w), rounds=max(3, ROUNDS // 3),
                       warmup_rounds=1)
    ROWS[("many-cpu", f"workers={w}")] = {**_stats(benchmark), "images": len(paths), "workers": w}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_end_to_end(benchmark, files):
    paths = files["many"]
    w = len(os.sched_getaffinity(0))
    gpu = cio.load_radiographs(paths[:8], SIZE, device="cuda", workers=w).images.cpu().numpy()
    cpu = cio.load_radiographs(paths[:8], SIZE, workers=w).images
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 1

    def run():
        cio.load_radiographs(paths, SIZE, device="cuda", workers=w)
        torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    row = {**_stats(benchmark), "images": len(paths), "workers": w}
    # What bounds it: the samples' bytes copied host → device from pinned memory, same size, same run.
    nbytes = sum(os.path.getsize(p) for p in paths)
    host = torch.empty(nbytes // 2, dtype=torch.int16, pin_memory=True)
    times = []
    for _ in range(ROUNDS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        host.to("cuda", non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    row["h2d_pinned_bytes"] = nbytes
    row["h2d_pinned_median_s"] = float(np.median(times))
    ROWS[("many-cuda", "cxrfast")] = row


@pytest.fixture(scope="module", autouse=True)
def results():
    """After the module: the results file, then the targets (a miss fails the run at teardown)."""
    yield
    if ROWS:
        write_results_and_check_targets()


def write_results_and_check_targets():
    """Ratios of medians from this run, the results file, and the targets."""
    env = measure.environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    import cv2
    import pydicom

    env.update(pydicom=pydicom.__version__, opencv=cv2.__version__,
               imagecodecs=imagecodecs.__version__ if imagecodecs is not None else None,
               cpus=len(os.sched_getaffinity(0)))
    rows, failures = [], []
    for case, label, target in (("raw", "raw 12-bit 2500x2048 -> 224, one core", 4.0),
                                ("jpeg", "JPEG lossless SV1 12-bit 2500x2048 -> 224, one core", 5.0)):
        if (case, "cxrfast") not in ROWS:
            continue
        ours = ROWS[(case, "cxrfast")]
        row = {"case": label, "impls": {impl: st for (c, impl), st in ROWS.items() if c == case}}
        row["speedup"] = {impl: st["median_s"] / ours["median_s"] for impl, st in row["impls"].items()
                          if impl != "cxrfast"}
        row["images_per_s"] = 1.0 / ours["median_s"]
        checks = {f"vs pydicom+cv2 >= {target:g}x": row["speedup"].get("pydicom+cv2", 0) >= target}
        if case == "jpeg" and "libjpeg-turbo+cv2" in row["speedup"]:
            checks["not slower than libjpeg-turbo+cv2"] = row["speedup"]["libjpeg-turbo+cv2"] >= 1.0
        row["targets"] = checks
        failures += [f"{label}: {name} (x{row['speedup'].get('pydicom+cv2', 0):.2f})"
                     for name, ok in checks.items() if not ok]
        rows.append(row)
    many = {impl: st for (c, impl), st in ROWS.items() if c == "many-cpu"}
    if many:
        row = {"case": f"load_radiographs, {N_FILES} raw 12-bit 2500x2048 files -> 224, cpu",
               "impls": {k: {**v, "images_per_s": v["images"] / v["median_s"]} for k, v in many.items()}}
        rates = [v["images_per_s"] for v in row["impls"].values()]
        row["scaling"] = max(rates) / min(rates)
        rows.append(row)
    if ("many-cuda", "cxrfast") in ROWS:
        st = ROWS[("many-cuda", "cxrfast")]
        rate = st["images"] / st["median_s"]
        row = {"case": f"load_radiographs(device='cuda'), {N_FILES} raw 12-bit 2500x2048 files -> 224",
               "impls": {"cxrfast": {**st, "images_per_s": rate}},
               "h2d_pinned_gb_per_s": st["h2d_pinned_bytes"] / st["h2d_pinned_median_s"] / 1e9,
               "h2d_bound_images_per_s": st["images"] / st["h2d_pinned_median_s"],
               "targets": {"images/s >= 2000": rate >= 2000}}
        if rate < 2000:
            failures.append(f"CUDA end to end {rate:.0f} images/s < 2000")
        rows.append(row)
    path = os.path.join(HERE, "results", env["device_slug"], "radiograph.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"suite": "radiograph", "env": env, "size": SIZE, "rows": rows}, f, indent=1)
    print(f"\nwrote {path}")
    if failures:
        raise AssertionError("targets missed (recorded in " + path + "): " + "; ".join(failures))
