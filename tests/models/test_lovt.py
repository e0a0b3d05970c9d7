"""`lovt`: tiny forward/backward, fused vs reference, the released code's formulas written out (global, local,
the attention layers, the pooling), the whole loss against the released forward (padding and all; equal
but for the two documented fixes), the benchmark's baseline equal to the model, autocast, torch.compile, no
host sync per token or sample, parameter counts."""

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_earned
from preset_checks import batch_for, count_host_syncs, forward_backward, impl, tiny

from cxrfast.models.config import EncoderSpec
from cxrfast.models.encoders import BERTS
from cxrfast.models.lovt import LOCAL_NAMES, LovtConfig, MaskedBatchNorm1d

PRESET = "lovt"
# BERT's dropout off: training-mode forwards (BatchNorm on batch statistics) become deterministic, so two
# paths can be compared on the same weights and batch
NO_DROPOUT = dict(text_encoder=EncoderSpec("bert", {**BERTS["tiny"], "hidden_dropout_prob": 0.0,
                                                    "attention_probs_dropout_prob": 0.0}))
PARTS = ("image_encoder", "text_encoder", "image_pool", "text_pool", "image_local", "image_global", "text_local",
         "text_global", "attention")


def _double(model, batch):
    model = model.double()
    batch.views = batch.views.double()
    return model, batch


def test_tiny_forward_backward_is_fast_and_trains_every_part():
    model = tiny(PRESET)
    batch = batch_for(model, 4)
    forward_backward(model, batch)  # warm-up (first-call allocations)
    losses, grads, seconds = forward_backward(model, batch)
    assert set(losses) == {"global", *LOCAL_NAMES, "loss"} and all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["global"] + 0.375 * sum(losses[k] for k in LOCAL_NAMES))
    for part in PARTS:
        assert any(n.startswith(part) and g.abs().sum() > 0 for n, g in grads.items()), part
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(grads), sorted(trainable ^ set(grads))  # every trainable parameter learns
    # a random BERT is trained whole: LoVT's freezing applies to a pretrained text encoder only
    assert not {n for n, p in model.named_parameters() if not p.requires_grad}
    # "tiny" is sized to run forward + backward in about a second on a 2-core CPU (a timing assert would fail
    # by chance on a loaded machine: the size is what is asserted, the time is in the test's duration)
    assert model.num_parameters() < 1_000_000 and batch.views.shape[-1] <= 72


def test_fused_and_reference_paths_agree():
    """Same weights and batch, training mode: cxrfast's fast paths (the batched LoVT op, the chunked InfoNCE)
    vs CXRFAST_IMPL=reference, with DESIGN's earned tolerance (the reference in float64 is the oracle, in
    float32 the yardstick)."""
    model = tiny(PRESET, **NO_DROPOUT)
    batch = batch_for(model, 5, seed=1)
    got, got_g, _ = forward_backward(model, batch)
    with impl("reference"):
        lo, lo_g, _ = forward_backward(model, batch)
        model64 = tiny(PRESET, **NO_DROPOUT)
        model64.load_state_dict(model.state_dict())
        model64, b64 = _double(model64, batch.to("cpu"))
        hi, hi_g, _ = forward_backward(model64, b64)
    for k in got:
        assert_earned(k, got[k], hi[k], lo[k], torch.float32, k=4.0)
    for name in ("attention.key.weight", "text_local.fc1.weight", "image_global.fc2.weight", "image_pool.in_proj_weight",
                 "text_encoder.model.encoder.layer.1.output.dense.weight"):
        assert_earned(name, got_g[name], hi_g[name], lo_g[name], torch.float32, k=4.0)


# ------------------------------------------------------------------ the released code's formulas, by hand

def _region_positives(H, W, threshold=0.5, lam=1.0):
    """LocalIntraSampleContrastiveLoss's buffer (threshold_type relative, smooth weights): coordinates divided
    by the grid diagonal, Euclidean distances, [d ≤ threshold] · exp(−λ d)."""
    hw = torch.tensor([(h, w) for h in range(H) for w in range(W)], dtype=torch.float64) / math.hypot(H, W)
    d = torch.cdist(hw, hw)
    return (d <= threshold).double() * torch.exp(-lam * d)


