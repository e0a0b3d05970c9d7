"""`refers`: tiny forward/backward, fused vs reference, the paper's formulas written out (view gates with the
view mask, the decoder, the caption and contrastive losses), both contrastive gradient directions, attention
backends, autocast, torch.compile, no host sync, greedy generation, the released-style baseline, parameter
counts."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_earned
from preset_checks import batch_for, count_host_syncs, forward_backward, impl, tiny

from cxrfast.models.attention import xformers_reason
from cxrfast.models.factory import create_model

PRESET = "refers"


def _mixed_view_batch(model, size=5, seed=0):
    """A batch whose studies have 1, 2 or 3 views in various slots, and noise (not zeros) in the absent slots:
    an absent view must contribute nothing whatever its pixels hold."""
    batch = batch_for(model, size, seed=seed)
    V = model.config.max_views
    assert V == 3
    rows = [[True, False, False], [False, False, True], [True, False, True], [True, True, True], [False, True, False]]
    batch.view_mask = torch.tensor([rows[b % len(rows)] for b in range(size)])
    g = torch.Generator().manual_seed(seed + 100)
    batch.views = torch.randn(batch.views.shape, generator=g, dtype=batch.views.dtype)
    return batch


def test_tiny_forward_backward_is_fast_and_trains_every_part():
    model = tiny(PRESET)
    batch = batch_for(model, 4)
    forward_backward(model, batch)  # warm-up (first-call allocations)
    losses, grads, seconds = forward_backward(model, batch)
    assert set(losses) == {"caption", "contrastive", "loss"} and all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["caption"] + losses["contrastive"])
    for part in ("image_encoder", "text_encoder.model.encoder", "text_encoder.model.pooler", "fusion",
                 "text_projection", "decoder.visual_projection", "decoder.words", "decoder.positions",
                 "decoder.layers.0.self_attn", "decoder.layers.0.cross_attn", "decoder.layers.0.linear1",
                 "decoder.output.bias"):
        assert any(n.startswith(part) and g.abs().sum() > 0 for n, g in grads.items()), part
    # sized to run forward + backward in about a second on a 2-core CPU (the size is asserted, not the time)
    assert model.num_parameters() < 500_000 and batch.views.shape[-1] <= 64 and batch.views.shape[1] >= 2


def test_config_sizes_and_json_round_trip(tmp_path):
    from cxrfast.models.config import load_config
    from cxrfast.models.refers import RefersConfig

    for size in ("paper", "small", "tiny"):
        cfg = RefersConfig.for_size(size)
        assert cfg.max_views >= 2 and cfg.decoder_layers == 1
        assert (cfg.temperature, cfg.contrastive_lambda) == (0.1, 0.75)
        cfg.to_json(tmp_path / f"{size}.json")
        assert load_config(tmp_path / f"{size}.json") == cfg
    paper = RefersConfig.for_size("paper")
    assert (paper.image_size, paper.max_views, paper.max_length) == (224, 3, 100)
    assert (paper.decoder_hidden, paper.decoder_heads, paper.decoder_ffn) == (1024, 16, 4096)


def test_fused_and_reference_paths_agree():
    """Same weights and batch: cxrfast's fast path (here the chunked CPU path) vs CXRFAST_IMPL=reference, with
    DESIGN's earned tolerance (the reference in float64 is the oracle, in float32 the yardstick)."""
    model = tiny(PRESET).eval()
    batch = _mixed_view_batch(model, 5, seed=1)
    got, got_g, _ = forward_backward(model, batch)
    with impl("reference"):
        lo, lo_g, _ = forward_backward(model, batch)
        model64 = tiny(PRESET).double().eval()
        model64.load_state_dict(model.state_dict())
        b64 = batch.to("cpu")
        b64.views = b64.views.double()
        hi, hi_g, _ = forward_backward(model64, b64)
    for k in got:
        assert_earned(k, got[k], hi[k], lo[k], torch.float32, k=4.0)
    for name in ("fusion.gate.weight", "text_projection.weight", "decoder.visual_projection.weight",
                 "text_encoder.model.embeddings.word_embeddings.weight",
                 "image_encoder.model.embeddings.patch_embeddings.projection.weight"):
        assert_earned(name, got_g[name], hi_g[name], lo_g[name], torch.float32, k=4.0)


# -- the paper's formulas, written out per sample (no masks: absent views and padding are simply left out) --

def _linear(x, lin):
    return x @ lin.weight.t() + lin.bias


