"""Pre-training throughput per preset: `cxrfast.train.pretrain` on the synthetic dataset (the whole step: data
+ model + optimiser), beside a data-only run (the same loader, nothing else) and a model-only run (the same
step on one batch already in memory), same run, samples/s. Where the data alone is slower than the model
alone, the training step waits on data: the row says by how much.

    CPU:  every preset at the `small` size, batch CPU_BATCH, fp32, 2 loader workers
    CUDA: the same at batch GPU_BATCH with bf16 autocast
All three read the same torch DataLoader path (TrainConfig.loader="torch"; the data-only run is the trainer's
own stream, which walks the epochs itself) and the model-only run uses the trainer's optimiser (each paper's);
the rates count the samples actually delivered (log.csv's samples column: an epoch's last batch may be smaller)
and leave the first step (warm-up) out. The verdict compares the data alone with the model alone (does the data
keep up?) and says what share of the model's rate the full step keeps (on a CPU the loader workers share the
cores with the model). Writes results/<device>/pretrain.json; the README table
comes from report.py.
"""

from __future__ import annotations

import csv
import json
import os
import time

import pytest
import torch

PRESETS = ("globallocal", "joimternet", "lovt", "mixed", "refers")
CPU_BATCH, GPU_BATCH = 8, 48
STEPS = 8          # timed: steps 2..STEPS
WORKERS = 2
SYNTH = dict(synth_n=600, synth_size=256)   # ~470 training studies: 10 batches of 48 per epoch
ROWS: list[dict] = []


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch_size() -> int:
    return GPU_BATCH if _device().type == "cuda" else CPU_BATCH


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from cxrfast.train import TrainConfig
    from cxrfast.train.loop import synthetic_root

    root = tmp_path_factory.mktemp("pretrain") / "synthetic"
    return synthetic_root(TrainConfig(root=str(root), progress=False, **SYNTH))


def _cfg(preset, synth, out):
    from cxrfast.train import TrainConfig

    return TrainConfig(preset=preset, size="small", root=str(synth), out=str(out), steps=STEPS,
                       batch_size=_batch_size(), workers=WORKERS, loader="torch", log_every=1, ckpt_every=10**9,
                       progress=False, vocab_size=2000, **SYNTH)


def _full(cfg) -> float:
    from cxrfast.train import pretrain

    result = pretrain(cfg)
    with open(result.run / "log.csv", newline="") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    seen = {k: int(r["samples"]) for k, r in rows.items()}  # delivered since the start, per logged step
    return (seen[STEPS] - seen[1]) / (float(rows[STEPS]["seconds"]) - float(rows[1]["seconds"]))


def _data_and_model(cfg) -> tuple[float, float]:
    """The data-only and model-only rates with the run's own tokenizer, dataset and model."""
    from cxrfast.data.loader import StudyBatches
    from cxrfast.data.text import ReportTokenizer
    from cxrfast.data.transforms import Augment
    from cxrfast.models import create_model, load_config
    from cxrfast.train.loop import DistEnv, _optimizer, _Stream, open_training_data

    studies, _ = open_training_data(cfg)
    tok = ReportTokenizer.from_pretrained(os.path.join(cfg.out, "tokenizer"))
    config = load_config(os.path.join(cfg.out, "config.json"))
    ds = StudyBatches(studies, tok, views=config.max_views, augment=Augment(size=config.image_size), seed=cfg.seed,
                      max_length=config.max_length, findings=config.findings)
    device = _device()
    stream = _Stream(ds, cfg.batch_size, DistEnv(), "torch", WORKERS, device).stream(0, 0)
    _, _, batch = next(stream)
    t0, n = time.perf_counter(), 0
    for _ in range(STEPS - 1):
        n += len(next(stream)[2])
    data = n / (time.perf_counter() - t0)
    stream.close()

    model = create_model(config.preset, config=config).to(device).train()
    batch = batch.to(device)
    opt = _optimizer(cfg, model)  # the trainer's: each paper's optimiser
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    t0 = time.perf_counter()
    for _ in range(STEPS - 1):
        step()
    return data, (STEPS - 1) * cfg.batch_size / (time.perf_counter() - t0)


@pytest.mark.parametrize("preset", PRESETS)
def test_pretrain_throughput(benchmark, synth, tmp_path, preset, request):
    cfg = _cfg(preset, synth, tmp_path / "run")
    full = benchmark.pedantic(lambda: _full(cfg), rounds=1, iterations=1)
    data, model = _data_and_model(cfg)
    keeps = f"the full step keeps {full / model:.0%} of the model's rate"
    wait = (f"yes: the data supplies {data / model:.0%} of the model's rate; {keeps}" if data < model else
            f"no: the data runs {data / model:.1f}× the model's rate; {keeps}")
    row = {"preset": preset, "size": "small", "batch": cfg.batch_size, "steps_timed": STEPS - 1,
           "full_samples_per_s": full, "data_samples_per_s": data, "model_samples_per_s": model, "data_wait": wait}
    benchmark.extra_info.update(row)
    ROWS.append(row)
    _save(request.config)  # after every row: a run cut short keeps what it measured


@pytest.fixture(scope="module", autouse=True)
def results(request):
    yield
    _save(request.config)


def _save(config) -> None:
    if not ROWS:
        return
    from cxrfast.bench import measure

    device = _device()
    env = measure.environment(device)
    env.update(cpus=len(os.sched_getaffinity(0)), threads=torch.get_num_threads(), workers=WORKERS)
    amp = "bf16 autocast" if device.type == "cuda" else "fp32"
    doc = {"suite": "pretrain", "env": env, "rows": ROWS,
           "case": f"synthetic dataset ({SYNTH['synth_n']} studies, {SYNTH['synth_size']} px), the small sizes, "
                   f"{amp}, {WORKERS} loader workers, steps 2–{STEPS} timed"}
    path = os.path.join(config.getoption("--bench-results"), env["device_slug"], "pretrain.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {path}")