def _intra_sample(z, zt, pos, w, tau=0.3):
    """One sample's (l2att, att2l) as LoVT defines them: anchors i, candidates j, targets P[i, ·] / Σ P[i, ·],
    weights w / Σ w. z, zt [n, E] (real locals only), pos [n, n]."""
    a, b = F.normalize(z, dim=1), F.normalize(zt, dim=1)
    s = a @ b.t() / tau
    p = pos / pos.sum(1, keepdim=True)
    w = w / w.sum()
    l2att = sum(w[i] * (-(p[i] * s[i]).sum() + torch.logsumexp(s[i], 0)) for i in range(len(z)))
    att2l = sum(w[i] * (-(p[i] * s[:, i]).sum() + torch.logsumexp(s[:, i], 0)) for i in range(len(z)))
    return l2att, att2l


def _local_oracle(regions, to_regions, sentences, to_sentences, lengths, grid, rw, sw):
    """The four local losses, a loop over samples."""
    pos_r = _region_positives(*grid)
    parts = collections.defaultdict(list)
    for b in range(regions.shape[0]):
        n = int(lengths[b])
        r = _intra_sample(regions[b], to_regions[b], pos_r, rw[b])
        s = _intra_sample(sentences[b, :n], to_sentences[b, :n], torch.eye(n, dtype=torch.float64), sw[b, :n])
        for name, v in zip(LOCAL_NAMES, (*r, *s)):
            parts[name].append(v)
    return {name: torch.stack(v).mean() for name, v in parts.items()}


def _global_oracle(zg_a, zg_b, tau=0.1, weights=(0.75, 0.25)):
    """GlobalNceLoss (no same-modality negatives): for each image, its report against the other reports
    (a2b), and for each report, its image against the other images (b2a), per anchor."""
    B = zg_a.shape[0]
    a, b = F.normalize(zg_a, dim=1), F.normalize(zg_b, dim=1)
    a2b = [-(a[i] @ b[i] / tau) + torch.logsumexp(a[i] @ b.t() / tau, 0) for i in range(B)]
    b2a = [-(b[i] @ a[i] / tau) + torch.logsumexp(b[i] @ a.t() / tau, 0) for i in range(B)]
    return weights[0] * torch.stack(a2b).mean() + weights[1] * torch.stack(b2a).mean()


def _attention_oracle(att, z_a, z_b, lengths):
    """LoVT's CrossAttention, per sample: s = K(z_a) K(z_b)ᵀ / √d; regions over the report's real sentences,
    sentences over the regions; output projection; one BatchNorm per direction over the real rows of the
    whole batch (training mode: batch statistics)."""
    d = z_a.shape[-1]
    rows_a, rows_b = [], []
    for b in range(z_a.shape[0]):
        n = int(lengths[b])
        ka, kb = att.key(z_a[b]), att.key(z_b[b, :n])
        s = ka @ kb.t() / math.sqrt(d) / att.temperature
        rows_a.append(att.output(torch.softmax(s, 1) @ att.value(z_b[b, :n])))
        rows_b.append(att.output(torch.softmax(s.t(), 1) @ att.value(z_a[b])))

    def bn(rows):
        x = torch.cat(rows)
        return F.batch_norm(x, None, None, att.norm.weight, att.norm.bias, training=True, eps=att.norm.eps)

    ya, yb = bn(rows_a), bn(rows_b)
    to_regions = ya.view(z_a.shape)
    to_sentences = torch.zeros_like(z_b)
    splits = torch.split(yb, [int(n) for n in lengths])
    for b, rows in enumerate(splits):
        to_sentences[b, :len(rows)] = rows
    return to_regions, to_sentences


def _features(model, batch):
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
    return img, txt


