"""The baselines: faithful re-implementations of what users run today, written once each.

- InfoNCE: open_clip's ``ClipLoss`` (one process), on ``F.normalize``-d features as CLIP models
  normalise them before the loss. Both logits matrices are materialised, as open_clip does.
- Local (word–region) loss: GLoRIA's ``local_loss`` with its ``attention_fn`` and ``cosine_similarity``,
  looping over reports in Python as the released code does (``gloria_local_loss``).
- Triplet: VSE++'s ``ContrastiveLoss`` (scores = im · sᵀ on l2-normalised embeddings, hinge against the
  diagonal, eye masked with ``masked_fill_``, max over each dimension when ``max_violation``, sum).
  One deviation: VSE++ builds the eye mask on the CPU and copies it to the GPU; here it is made on the
  inputs' device (the copy of a B × B mask would measure PCIe, not the loss).

``call(shape, *inputs, compiled=...)`` runs the baseline of a shape. 16-bit inputs run under
``torch.autocast`` with that dtype, as mixed-precision training does (open_clip's ``--precision amp``):
matmuls in 16 bit, ``normalize`` / ``cross_entropy`` upcast to fp32 by autocast. ``compiled=True``
uses ``torch.compile`` of the same function, compiled lazily on first use, specialised per shape.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from cxrfast.bench.shapes import Shape

NAMES = {
    "infonce": "open_clip ClipLoss",
    "triplet-hardest": "VSE++ ContrastiveLoss (max_violation)",
    "triplet-all": "VSE++ ContrastiveLoss (sum of violations)",
    "local": "GLoRIA local_loss (looped over reports)",
}


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """open_clip ``ClipLoss.forward`` for world_size 1 (``get_logits`` + ``cross_entropy``), inputs
    normalised first as ``CLIP.encode_image/encode_text(normalize=True)`` return them."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device, dtype=torch.long)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def vsepp_loss(im: torch.Tensor, s: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    """VSE++ ``ContrastiveLoss.forward`` (cosine_sim on l2norm-ed encoder outputs)."""
    im = F.normalize(im, dim=-1)
    s = F.normalize(s, dim=-1)
    scores = im @ s.t()
    diagonal = scores.diag().view(im.size(0), 1)
    d1 = diagonal.expand_as(scores)
    d2 = diagonal.t().expand_as(scores)
    # compare every diagonal score to scores in its column: caption retrieval
    cost_s = (margin + scores - d1).clamp(min=0)
    # compare every diagonal score to scores in its row: image retrieval
    cost_im = (margin + scores - d2).clamp(min=0)
    mask = torch.eye(scores.size(0), device=scores.device) > 0.5
    cost_s = cost_s.masked_fill_(mask, 0)
    cost_im = cost_im.masked_fill_(mask, 0)
    if max_violation:
        cost_s = cost_s.max(1)[0]
        cost_im = cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()


def _gloria_attention(query: torch.Tensor, context: torch.Tensor, temp1: float):
    """GLoRIA's ``attention_fn``: query [B, D, L] words, context [B, D, R] regions →
    (weighted context [B, D, L], attention [B, L, R]). Double softmax: over words, then over regions."""
    batch_size, query_len = query.size(0), query.size(2)
    source_len = context.size(2)
    context_t = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(context_t, query)  # [B, R, L]
    attn = attn.view(batch_size * source_len, query_len)
    attn = torch.softmax(attn, dim=-1)
    attn = attn.view(batch_size, source_len, query_len)
    attn = torch.transpose(attn, 1, 2).contiguous()
    attn = attn.view(batch_size * query_len, source_len)
    attn = attn * temp1
    attn = torch.softmax(attn, dim=-1)
    attn = attn.view(batch_size, query_len, source_len)
    attn_t = torch.transpose(attn, 1, 2).contiguous()
    weighted_context = torch.bmm(context, attn_t)  # [B, D, L]
    return weighted_context, attn


def _cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """GLoRIA's ``cosine_similarity``: x1·x2 / max(‖x1‖·‖x2‖, eps)."""
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def gloria_local_loss(regions: torch.Tensor, words: torch.Tensor, word_lengths, temp1: float = 4.0,
                      temp2: float = 5.0, temp3: float = 10.0, agg: str = "sum"):
    """GLoRIA's ``local_loss``, loop for loop: for every report, repeat its words over the whole image
    batch, attend, score, aggregate; then cross-entropy both ways over temp3 · S.

    Layouts are ours: regions [B, R, D] (GLoRIA: [B, D, ih, iw], flattened to R = ih·iw), words
    [B, L, D] (GLoRIA: [B, D, L] sliced :cap_len, [CLS] and [SEP] included — here the caller passes the words
    it wants scored, from slot 0; see cxrfast.models.globallocal).
    Returns (loss_image_to_text, loss_text_to_image, attention maps of the matched pairs, S [B, B]).
    """
    batch_size = regions.shape[0]
    context = regions.transpose(1, 2)  # [B, D, R]
    att_maps, similarities = [], []
    for i in range(words.shape[0]):
        words_num = int(word_lengths[i])
        word = words[i, :words_num, :].t().unsqueeze(0).contiguous()  # [1, D, n]
        word = word.repeat(batch_size, 1, 1)  # [B, D, n]
        wei_context, attn = _gloria_attention(word, context, temp1)  # [B, D, n], [B, n, R]
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        wei_context = wei_context.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = _cosine_similarity(word, wei_context).view(batch_size, words_num)
        row_sim = row_sim.mul(temp2).exp()
        row_sim = row_sim.sum(dim=1, keepdim=True) if agg == "sum" else row_sim.mean(dim=1, keepdim=True)
        similarities.append(torch.log(row_sim))
    similarities = torch.cat(similarities, 1)  # [B_img, B_txt]
    logits = similarities * temp3
    labels = torch.arange(batch_size, device=logits.device)
    loss0 = F.cross_entropy(logits, labels)
    loss1 = F.cross_entropy(logits.transpose(0, 1), labels)
    return loss0, loss1, att_maps, similarities


