"""cxrfast.distributed on real process groups: gloo on CPU, world sizes 2 and 3, 127.0.0.1 only.

The contract under test (cxrfast.distributed.contrastive_loss): with L the single-process full-batch
loss of the gathered batch and ℓ_r what rank r returns,
  * mean_r ℓ_r = L; gather="local": ℓ_r = (w_i2t·Σ_{rows of r} CE_i2t + w_t2i·Σ_{rows of r} CE_t2i) / B_local,
    gather="full": ℓ_r = L;
  * rank r's gradient w.r.t. its local embedding rows = W · ∂L/∂(those rows) (the gather's backward sums
    every rank's loss), so DDP's average over ranks of any encoder-parameter gradient is ∂L/∂θ;
  * the DDP average of the per-rank logit-scale gradients is ∂L/∂logit_scale (no factor W).
Everything is compared with the float64 reference `cxrfast.reference.contrastive_loss` of the global batch.
One spawn per world size runs every case (process start-up dominates the cost), cached per module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dist_harness as H
from cxrfast.reference import contrastive_loss as reference_loss
from cxrfast.reference.contrastive import positive_mask, similarity_matrix

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

HERE = Path(__file__).resolve().parent
WORLDS = (2, 3)
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _case(id, impl, dtype, *, groups, gather, eps=0.1, weights=(0.75, 0.25), normalize=True, b=5, dim=7, seed=0):
    return dict(id=id, impl=impl, dtype=dtype, groups=groups, gather=gather, eps=eps, weights=weights,
                normalize=normalize, b=b, dim=dim, seed=seed)


# B_local = 5 (odd; B_global 10 or 15, not a tile multiple), D = 7: tiny for the Triton interpreter.
CASES = [
    _case("chunked-f64-local", "chunked", "float64", groups=False, gather="local", seed=1),
    _case("chunked-f64-local-groups", "chunked", "float64", groups=True, gather="local", seed=2),
    _case("chunked-f64-full-groups", "chunked", "float64", groups=True, gather="full", seed=3),
    _case("chunked-f64-local-plain", "chunked", "float64", groups=False, gather="local", eps=0.0,
          weights=(0.5, 0.5), normalize=False, seed=4),
    _case("triton-f32-local", "triton", "float32", groups=False, gather="local", seed=5),
    _case("triton-f32-local-groups", "triton", "float32", groups=True, gather="local", seed=6),
    _case("triton-f32-full", "triton", "float32", groups=False, gather="full", seed=7),
    _case("triton-f32-full-groups", "triton", "float32", groups=True, gather="full", seed=8),
]
DDP_CFG = dict(b=4, d_image=6, d_text=5, dim=7, seed=11)


def _local_case(id, op, *, b, seed, shared=False, weights=(1.0, 1.0), reduction="mean"):
    return dict(id=id, op=op, b=b, seed=seed, shared=shared, weights=weights, reduction=reduction)


# the word–region and triplet losses of cxrfast.distributed (float64; B_local 2 or 3, 5 regions, ≤ 4 words)
LOCAL_CASES = [
    _local_case("local", "local", b=3, seed=1),
    _local_case("local-weights-shared", "local", b=2, seed=2, shared=True, weights=(0.75, 0.25)),
    _local_case("local_triplet-mean-shared", "local_triplet", b=3, seed=3, shared=True),
    _local_case("local_triplet-sum", "local_triplet", b=2, seed=4, reduction="sum"),
    _local_case("triplet-mean", "triplet", b=3, seed=5),
    _local_case("triplet-sum", "triplet", b=2, seed=6, reduction="sum"),
]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """world → per-rank results of `all_checks` (one spawn per world size; failures are cached too)."""
    cache = {}

    def get(world):
        if world not in cache:
            try:
                out = tmp_path_factory.mktemp(f"world{world}")
                cache[world] = H.run_ranks("all_checks", world, {"cases": CASES, "ddp": DDP_CFG, "local": LOCAL_CASES},
                                          out)
            except AssertionError as exc:
                cache[world] = exc
        if isinstance(cache[world], Exception):
            raise cache[world]
        return cache[world]

    return get


def assert_rel(name: str, got, want, rtol: float) -> None:
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got - want).abs().max().item()
    scale = max(want.abs().max().item(), 1e-3)
    assert err <= rtol * scale, f"{name}: max |got − want| = {err:.3e} > {rtol:.0e} · {scale:.3e}"


def per_row_cross_entropies(image, text, scale, *, normalize, eps, groups):
    """(CE_i2t [B], CE_t2i [B]) of the global batch in float64, straight from the definition."""
    s = similarity_matrix(image, text, scale, normalize)
    n = s.shape[0]
    pos = positive_mask(groups, n, s.device).to(s.dtype)
    target = (1.0 - eps) * pos / pos.sum(1, keepdim=True) + eps / n
    return (-(target * torch.log_softmax(s, 1)).sum(1), -(target * torch.log_softmax(s.t(), 1)).sum(1))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
@pytest.mark.parametrize("world", WORLDS)
def test_loss_and_gradients_match_full_batch(ranks, world, case):
    results = [r["loss"][case["id"]] for r in ranks(world)]
    rtol, b = RTOL[case["dtype"]], case["b"]
    dtype = getattr(torch, case["dtype"])
    image, text, groups = H.make_batch(world, b, case["dim"], dtype=dtype, groups=case["groups"], seed=case["seed"])
    if groups is not None:  # the point of these cases: studies with views on more than one rank
        owners = {int(g): {i // b for i in range(world * b) if groups[i] == g} for g in groups}
        assert any(len(o) > 1 for o in owners.values())
    image, text = image.double().requires_grad_(True), text.double().requires_grad_(True)
    scale = torch.tensor(H.LOGIT_SCALE, dtype=torch.float64, requires_grad=True)
    opts = dict(normalize=case["normalize"], weights=case["weights"], label_smoothing=case["eps"], groups=groups)
    full = reference_loss(image, text, scale, **opts)
    g_image, g_text, g_scale = torch.autograd.grad(full, (image, text, scale), retain_graph=True)

    ce_i2t, ce_t2i = per_row_cross_entropies(image, text, scale, normalize=case["normalize"], eps=case["eps"],
                                             groups=groups)
    w = case["weights"]
    assert_rel("definition", (w[0] * ce_i2t + w[1] * ce_t2i).mean(), full, 1e-12)

    for rank, res in enumerate(results):
        sl = H.rank_slice(rank, b)
        assert res["dtype"] == (torch.float64 if dtype == torch.float64 else torch.float32)
        if case["gather"] == "local":
            mine = (w[0] * ce_i2t[sl].sum() + w[1] * ce_t2i[sl].sum()) / b
        else:
            mine = full
        assert_rel(f"rank {rank} loss", res["loss"], mine, rtol)
        (g_scale_mine,) = torch.autograd.grad(mine, scale, retain_graph=True)
        assert_rel(f"rank {rank} ∂loss/∂logit_scale", res["scale_grad"], g_scale_mine, rtol)
        # the gather's backward sums all ranks' losses: W × the full-batch gradient of these rows
        assert_rel(f"rank {rank} image rows / W", res["image_grad"] / world, g_image[sl], rtol)
        assert_rel(f"rank {rank} text rows / W", res["text_grad"] / world, g_text[sl], rtol)

    # what DDP does for replicated parameters: average over ranks
    assert_rel("mean loss", torch.stack([r["loss"].double() for r in results]).mean(), full, rtol)
    assert_rel("DDP-averaged ∂/∂logit_scale", torch.stack([r["scale_grad"].double() for r in results]).mean(),
               g_scale, rtol)


@pytest.mark.parametrize("world", WORLDS)
def test_all_gather_with_grad(ranks, world):
    results = [r["gather"] for r in ranks(world)]
    ts = [torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100 * r for r in range(world)]
    total_coeff = sum(r["coeff"] for r in results)
    for rank, res in enumerate(results):
        assert torch.equal(res["out"], torch.cat(ts))
        # gradient of Σ_r' (coeff_r' · gathered) w.r.t. this rank's rows
        assert torch.allclose(res["grad"], total_coeff[3 * rank:3 * rank + 3], rtol=0, atol=1e-13)
        sizes = str([r + 2 for r in range(world)])
        for name in ("gather", "loss", "local"):
            msg = res["errors"][name]
            assert msg is not None, f"rank {rank}: mismatched local batch sizes did not raise ({name})"
            assert "batch sizes differ across ranks" in msg and sizes in msg, msg
        msg = res["errors"]["negatives"]
        assert msg is not None and f"`negatives[1]` = {2 * rank + 1} is the sample itself" in msg, msg


@pytest.mark.parametrize("world", WORLDS)
def test_ddp_parameter_gradients_match_single_process(ranks, world):
    model, image_in, text_in, groups = H.ddp_inputs(world, DDP_CFG)
    emb_i, emb_t, scale = model(image_in, text_in)
    full = reference_loss(emb_i, emb_t, scale, weights=(0.75, 0.25), label_smoothing=0.1, groups=groups)
    full.backward()
    want = {k: p.grad for k, p in model.named_parameters()}
    assert set(want) == {"image.weight", "image.bias", "text.weight", "text.bias", "log_scale"}
    for rank, res in enumerate(ranks(world)):
        for gather in ("local", "full"):
            got = res["ddp"][gather]
            for k in want:
                assert_rel(f"rank {rank} {gather} {k}", got["grads"][k], want[k], 1e-10)
            if gather == "full":
                assert_rel(f"rank {rank} full loss", got["loss"], full, 1e-10)


# ------------------------------------------------- word–region and triplet losses, statistics, global means

def _share_of(per_sample: torch.Tensor, rank: int, b: int, world: int, reduction: str) -> torch.Tensor:
    """W × rank's share of the global reduction of per-sample terms."""
    mine = per_sample[H.rank_slice(rank, b)].sum() * world
    return mine / per_sample.shape[0] if reduction == "mean" else mine


