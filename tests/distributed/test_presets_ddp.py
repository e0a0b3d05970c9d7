"""Every preset under DistributedDataParallel: 2 gloo ranks, each with half of a global batch, give the
gradients (after DDP's averaging) and the losses (the ranks' mean) of one process with the whole batch.

Issue 14 §4. Each preset at size "tiny" in float64, its initial weights made here and shipped to the ranks, a
global batch from random_batch split by rows (3 samples per rank; the mixed preset's kinds put every report
on rank 0, so the ranks' MLM token counts differ, one being 0). What makes the two equal, term by term:
gathered embeddings for InfoNCE and the triplet losses (cxrfast.distributed), the word–region loss over the
global batch (local_loss_global_batch=True, off by default as in the released codes), global means over
tokens / patches / samples, BatchNorm statistics over the global batch (the ResNets', LoVT's masked ones),
random draws keyed by global row. Dropout is off (its draws are each process's own). Also compared: an
evaluation-mode forward after the step (the ranks' mean loss = the one-process loss; BatchNorm running
statistics as one process leaves them) and every buffer after the step.

And the trainer: cxrfast.train.loop.pretrain in 2 ranks with batch 4 logs the first step's losses of one
process with batch 8 (same seeds, same data order: EpochBatches deals each global batch in rank order).

One spawn per world size for all presets (process start-up dominates), one for the trainer.
"""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

import dist_harness as H
import preset_ranks as P

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

WORLD = 2
B_LOCAL = 3
PRESETS = ("globallocal", "joimternet", "lovt", "mixed", "refers")
# mixed: reports only on rank 0's rows (paired, text-only, paired), rank 1 image-only: unequal MLM counts
KINDS = {"mixed": ("paired", "text", "paired", "image", "image", "image")}
RTOL = 1e-9  # float64; the ranks' path (gathers, written-out BatchNorm) differs from one process by rounding


def _case(preset: str, seed: int) -> dict:
    from cxrfast.models.factory import create_model, random_batch

    torch.manual_seed(seed)
    model = create_model(preset, size="tiny", **P.ddp_overrides(preset)).double()
    batch = P.as_float64(random_batch(model, WORLD * B_LOCAL, seed=seed, kinds=KINDS.get(preset)))
    return {"id": preset, "preset": preset, "config": model.config.to_dict(), "state": model.state_dict(),
            "batch": batch}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(cases, one-process results, rank results) for every preset; a failure is cached and re-raised."""
    cases = [_case(p, seed) for seed, p in enumerate(PRESETS, start=11)]
    single = {}
    for case in cases:
        torch.manual_seed(99)
        model = P.build(case["preset"], case["config"], case["state"])
        single[case["id"]] = P.step(model, model, case["batch"])
    try:
        ranks = H.run_ranks("preset_ranks:preset_steps", WORLD, cases, tmp_path_factory.mktemp("presets"),
                            timeout=240.0)
    except AssertionError as exc:
        ranks = exc
    return cases, single, ranks


def _ranks(runs):
    if isinstance(runs[2], Exception):
        raise runs[2]
    return runs[2]


def close(name: str, got, want, rtol: float = RTOL, floor: float = 1e-12) -> None:
    """|got − want| ≤ rtol · max(|want|, floor) (elementwise max over the tensor)."""
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = max(want.abs().max().item() if want.numel() else 0.0, floor)
    assert err <= rtol * scale, f"{name}: max |got − want| = {err:.3e} > {rtol:.0e} · {scale:.3e}"


@pytest.mark.parametrize("preset", PRESETS)
def test_two_ranks_equal_one_process(runs, preset):
    _, single, _ = runs
    want, results = single[preset], [r[preset] for r in _ranks(runs)]
    # every term: the ranks' mean is the whole batch's value, in training and in evaluation
    for phase in ("train", "eval"):
        assert set(results[0][phase]) == set(want[phase])
        for name, value in want[phase].items():
            close(f"{phase} loss {name!r} (mean over ranks)", torch.stack([r[phase][name] for r in results]).mean(),
                  value)
    # every parameter: DDP's averaged gradient on each rank = the one-process gradient
    trained = [g for g in want["grads"].values() if g is not None]
    assert len(trained) == len(want["grads"]), "every trainable parameter should receive a gradient"
    # gradients that vanish mathematically (an attention key's bias) are rounding noise: measured against
    # the model's largest gradient entry
    floor = 1e-6 * max(g.abs().max().item() for g in trained)
    for rank, res in enumerate(results):
        for name, g in want["grads"].items():
            got = res["grads"][name]
            if g is None:
                assert got is None or not got.any(), f"rank {rank}: {name} has a gradient, one process none"
                continue
            close(f"rank {rank} ∂loss/∂{name}", got, g, floor=floor)
        # buffers after the step: BatchNorm running statistics (global), draw counters
        for name, value in want["buffers"].items():
            close(f"rank {rank} buffer {name}", res["buffers"][name], value)


def test_the_cases_exercise_what_they_claim(runs):
    """The inputs are what the docstring says: a global batch of 2 × 3 samples, the word–region option on,
    rank 1 of the mixed batch without any report, LoVT and the ResNets with BatchNorms."""
    cases, single, _ = runs
    by_id = {c["id"]: c for c in cases}
    for preset in PRESETS:
        assert len(by_id[preset]["batch"]) == WORLD * B_LOCAL
    for preset in ("globallocal", "joimternet"):
        assert by_id[preset]["config"]["local_loss_global_batch"] is True
    kinds = by_id["mixed"]["batch"].kind
    assert (kinds[:B_LOCAL] != 1).any() and (kinds[B_LOCAL:] == 1).all()
    for preset in ("globallocal", "joimternet", "lovt"):
        assert any("running_mean" in n for n in single[preset]["buffers"]), preset


# ------------------------------------------------------------------------------------------------ the trainer

def _first_step(run) -> dict:
    with open(run / "log.csv", newline="") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    return {k: float(v) for k, v in rows[1].items() if k.startswith("loss")}


def test_pretrain_two_ranks_log_the_one_process_loss(tmp_path):
    """pretrain in 2 gloo ranks (RANK / WORLD_SIZE from the environment, the group already initialised) with
    batch 4 per rank: the first step's logged losses equal one process's with batch 8 (same seeds)."""
    from cxrfast.train import TrainConfig, pretrain
    from cxrfast.train.loop import synthetic_root

    root = tmp_path / "data"
    cfg = TrainConfig(preset="globallocal", size="tiny", root=str(root), synth_n=48, synth_size=64, steps=2,
                      batch_size=4, device="cpu", amp="none", loader="torch", workers=0, log_every=1,
                      ckpt_every=100, progress=False, vocab_size=300,
                      overrides={"image_size": 32, **P.ddp_overrides("globallocal")})
    synthetic_root(cfg)
    one = tmp_path / "one"
    pretrain(dataclasses.replace(cfg, batch_size=8, out=str(one)))
    two = tmp_path / "two"
    ranks = H.run_ranks("preset_ranks:pretrain_rank", WORLD, {"cfg": dataclasses.replace(
        cfg, out=str(two), tokenizer=str(one / "tokenizer"))}, tmp_path, timeout=240.0)
    assert [r["steps"] for r in ranks] == [2, 2]
    assert ranks[0]["last"] == ranks[1]["last"]  # every rank logs the mean over the ranks
    want, got = _first_step(one), _first_step(two)
    assert set(got) == set(want) == {"loss", "loss_global", "loss_local"}
    for name, value in want.items():
        assert abs(got[name] - value) <= 2e-5 * abs(value), (name, got[name], value)
