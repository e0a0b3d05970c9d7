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


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """world → per-rank results of `all_checks` (one spawn per world size; failures are cached too)."""
    cache = {}

    def get(world):
        if world not in cache:
            try:
                out = tmp_path_factory.mktemp(f"world{world}")
                cache[world] = H.run_ranks("all_checks", world, {"cases": CASES, "ddp": DDP_CFG}, out)
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
        for name in ("gather", "loss"):
            msg = res["errors"][name]
            assert msg is not None, f"rank {rank}: mismatched local batch sizes did not raise ({name})"
            assert "batch sizes differ across ranks" in msg and sizes in msg, msg


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