def _local_reference(case, regions, words, lengths, negatives):
    """(the single-process loss of the global batch, its per-sample terms ℓ [B]; W × share = W Σ_rank ℓ / B or
    W Σ ℓ), in float64 by the definitions (cxrfast.reference)."""
    from cxrfast.reference import local as ref_local
    from cxrfast.reference import triplet_loss

    if case["op"] == "triplet":
        full = triplet_loss(regions.mean(1), words.mean(1), margin=0.5, negatives=negatives,
                            reduction=case["reduction"])
        per = triplet_loss(regions.mean(1), words.mean(1), margin=0.5, negatives=negatives, reduction="none")
    elif case["op"] == "local_triplet":
        full = ref_local.local_triplet_loss(regions, words, lengths, margin=0.5, negatives=negatives,
                                            reduction=case["reduction"], **H.LOCAL_HYPER)
        per = ref_local.local_triplet_loss(regions, words, lengths, margin=0.5, negatives=negatives,
                                           reduction="none", **H.LOCAL_HYPER)
    else:  # ℓ_i = w₀ CE(row i) + w₁ CE(column i) of 10 · S, written out
        s = 10.0 * ref_local.word_region_similarity(regions, words, lengths, **H.LOCAL_HYPER)
        w = case["weights"]
        per = -w[0] * torch.log_softmax(s, 1).diagonal() - w[1] * torch.log_softmax(s, 0).diagonal()
        full = ref_local.local_contrastive_loss(regions, words, lengths, temp_logits=10.0, weights=w,
                                                **H.LOCAL_HYPER)
        assert_rel("definition", per.mean(), full, 1e-12)
    return full, per


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c["id"] for c in LOCAL_CASES])
@pytest.mark.parametrize("world", WORLDS)
def test_word_region_and_triplet_losses_match_full_batch(ranks, world, case):
    """local_contrastive_loss / triplet_loss / local_triplet_loss: rank r returns W × its share of the
    single-process loss of the global batch, its rows' gradients are W × the full-batch ones (the gathers'
    backward), and the ranks' mean is the full loss."""
    results = [r["local"][case["id"]] for r in ranks(world)]
    b, reduction = case["b"], case["reduction"]
    v, w, lengths, negatives = H.make_local_batch(world, b, seed=case["seed"])
    assert (negatives[:-1] // b != torch.arange(world * b - 1) // b).any()  # some negatives on another rank
    v, w = v.requires_grad_(True), w.requires_grad_(True)
    full, per = _local_reference(case, v, w, lengths, negatives)
    g_v, g_w = torch.autograd.grad(full, (v, w), retain_graph=True)
    for rank, res in enumerate(results):
        sl = H.rank_slice(rank, b)
        assert_rel(f"rank {rank} loss", res["loss"], _share_of(per, rank, b, world, reduction), 1e-10)
        assert_rel(f"rank {rank} regions / W", res["regions_grad"] / world, g_v[sl], 1e-10)
        assert_rel(f"rank {rank} words / W", res["words_grad"] / world, g_w[sl], 1e-10)
    assert_rel("mean loss", torch.stack([r["loss"] for r in results]).mean(), full, 1e-10)


@pytest.mark.parametrize("world", WORLDS)
def test_global_rows_means_and_batch_statistics(ranks, world):
    """Uneven local sizes (rank r holds r + 2 rows) and counts (rank 0 selects none): global_rows places each
    rank, batch_moments gives the selected rows' statistics of all ranks with the gradients of one BatchNorm
    over them, global_mean returns W × local sum / global count (the ranks' mean: the full mean)."""
    rows, mask, coeff = H.statistics_inputs(world)
    x = rows.clone().requires_grad_(True)
    sel = x[mask]
    mean, var = sel.mean(0), sel.var(0, unbiased=False)
    bn_loss = (coeff * (x - mean) * torch.rsqrt(var + 1e-5) * mask[:, None]).sum()
    (g_bn,) = torch.autograd.grad(bn_loss, x)
    full_mean = (coeff * x * mask[:, None]).sum(0) / mask.sum()
    (g_mean,) = torch.autograd.grad(full_mean.sum(), x)
    results = [r["statistics"] for r in ranks(world)]
    start = 0
    for rank, res in enumerate(results):
        sl = slice(start, start + H.rows_of(rank))
        assert res["rows"] == (start, rows.shape[0])
        assert float(res["n"]) == float(mask.sum())
        assert_rel(f"rank {rank} mean", res["mean"], mean, 1e-12)
        assert_rel(f"rank {rank} var", res["var"], var, 1e-12)
        assert_rel(f"rank {rank} BatchNorm gradient", res["bn_grad"], g_bn[sl], 1e-10)
        assert_rel(f"rank {rank} global_mean / W", res["mean_grad"] / world, g_mean[sl], 1e-12)
        start = sl.stop
    assert_rel("mean of global_mean", torch.stack([r["global_mean"] for r in results]).mean(0), full_mean, 1e-12)


def test_torchrun_two_processes():
    env = {**os.environ, **H.child_env()}  # the script's own folder is on its sys.path (dist_harness)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "torchrun_loss.py")]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=H.JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in {H.JOIN_TIMEOUT_S:.0f} s:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    found = re.findall(r"^LOSS (\S+)$", proc.stdout, flags=re.M)
    assert len(found) == 1, proc.stdout + proc.stderr
    image, text, groups = H.make_batch(2, 3, 5, groups=True, seed=7)
    want = reference_loss(image, text, 4.0, weights=(0.75, 0.25), label_smoothing=0.1, groups=groups)
    assert abs(float(found[0]) - want.item()) <= 1e-10 * abs(want.item())


# ----------------------------------------------------------------- no process group: single process

def test_without_process_group_is_the_single_process_loss():
    from cxrfast import distributed
    from cxrfast.ops.contrastive import contrastive_loss

    assert not torch.distributed.is_initialized()
    image, text, groups = H.make_batch(1, 6, 5, groups=True, seed=3)
    t = image.clone()
    assert distributed.all_gather_with_grad(t) is t
    for gather in ("local", "full"):
        got = distributed.contrastive_loss(image, text, 3.0, groups=groups, label_smoothing=0.1, impl="chunked",
                                           gather=gather)
        want = contrastive_loss(image, text, 3.0, groups=groups, label_smoothing=0.1, impl="chunked")
        assert torch.equal(got, want)


@pytest.mark.parametrize("kwargs, message", [
    (dict(gather="ring"), "`gather` must be one of ('local', 'full')"),
    (dict(impl="reference"), "no rank-local form"),
    (dict(impl="cuda"), "`impl` must be one of ('auto', 'triton', 'chunked')"),
])
def test_argument_errors(kwargs, message):
    from cxrfast import distributed

    image, text, _ = H.make_batch(1, 4, 3)
    with pytest.raises(ValueError) as info:
        distributed.contrastive_loss(image, text, 2.0, **kwargs)
    assert message in str(info.value)
