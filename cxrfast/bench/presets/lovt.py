"""The `lovt` preset's loss computed the way LoVT's released code computes it (github.com/philip-mueller/lovt:
``report_encoder.py``, ``aggregation.py``, ``attention.py``, ``local_alignment.py``, ``global_alignment.py``,
``bimodal_alignment_model.py``), on the model's own encoders, projections and attention layers, so that it
equals ``model(batch)["loss"]`` to rounding. The benchmark's baseline for the preset.

What it does as LoVT does:
- the collator's sentence splits, built per report and per sentence in Python from host lists
  (``BatchSentenceSplitsInfo.compute_for_batch``), then ``restructure_reports_into_sentences``: the tokens
  copied into a [B, N_sent, N_sent_tok, d] tensor by boolean-mask indexing (N_sent the batch's longest
  report, N_sent_tok its longest sentence), max-pooled with an additive −∞ mask, padded sentences zeroed;
- the cross-attention with full additive masks, the a2b scores a transposed copy, probabilities times the
  binary mask;
- ``LocalIntraSampleContrastiveLoss``: positive weights from torch.cdist of grid coordinates normalised by
  the diagonal, expanded to [B, N, N] and masked, both score matrices materialised, additive masks;
- ``GlobalNceLoss``: the 2B × 2B score matrix of both modalities, the positives as a first logit column,
  the diagonal filled with −∞, cross-entropy against label 0.
Where the preset deliberately differs from LoVT (cxrfast.models.lovt's docstring), this follows the preset,
so the two can be compared: BatchNorms over sentences see the real sentences only (the packed rows), and
the report's pooling query is the mean of its real sentences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["baseline_loss"]


def _sentence_splits(batch):
    """LoVT's collator: per report, the start and length of each sentence among its non-special tokens,
    then BatchSentenceSplitsInfo's masks (loops over samples and sentences on the host)."""
    starts_batch, lengths_batch = [], []
    for row in batch.sentence_index.cpu().tolist():
        tokens = [s for s in row if s >= 0]
        starts, lengths = [], []
        for pos, s in enumerate(tokens):
            if pos == 0 or s != tokens[pos - 1]:
                starts.append(pos)
                lengths.append(0)
            lengths[-1] += 1
        starts_batch.append(starts)
        lengths_batch.append(lengths)
    B = len(starts_batch)
    n_sent = max(len(s) for s in lengths_batch)
    n_tok = max(n for s in lengths_batch for n in s)
    sentence_mask = torch.zeros(B, n_sent, dtype=torch.bool)
    sentence_token_mask = torch.zeros(B, n_sent, n_tok, dtype=torch.bool)
    for b, lengths in enumerate(lengths_batch):
        sentence_mask[b, :len(lengths)] = True
        for i, n in enumerate(lengths):
            sentence_token_mask[b, i, :n] = True
    return sentence_mask, sentence_token_mask


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    """AttentionMask's additive mask: 0 where True, −∞ where False."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _pool(pool, x, mask=None):
    """GlobalAvgAttentionAggregator(return_weights=True); the query is the mean over real locals (the
    preset's choice; LoVT's torch.mean counts the padding)."""
    if mask is None:
        query = torch.mean(x, dim=1)
    else:
        query = torch.masked_fill(x, ~mask[:, :, None], 0.0).sum(1) / mask.sum(1, keepdim=True).to(x.dtype)
    out, weights = pool(query[:, None, :], key=x, value=x, key_padding_mask=None if mask is None else ~mask)
    return out.squeeze(1), weights.squeeze(1)


def _packed(module, x, mask, d_out):
    """A module applied to the real rows only (BatchNorm statistics over the real sentences), scattered back
    into a zero-padded [B, N, d_out]."""
    rows = module(x[mask])
    return rows.new_zeros(x.shape[0], x.shape[1], d_out).index_put((mask,), rows)


def _pos_weights_grid(H, W, threshold, smooth_lambda, dtype, device):
    """LocalIntraSampleContrastiveLoss's region buffer: threshold_type relative, smooth weights."""
    coords = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")).double()
    coords = coords.view(2, -1).T / math.sqrt(H ** 2 + W ** 2)
    distances = torch.cdist(coords, coords)
    pos_mask = distances <= threshold
    return (pos_mask * torch.exp(-smooth_lambda * distances)).to(device=device, dtype=dtype)


