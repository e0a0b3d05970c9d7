"""Baseline of the `mixed` preset's loss: what a research implementation of mixed-data MLM + multi-scale MVM
does — the dataset masks each sample on its own (``__getitem__``), and the step loops over the samples,
dispatching on their kind: a paired sample runs the stream on its patches and report, an image-only sample
on its patches alone, a text-only sample on its report alone (nothing padded in for the absent modality);
the masked tokens and patches are picked by boolean indexing (``h[mask]``); the loss sums are divided by
the batch's counts at the end. Each ``int(...)`` / ``bool(...)`` / boolean index is a host sync, per sample.

It uses the model's own modules and its per-sample mask draw (``cxrfast.models.mixed.mlm_masks`` /
``mvm_mask`` on one row: the same masks as the batched draw), so ``baseline_loss(model, batch)`` equals
``model(batch)["loss"]`` to rounding: the test checks it. Like forward, it advances the model's mask
counter in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrfast.models.mixed import mask_key, mlm_masks, mvm_mask, patchify, widen

__all__ = ["baseline_loss"]


def baseline_loss(model, batch) -> torch.Tensor:
    c = model.config
    device = batch.input_ids.device
    key = mask_key(c.mask_seed, model.mask_step.to(device))
    if model.training:
        model.mask_step.add_(1)
    T = batch.input_ids.shape[1]
    K = model.n_predictions(T)
    N = model.grid ** 2
    P = c.patch_size
    zero = model.mlm_head.bias.sum() * 0.0
    mlm_sum, mlm_count = zero, 0
    mvm_sum, mvm_count = [zero for _ in c.mvm_scales], 0
    for b in range(len(batch)):
        kind = int(batch.kind[b])
        has_image = kind != 2 and bool(batch.view_mask[b, 0])
        has_text = kind != 1 and bool(batch.attention_mask[b].any())
        row = torch.tensor([b], device=device)
        parts, pads = [], []
        if has_image:
            image = batch.views[b:b + 1, 0].to(model.image_embed.patch.weight.dtype)
            patch_mask = mvm_mask(c, key, row, torch.ones(1, dtype=torch.bool, device=device), N)
            parts.append(model.image_embed(image, patch_mask) + model.modality_embed.weight[0])
            pads.append(torch.ones(1, 1 + N, dtype=torch.bool, device=device))
        if has_text:
            ids, attn = batch.input_ids[b:b + 1], batch.attention_mask[b:b + 1]
            m = mlm_masks(c, key, row, ids, attn, torch.ones(1, dtype=torch.bool, device=device), K)
            parts.append(model.text_embed(m["input_ids"]) + model.modality_embed.weight[1])
            pads.append(attn)
        dtype = parts[0].dtype
        h = model.transformer(torch.cat([p.to(dtype) for p in parts], 1), torch.cat(pads, 1))[0]
        if has_image:
            patches = h[1:1 + N][patch_mask[0]]                           # [n_masked, D]
            mvm_count += patches.shape[0]
            for i, (f, head) in enumerate(zip(c.mvm_scales, model.mvm_heads)):
                pooled = F.avg_pool2d(image, f) if f > 1 else image
                target = patchify(pooled, P // f)[0][patch_mask[0]]
                diff = widen(head(patches)) - widen(target)
                err = diff.abs() if c.mvm_loss == "l1" else diff.square()
                mvm_sum[i] = mvm_sum[i] + err.mean(-1).sum()
        if has_text:
            text = h[1 + N:] if has_image else h
            sel = m["valid"][0]
            positions, labels = m["positions"][0][sel], m["labels"][0][sel]
            logits = widen(model.mlm_head(text[positions], model.text_embed.word.weight))
            mlm_sum = mlm_sum + F.cross_entropy(logits, labels, reduction="sum")
            mlm_count += int(sel.sum())
    mlm = mlm_sum / max(mlm_count, 1)
    mvm = sum(s / max(mvm_count, 1) for s in mvm_sum) / len(mvm_sum)
    return c.mlm_weight * mlm + c.mvm_weight * mvm