def test_losses_equal_the_papers_formulas_on_the_same_features():
    """The model's losses on its own features (z, z̃, pooling weights) against LoVT's formulas written out."""
    model = tiny(PRESET, **NO_DROPOUT)
    model, batch = _double(model, batch_for(model, 5, seed=2))
    with torch.no_grad():
        out = model(batch)
        img, txt = _features(model, batch)
        to_regions, to_sentences = model.attention(img["local"], txt["sentences"], txt["sentence_mask"])
    torch.testing.assert_close(out["global"], _global_oracle(img["global"], txt["global"]), rtol=1e-10, atol=1e-10)
    want = _local_oracle(img["local"], to_regions, txt["sentences"], to_sentences, txt["sentence_lengths"],
                         img["grid"], img["weights"], txt["weights"])
    for name in LOCAL_NAMES:
        torch.testing.assert_close(out[name], want[name], rtol=1e-10, atol=1e-10)
    c = model.config
    torch.testing.assert_close(out["loss"], c.global_weight * out["global"]
                               + c.local_weight * sum(out[k] for k in LOCAL_NAMES), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention_temperature", [1.0, 2.5])
def test_whole_local_term_equals_the_released_attention_and_loss(attention_temperature):
    """From the projected locals z on: LoVT's attention layers (keys, values, output projection, BatchNorm on
    the real rows), then its local loss, all written out per sample, against the model's four local parts."""
    model = tiny(PRESET, attention_temperature=attention_temperature, **NO_DROPOUT)
    model, batch = _double(model, batch_for(model, 4, seed=3))
    with torch.no_grad():
        out = model(batch)
        img, txt = _features(model, batch)
        lengths = txt["sentence_lengths"]
        to_regions, to_sentences = _attention_oracle(model.attention, img["local"], txt["sentences"], lengths)
    assert int(lengths.min()) < int(lengths.max())  # reports of different lengths: padding is exercised
    want = _local_oracle(img["local"], to_regions, txt["sentences"], to_sentences, lengths, img["grid"],
                         img["weights"], txt["weights"])
    for name in LOCAL_NAMES:
        torch.testing.assert_close(out[name], want[name], rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------ the released forward, padding and all

def _released_bn(norm, x, mask=None):
    """nn.BatchNorm1d on (B, C, N) as LoVT applies it, training mode: statistics over all B·N slots
    (mask None: padded sentence slots included), or, the preset's fix, over the rows where mask is True."""
    if mask is None:
        return F.batch_norm(x.transpose(1, 2), None, None, norm.weight, norm.bias, training=True,
                            eps=norm.eps).transpose(1, 2)
    rows = x[mask]
    mean, var = rows.mean(0), rows.var(0, unbiased=False)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _released_mlp(proj, x, mask=None):
    """fc.py's SequenceMLP / MLP (norm='batch', norm_before_act=True) with the preset's weights."""
    h = x @ proj.fc1.weight.t() + proj.fc1.bias
    h = _released_bn(proj.norm, h[:, None] if h.dim() == 2 else h, mask)
    h = h[:, 0] if x.dim() == 2 else h
    return torch.relu(h) @ proj.fc2.weight.t() + proj.fc2.bias


def _released_losses(model, batch, fixed: bool):
    """LoVT_100's shared_step from the encoders' outputs on, written from the released code: the report's
    sentences padded to the batch's longest report; GlobalAvgAttentionAggregator (query: GlobalAvgPool,
    which divides by the padded count); SequenceMLP/MLP heads with BatchNorm over every (padded) slot;
    CrossAttention (symmetric, AttentionMask's additive and binary masks, one BatchNorm per direction over
    every slot); LocalIntraSampleContrastiveLoss with its buffers (cdist of diagonal-normalised grid
    coordinates; |i − j| ≤ 0 for sentences); GlobalNceLoss's [pos | negatives] logits; LoVT_100's weights.
    fixed=True switches on exactly the preset's two documented deviations: BatchNorm statistics and the
    pooling query over the real sentences."""
    c = model.config
    maps, _ = model.image_encoder(batch.views[:, 0])
    B, C, H, W = maps[-1].shape
    yl_a = maps[-1].view(B, C, -1).transpose(1, 2)
    tokens = model.text_encoder(batch.input_ids, batch.attention_mask)[-1]
    counts = [int(batch.sentence_index[b].max()) + 1 for b in range(B)]
    N = max(counts)
    yl_b = tokens.new_zeros(B, N, tokens.shape[-1])
    for b in range(B):  # restructure_reports_into_sentences + GlobalMaxPool, one sentence at a time
        for s in range(counts[b]):
            yl_b[b, s] = tokens[b, batch.sentence_index[b] == s].max(0).values
    mask = torch.arange(N)[None, :] < torch.tensor(counts)[:, None]  # AttentionMask.binary_mask

    def pool(mha, x, m):
        if m is None:
            query = x.mean(1)
        else:
            query = x.masked_fill(~m[:, :, None], 0.0).mean(1)  # GlobalAvgPool: / N, padding included
            if fixed:
                query = query * N / m.sum(1, keepdim=True)
        out, w = mha(query[:, None], key=x, value=x, key_padding_mask=None if m is None else ~m)
        return out[:, 0], w[:, 0]

    yg_a, w_a = pool(model.image_pool, yl_a, None)
    yg_b, w_b = pool(model.text_pool, yl_b, mask)
    norm_mask = mask if fixed else None
    zl_a, zg_a = _released_mlp(model.image_local, yl_a), _released_mlp(model.image_global, yg_a)
    zl_b, zg_b = _released_mlp(model.text_local, yl_b, norm_mask), _released_mlp(model.text_global, yg_b)

    att = model.attention
    additive = torch.zeros(B, N, dtype=zl_a.dtype).masked_fill(~mask, float("-inf"))
    keys_a, keys_b = att.key(zl_a), att.key(zl_b)
    scores_b2a = keys_a @ keys_b.transpose(1, 2) / math.sqrt(keys_a.shape[-1])
    scores_a2b = scores_b2a.transpose(1, 2).clone()
    probs_b2a = torch.softmax(scores_b2a / att.temperature + additive[:, None, :], -1)
    zl_b2a = _released_bn(att.norm, att.output(probs_b2a @ att.value(zl_b)))
    probs_a2b = torch.softmax(scores_a2b / att.temperature, -1) * mask[:, :, None]
    zl_a2b = _released_bn(att.norm, att.output(probs_a2b @ att.value(zl_a)), norm_mask)

    def intra(za, zb, m, weights, pos):
        n = za.shape[1]
        weights = weights if m is None else weights * m
        add = za.new_zeros(B, n) if m is None else additive
        weights = weights / weights.sum(1, keepdim=True)
        pos = pos.view(1, n, n).expand(B, n, n)
        if m is not None:
            pos = pos * m[:, None, :]
        pos = pos / pos.sum(-1, keepdim=True).clamp_min(1e-12)
        za, zb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
        ab = za @ zb.transpose(1, 2) / c.temp_local
        ba = ab.transpose(1, 2)
        l_ab = -(pos * ab).sum(-1) + torch.logsumexp(ab + add[:, None, :], -1)
        l_ba = -(pos * ba).sum(-1) + torch.logsumexp(ba + add[:, None, :], -1)
        return (weights * l_ab).sum(-1).mean(), (weights * l_ba).sum(-1).mean()

    coords = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")).double()
    dist = torch.cdist(*(coords.view(2, -1).T / math.sqrt(H ** 2 + W ** 2),) * 2)
    pos_a = (dist <= c.distance_threshold) * torch.exp(-c.smooth_lambda * dist)
    pos_b = ((torch.arange(N)[:, None] - torch.arange(N)).abs() <= 0).double()
    losses = dict(zip(LOCAL_NAMES, (*intra(zl_a, zl_b2a, None, w_a.detach(), pos_a),
                                    *intra(zl_b, zl_a2b, mask, w_b.detach(), pos_b))))
    a, b = F.normalize(zg_a, dim=-1), F.normalize(zg_b, dim=-1)
    scores = torch.cat([a, b]) @ torch.cat([a, b]).t() / c.temp_global
    labels = torch.zeros(B, dtype=torch.long)
    g = []
    for neg in (scores[:B, B:], scores[B:, :B]):
        logits = torch.cat([scores[:B, B:].diagonal()[:, None], neg.masked_fill(torch.eye(B, dtype=torch.bool),
                                                                                float("-inf"))], 1)
        g.append(F.cross_entropy(logits, labels))
    losses["global"] = c.global_weights[0] * g[0] + c.global_weights[1] * g[1]
    losses["loss"] = (c.global_weight * (c.global_weights[0] * g[0] + c.global_weights[1] * g[1])
                      + c.local_weight * sum(losses[k] for k in LOCAL_NAMES))
    return losses


def _equal_sentence_counts(batch, n_sent=3):
    """Every report split into n_sent sentences (each report has ≥ 4 word pieces): no sentence padding."""
    for b in range(len(batch)):
        real = batch.sentence_index[b] >= 0
        n = int(real.sum())
        batch.sentence_index[b, real] = torch.arange(n) * n_sent // n
    return batch


@pytest.mark.parametrize("equal_counts", [True, False], ids=["no-padding", "padded"])
def test_whole_loss_equals_the_released_forward(equal_counts):
    """The released forward on the same encoder outputs. Reports with equal sentence counts have no padding,
    and the model equals LoVT as released, every named loss. Reports of different lengths: LoVT's padded
    slots enter its BatchNorms and its pooling query, so it differs there (asserted: the batch exercises it),
    and the model equals the released code with exactly the two documented fixes switched on."""
    model = tiny(PRESET, **NO_DROPOUT)
    model, batch = _double(model, batch_for(model, 5, seed=12))
    if equal_counts:
        batch = _equal_sentence_counts(batch)
    with torch.no_grad():
        out = model(batch)
        released = _released_losses(model, batch, fixed=False)
        fixed = _released_losses(model, batch, fixed=True)
    counts = batch.sentence_index.amax(1) + 1
    assert bool((counts == counts[0]).all()) == equal_counts
    for name in out:
        torch.testing.assert_close(out[name], fixed[name], rtol=1e-10, atol=1e-10, msg=name)
        if equal_counts:
            torch.testing.assert_close(out[name], released[name], rtol=1e-10, atol=1e-10, msg=name)
    if not equal_counts:
        assert (out["loss"] - released["loss"]).abs() > 1e-6


def test_sentences_and_pooling_are_lovts():
    """Sentences: the max over their tokens' last-layer states (no special tokens), projected; the pooling:
    an 8-head (tiny: 2) attention whose query is the mean real local, its head-averaged weights the local
    weights (0 on padding, summing to 1)."""
    model = tiny(PRESET, **NO_DROPOUT)
    model, batch = _double(model, batch_for(model, 3, seed=4))
    model.eval()  # BatchNorm on running statistics: each sample's projection is its own
    img, txt = _features(model, batch)
    with torch.no_grad():
        tokens = model.text_encoder(batch.input_ids, batch.attention_mask)[-1]
        pool = model.text_pool
        d, h = pool.embed_dim, pool.num_heads
        wq, wk, _ = pool.in_proj_weight.split(d)
        bq, bk, _ = pool.in_proj_bias.split(d)
        for b in range(len(batch)):
            idx = batch.sentence_index[b]
            n = int(idx.max()) + 1
            sent = torch.stack([tokens[b, idx == s].max(0).values for s in range(n)])  # [n, H]
            torch.testing.assert_close(txt["sentences"][b, :n], model.text_local(sent))
            assert torch.all(txt["sentences"][b, n:] == 0) and int(txt["sentence_lengths"][b]) == n
            q = (sent.mean(0) @ wq.t() + bq).view(h, d // h)
            k = (sent @ wk.t() + bk).view(n, h, d // h)
            probs = torch.softmax(torch.einsum("hd,nhd->hn", q, k) / math.sqrt(d // h), dim=1).mean(0)
            torch.testing.assert_close(txt["weights"][b, :n], probs)
            assert torch.all(txt["weights"][b, n:] == 0)
    torch.testing.assert_close(img["weights"].sum(1), torch.ones(len(batch), dtype=torch.float64))
    assert img["local"].shape[1] == 9 and img["grid"] == (3, 3)  # 72 px → 3 × 3 regions


def test_masked_batchnorm_is_batchnorm_over_the_selected_rows():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.rand(3, 5) < 0.6
    mask[0, :2] = True
    bn, ref = MaskedBatchNorm1d(4).double(), torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    ref.load_state_dict(bn.state_dict())
    for _ in range(2):  # twice: running statistics follow
        torch.testing.assert_close(bn(x, mask)[mask], ref(x[mask]))
        torch.testing.assert_close(bn(x), ref(x.view(15, 4)).view(3, 5, 4))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name))
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x, mask)[mask], ref(x[mask]))


@pytest.mark.parametrize("attention_temperature", [1.0, 2.5])
def test_benchmark_baseline_equals_the_model(attention_temperature):
    """cxrfast.bench.presets.lovt.baseline_loss (LoVT's released code: collator splits, boolean-mask sentence
    restructuring, masked attention, [B, N, N] positives, 2B × 2B global scores) = model(batch)["loss"], loss
    and gradients, training mode (BERT's dropout drawn from the same seed)."""
    from cxrfast.bench.presets.lovt import baseline_loss

    model = tiny(PRESET, attention_temperature=attention_temperature)
    model, batch = _double(model, batch_for(model, 5, seed=5))
    names = ("attention.key.weight", "text_local.fc1.weight", "image_pool.in_proj_weight",
             "text_encoder.model.encoder.layer.1.output.dense.weight", "image_encoder.model.embedder.embedder.convolution.weight")
    params = dict(model.named_parameters())
    results = []
    for fn in (lambda: model(batch)["loss"], lambda: baseline_loss(model, batch)):
        torch.manual_seed(7)
        loss = fn()
        results.append((loss, torch.autograd.grad(loss, [params[n] for n in names])))
    (got, got_g), (base, base_g) = results
    torch.testing.assert_close(got, base, rtol=1e-10, atol=1e-10)
    for name, g, r in zip(names, got_g, base_g):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10, msg=name)
    model32 = tiny(PRESET, attention_temperature=attention_temperature).float()
    batch32 = batch_for(model32, 5, seed=5)
    torch.manual_seed(7)
    got32 = model32(batch32)["loss"]
    torch.manual_seed(7)
    torch.testing.assert_close(got32, baseline_loss(model32, batch32), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_trains():
    model = tiny(PRESET).eval()
    batch = batch_for(model, 4, seed=6)
    with torch.no_grad():
        eager = model(batch)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(batch)["loss"]
    assert torch.isfinite(auto) and abs(auto.item() - eager.item()) < 0.1 * abs(eager.item()) + 0.5
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_compile_fullgraph_matches_eager_in_training_mode():
    """One graph (fullgraph: no break inside the encoders; cxrfast's ops stay opaque), training mode: the
    BatchNorms' batch statistics and their in-place running-statistics updates are in the graph too.
    aot_eager keeps the CPU test fast; inductor compiles the same graph."""
    eager = tiny(PRESET, **NO_DROPOUT)
    model = tiny(PRESET, **NO_DROPOUT)
    model.load_state_dict(eager.state_dict())
    batch = batch_for(model, 4, seed=7)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        want, got = eager(batch), compiled(batch)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)
    buffers, want_buffers = dict(model.named_buffers()), dict(eager.named_buffers())
    for name in ("attention.norm.running_mean", "text_local.norm.running_var", "image_local.norm.running_mean"):
        initial = 1.0 if name.endswith("var") else 0.0  # moved by the one training step, equally
        assert not torch.all(buffers[name] == initial), name
        torch.testing.assert_close(buffers[name], want_buffers[name], rtol=1e-4, atol=1e-5)


SYNCS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "numpy")


