"""The `joimternet` preset's loss as the released code computes it (JoImTeR_MLMI_2021: trainer_pretrain.py and
misc/losses.py: sent_loss, words_loss, sent_triplet_loss, words_triplet_loss, GlobalAttention.func_attention),
on the model's own encoders and projections and the model's draws of this step:

- word pieces merged into words by a Python loop over samples and tokens (the released vocabulary is
  word-level; this is what a word-piece port of it does per token);
- the sentence loss over a B × B cosine matrix, the word loss by a loop over reports, each attending over all
  B images ([B, nef, h, w] maps, func_attention's bmm / softmax / softmax), into a B × B similarity matrix;
- the triplet losses by per-sample gathers (sentences) and a per-sample loop of one-pair word similarities
  (words), the negatives shared, each report read at its own length (the preset's documented deviation from
  the released anchor-length quirk);
- MLM on a second BERT pass over the corrupted reports (the released trainer runs it on its own batches),
  nn.CrossEntropyLoss over the chosen tokens.

    loss = baseline_loss(model, batch)      # == model(batch)["loss"] to rounding (model.eval(): same dropout)

In training mode it advances the model's draws as model(batch) does, so a loop of baseline steps draws anew
every step as the preset (and the released trainer) does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["baseline_loss"]


def _cosine_similarity(x1, x2, dim=1, eps=1e-8):
    return (torch.sum(x1 * x2, dim) / (torch.norm(x1, 2, dim) * torch.norm(x2, 2, dim)).clamp(min=eps)).squeeze()


def _func_attention(query, context, gamma1):
    """query [b, nef, n], context [b, nef, h, w] → (weighted context [b, nef, n], attention [b, n, h·w])."""
    batch_size, query_len = query.size(0), query.size(2)
    source_len = context.size(2) * context.size(3)
    context = context.view(batch_size, -1, source_len)
    attn = torch.bmm(torch.transpose(context, 1, 2).contiguous(), query)     # [b, hw, n]
    attn = nn.Softmax(-1)(attn.view(batch_size * source_len, query_len))    # over words
    attn = torch.transpose(attn.view(batch_size, source_len, query_len), 1, 2).contiguous()
    attn = nn.Softmax(-1)(attn.view(batch_size * query_len, source_len) * gamma1)  # over regions
    attn = attn.view(batch_size, query_len, source_len)
    return torch.bmm(context, torch.transpose(attn, 1, 2).contiguous()), attn


def _sent_loss(cnn_code, rnn_code, labels, gamma3, eps=1e-8):
    scores = cnn_code @ rnn_code.t()
    norms = torch.norm(cnn_code, 2, dim=1, keepdim=True) @ torch.norm(rnn_code, 2, dim=1, keepdim=True).t()
    scores = scores / norms.clamp(min=eps) * gamma3
    return nn.CrossEntropyLoss()(scores, labels), nn.CrossEntropyLoss()(scores.t(), labels)


def _words_loss(img_features, words_emb, labels, cap_lens, batch_size, gammas):
    gamma1, gamma2, gamma3 = gammas
    similarities = []
    for i in range(batch_size):
        words_num = cap_lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous().repeat(batch_size, 1, 1)
        wei_context, _ = _func_attention(word, img_features, gamma1)
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        wei_context = wei_context.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = _cosine_similarity(word, wei_context).view(batch_size, words_num)
        row_sim = torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True))
        similarities.append(row_sim)
    similarities = torch.cat(similarities, 1) * gamma3
    return nn.CrossEntropyLoss()(similarities, labels), nn.CrossEntropyLoss()(similarities.t(), labels)


def _cosine_distance(x1, x2, eps=1e-8):
    return 1 - _cosine_similarity(x1, x2, 1, eps)


def _sent_triplet_loss(cnn_code, rnn_code, labels, neg_ids, margin):
    def triplet(anc, pos, neg):
        return F.relu(_cosine_distance(anc, pos) - _cosine_distance(anc, neg) + margin)

    i2t = triplet(cnn_code[labels], rnn_code[labels], rnn_code[neg_ids]).mean()
    t2i = triplet(rnn_code[labels], cnn_code[labels], cnn_code[neg_ids]).mean()
    return i2t, t2i


def _word_similarity(img_features, words_emb, words_num, gamma1, gamma2):
    """−log Σ_t exp(γ2 · cos(w_t, c_t)) of one image [1, nef, h, w] and one report [1, nef, L] read up to
    words_num."""
    word = words_emb[0, :, :words_num].unsqueeze(0).contiguous()
    wei_context, _ = _func_attention(word, img_features, gamma1)
    word = word.transpose(1, 2).contiguous().view(words_num, -1)
    wei_context = wei_context.transpose(1, 2).contiguous().view(words_num, -1)
    row_sim = _cosine_similarity(word, wei_context).view(1, words_num)
    return -torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True))


def _words_triplet_loss(img_features, words_emb, neg_ids, cap_lens, batch_size, margin, gamma1, gamma2):
    i2t, t2i = [], []
    for i in range(batch_size):
        n = neg_ids[i]
        img, txt = img_features[i:i + 1], words_emb[i:i + 1]
        pos = _word_similarity(img, txt, cap_lens[i], gamma1, gamma2)
        # the negative report at its own length, cap_lens[n] (released: cap_lens[i]; see the preset's docs)
        i2t.append(F.relu(pos - _word_similarity(img, words_emb[n:n + 1], cap_lens[n], gamma1, gamma2) + margin))
        t2i.append(F.relu(pos - _word_similarity(img_features[n:n + 1], txt, cap_lens[i], gamma1, gamma2) + margin))
    return torch.cat(i2t, 1).mean(), torch.cat(t2i, 1).mean()


def _merge_words_per_token(states, word_index, reduce):
    """Word pieces → words, one token at a time: ([B, H, L] word features, released layout; lengths list)."""
    B, T, H = states.shape
    index = word_index.tolist()
    cap_lens = [max(row) + 1 for row in index]
    words = states.new_zeros(B, T, H)
    for b in range(B):
        counts = [0] * T
        for t in range(T):
            w = index[b][t]
            if w >= 0:
                words[b, w] = words[b, w] + states[b, t]
                counts[w] += 1
        if reduce == "mean":
            for w in range(cap_lens[b]):
                words[b, w] = words[b, w] / max(counts[w], 1)
    return words, cap_lens


def baseline_loss(model, batch) -> torch.Tensor:
    """The total loss of `model` (a JoImTeRNetModel) on `batch`, computed as the released code does (see the
    module docstring), with the model's draws of this step."""
    c = model.config
    drawn = model.draw(batch)
    B = batch.input_ids.shape[0]
    labels = torch.arange(B, device=batch.input_ids.device)
    neg_ids = drawn["negatives"].tolist()

    img = model.encode_image(batch)
    h, w = img["grid"]
    words_features = img["local"].transpose(1, 2).reshape(B, -1, h, w)  # [B, nef, h, w]
    sent_code = img["global"]

    seq = model.text_encoder(batch.input_ids, batch.attention_mask)[-1]
    sent_emb = model.sentence_embed(seq[:, 0])
    words, cap_lens = _merge_words_per_token(seq, batch.word_index, c.word_reduce)
    words_emb = model.word_embed(words).transpose(1, 2)  # [B, nef, L]

    gammas = (c.temp_attention, c.temp_aggregate, c.temp_logits)
    s_loss0, s_loss1 = _sent_loss(sent_code, sent_emb, labels, c.temp_logits)
    w_loss0, w_loss1 = _words_loss(words_features, words_emb, labels, cap_lens, B, gammas)
    s_t_loss0, s_t_loss1 = _sent_triplet_loss(sent_code, sent_emb, labels, drawn["negatives"], c.sentence_margin)
    w_t_loss0, w_t_loss1 = _words_triplet_loss(words_features, words_emb, neg_ids, cap_lens, B, c.word_margin,
                                               c.temp_attention, c.temp_aggregate)
    damsm = s_loss0 + s_loss1 + w_loss0 + w_loss1
    triplet = s_t_loss0 + s_t_loss1 + w_t_loss0 + w_t_loss1

    preds = model.mlm_head(model.text_encoder(drawn["mlm_input_ids"], batch.attention_mask)[-1])
    mlm = nn.CrossEntropyLoss(ignore_index=-100)(preds.transpose(1, 2), drawn["mlm_labels"])
    if model.training:
        model.draws.advance()
    return c.matching_weight * damsm + c.triplet_weight * triplet + c.mlm_weight * mlm