def _layer_norm(x, norm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _multi_head(att, x, ctx, causal):
    """softmax(Q Kᵀ / √d + causal mask) V per head, heads concatenated, output projection."""
    q, k, v = _linear(x, att.q), _linear(ctx, att.k), _linear(ctx, att.v)
    d = q.shape[1] // att.heads
    heads = []
    for h in range(att.heads):
        sl = slice(h * d, (h + 1) * d)
        s = q[:, sl] @ k[:, sl].t() / math.sqrt(d)
        if causal:
            s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(torch.softmax(s, dim=1) @ v[:, sl])
    return _linear(torch.cat(heads, 1), att.out)


def _decoder_logits(dec, memory, ids):
    """REFERS' one post-norm decoder layer on one report (ids [n], real tokens only) and its memory [M, D]."""
    mem = _linear(memory, dec.visual_projection)
    x = dec.words.weight[ids] + dec.positions.weight[: len(ids)]
    x = _layer_norm(x, dec.embed_norm)
    for layer in dec.layers:
        x = _layer_norm(x + _multi_head(layer.self_attn, x, x, causal=True), layer.norm1)
        x = _layer_norm(x + _multi_head(layer.cross_attn, x, mem, causal=False), layer.norm2)
        hdn = _linear(x, layer.linear1)
        hdn = 0.5 * hdn * (1 + torch.erf(hdn / math.sqrt(2)))
        x = _layer_norm(x + _linear(hdn, layer.linear2), layer.norm3)
    return x @ dec.words.weight.t() + dec.output.bias


def _study(model, batch, b):
    """(memory [n_views·P, D] of the present views' gated tokens, study vector [V·D]) of sample b, from each
    present view's ViT tokens alone: gate_v(p) = σ(w_v · [x_1(p); …; x_V(p)] + c_v), an absent view's slot
    of that concatenation being zeros; the study vector is the views' [CLS] concatenated (zeros if absent)."""
    V = batch.view_mask.shape[1]
    outs = {v: model.image_encoder(batch.views[b, v][None])[0] for v in range(V) if batch.view_mask[b, v]}
    D = next(iter(outs.values())).shape[1]
    P = next(iter(outs.values())).shape[0] - 1
    x = {v: h[1:] + h[:1] for v, h in outs.items()}            # patch tokens + the view's [CLS]
    z = torch.cat([x[v] if v in x else torch.zeros(P, D, dtype=torch.float64) for v in range(V)], 1)
    W, c = model.fusion.gate.weight, model.fusion.gate.bias
    memory = torch.cat([torch.sigmoid(z @ W[v] + c[v])[:, None] * x[v] for v in sorted(x)], 0)
    study = torch.cat([outs[v][0] if v in outs else torch.zeros(D, dtype=torch.float64) for v in range(V)])
    return memory, study


def _convirt(v, u, tau=0.1, lam=0.75):
    """ConVIRT / REFERS: λ·(−log e^{cos(v_i,u_i)/τ} / Σ_k e^{cos(v_i,u_k)/τ}) + (1−λ)·(same over v_k for u_i)."""
    cos = torch.stack([torch.stack([F.cosine_similarity(v[i], u[k], dim=0) for k in range(len(u))])
                       for i in range(len(v))]) / tau
    i2t = -(cos.diag() - torch.logsumexp(cos, 1))
    t2i = -(cos.diag() - torch.logsumexp(cos, 0))
    return (lam * i2t + (1 - lam) * t2i).mean()


def test_losses_equal_the_papers_formulas_on_the_same_features():
    model = tiny(PRESET).double().eval()
    batch = _mixed_view_batch(model, 5, seed=2)
    batch.views = batch.views.double()
    with torch.no_grad():
        out = model(batch)
        txt = model.encode_text(batch)
        nll, count, studies = 0.0, 0, []
        for b in range(len(batch)):
            memory, study = _study(model, batch, b)
            studies.append(study)
            n = int(batch.attention_mask[b].sum())
            ids = batch.input_ids[b, :n]
            logp = torch.log_softmax(_decoder_logits(model.decoder, memory, ids), dim=1)
            nll = nll - logp[torch.arange(n - 1), ids[1:]].sum()
            count += n - 1
    torch.testing.assert_close(out["caption"], nll / count, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["contrastive"], _convirt(torch.stack(studies), txt["global"]), rtol=1e-9, atol=1e-9)


def test_one_view_study_is_that_view_alone_through_its_gate():
    """Sample 0 has only view slot 0, sample 1 only slot 2: the fused tokens are that view's tokens times its
    gate computed from that view alone; the other slots are zero and masked; changing an absent view's pixels
    changes nothing."""
    model = tiny(PRESET).double().eval()
    batch = _mixed_view_batch(model, 5, seed=3)
    batch.views = batch.views.double()
    D = model.image_encoder.hidden
    with torch.no_grad():
        img = model.encode_image(batch)
        P = img["local"].shape[1] // 3
        W, c = model.fusion.gate.weight, model.fusion.gate.bias
        for b, v in ((0, 0), (1, 2)):
            h = model.image_encoder(batch.views[b, v][None])[0]
            x = h[1:] + h[:1]
            alone = torch.sigmoid(x @ W[v, v * D:(v + 1) * D] + c[v])[:, None] * x
            fused = img["local"][b].view(3, P, D)
            torch.testing.assert_close(fused[v], alone, rtol=1e-12, atol=1e-12)
            assert not fused[[u for u in range(3) if u != v]].any()
            assert img["local_mask"][b].view(3, P)[v].all() and img["local_mask"][b].sum() == P
            torch.testing.assert_close(img["global"][b].view(3, D)[v], h[0])
        before = model(batch)
        noisy = copy.copy(batch)
        noisy.views = batch.views.clone()
        noisy.views[~batch.view_mask] = 1e3 * torch.randn_like(noisy.views[~batch.view_mask])
        torch.testing.assert_close(model(noisy), before, rtol=1e-12, atol=1e-12)
        # and the mask is what does it: the same pixels read as present change the losses
        seen = copy.copy(noisy)
        seen.view_mask = torch.ones_like(batch.view_mask)
        assert (model(seen)["loss"] - before["loss"]).abs() > 1e-3


def test_samples_without_views_or_report():
    """Image-only and text-only samples: finite losses and gradients; the caption loss is the mean over the
    report tokens there are (an image-only sample adds none, a text-only one decodes from no memory)."""
    model = tiny(PRESET).eval()
    batch = batch_for(model, 4, seed=10, kinds=["paired", "image", "text", "paired"])
    out, grads, _ = forward_backward(model, batch)
    assert all(torch.isfinite(v) for v in out.values()) and all(torch.isfinite(g).all() for g in grads.values())
    keep = torch.tensor([0, 2, 3])
    sub = copy.copy(batch)
    for f in ("views", "view_mask", "input_ids", "attention_mask", "word_index", "sentence_index", "kind", "labels"):
        setattr(sub, f, getattr(batch, f)[keep])
    with torch.no_grad():
        torch.testing.assert_close(model(sub)["caption"], out["caption"])


def test_contrastive_gradients_flow_both_ways():
    """The report→image term is differentiated (REFERS' `.item()` makes it a constant there): the gradients
    equal those of the whole formula and differ from those of the released, detached one."""
    model = tiny(PRESET).double()
    g = torch.Generator().manual_seed(4)
    v = torch.randn(6, 96, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(6, 96, generator=g, dtype=torch.float64, requires_grad=True)
    loss = model.contrastive(v, u)
    gv, gu = torch.autograd.grad(loss, (v, u))
    want = _convirt(v, u)
    wv, wu = torch.autograd.grad(want, (v, u))
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gv, wv, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gu, wu, rtol=1e-9, atol=1e-12)
    # the released loss: λ·image→report + (1−λ)·(report→image).item()
    cos = F.normalize(v, dim=1) @ F.normalize(u, dim=1).t() / 0.1
    i2t = -(cos.diag() - torch.logsumexp(cos, 1))
    t2i = -(cos.diag() - torch.logsumexp(cos, 0))
    released = (0.75 * i2t + 0.25 * t2i.detach()).mean()
    rv, ru = torch.autograd.grad(released, (v, u), retain_graph=True)
    for got, old in ((gv, rv), (gu, ru)):
        assert (got - old).norm() > 0.05 * got.norm()
    # the report→image term alone moves both sides
    tv, tu = torch.autograd.grad(t2i.mean(), (v, u))
    assert tv.norm() > 0 and tu.norm() > 0


def test_every_attention_goes_through_cxrfasts_attention(monkeypatch):
    import cxrfast.models.refers as refers

    calls = []
    real = refers.attention

    def counted(q, k, v, **kw):
        calls.append(kw.get("causal"))
        return real(q, k, v, **kw)

    monkeypatch.setattr(refers, "attention", counted)
    model = tiny(PRESET).eval()
    with torch.no_grad():
        model(batch_for(model, 2))
    assert sorted(calls) == [False, True] * model.config.decoder_layers


@pytest.mark.skipif(xformers_reason(torch.device("cuda" if torch.cuda.is_available() else "cpu")) is not None,
                    reason="the xformers backend needs xformers and a CUDA device: "
                           + str(xformers_reason(torch.device("cuda" if torch.cuda.is_available() else "cpu"))))
def test_attention_backends_agree():
    sdpa = tiny(PRESET).cuda().eval()
    xf = tiny(PRESET, attention_backend="xformers").cuda().eval()
    xf.load_state_dict(sdpa.state_dict())
    batch = _mixed_view_batch(sdpa, 5, seed=5).to("cuda")
    a, ga, _ = forward_backward(sdpa, batch)
    b, gb, _ = forward_backward(xf, batch)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)
    for name in ("decoder.layers.0.cross_attn.q.weight", "fusion.gate.weight"):
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-3, atol=1e-5)


