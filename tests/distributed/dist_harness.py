"""Multi-process harness for tests/distributed: gloo on CPU, 127.0.0.1 only, hard timeouts.

Every rank rebuilds the same global batch from a fixed seed (`make_batch`) and takes its slice; the
parent process rebuilds it too, for the float64 reference. Ranks write their results with torch.save;
a rank that raises writes its traceback instead, and the parent reports it.

The children run the Triton kernels on CPU, so they set TRITON_INTERPRET=1 before anything imports
triton (cxrfast.ops does, on first import): this module imports only torch at the top.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

JOIN_TIMEOUT_S = 120.0
LOGIT_SCALE = 4.0
GROUP_SPAN = 3  # consecutive pairs sharing a study id; with B_local = 5 studies straddle rank borders


def child_env() -> dict:
    """Environment for every rank (also the torchrun test): CPU kernels interpreted, loopback only."""
    return {"TRITON_INTERPRET": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------- batches

def make_batch(world: int, b_local: int, dim: int, *, dtype=torch.float64, groups: bool = False, seed: int = 0):
    """The global batch (image [B, D], text [B, D] in `dtype`, groups [B] int64 or None), B = world·b_local.

    Texts are noisy copies of their images (a realistic, non-uniform softmax). Group ids are large and
    non-consecutive, GROUP_SPAN consecutive pairs share one, and the last pair joins the first study, so
    studies have views on two ranks, including non-adjacent ones."""
    g = torch.Generator().manual_seed(seed)
    n = world * b_local
    image = torch.randn(n, dim, generator=g, dtype=torch.float64)
    text = image + 0.8 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    ids = None
    if groups:
        ids = torch.tensor([1000 * (i // GROUP_SPAN) + 7 for i in range(n)], dtype=torch.int64)
        ids[-1] = ids[0]
    return image.to(dtype), text.to(dtype), ids


def rank_slice(rank: int, b_local: int) -> slice:
    return slice(rank * b_local, (rank + 1) * b_local)


def make_local_batch(world: int, b_local: int, *, regions: int = 5, words: int = 4, dim: int = 6, seed: int = 0):
    """A word–region global batch: regions [B, R, D], words [B, L, D] (float64; reports a noisy mix of their
    image's regions), word lengths [B] in 1..L (the first report full), and negatives [B] (one random other
    sample of the global batch per anchor, the last anchor none: -1). B = world · b_local."""
    g = torch.Generator().manual_seed(seed)
    n = world * b_local
    v = torch.randn(n, regions, dim, generator=g, dtype=torch.float64)
    mix = torch.softmax(torch.randn(n, words, regions, generator=g, dtype=torch.float64), -1)
    w = mix @ v + 0.7 * torch.randn(n, words, dim, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, words + 1, (n,), generator=g)
    lengths[0] = words
    r = torch.randint(0, n - 1, (n,), generator=g)
    negatives = r + (r >= torch.arange(n))
    negatives[-1] = -1
    return v, w, lengths, negatives


# --------------------------------------------------------------------------------- process launch

def _child(rank: int, world: int, store: str, fn_name: str, payload, out_dir: str) -> None:
    os.environ.update(child_env())  # before cxrfast (and so triton) is imported in this process
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        # A file store for the rendezvous: no port is chosen here and bound later, so no other process can
        # take it in between (issue 9: the former free-port-then-bind window); gloo's own connections bind
        # port 0 themselves.
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=60))
        module, _, name = fn_name.rpartition(":")  # "module:function" runs a program of another test module
        fn = getattr(importlib.import_module(module), name) if module else globals()[name]
        result = fn(rank, world, payload)
        torch.save(result, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        sys.exit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn_name: str, world: int, payload, out_dir: Path, timeout: float = JOIN_TIMEOUT_S) -> list:
    """Run `fn_name(rank, world, payload)` on `world` spawned gloo ranks; return their results by rank.
    fn_name: a function of this module, or "module:function" (a module on the test's sys.path).
    A rank that fails, or a job that outlives `timeout`, fails the test with the ranks' tracebacks."""
    ctx = mp.get_context("spawn")
    store = out_dir / "rendezvous"  # a fresh file per job: each test passes its own tmp_path
    if store.exists():
        raise AssertionError(f"{store} exists: the rendezvous file of an earlier job in the same folder")
    procs = [ctx.Process(target=_child, args=(r, world, str(store), fn_name, payload, str(out_dir)), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join(10)
    errors = "\n".join(f"--- rank {r} ---\n{f.read_text()}" for r in range(world)
                       if (f := out_dir / f"rank{r}.err").exists())
    if hung:
        raise AssertionError(f"{fn_name}: ranks {hung} still running after {timeout:.0f} s (hang?)\n{errors}")
    codes = [p.exitcode for p in procs]
    if any(codes):
        raise AssertionError(f"{fn_name}: rank exit codes {codes}\n{errors}")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


# ---------------------------------------------------------------------------- rank-side programs

def loss_cases(rank: int, world: int, cases: list) -> dict:
    """Distributed loss + backward for every case: this rank's loss, local-row gradients, scale gradient."""
    from cxrfast import distributed

    results = {}
    for case in cases:
        dtype = getattr(torch, case["dtype"])
        image, text, groups = make_batch(world, case["b"], case["dim"], dtype=dtype, groups=case["groups"],
                                          seed=case["seed"])
        sl = rank_slice(rank, case["b"])
        img = image[sl].clone().requires_grad_(True)
        txt = text[sl].clone().requires_grad_(True)
        scale = torch.tensor(LOGIT_SCALE, dtype=dtype, requires_grad=True)
        loss = distributed.contrastive_loss(
            img, txt, scale, normalize=case["normalize"], weights=case["weights"],
            label_smoothing=case["eps"], groups=None if groups is None else groups[sl],
            impl=case["impl"], gather=case["gather"])
        loss.backward()
        results[case["id"]] = {"loss": loss.detach(), "image_grad": img.grad, "text_grad": txt.grad,
                               "scale_grad": scale.grad, "dtype": loss.dtype}
    return results


def gather_checks(rank: int, world: int, _payload) -> dict:
    """all_gather_with_grad on its own: values, gradients, and the mismatched-size error."""
    from cxrfast import distributed

    b = 3
    t = (torch.arange(b * 2, dtype=torch.float64).reshape(b, 2) + 100 * rank).requires_grad_(True)
    out = distributed.all_gather_with_grad(t)
    coeff = torch.randn(out.shape, generator=torch.Generator().manual_seed(100 + rank), dtype=torch.float64)
    (coeff * out).sum().backward()
    errors = {}
    for name, call in (
        ("gather", lambda: distributed.all_gather_with_grad(torch.zeros(rank + 2, 2))),
        ("loss", lambda: distributed.contrastive_loss(torch.randn(rank + 2, 4), torch.randn(rank + 2, 4), 2.0,
                                                      impl="chunked")),
        ("local", lambda: distributed.local_contrastive_loss(torch.randn(rank + 2, 3, 4), torch.randn(rank + 2, 2, 4),
                                                             torch.ones(rank + 2, dtype=torch.int64))),
        ("negatives", lambda: distributed.triplet_loss(  # anchor 1's negative is itself (global row 2·rank + 1)
            torch.randn(2, 4), torch.randn(2, 4), negatives=torch.tensor([-1, 2 * rank + 1]))),
    ):
        try:
            call()
            errors[name] = None
        except ValueError as exc:
            errors[name] = str(exc)
    return {"out": out.detach(), "coeff": coeff, "grad": t.grad, "errors": errors}


class EncoderPair(torch.nn.Module):
    """Two linear 'encoders' and a learnable log logit-scale, all inside one (DDP) module."""

    def __init__(self, d_image: int, d_text: int, dim: int):
        super().__init__()
        self.image = torch.nn.Linear(d_image, dim, dtype=torch.float64)
        self.text = torch.nn.Linear(d_text, dim, dtype=torch.float64)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(LOGIT_SCALE), dtype=torch.float64))

    def forward(self, image_in, text_in):
        return self.image(image_in), self.text(text_in), self.log_scale.exp()


def ddp_inputs(world: int, cfg: dict):
    """(model with seeded weights, image inputs [B, d_image], text inputs [B, d_text], groups [B])."""
    torch.manual_seed(cfg["seed"])
    model = EncoderPair(cfg["d_image"], cfg["d_text"], cfg["dim"])
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    n = world * cfg["b"]
    image_in = torch.randn(n, cfg["d_image"], generator=g, dtype=torch.float64)
    text_in = torch.randn(n, cfg["d_text"], generator=g, dtype=torch.float64)
    groups = torch.tensor([1000 * (i // GROUP_SPAN) + 7 for i in range(n)], dtype=torch.int64)
    return model, image_in, text_in, groups


def ddp_step(rank: int, world: int, cfg: dict) -> dict:
    """One forward/backward of the encoder pair under real DistributedDataParallel, per gather mode."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cxrfast import distributed

    results = {}
    for gather in ("local", "full"):
        model, image_in, text_in, groups = ddp_inputs(world, cfg)
        ddp = DDP(model)
        sl = rank_slice(rank, cfg["b"])
        emb_i, emb_t, scale = ddp(image_in[sl], text_in[sl])
        loss = distributed.contrastive_loss(emb_i, emb_t, scale, weights=(0.75, 0.25), label_smoothing=0.1,
                                            groups=groups[sl], impl="chunked", gather=gather)
        loss.backward()
        results[gather] = {"loss": loss.detach(),
                           "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters()}}
    return results


LOCAL_HYPER = dict(temp_attention=4.0, temp_aggregate=5.0)


def local_cases(rank: int, world: int, cases: list) -> dict:
    """The word–region and triplet losses of cxrfast.distributed on this rank's slice: per case the loss and
    the gradients of the local regions / words (or image / text embeddings)."""
    from cxrfast import distributed

    results = {}
    for case in cases:
        v, w, lengths, negatives = make_local_batch(world, case["b"], seed=case["seed"])
        sl = rank_slice(rank, case["b"])
        regions, words = v[sl].clone().requires_grad_(True), w[sl].clone().requires_grad_(True)
        if case["op"] == "triplet":  # the sentence-level loss on the mean region / word as embeddings
            loss = distributed.triplet_loss(regions.mean(1), words.mean(1), negatives=negatives[sl], margin=0.5,
                                            reduction=case["reduction"])
        else:
            gathered = distributed.gather_word_regions(regions, words, lengths[sl]) if case["shared"] else None
            if case["op"] == "local":
                loss = distributed.local_contrastive_loss(regions, words, lengths[sl], temp_logits=10.0,
                                                          weights=case["weights"], impl="chunked",
                                                          gathered=gathered, **LOCAL_HYPER)
            else:
                loss = distributed.local_triplet_loss(regions, words, lengths[sl], negatives=negatives[sl],
                                                      margin=0.5, reduction=case["reduction"], gathered=gathered,
                                                      **LOCAL_HYPER)
        loss.backward()
        results[case["id"]] = {"loss": loss.detach(), "regions_grad": regions.grad, "words_grad": words.grad}
    return results


def rows_of(rank: int) -> int:
    """Uneven local sizes for the statistics checks: rank r holds r + 2 rows."""
    return rank + 2


def statistics_inputs(world: int, channels: int = 3, seed: int = 5):
    """(rows [N, C] float64, mask [N] bool: none selected on rank 0, coefficients [N, C]) of all ranks, rank r's
    rows at offsets Σ_{r' < r} rows_of(r')."""
    g = torch.Generator().manual_seed(seed)
    n = sum(rows_of(r) for r in range(world))
    rows = 3.0 + 2.0 * torch.randn(n, channels, generator=g, dtype=torch.float64)
    mask = torch.rand(n, generator=g) < 0.7
    mask[:rows_of(0)] = False
    mask[-1] = True
    coeff = torch.randn(n, channels, generator=g, dtype=torch.float64)
    return rows, mask, coeff


def statistics_checks(rank: int, world: int, _payload) -> dict:
    """global_rows, global_mean and batch_moments with uneven local sizes and counts (rank 0 has no selected
    row): values and the local rows' gradients."""
    from cxrfast import distributed

    rows, mask, coeff = statistics_inputs(world)
    start = sum(rows_of(r) for r in range(rank))
    sl = slice(start, start + rows_of(rank))
    x = rows[sl].clone().requires_grad_(True)
    offset, total = distributed.global_rows(x)
    # BatchNorm-like use of the global statistics of the selected rows
    mean, var, n = distributed.batch_moments(x, mask[sl])
    y = (x - mean) * torch.rsqrt(var + 1e-5)
    bn_loss = (coeff[sl] * y * mask[sl, None]).sum()
    (g_bn,) = torch.autograd.grad(bn_loss, x)
    # a mean over the selected elements, as the presets' token / patch means
    m = distributed.global_mean((coeff[sl] * x * mask[sl, None]).sum(0), mask[sl].sum())
    (g_mean,) = torch.autograd.grad(m.sum(), x)
    return {"rows": (offset, total), "mean": mean.detach(), "var": var.detach(), "n": n, "bn_grad": g_bn,
            "global_mean": m.detach(), "mean_grad": g_mean}


def all_checks(rank: int, world: int, payload) -> dict:
    """Everything one spawn runs (process start-up dominates the cost of these tiny cases)."""
    return {"loss": loss_cases(rank, world, payload["cases"]),
            "gather": gather_checks(rank, world, None),
            "ddp": ddp_step(rank, world, payload["ddp"]),
            "local": local_cases(rank, world, payload["local"]),
            "statistics": statistics_checks(rank, world, None)}