def _all_syncs(model, batch) -> collections.Counter:
    """Every Python-level read of a tensor's value during a forward, by call site (stricter than
    count_host_syncs: truth values and int() too)."""
    import traceback

    counts = collections.Counter()
    originals = {n: getattr(torch.Tensor, n) for n in SYNCS}

    def wrap(name):
        real = originals[name]

        def counted(self, *a, **k):
            counts[(name, traceback.format_stack(limit=2)[0].strip().splitlines()[0])] += 1
            return real(self, *a, **k)
        return counted

    for n in SYNCS:
        setattr(torch.Tensor, n, wrap(n))
    try:
        model(batch)
    finally:
        for n, real in originals.items():
            setattr(torch.Tensor, n, real)
    return counts


def test_no_host_sync_per_token_or_sample():
    """No item/tolist at all (count_host_syncs; the word-region op's one length read would be allowed), and
    every other read of a tensor's value (the ops' argument checks: sentence counts in range, finite inputs;
    transformers' mask check) happens a fixed number of times, whatever the batch size and report lengths."""
    model = tiny(PRESET)
    small, large = batch_for(model, 2, seed=8), batch_for(model, 7, seed=9)
    model(small)  # warm-up
    with count_host_syncs() as syncs:
        model(large)
    assert syncs["count"] <= 1, f"{syncs['count']} host syncs in one forward:\n" + "\n".join(syncs["where"])
    a, b = _all_syncs(model, small), _all_syncs(model, large)
    assert a == b, (a, b)
    assert sum(a.values()) <= 16, a


