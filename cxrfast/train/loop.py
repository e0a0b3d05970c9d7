"""`cxrfast pretrain`: one process or torchrun's many, checkpoints that resume exactly.

    from cxrfast.train import TrainConfig, pretrain
    result = pretrain(TrainConfig(preset="globallocal", size="tiny", steps=300, out="runs/demo"))

The run folder:

    RUN/config.json        the preset's config (cxrfast.models.load_config)
    RUN/train.json         this TrainConfig
    RUN/tokenizer/         the tokenizer: a copy of the one given (--tokenizer), else trained on the reports
    RUN/checkpoints/       step-NNNNNN.pt + latest (cxrfast.train.checkpoint)
    RUN/log.csv            step, epoch, lr, loss, each named loss, samples, samples/s, seconds (the last three
                           counted from this call's start): one row per logged step
    RUN/loss.png           the loss curves (matplotlib); RUN/tensorboard/ where tensorboard is installed

Data: the synthetic dataset by default (generated once into a cache folder, `CXRFAST_CACHE` or
~/.cache/cxrfast), else `open_dataset(data, root, split=...)`, read with cxrfast.data.loader (torch
DataLoader) or cxrfast.data.dali (DALI, where installed, on CUDA). Each rank takes its share of every global
batch (EpochBatches: every sample once per epoch). Under torchrun the model is wrapped in DDP; every loss term
of a preset is the global batch's, each rank returning W × its share (cxrfast.distributed: gathered
embeddings, global means, synchronised BatchNorm statistics, draws by global row), so that DDP's averaged
gradients are those of one process with the whole global batch (dropout's draws aside; the word–region loss
of globallocal / joimternet sees each rank's batch unless the preset's local_loss_global_batch is set). The
logged losses are averaged over the ranks: the global batch's.

The schedule: each paper's optimiser (GLoRIA, JoImTeRNet: Adam; LoVT, mixed: AdamW; REFERS: SGD; TrainConfig
.optimizer overrides) with linear warm-up and cosine decay to 0,
gradient clipping, gradient accumulation over `accum` micro-batches (each contrastive loss sees its own
micro-batch, as in all five papers, none of which accumulates its contrastive batch), bf16 autocast on CUDA.

Exact resume: a checkpoint holds the model, optimiser, scheduler, scaler, the step, the data position
(epoch and micro-batch) and every random generator's state; the data order and the augmentation are
functions of (seed, epoch, sample), so a resumed run replays the uninterrupted one step for step (tested,
after kill -9 too). The log is cut back to the checkpoint's step on resume.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from cxrfast.train.checkpoint import load_checkpoint, save_checkpoint
from cxrfast.train.config import TrainConfig

__all__ = ["pretrain", "RunResult", "synthetic_root", "open_training_data", "DistEnv"]


# ------------------------------------------------------------------------------------------------ setup

@dataclasses.dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_env(device: torch.device) -> DistEnv:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): the process group initialised here (gloo on CPU,
    nccl on CUDA) unless it already is; one process otherwise."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        here = True
    return DistEnv(rank, world, local, here)


def _barrier(env: DistEnv) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _device(name: str, env: DistEnv) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r}: torch has no CUDA device here")
        dev = torch.device("cuda", env.local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    return dev


def synthetic_root(cfg: TrainConfig, env: DistEnv = DistEnv()) -> Path:
    """The synthetic dataset of (synth_n, seed, synth_size): `cfg.root` or a cache folder, generated on first
    use (by rank 0, into a temporary folder renamed into place when complete; other ranks wait)."""
    base = Path(os.environ.get("CXRFAST_CACHE", Path.home() / ".cache" / "cxrfast"))
    root = Path(cfg.root) if cfg.root else base / f"synthetic-n{cfg.synth_n}-s{cfg.seed}-{cfg.synth_size}px"
    done = root / ".complete"
    if env.main and not done.exists():
        from cxrfast.data.synth import write_synthetic

        if root.exists() and any(root.iterdir()):
            raise RuntimeError(f"{root} exists but is not a complete synthetic dataset (no .complete marker): "
                               "delete it, or pass another --root")
        tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        print(f"cxrfast pretrain: writing the synthetic dataset ({cfg.synth_n} studies, {cfg.synth_size} px) to "
              f"{root} (once)", flush=True)
        write_synthetic(tmp, n=cfg.synth_n, seed=cfg.seed, size=cfg.synth_size, progress=cfg.progress)
        (tmp / ".complete").write_text("ok\n")
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    _barrier(env)
    return root


_CFG_SPLIT = "<cfg.split>"


def open_training_data(cfg: TrainConfig, env: DistEnv = DistEnv(), split=_CFG_SPLIT):
    """(StudyDataset, its root) for cfg.data: the split cfg.split (default), another split name or several, or
    every split (split=None; what evaluation reads)."""
    from cxrfast.data.datasets import DatasetError, open_dataset

    split = cfg.split if split == _CFG_SPLIT else split
    if isinstance(split, str) and "," in split:  # "train,validate": several splits
        split = [name.strip() for name in split.split(",") if name.strip()]
    if cfg.data == "synthetic":
        root = synthetic_root(cfg, env)
        return open_dataset("mimic-cxr", root, split=split, images=cfg.images), root
    if cfg.root is None:
        raise ValueError(f"data {cfg.data!r} needs --root (the dataset's folder)")
    try:
        return open_dataset(cfg.data, cfg.root, split=split, images=cfg.images), Path(cfg.root)
    except DatasetError as exc:
        if "no official split" in str(exc):
            raise DatasetError(f"{exc} (cxrfast pretrain: --split all)") from None
        raise


# the files of a tokenizer directory that ReportTokenizer.from_pretrained and transformers read
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def _tokenizer(cfg: TrainConfig, run: Path, reports: list, env: DistEnv, fresh: bool):
    """RUN/tokenizer/: a run's own copy of the tokenizer given (its files as they are: `cxrfast eval` reads
    RUN/tokenizer/ only), else one trained on the reports. A fresh start replaces what a failed earlier
    start may have left there; a resumed run keeps its own."""
    import shutil

    from cxrfast.data.text import ReportTokenizer, train_tokenizer

    target = run / "tokenizer"
    if env.main and fresh and target.exists():
        shutil.rmtree(target)
    if env.main and not target.exists():
        if cfg.tokenizer:
            ReportTokenizer.from_pretrained(cfg.tokenizer)  # (a clear error if it is not a tokenizer directory)
            target.mkdir(parents=True)
            for name in TOKENIZER_FILES:
                if (Path(cfg.tokenizer) / name).is_file():
                    shutil.copy2(Path(cfg.tokenizer) / name, target / name)
        else:
            train_tokenizer(reports, target, vocab_size=cfg.vocab_size)
    _barrier(env)
    return ReportTokenizer.from_pretrained(target)


def _model(cfg: TrainConfig, tok, resumed: dict | None):
    from cxrfast.models import create_model
    from cxrfast.models.config import config_class

    if resumed is not None:
        preset_cfg = config_class(cfg.preset).from_dict(resumed["preset_config"])
        return create_model(cfg.preset, config=preset_cfg)
    ids = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id)
    return create_model(cfg.preset, cfg.size, **{**ids, **cfg.overrides})


def _optimizer(cfg: TrainConfig, model):
    name, lr, wd = cfg.resolved_optimizer()
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _schedule(optimizer, total: int, warmup: float):
    """Linear warm-up then cosine decay to 0 over `total` steps."""
    w = int(round(warmup * total)) if warmup < 1 else int(warmup)
    w = max(0, min(w, total - 1))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / (w + 1)
        progress = (step - w) / max(1, total - w)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _rng_state(device: torch.device) -> dict:
    """Every generator's state in tensors and plain containers only, so that checkpoints load with
    torch.load(weights_only=True) (numpy's key array is kept as an int64 tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------------------------ data

class _Stream:
    """Micro-batches from a position (epoch, batch) on, epoch after epoch. The torch path keeps one DataLoader
    (its workers live for the whole run: restarting them every epoch cost seconds per epoch) fed by a batch
    sampler that walks the epochs itself and passes each sample's epoch along (StudyBatches takes
    (epoch, index)); the skipped batches of a resumed epoch are never loaded."""

    def __init__(self, dataset, batch_size: int, env: DistEnv, loader: str, workers: int, device: torch.device):
        from cxrfast.data.loader import EpochBatches

        self.dataset, self.env, self.kind, self.workers, self.device = dataset, env, loader, workers, device
        self.sampler = EpochBatches(len(dataset), batch_size, rank=env.rank, world=env.world, seed=dataset.seed)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.sampler)

    def _indices(self, epoch: int, start: int):
        """(epoch, position, [(epoch, index), ...]) for every micro-batch from (epoch, start) on, forever."""
        while True:
            self.sampler.set_epoch(epoch)
            for pos, part in enumerate(list(self.sampler)[start:], start):
                yield epoch, pos, [(epoch, i) for i in part]
            epoch, start = epoch + 1, 0

    def stream(self, epoch: int, start: int):
        """Yields (epoch, position of the next micro-batch, batch)."""
        if self.kind == "dali":
            from cxrfast.data.dali import DaliLoader

            loader = DaliLoader(self.dataset, self.batch_size, rank=self.env.rank, world=self.env.world,
                                device_id=self.device.index if self.device.type == "cuda" else None,
                                num_threads=max(1, self.workers))
            while True:
                loader.set_epoch(epoch)
                for k, batch in enumerate(loader.iterate(start=start), start):
                    yield epoch, k + 1, batch
                epoch, start = epoch + 1, 0
        positions = []

        def sampler():
            for e, pos, part in self._indices(epoch, start):
                positions.append((e, pos))
                yield part

        # its own generator: a DataLoader iterator draws a base seed, and from the global generator that draw
        # would shift dropout's random numbers in a resumed run
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler(), num_workers=self.workers,
                                         collate_fn=self.dataset.collate, pin_memory=self.device.type == "cuda",
                                         generator=torch.Generator().manual_seed(self.dataset.seed),
                                         prefetch_factor=2 if self.workers else None)
        for batch in dl:
            e, pos = positions.pop(0)
            yield e, pos + 1, batch