def test_bf16_autocast_and_compile():
    model = tiny(PRESET).eval()
    batch = batch_for(model, 4, seed=6)
    with torch.no_grad():
        eager = model(batch)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(batch)["loss"]
    assert torch.isfinite(auto) and abs(auto.item() - eager.item()) < 0.1 * abs(eager.item()) + 0.5
    # one graph, no break inside the ViT, BERT or decoder (cxrfast's ops stay opaque custom ops)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(batch)["loss"], eager, rtol=1e-4, atol=1e-4)


def test_no_host_sync_per_token_or_sample():
    model = tiny(PRESET)
    batch = batch_for(model, 6, seed=7)
    model(batch)  # warm-up
    with count_host_syncs() as syncs:
        model(batch)
    assert syncs["count"] == 0, f"{syncs['count']} host syncs in one forward:\n" + "\n".join(syncs["where"])


def test_greedy_generation():
    model = tiny(PRESET)
    c = model.config
    batch = _mixed_view_batch(model, 5, seed=8)
    ids = model.generate(batch, max_length=10)
    assert model.training  # restored
    assert ids.shape == (5, 11) and (ids[:, 0] == c.cls_id).all()
    body = ids[:, 1:]
    assert not torch.isin(body, torch.tensor([c.cls_id, c.mask_id])).any()
    assert not ((body[:, 1:] == body[:, :-1]) & (body[:, 1:] != c.pad_id)).any()   # never repeats a token
    ended = torch.cumsum((body == c.sep_id).long(), 1) - (body == c.sep_id).long() > 0
    assert (body[ended] == c.pad_id).all() and (body[~ended] != c.pad_id).all()
    torch.testing.assert_close(model.generate(batch, max_length=10), ids)
    # the first token is the argmax of the decoder's first step (special ids excluded)
    model.eval()
    with torch.no_grad():
        img = model.encode_image(batch)
        start = torch.full((5, 1), c.cls_id)
        step = model.decoder(img["local"], img["local_mask"], start, torch.ones_like(start, dtype=torch.bool))[:, 0]
        step[:, [c.pad_id, c.cls_id, c.mask_id]] = float("-inf")
    torch.testing.assert_close(ids[:, 1], step.argmax(1))
    with pytest.raises(ValueError, match="max_length"):
        model.generate(batch, max_length=c.max_length)


