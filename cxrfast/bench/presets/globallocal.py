"""The `globallocal` preset's loss computed the way GLoRIA's released code computes it (marshuang80/gloria:
``models/text_model.py``, ``models/gloria_model.py``, ``loss/gloria_loss.py``), on the model's own encoders
and projections, so that it equals ``model(batch)["loss"]`` to rounding. The benchmark's baseline.

What it does as GLoRIA does:
- ``aggregate_tokens``: for every report, a Python loop over its tokens on the host, word pieces collected
  into a list and summed with ``torch.stack(...).sum(0)`` when the next word starts, the words padded back
  to the token count with zeros (per sample, per token: B · T small tensor operations and host reads);
- ``local_loss``: a loop over the reports, each report's words repeated over the whole image batch, the
  word–region attention, the cosine scores and the aggregation per report
  (`cxrfast.bench.baselines.gloria_local_loss`), cross-entropy both ways, loss0 + loss1;
- ``global_loss``: cosine scores as a batched matrix product divided by the product of the norms (clamped
  at 1e-8), × temp3, cross-entropy both ways.
Where the preset deliberately differs from GLoRIA (cxrfast.models.globallocal's docstring: no [SEP] "word",
the report vector as the mean over the real tokens) this follows the preset, so the two can be compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrfast.bench.baselines import gloria_local_loss
from cxrfast.models.common import masked_mean

__all__ = ["baseline_loss", "aggregate_tokens", "global_loss"]


def aggregate_tokens(tokens: torch.Tensor, word_index: torch.Tensor):
    """GLoRIA's word-piece merge, token by token: tokens [B, T, D] -> (words [B, T, D], lengths list)."""
    B, T, D = tokens.shape
    out, lengths = [], []
    for embs, ids in zip(tokens, word_index.cpu().tolist()):
        agg, bank, current = [], [], None
        for emb, w in zip(embs, ids):
            if w < 0:
                continue
            if w != current and bank:
                agg.append(torch.stack(bank).sum(0))
                bank = []
            bank.append(emb)
            current = w
        if bank:
            agg.append(torch.stack(bank).sum(0))
        lengths.append(len(agg))
        pad = tokens.new_zeros(T - len(agg), D)
        out.append(torch.cat([torch.stack(agg), pad]) if agg else pad)
    return torch.stack(out), lengths


def global_loss(cnn_code: torch.Tensor, rnn_code: torch.Tensor, eps: float = 1e-8, temp3: float = 10.0):
    """GLoRIA's ``global_loss``: (loss0, loss1)."""
    labels = torch.arange(cnn_code.shape[0], device=cnn_code.device)
    cnn_code, rnn_code = cnn_code.unsqueeze(0), rnn_code.unsqueeze(0)
    cnn_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)
    rnn_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores0 = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norm0 = torch.bmm(cnn_norm, rnn_norm.transpose(1, 2))
    scores0 = (scores0 / norm0.clamp(min=eps) * temp3).squeeze(0)
    return F.cross_entropy(scores0, labels), F.cross_entropy(scores0.transpose(0, 1), labels)


def baseline_loss(model, batch) -> torch.Tensor:
    """GLoRIA's total loss, released-style, on `model`'s modules (see the module docstring)."""
    c = model.config
    x = batch.views[:, 0]
    if c.encoder_size:
        x = F.interpolate(x, size=(c.encoder_size,) * 2, mode="bilinear", align_corners=True)
    maps, pooled = model.image_encoder(x)
    regions = model.local_embed(maps[c.local_stage - 1]).flatten(2).transpose(1, 2)
    img_global = model.global_embed(pooled)

    states = model.text_encoder(batch.input_ids, batch.attention_mask)
    tokens = torch.stack(states[-c.last_n_layers:]).sum(0)
    words, lengths = aggregate_tokens(tokens, batch.word_index)
    words = model.word_embed(words)
    txt_global = model.report_embed(masked_mean(tokens, batch.attention_mask))

    dtype = torch.promote_types(regions.dtype, words.dtype)
    l0, l1, _, _ = gloria_local_loss(regions.to(dtype), words.to(dtype), lengths, temp1=c.temp_attention,
                                     temp2=c.temp_aggregate, temp3=c.temp_logits)
    g0, g1 = global_loss(img_global.to(dtype), txt_global.to(dtype), temp3=c.temp_logits)
    return c.local_weight * (l0 + l1) + c.global_weight * (g0 + g1)