# ------------------------------------------------------------------------------------------------ logging

class _Log:
    """log.csv (rank 0): a header from the first row's keys, rows flushed as written; cut back on resume."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.fields = None
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if int(r["step"]) <= resume_step]
            if rows:
                self.fields = list(rows[0].keys())
                with open(path, "w", newline="") as f:
                    w = csv.DictWriter(f, self.fields)
                    w.writeheader()
                    w.writerows(keep)
        elif path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def plot_losses(log_csv, out_png) -> Path | None:
    """The loss curves of log.csv as a PNG (None where matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    names = [k for k in rows[0] if k.startswith("loss")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        ax.plot(steps, [float(r[name]) for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


# ------------------------------------------------------------------------------------------------ the run

@dataclasses.dataclass
class RunResult:
    run: Path
    steps: int
    last: dict
    seconds: float
    samples_per_s: float
    trained: int          # optimiser steps taken by this call (0: the run was finished already)


def pretrain(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> RunResult:
    """Run (or, with resume, continue) the pre-training `cfg` describes; see the module docstring.
    stop_after: return after this many optimiser steps of this call (tests; a run can then be resumed)."""
    from cxrfast.data.loader import StudyBatches
    from cxrfast.data.transforms import Augment

    probe = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                         ("cpu" if cfg.device == "auto" else cfg.device))
    env = _dist_env(probe)
    device = _device(cfg.device, env)
    run = Path(cfg.out or f"runs/{cfg.preset}-{cfg.size}")
    if env.main:
        run.mkdir(parents=True, exist_ok=True)
    _barrier(env)
    if not resume and (run / "checkpoints" / "latest").exists():
        raise ValueError(f"{run} holds a run already (checkpoints/): pass resume (--resume) to continue it, or "
                         "another out folder")
    resumed = load_checkpoint(run / "checkpoints") if resume else None
    if resume and resumed is None and env.main:
        print(f"cxrfast pretrain: nothing to resume in {run} (no checkpoint): starting", flush=True)
    if resumed is not None:
        _check_resume(run, cfg, TrainConfig(**resumed["train_config"]), resumed.get("world"), env.world)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    # the data is checked before anything is written into the run folder
    studies, _ = open_training_data(cfg, env)
    where = "every split" if cfg.split is None else f"the {cfg.split!r} split"
    if len(studies) == 0:
        raise ValueError(f"no studies in {where} of {cfg.data}")
    if not any(s.report is not None for s in studies):
        raise ValueError(f"no study in {where} of {cfg.data} has a report: pre-training needs image-report "
                         "pairs (synthetic, mimic-cxr, openi); image-only datasets (chexpert, nih14) serve "
                         "`cxrfast eval`")
    reports = [s.text for s in studies if s.report is not None]  # the tokenizer's corpus: every report
    if cfg.preset not in UNPAIRED_PRESETS:  # the others train on image-report pairs only
        unpaired = sum(s.kind != "paired" for s in studies)
        if unpaired:
            studies = studies.subset(lambda s: s.kind == "paired")
            if env.main and len(studies):
                print(f"cxrfast pretrain: {unpaired} image-only / text-only studies left out ({cfg.preset} trains on "
                      f"pairs; the mixed preset takes them); {len(studies)} pairs", flush=True)
    if len(studies) < cfg.batch_size * env.world:
        n = len(studies)
        what = "training study" if n == 1 else "training studies"
        raise ValueError(f"{n} {what} in {where} of {cfg.data}"
                         f"{'' if cfg.preset in UNPAIRED_PRESETS else ' (image-report pairs)'}: fewer than one "
                         f"micro-batch per process ({cfg.batch_size} × {env.world} processes); lower --batch-size "
                         "or use more data")
    tok = _tokenizer(cfg, run, reports, env, fresh=resumed is None)
    model = _model(cfg, tok, resumed).to(device)
    if env.main:
        model.config.to_json(run / "config.json")
        cfg.to_json(run / "train.json")
    mc = model.config
    dataset = StudyBatches(studies, tok, views=mc.max_views, augment=Augment(size=mc.image_size), seed=cfg.seed,
                           max_length=mc.max_length, findings=mc.findings)
    loader = cfg.loader
    if loader == "auto":
        from cxrfast.data.dali import dali_available

        loader = "dali" if (device.type == "cuda" and dali_available() is None) else "torch"
    stream = _Stream(dataset, cfg.batch_size, env, loader, cfg.workers, device)
    per_epoch = max(1, len(stream) // cfg.accum)
    total = cfg.steps or max(1, int(math.ceil(cfg.epochs * per_epoch)))

    net = model
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    optimizer = _optimizer(cfg, model)
    scheduler = _schedule(optimizer, total, cfg.warmup)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    resolved = {"amp": amp, "loader": loader}
    if resumed is not None:
        _check_resolved(run, resumed.get("resolved"), resolved)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp != "none" else nullcontext())

    step, epoch, position = 0, 0, 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        step, epoch, position = resumed["step"], resumed["epoch"], resumed["batch"]
        _set_rng_state(resumed["rng"][env.rank] if isinstance(resumed["rng"], list) else resumed["rng"], device)
    log = _Log(run / "log.csv", step if resumed is not None else None) if env.main else None
    writer = None
    if env.main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tensorboard"), purge_step=step + 1 if resumed else None)
        except Exception:  # noqa: BLE001 - tensorboard is optional
            writer = None
    bar = None
    if env.main and cfg.progress:
        from cxrfast._progress import progress

        bar = progress(total - step, f"pretrain {cfg.preset}", unit="steps", min_interval=0.5)

    def batches():
        nonlocal epoch, position
        for e, nxt, batch in stream.stream(epoch, position):
            epoch, position = e, nxt
            yield batch

    source = batches()
    t0 = time.perf_counter()
    samples = 0
    last: dict = {}
    done_here = 0
    net.train()
    while step < total and (stop_after is None or done_here < stop_after):
        optimizer.zero_grad(set_to_none=True)
        sums: dict = {}
        for _ in range(cfg.accum):
            batch = next(source).to(device, non_blocking=True)
            with autocast:
                out = net(batch)
            loss = out["loss"] / cfg.accum
            scaler.scale(loss).backward()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.accum
            samples += len(batch) * env.world
        if env.world > 1:
            sums = _mean_over_ranks(sums, device)
        if cfg.clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        done_here += 1
        last = sums
        rate = samples / max(1e-9, time.perf_counter() - t0)
        if bar is not None:
            bar.step(f"loss {sums['loss']:.4f}")
        if env.main and (step % cfg.log_every == 0 or step == total):
            row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   **{("loss" if k == "loss" else f"loss_{k}"): v for k, v in sums.items()},
                   "samples": samples, "samples_per_s": rate, "seconds": time.perf_counter() - t0}
            log.write(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
        if step % cfg.ckpt_every == 0 or step == total:
            _checkpoint(run, model, optimizer, scheduler, scaler, step, epoch, position, device, cfg, env,
                        resolved)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if env.main and (run / "log.csv").exists():
        plot_losses(run / "log.csv", run / "loss.png")
    seconds = time.perf_counter() - t0
    result = RunResult(run, step, last, seconds, samples / max(1e-9, seconds), done_here)
    if env.initialised_here:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


# TrainConfig fields that change neither the schedule nor the data order: a resumed run may change these. The
# data may have moved (root, images: the same studies elsewhere); a resume on another device continues the same
# run, equal to rounding rather than bit for bit, as long as what "auto" chose there (the autocast dtype, the
# loader) is the same (checked apart: _check_resolved).
RESUME_FREE = ("out", "device", "workers", "log_every", "ckpt_every", "keep", "progress", "root", "images")
UNPAIRED_PRESETS = ("mixed",)  # presets that train on image-only and text-only studies besides pairs


def _check_resume(run: Path, cfg: TrainConfig, saved: TrainConfig, saved_world: int | None, world: int) -> None:
    """A resumed run replays the uninterrupted one only with the same result-affecting settings (every field
    but RESUME_FREE, the step count and the number of processes included): refuse others, naming them.
    saved_world: None for checkpoints written before it was recorded (not checked)."""
    changed = [f"{f.name} {getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r}"
               for f in dataclasses.fields(TrainConfig)
               if f.name not in RESUME_FREE and getattr(saved, f.name) != getattr(cfg, f.name)]
    if saved_world is not None and saved_world != world:
        changed.append(f"processes (WORLD_SIZE) {saved_world} -> {world}")
    _refuse(run, changed)


def _check_resolved(run: Path, saved: dict | None, now: dict) -> None:
    """What "auto" resolved to (amp, loader) must be what the checkpoint's run used (None: not recorded)."""
    _refuse(run, [f"{k} (auto) {saved[k]!r} -> {v!r}" for k, v in now.items() if saved and saved.get(k, v) != v])


def _refuse(run: Path, changed: list) -> None:
    if changed:
        raise ValueError(f"{run}: resuming with other settings than the checkpoint's: {'; '.join(changed)}. A "
                         f"resumed run continues the same schedule and data order; start another --out for "
                         f"new settings (free to change: {', '.join(RESUME_FREE)})")


def _mean_over_ranks(values: dict, device: torch.device) -> dict:
    """Each logged value averaged over the ranks (one all-reduce): a preset's losses on a rank are W × its share
    of the global batch's (cxrfast.distributed), so their mean is the loss of the whole global batch."""
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # (gloo has no AVG)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def _checkpoint(run, model, optimizer, scheduler, scaler, step, epoch, position, device, cfg, env,
                resolved) -> None:
    """Every rank's generators are gathered to rank 0, which writes the checkpoint."""
    rng = _rng_state(device)
    if env.world > 1:
        import torch.distributed as dist

        states = [None] * env.world
        dist.all_gather_object(states, rng)
        rng = states
    if env.main:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "step": step, "epoch": epoch, "batch": position, "rng": rng,
                 "preset_config": model.config.to_dict(), "train_config": dataclasses.asdict(cfg),
                 "world": env.world, "resolved": resolved}
        save_checkpoint(run / "checkpoints", step, state, keep=cfg.keep)
    _barrier(env)
