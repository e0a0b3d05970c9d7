"""REFERS' step as released (funnyzhou/REFERS, `Pre-train/refers/models/captioning.py`), on a
cxrfast.models.refers model's modules: the total loss ``caption + contrastive`` as that code computes it.

- the ViT runs once per view slot (``self.visual(batch["image"])``, ``(batch["image2"])``, ...), not once on
  all B·V images;
- the gates are V separate linear maps (``fusion.fc1``, ``fc2``, ``fc3``: here the rows of the model's one
  Linear) on the views' tokens concatenated as ``x.view(-1, 768)`` rows;
- the decoder is the model's (its modules are the preset's; the released head is the same layer stack) and
  the caption loss ``CrossEntropyLoss(ignore_index=pad)`` on ``logits[:, :-1]`` vs ``tokens[:, 1:]``;
- the contrastive loss is ``LossesOfConVIRT``: a Python loop over the samples, for each one the cosines of its
  image with every report and of its report with every image, ``-log(exp(cos/τ) / Σ exp(cos/τ))`` in fp32,
  λ · image→report + (1 − λ) · report→image, averaged. ``contrastive="clip"`` computes the same with
  open_clip-style B × B logits instead of the loop.

One change, so that the baseline is the same function as the preset: the released ``text_image`` ends in
``.item()`` (its report→image term carries no gradient); here it stays a tensor. Missing views (which the
released data never has) are zeroed and masked out of the decoder's cross-attention as the preset does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["baseline_loss", "convirt_loop", "convirt_clip"]


def convirt_loop(v: torch.Tensor, u: torch.Tensor, tau: float = 0.1, lambd: float = 0.75) -> torch.Tensor:
    """LossesOfConVIRT.forward (image_text + text_image per sample), without the ``.item()``."""
    assert v.size(0) == u.size(0)
    res = 0.0
    v = v.float()
    u = u.float()
    for i in range(v.size(0)):
        # image_text
        item1 = torch.exp(torch.divide(torch.cosine_similarity(v[i], u[i], dim=0), tau))
        item2 = torch.exp(torch.divide(torch.cosine_similarity(v[i].unsqueeze(0), u, dim=1), tau)).sum()
        image_text = -torch.log(torch.divide(item1, item2))
        # text_image (released: ``-torch.log(...).item()``)
        item2 = torch.exp(torch.divide(torch.cosine_similarity(v, u[i].unsqueeze(0), dim=1), tau)).sum()
        text_image = -torch.log(torch.divide(item1, item2))
        res += lambd * image_text + (1 - lambd) * text_image
    return res / v.size(0)


def convirt_clip(v: torch.Tensor, u: torch.Tensor, tau: float = 0.1, lambd: float = 0.75) -> torch.Tensor:
    """The same loss with open_clip's pattern: both B × B logits matrices, cross-entropy on each."""
    v = F.normalize(v.float(), dim=-1)
    u = F.normalize(u.float(), dim=-1)
    logits_per_image = v @ u.T / tau
    logits_per_text = u @ v.T / tau
    labels = torch.arange(v.shape[0], device=v.device)
    return lambd * F.cross_entropy(logits_per_image, labels) + (1 - lambd) * F.cross_entropy(logits_per_text, labels)


def baseline_loss(model, batch, contrastive: str = "loop") -> torch.Tensor:
    """REFERS' total loss, released-style, on `model`'s modules (see the module docstring)."""
    if contrastive not in ("loop", "clip"):
        raise ValueError(f"baseline_loss: contrastive must be 'loop' or 'clip', got {contrastive!r}")
    c = model.config
    B, V = batch.view_mask.shape
    tokens, globals_ = [], []
    for view in range(V):
        feats = model.image_encoder(batch.views[:, view])              # [B, 1 + P, D]
        global_feature = feats[:, 0, :].unsqueeze(1)
        present = batch.view_mask[:, view, None, None]
        tokens.append(torch.where(present, feats[:, 1:] + global_feature, 0))
        globals_.append(torch.where(present, global_feature, 0))
    D = tokens[0].shape[-1]
    x123 = torch.cat([t.reshape(-1, D) for t in tokens], 1)            # fusion: x.view(-1, 768), cat
    W, b = model.fusion.gate.weight, model.fusion.gate.bias
    weighted = []
    for view in range(V):                                              # fc1, fc2, fc3
        weight = torch.sigmoid(F.linear(x123, W[view:view + 1], b[view:view + 1]))
        weighted.append(tokens[view] * weight.view(B, -1).unsqueeze(2))
    visual_features_all = torch.cat(weighted, 1)                       # [B, V·P, D]
    memory_mask = batch.view_mask.repeat_interleave(tokens[0].shape[1], dim=1)

    global_feature_all = torch.cat(globals_, 2).flatten(1)             # [B, V·D]
    states = model.text_encoder(batch.input_ids, batch.attention_mask)
    caption_feature = model.text_projection(model.text_encoder.model.pooler(states[-1]))
    convirt = convirt_loop if contrastive == "loop" else convirt_clip
    contrastive_loss = convirt(global_feature_all, caption_feature, c.temperature, c.contrastive_lambda)

    output_logits = model.decoder(visual_features_all, memory_mask, batch.input_ids, batch.attention_mask)
    loss = F.cross_entropy(output_logits[:, :-1].contiguous().view(-1, c.vocab_size),
                           batch.input_ids[:, 1:].contiguous().view(-1), ignore_index=c.pad_id)
    return c.caption_weight * loss + c.contrastive_weight * contrastive_loss