@pytest.mark.parametrize("contrastive", ["loop", "clip"])
def test_released_style_baseline_is_the_same_function(contrastive):
    from cxrfast.bench.presets.refers import baseline_loss

    model = tiny(PRESET).eval()
    batch = _mixed_view_batch(model, 5, seed=9)
    ours, ours_g, _ = forward_backward(model, batch)
    model.zero_grad(set_to_none=True)
    base = baseline_loss(model, batch, contrastive=contrastive)
    base.backward()
    torch.testing.assert_close(base.detach(), ours["loss"], rtol=2e-6, atol=2e-6)
    for name, p in model.named_parameters():
        if name in ("fusion.gate.weight", "text_projection.weight", "decoder.visual_projection.weight",
                    "image_encoder.model.embeddings.cls_token"):
            torch.testing.assert_close(p.grad, ours_g[name], rtol=1e-4, atol=1e-6)


def test_paper_size_parameter_counts():
    with torch.device("meta"):  # counts only: no 250 M random numbers drawn
        model = create_model(PRESET, size="paper")
    s = model.parameter_summary()
    # ViT-B/16 ≈ 86 M: transformers' ViTModel without pooler, one input channel (85.8 M with three)
    assert abs(s["image_encoder"] / 1e6 - 85.4) < 0.1
    assert abs(s["text_encoder"] / 1e6 - 109.5) < 0.1                  # BERT-base with its pooler
    D, V, H, F_, vocab, T = 768, 3, 1024, 4096, model.config.vocab_size, model.config.max_length
    assert s["fusion"] == V * D * V + V and s["text_projection"] == D * V * D + V * D
    attn = 4 * (H * H + H)
    layer = 2 * attn + H * F_ + F_ + F_ * H + H + 3 * 2 * H
    decoder = (D * H + H) + vocab * H + T * H + 2 * H + layer + vocab   # output weight tied to the words
    assert s["decoder"] == decoder