def _local_intra_sample_loss(zl_a, zl_b, mask, weights, pos_weights, temperature):
    """LocalIntraSampleContrastiveLoss.forward (no same-modality or cross-sample negatives, no
    normalisation by the number of negatives): (loss_ab, loss_ba)."""
    B, N, _ = zl_a.size()
    if weights is None:
        weights = zl_a.new_ones(B, N)
    if mask is not None:
        weights = mask * weights
        additive_mask = _additive(mask, zl_a.dtype)
    else:
        additive_mask = zl_a.new_zeros((B, N))
    weights = weights / weights.sum(dim=1, keepdim=True)
    pos_weights = pos_weights.view(1, N, N).expand(B, N, N)
    if mask is not None:
        pos_weights = pos_weights * mask[:, None, :]
    pos_weights = pos_weights / pos_weights.sum(-1, keepdim=True).clamp_min(1e-12)
    zl_a = F.normalize(zl_a, dim=-1, p=2)
    zl_b = F.normalize(zl_b, dim=-1, p=2)
    all_scores_ab = torch.bmm(zl_a, zl_b.transpose(-1, -2)) / temperature
    all_scores_ba = all_scores_ab.transpose(-1, -2)
    pos_scores_ab = pos_weights * all_scores_ab
    pos_scores_ba = pos_weights * all_scores_ba
    all_scores_ab = all_scores_ab + additive_mask[:, None, :]
    all_scores_ba = all_scores_ba + additive_mask[:, None, :]
    loss_ab = -pos_scores_ab.sum(-1) + torch.logsumexp(all_scores_ab, dim=-1)
    loss_ba = -pos_scores_ba.sum(-1) + torch.logsumexp(all_scores_ba, dim=-1)
    return (weights * loss_ab).sum(-1).mean(), (weights * loss_ba).sum(-1).mean()


def _global_nce_loss(zg_1, zg_2, temperature):
    """GlobalNceLoss.forward with negatives_from_same_modality=False: (loss_1to2, loss_2to1)."""
    B = zg_1.size(0)
    zg_1 = F.normalize(zg_1, dim=-1, p=2)
    zg_2 = F.normalize(zg_2, dim=-1, p=2)
    zg_both = torch.cat([zg_1, zg_2], dim=0)
    all_scores = torch.mm(zg_both, zg_both.t()) / temperature  # (2B x 2B)
    pos_scores = all_scores[:B, B:].diagonal()
    labels = torch.zeros(B, dtype=torch.long, device=zg_1.device)
    losses = []
    for negatives in (all_scores[:B, B:], all_scores[B:, :B]):
        logits = torch.empty(B, 1 + B, device=zg_1.device, dtype=all_scores.dtype)
        logits[:, 0] = pos_scores
        logits[:, 1:] = negatives
        logits[:, 1:].diagonal().fill_(float("-inf"))
        losses.append(F.cross_entropy(logits, labels))
    return losses[0], losses[1]


