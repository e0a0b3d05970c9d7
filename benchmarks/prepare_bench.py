"""`cxrfast prepare` throughput on this machine: synthetic raw 12-bit chest radiographs -> 512 px shards.

    python benchmarks/prepare_bench.py [--files 200] [--size 512] [--workers N ...] [--rounds 3] [--dir PATH]
                                       [--json PATH]

Files: `--files` DICOMs of 2000 x 2500 (rows x columns), 12 bits stored in 16, MONOCHROME2, explicit VR
little endian, uncompressed (10 MB each), written once to --dir (default: a folder under the system temp
dir, reused by later runs) and read from the page cache. Each case runs the real command,
``python -m cxrfast prepare SRC OUT --size 512 --workers N --shard-size FILES/4``, into a fresh OUT, `--rounds` times (median):
  images_per_s         images / the run's own time (manifest.json "runs"; its summary line prints it:
                       source discovery, worker start, load, shard writes with fsync, metadata)
  wall_images_per_s    images / the command's wall time, interpreter start (torch import) included
  steady_images_per_s  the rate once started: (images - 1) / (time of the last result - time of the first),
                       from the run's record in manifest.json; first_result_s is the start-up before it
Beside it, the ceiling of one core: cxrfast.io.load_radiograph(file, size) in a loop, no shards, no workers.
Writes benchmarks/results/<device>/prepare.json (device, CPU count, commit: cxrfast.bench.measure.environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)

from cxrfast.bench import measure  # noqa: E402

ROWS, COLS = 2000, 2500


def _header(seed: int) -> bytes:
    """The DICOM file up to the Pixel Data value: a dataset with a placeholder, cut before the pixels."""
    from cxrfast.io.testing import DIGITAL_XRAY, grayscale_dataset, to_bytes

    ds = grayscale_dataset((ROWS, COLS), sop_instance_uid=f"1.2.826.0.1.3680043.98.{seed}.3",
                           sop_class_uid=DIGITAL_XRAY)
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.98.{seed // 2}.1"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.98.{seed}.2"
    ds.PatientID, ds.StudyDate, ds.ViewPosition, ds.Modality = f"p{seed:05d}", "20240101", "PA", "DX"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = b"\0\0"
    data = to_bytes(ds)
    assert data.endswith(b"\xe0\x7f\x10\x00OW\0\0\x02\0\0\0\0\0")  # (7FE0,0010) OW, length 2, value
    return data[:-6] + (ROWS * COLS * 2).to_bytes(4, "little")


def make_files(folder: str, n: int) -> list[str]:
    """n distinct radiograph-like DICOMs (a smooth 12-bit field with noise, shifted per file)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    base = 2000 + 900 * np.sin(x / 170.0) * np.cos(y / 230.0) + rng.normal(0, 25, (ROWS, COLS)).astype(np.float32)
    base = np.clip(base, 0, 4095).astype("<u2")
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i:05d}.dcm")
        paths.append(path)
        if os.path.exists(path) and os.path.getsize(path) > ROWS * COLS * 2:
            continue
        pixels = np.roll(base, (37 * i) % ROWS, axis=0)
        with open(path + ".tmp", "wb") as f:
            f.write(_header(i))
            f.write(pixels.tobytes())
        os.replace(path + ".tmp", path)
    return paths


def run_prepare(src: str, size: int, workers: int, shard_size: int) -> dict:
    """One run of the command into a fresh OUT: its images, its own time and the wall time."""
    out = tempfile.mkdtemp(prefix="cxrfast-prepare-out-")
    try:
        cmd = [sys.executable, "-m", "cxrfast", "prepare", src, os.path.join(out, "o"), "--size", str(size),
               "--workers", str(workers), "--shard-size", str(shard_size), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        with open(os.path.join(out, "o", "manifest.json")) as f:
            run = json.load(f)["runs"][-1]
        return {"images": run["images"], "run_s": run["seconds"], "wall_s": wall,
                "first_result_s": run["first_result_s"], "steady_images_per_s": run["steady_files_per_s"],
                "summary": proc.stdout.strip().splitlines()}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def case(folder: str, size: int, workers: int, rounds: int, shard_size: int) -> dict:
    runs = [run_prepare(folder, size, workers, shard_size) for _ in range(rounds)]
    images = runs[0]["images"]
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    run_s, wall_s = med("run_s"), med("wall_s")
    return {"case": f"cxrfast prepare --workers {workers}", "workers": workers, "images": images,
            "rounds": rounds, "run_s": run_s, "run_s_all": [r["run_s"] for r in runs], "wall_s": wall_s,
            "images_per_s": images / run_s, "wall_images_per_s": images / wall_s,
            "first_result_s": med("first_result_s"), "steady_images_per_s": med("steady_images_per_s"),
            "steady_images_per_s_all": [r["steady_images_per_s"] for r in runs], "summary": runs[-1]["summary"]}


def loader_loop(paths: list[str], size: int) -> dict:
    import torch

    from cxrfast.io import load_radiograph

    torch.set_num_threads(1)
    load_radiograph(paths[0], size=size, dtype="uint8")
    times = []
    for p in paths:
        t0 = time.perf_counter()
        load_radiograph(p, size=size, dtype="uint8")
        times.append(time.perf_counter() - t0)
    return {"case": "load_radiograph loop, one core", "workers": 1, "images": len(paths),
            "run_s": sum(times), "median_ms": statistics.median(times) * 1e3,
            "images_per_s": len(paths) / sum(times)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="worker counts to run (default: the CPU count, 1, then 0 = in the command's own process)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "cxrfast-prepare-bench"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    from cxrfast.data.prepare import default_workers

    env = measure.environment(torch.device("cpu"))
    workers = args.workers or sorted({default_workers(), 1}, reverse=True) + [0]
    t0 = time.perf_counter()
    paths = make_files(args.dir, args.files)
    print(f"{len(paths)} files of {ROWS}x{COLS} 12-bit in {args.dir} ({time.perf_counter() - t0:.0f} s to make)")
    # Shards of a quarter of the files: their commits (write + fsync) fall inside the measured stretch, in
    # the same proportion per image as 1024-image shards of a long run.
    shard_size = max(1, len(paths) // 4)
    rows = []
    for w in workers:
        r = case(args.dir, args.size, w, args.rounds, shard_size)
        rows.append(r)
        print(f"{r['case']:32} {r['images_per_s']:6.1f} images/s  (steady {r['steady_images_per_s']:.0f}/s after "
              f"{r['first_result_s']:.2f} s start-up; {r['wall_images_per_s']:.1f}/s with interpreter start, "
              f"{r['wall_s']:.1f} s wall)")
    r = loader_loop(paths, args.size)
    rows.append(r)
    print(f"{r['case']:32} {r['images_per_s']:6.1f} images/s  ({r['median_ms']:.1f} ms per image)")
    doc = {"suite": "prepare", "env": env, "load_avg_1m_after": os.getloadavg()[0],
           "files": {"count": len(paths), "rows": ROWS, "columns": COLS, "bits_stored": 12,
                     "transfer_syntax": "explicit VR little endian (raw)", "bytes_each": os.path.getsize(paths[0]),
                     "where": "page cache"},
           "size": args.size, "shard_size": shard_size, "rows": rows}
    path = args.json or os.path.join(HERE, "results", env["device_slug"], "prepare.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
