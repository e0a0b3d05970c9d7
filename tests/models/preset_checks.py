"""Checks every preset's tests run (tests/models/test_<preset>.py use these)."""

from __future__ import annotations

import contextlib
import time

import torch

import cxrfast
from cxrfast.models.factory import create_model, random_batch


def tiny(preset: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_model(preset, size="tiny", **overrides)


def forward_backward(model, batch):
    """(losses dict of floats, grads by parameter name, seconds) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    out = model(batch)
    out["loss"].backward()
    seconds = time.perf_counter() - t0
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads, seconds


@contextlib.contextmanager
def impl(name: str):
    """cxrfast's dispatch forced to `name` for every op call in the block (CXRFAST_IMPL)."""
    import os

    old = os.environ.get("CXRFAST_IMPL")
    os.environ["CXRFAST_IMPL"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CXRFAST_IMPL")
        else:
            os.environ["CXRFAST_IMPL"] = old


@contextlib.contextmanager
def count_host_syncs():
    """Counts Tensor.item / Tensor.tolist / Tensor.__bool__ calls (host syncs a forward must not make per
    token or sample); yields a dict with the count and the call sites."""
    import traceback

    state = {"count": 0, "where": []}
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist")}

    def wrap(name):
        real = originals[name]

        def counted(self, *a, **k):
            state["count"] += 1
            state["where"].append("".join(traceback.format_stack(limit=4)[:-1]))
            return real(self, *a, **k)

        return counted

    for name in originals:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield state
    finally:
        for name, real in originals.items():
            setattr(torch.Tensor, name, real)


def batch_for(model, size=4, seed=0, **kw):
    return random_batch(model, size, seed=seed, **kw)


__all__ = ["tiny", "forward_backward", "impl", "count_host_syncs", "batch_for", "cxrfast"]