@pytest.mark.gpu
def test_cuda_forward_backward_has_no_sync_per_sample():
    """On the GPU: torch.cuda.set_sync_debug_mode counts the synchronising calls of a forward; the count does
    not grow with the batch or the reports (the ops' fixed argument checks only); bf16 autocast trains."""
    import warnings

    model = tiny(PRESET).cuda()
    counts = []
    for size, seed in ((2, 10), (7, 11)):
        batch = batch_for(model, size, seed=seed)
        model(batch)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model(batch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        counts.append(sum("synchronizing" in str(w.message) for w in caught))
    assert counts[0] == counts[1], counts
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_config_round_trips_through_json(tmp_path):
    cfg = LovtConfig.for_size("small", global_weights=(0.5, 0.5))
    cfg.to_json(tmp_path / "c.json")
    assert LovtConfig.from_json(tmp_path / "c.json") == cfg
    assert LovtConfig.for_size("paper").global_weights == (0.75, 0.25)
    with pytest.raises(ValueError, match="freeze_text_layers must be 0..2"):
        tiny(PRESET, freeze_text_layers=3)


def test_paper_size_parameter_counts():
    from cxrfast.models.factory import create_model

    model = create_model(PRESET, size="paper")
    summary = model.parameter_summary()
    assert abs(summary["image_encoder"] / 1e6 - 23.5) < 0.1       # transformers' ResNet-50 trunk
    assert abs(summary["text_encoder"] / 1e6 - 108.9) < 1.0       # BERT-base without its pooler

    def head(d_in):  # Linear(d_in, 2048) + BatchNorm(2048) + Linear(2048, 512)
        return d_in * 2048 + 2048 + 2 * 2048 + 2048 * 512 + 512

    assert summary["image_pool"] == 4 * 2048 * 2048 + 4 * 2048     # MultiheadAttention(2048, 8)
    assert summary["text_pool"] == 4 * 768 * 768 + 4 * 768
    assert summary["image_local"] == summary["image_global"] == head(2048)
    assert summary["text_local"] == summary["text_global"] == head(768)
    assert summary["attention"] == 3 * (512 * 512 + 512) + 2 * 512  # keys, values, outputs, BatchNorm
    assert model.num_parameters(trainable=True) == model.num_parameters()  # random BERT: nothing frozen


def test_a_pretrained_text_encoder_keeps_its_lower_layers_frozen(tmp_path):
    """LoVT (and ConVIRT) freeze BERT's embeddings and first layers of a *pretrained* text encoder."""
    from cxrfast.models.config import EncoderSpec
    from cxrfast.models.encoders import BERTS, BertEncoder

    cfg = tiny(PRESET).config
    BertEncoder(EncoderSpec("bert", BERTS["tiny"]), cfg.vocab_size, cfg.max_length).model.save_pretrained(tmp_path)
    model = tiny(PRESET, text_encoder=EncoderSpec("bert", {}, str(tmp_path)))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".embeddings." in n or ".encoder.layer.0." in n for n in frozen)
    assert any(".embeddings." in n for n in frozen) and any(".layer.0." in n for n in frozen)