_COMPILED: dict = {}


def compiled(fn):
    """``torch.compile(fn, dynamic=False)``, made once per function on first use. Every benchmark shape
    is its own specialisation (the fastest code for it), so the recompile limit is raised to hold them."""
    if fn not in _COMPILED:
        import torch._dynamo

        for knob in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 64))
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


def autocast_for(t: torch.Tensor):
    """Mixed precision as training runs it: autocast in the inputs' dtype when it is 16-bit."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(t.device.type, dtype=t.dtype)
    return contextlib.nullcontext()


def name(shape: Shape, *, compiled_: bool = False) -> str:
    return NAMES[shape.kind] + (" + torch.compile" if compiled_ else "")


def gloria_loss(regions: torch.Tensor, words: torch.Tensor, word_lengths, **kw) -> torch.Tensor:
    """GLoRIA's local loss as its training step adds it: loss0 + loss1 of `gloria_local_loss`."""
    loss0, loss1, _, _ = gloria_local_loss(regions, words, word_lengths, **kw)
    return loss0 + loss1


def call(shape: Shape, *inputs, compiled_: bool = False) -> torch.Tensor:
    """The baseline loss of `shape` on its inputs (cxrfast.bench.measure.make_inputs): image embeddings
    x [B, D], text embeddings y [B, D] and, for InfoNCE, the logit scale; for the local loss regions
    [B, R, D], words [B, L, D] and the report lengths (a list of ints, as GLoRIA's cap_lens)."""
    if shape.loss == "infonce":
        fn, args = clip_loss, inputs[:3]
    elif shape.loss == "local":
        fn, args = gloria_loss, inputs[:3]
    else:
        fn, args = vsepp_loss, (*inputs[:2], shape.margin, shape.negatives == "hardest")
    if compiled_:
        fn = compiled(fn)
    with autocast_for(inputs[0]):
        return fn(*args)