def baseline_loss(model, batch) -> torch.Tensor:
    """The total training loss of `model` (a cxrfast.models.lovt.LovtModel) on `batch`, computed as LoVT's
    released code computes it (see the module docstring). Equal to model(batch)["loss"] to rounding."""
    c = model.config
    att = model.attention

    # ----- scan encoder (ScanEncoderModel.forward) + ModalityModel projections -----
    maps, _ = model.image_encoder(batch.views[:, 0])
    region_features = maps[-1]
    B, d_l, H, W = region_features.size()
    region_features = region_features.view(B, d_l, -1).transpose(-1, -2)  # (B x (H*W) x d_l)
    yg_a, weights_a = _pool(model.image_pool, region_features)
    zl_a = model.image_local(region_features)
    zg_a = model.image_global(yg_a)

    # ----- report encoder (ReportEncoderModel.encode_joint) -----
    sentence_mask, sentence_token_mask = _sentence_splits(batch)
    device = batch.input_ids.device
    sentence_mask, sentence_token_mask = sentence_mask.to(device), sentence_token_mask.to(device)
    token_features = model.text_encoder(batch.input_ids, batch.attention_mask)[-1]
    normal_tokens_mask = batch.sentence_index >= 0  # remove_special_tokens: [CLS], [SEP] and padding
    token_features = token_features * normal_tokens_mask[:, :, None]
    N_sent, N_sent_tok = sentence_token_mask.shape[1:]
    d = token_features.shape[-1]
    features = token_features.new_zeros((B, N_sent, N_sent_tok, d))
    features[sentence_token_mask] = token_features[normal_tokens_mask & batch.attention_mask]
    pooled = features.view(B * N_sent, N_sent_tok, d) + _additive(sentence_token_mask, features.dtype).view(
        B * N_sent, N_sent_tok)[:, :, None]
    sentence_features = torch.max(pooled, dim=1)[0].view(B, N_sent, d)  # GlobalMaxPool
    sentence_features = sentence_features.masked_fill(~sentence_mask[:, :, None], 0.0)
    yg_b, weights_b = _pool(model.text_pool, sentence_features, sentence_mask)
    zl_b = _packed(model.text_local, sentence_features, sentence_mask, c.proj_dim)
    zg_b = model.text_global(yg_b)

    # ----- CrossAttention (symmetric, projected keys / values / outputs, BatchNorm) -----
    keys_a, keys_b = att.key(zl_a), att.key(zl_b)
    values_a, values_b = att.value(zl_a), att.value(zl_b)
    attention_scores_b2a = keys_a @ keys_b.transpose(-1, -2) / math.sqrt(keys_a.shape[-1])
    attention_scores_a2b = attention_scores_b2a.transpose(-1, -2).clone()
    if c.attention_temperature != 1.0:
        attention_scores_b2a = attention_scores_b2a / c.attention_temperature
        attention_scores_a2b = attention_scores_a2b / c.attention_temperature
    # b2a: each region over its report's sentences
    probs = torch.softmax(attention_scores_b2a + _additive(sentence_mask, attention_scores_b2a.dtype)[:, None, :], -1)
    zl_b2a = att.norm(att.output(probs @ values_b))
    # a2b: each sentence over its image's regions (no region mask), times the sentences' binary mask
    probs = torch.softmax(attention_scores_a2b, dim=-1) * sentence_mask[:, :, None]
    zl_a2b = _packed(lambda x: att.norm(att.output(x)), probs @ values_a, sentence_mask, c.proj_dim)

    # ----- LossModule: local losses, global loss, weighted sum -----
    l_weights_a = weights_a.detach() if c.local_weights_from_pooling else None
    l_weights_b = weights_b.detach() if c.local_weights_from_pooling else None
    pos_a = _pos_weights_grid(H, W, c.distance_threshold, c.smooth_lambda, zl_a.dtype, device)
    # the report: threshold_type absolute, distance_threshold 0, no smoothing → |i − j| ≤ 0
    coords = torch.arange(N_sent, device=device)
    pos_b = ((coords[:, None] - coords).abs() <= 0).to(zl_b.dtype)
    losses = {}
    losses["local_a_l2att"], losses["local_a_att2l"] = _local_intra_sample_loss(
        zl_a, zl_b2a, None, l_weights_a, pos_a, c.temp_local)
    losses["local_b_l2att"], losses["local_b_att2l"] = _local_intra_sample_loss(
        zl_b, zl_a2b, sentence_mask, l_weights_b, pos_b, c.temp_local)
    losses["global_a2b"], losses["global_b2a"] = _global_nce_loss(zg_a, zg_b, c.temp_global)
    weights = {"global_a2b": c.global_weight * c.global_weights[0], "global_b2a": c.global_weight * c.global_weights[1],
               **{k: c.local_weight for k in ("local_a_l2att", "local_a_att2l", "local_b_l2att", "local_b_att2l")}}
    return sum(weights[key] * loss for key, loss in losses.items())
