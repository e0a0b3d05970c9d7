"""Loader throughput: 512-px radiographs → 224-px augmented batches of 64, images/s, same files, same run.

    cxrfast-dali    cxrfast.data.dali.DaliLoader over `cxrfast prepare` shards (CPU pipeline here;
                    device_id = the GPU's index on a GPU machine), 2 threads
    cxrfast-torch   cxrfast.data.loader.make_loader over the same shards, 2 DataLoader workers
    per-file        what the seed repositories do: a torch Dataset that opens each PNG with PIL, resizes
                    it, takes a random crop, a random affine and a colour jitter with PIL, converts to a
                    tensor and normalises (GLoRIA's and LoVT's transforms, written with PIL because
                    torchvision does not import beside this CPU torch), the same 2 DataLoader workers
All three include the reports' tokenisation (cxrfast's tokenizer, a batch at a time for cxrfast, one
report per sample for the per-file loader, as GLoRIA's dataset does). Writes
results/<device>/loader.json; the README table comes from report.py.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

N_IMAGES = 256
SOURCE = 512
SIZE = 224
BATCH = 64
WORKERS = 2
ROUNDS = 3
ROWS: dict = {}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """N_IMAGES radiograph-like 512×512 PNGs, their shards, studies over both, and a tokenizer."""
    from PIL import Image

    from cxrfast.data.prepare import prepare
    from cxrfast.data.shards import ShardedImages
    from cxrfast.data.studies import ImageRef, Study, StudyDataset
    from cxrfast.data.text import train_tokenizer

    root = tmp_path_factory.mktemp("loader")
    files = root / "png"
    files.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SOURCE, 0:SOURCE] / SOURCE
    base = 110 + 70 * np.sin(6 * yy) * np.cos(5 * xx)
    reports = ["Heart size is normal. No pleural effusion or pneumothorax.",
               "Moderate cardiomegaly. Small left pleural effusion with basal atelectasis.",
               "Patchy right lower lobe consolidation. Mild pulmonary edema."]
    for i in range(N_IMAGES):
        img = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(files / f"img{i:04d}.png")
    out = root / "shards"
    prepare(str(files), str(out), size=SOURCE, progress=False)
    shards = ShardedImages(str(out))
    rows = {os.path.basename(row["path"]).split(".")[0]: int(row["index"]) for _, row in
            (shards[i] for i in range(len(shards)))}

    def studies(from_shards: bool):
        return StudyDataset("bench", str(root), [
            Study(f"s{i}", [ImageRef(str(files / f"img{i:04d}.png"), f"img{i:04d}", "PA",
                                     (str(out), rows[f"img{i:04d}"]) if from_shards else None)],
                  reports[i % 3], {}, {}) for i in range(N_IMAGES)], ())

    tok = train_tokenizer(reports * 20, vocab_size=200, min_frequency=1)
    return {"studies": studies, "tokenizer": tok}


def _epoch(loader, set_epoch) -> int:
    set_epoch()
    n = 0
    for batch in loader:
        n += int(batch.views.shape[0]) if hasattr(batch, "views") else int(batch[0].shape[0])
    return n


def _record(benchmark, name: str, n: int):
    st = benchmark.stats.stats
    data = sorted(st.data)
    ROWS[name] = {"median_s": st.median, "p20_s": data[max(0, int(0.2 * (len(data) - 1)))],
                  "p80_s": data[int(round(0.8 * (len(data) - 1)))], "rounds": len(data), "images": n,
                  "images_per_s": n / st.median}


def test_cxrfast_dali(benchmark, data):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is optional")
    from cxrfast.data.dali import DaliLoader
    from cxrfast.data.loader import StudyBatches
    from cxrfast.data.transforms import Augment

    ds = StudyBatches(data["studies"](True), data["tokenizer"], augment=Augment(size=SIZE))
    loader = DaliLoader(ds, batch_size=BATCH, num_threads=WORKERS)
    epoch = iter(range(10**6))
    n = benchmark.pedantic(lambda: _epoch(loader, lambda: loader.set_epoch(next(epoch))), rounds=ROUNDS,
                           warmup_rounds=1)
    _record(benchmark, "cxrfast-dali", n)


def test_cxrfast_torch(benchmark, data):
    from cxrfast.data.loader import StudyBatches, make_loader
    from cxrfast.data.transforms import Augment

    ds = StudyBatches(data["studies"](True), data["tokenizer"], augment=Augment(size=SIZE))
    loader = make_loader(ds, batch_size=BATCH, workers=WORKERS)
    epoch = iter(range(10**6))
    n = benchmark.pedantic(lambda: _epoch(loader, lambda: loader.batch_sampler.set_epoch(next(epoch))),
                           rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "cxrfast-torch", n)


class PerFile(torch.utils.data.Dataset):
    """The seed repositories' loader: PIL per file, PIL transforms, a tokenizer call per sample."""

    def __init__(self, studies, tokenizer, seed=0):
        self.studies, self.tok, self.seed = studies, tokenizer, seed

    def __len__(self):
        return len(self.studies)

    def __getitem__(self, i):
        from PIL import Image, ImageEnhance

        rng = np.random.default_rng([self.seed, i])
        st = self.studies[i]
        img = Image.open(st.images[0].path).convert("L").resize((256, 256), Image.BILINEAR)
        x0, y0 = rng.integers(0, 256 - SIZE + 1, size=2)
        img = img.crop((int(x0), int(y0), int(x0) + SIZE, int(y0) + SIZE))
        img = img.rotate(float(rng.uniform(-5, 5)), resample=Image.BILINEAR,
                         translate=tuple(int(t) for t in rng.integers(-7, 8, size=2)))
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.8, 1.2)))
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0)[None]
        enc = self.tok.encode([st.text], max_length=97)
        return (x - 0.5) / 0.25, torch.from_numpy(enc.input_ids[0])


def test_per_file_baseline(benchmark, data):
    ds = PerFile(data["studies"](False), data["tokenizer"])
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS)
    n = benchmark.pedantic(lambda: _epoch(loader, lambda: None), rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "per-file (PIL)", n)


@pytest.fixture(scope="module", autouse=True)
def results(request):
    yield
    if not ROWS:
        return
    from cxrfast.bench import measure

    env = measure.environment(torch.device("cpu"))
    env.update(cpus=len(os.sched_getaffinity(0)), workers=WORKERS)
    base = ROWS.get("per-file (PIL)")
    for row in ROWS.values():
        row["vs_per_file"] = row["images_per_s"] / base["images_per_s"] if base else None
    doc = {"suite": "loader", "env": env, "case": f"{N_IMAGES} images {SOURCE}px → {SIZE}px augmented, "
           f"batches of {BATCH}, {WORKERS} workers/threads, reports tokenised", "rows": ROWS}
    path = os.path.join(request.config.getoption("--bench-results"), env["device_slug"], "loader.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {path}")
