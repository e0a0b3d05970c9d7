"""Rank programs and shared pieces of test_presets_ddp.py (run by dist_harness.run_ranks as "preset_ranks:...").

Every case is one preset at size "tiny" in float64: its config, its initial weights (a state dict made by the
parent and shipped to the ranks) and its global batch; rank r takes rows [r·b, (r+1)·b). A rank runs one
training step of DistributedDataParallel(model) (forward, backward: DDP averages the gradients) and one
forward in evaluation mode, and returns the losses, the averaged gradients and the buffers. The parent runs
the same two forwards on the whole batch in one process.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import torch

# the batch fields indexed by sample (Batch.study_ids is a list, sliced apart)
ROW_FIELDS = ("views", "view_mask", "input_ids", "attention_mask", "word_index", "sentence_index", "kind", "labels")


def batch_rows(batch, sl: slice):
    """The samples `sl` of a Batch (a shallow copy with every per-sample field sliced)."""
    part = copy.copy(batch)
    for f in ROW_FIELDS:
        setattr(part, f, getattr(batch, f)[sl])
    part.study_ids = list(batch.study_ids[sl])
    if batch.masks is not None:
        part.masks = batch.masks[sl]
    return part


def ddp_overrides(preset: str) -> dict:
    """Config overrides for an exact comparison: no dropout (its draws are each process's own: with dropout
    two ranks equal one process in distribution only) and the word–region loss over the global batch where
    the preset has the option (off by default, as the released codes)."""
    from cxrfast.models.config import EncoderSpec, config_class

    cls = config_class(preset)
    cfg = cls.for_size("tiny")
    over = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, EncoderSpec) and value.kind in ("bert", "vit"):
            over[f.name] = EncoderSpec(value.kind, {**value.config, "hidden_dropout_prob": 0.0,
                                                    "attention_probs_dropout_prob": 0.0}, value.pretrained)
        elif "dropout" in f.name and isinstance(value, float):
            over[f.name] = 0.0
    if "local_loss_global_batch" in {f.name for f in dataclasses.fields(cfg)}:
        over["local_loss_global_batch"] = True
    return over


def build(preset: str, config_dict: dict, state: dict):
    """The preset's model from its config, in float64, with the given weights and buffers."""
    from cxrfast.models.config import config_class
    from cxrfast.models.factory import create_model

    model = create_model(preset, config=config_class(preset).from_dict(config_dict)).double()
    model.load_state_dict(state)
    return model


def as_float64(batch):
    batch.views = batch.views.double()
    return batch


def step(net, model, batch) -> dict:
    """One training forward + backward of `net` (the model or DDP(model)) and one evaluation forward:
    {"train": losses, "grads": {name: grad or None} of the trainable parameters, "buffers": state after the
    step, "eval": losses}."""
    net.train()
    out = net(batch)
    out["loss"].backward()
    grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()
             if p.requires_grad}  # (LoVT's frozen BERT layers are not trained)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    net.eval()
    with torch.no_grad():
        evaluated = net(batch)
    return {"train": {k: v.detach() for k, v in out.items()}, "grads": grads, "buffers": buffers,
            "eval": {k: v.detach() for k, v in evaluated.items()}}


def preset_steps(rank: int, world: int, cases: list) -> dict:
    """Every case on this rank: DistributedDataParallel(model) on its rows of the global batch."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    for case in cases:
        torch.manual_seed(1234 + rank)  # anything drawn from torch's generator would differ from one process
        model = build(case["preset"], case["config"], case["state"])
        b = len(case["batch"]) // world
        batch = batch_rows(case["batch"], slice(rank * b, (rank + 1) * b))
        results[case["id"]] = step(DDP(model, find_unused_parameters=True), model, batch)
    return results


def pretrain_rank(rank: int, world: int, payload: dict) -> dict:
    """cxrfast.train.loop.pretrain on this rank, the process group already initialised (the harness's file
    store): the loop takes RANK / WORLD_SIZE / LOCAL_RANK from the environment, as under torchrun."""
    from cxrfast.train.loop import pretrain

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0")
    result = pretrain(payload["cfg"])
    return {"last": result.last, "steps": result.steps}
