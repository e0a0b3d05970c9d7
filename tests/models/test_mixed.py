"""`mixed`: tiny forward/backward, the losses written out from their formulas, mixed batches (each loss only
where its input exists), seeded masks, the per-sample baseline, reconstructions, features, autocast,
torch.compile, no host sync, attention backends, the paper-size parameter count."""

import math

import pytest
import torch
import torch.nn.functional as F
from preset_checks import batch_for, count_host_syncs, forward_backward, impl, tiny

from cxrfast.bench.presets.mixed import baseline_loss
from cxrfast.models.attention import xformers_reason
from cxrfast.models.mixed import mask_key, mlm_masks, mvm_mask

PRESET = "mixed"
KINDS = ["paired", "image", "text", "paired", "text", "image", "paired"]
LOSSES = {"mlm", "mvm", "mvm_x1", "mvm_x2", "mvm_x4", "loss"}


def _batch(model, kinds=KINDS, seed=0, dtype=None):
    batch = batch_for(model, len(kinds), seed=seed, kinds=kinds)
    if dtype is not None:
        batch.views = batch.views.to(dtype)
    return batch


def test_tiny_forward_backward_trains_every_parameter():
    model = tiny(PRESET)
    batch = _batch(model)
    forward_backward(model, batch)  # warm-up (first-call allocations)
    losses, grads, _ = forward_backward(model, batch)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert losses["mlm"] > 0 and losses["mvm"] > 0
    torch.testing.assert_close(losses["loss"], losses["mlm"] + losses["mvm"])
    torch.testing.assert_close(losses["mvm"], (losses["mvm_x1"] + losses["mvm_x2"] + losses["mvm_x4"]) / 3)
    dead = [n for n, _ in model.named_parameters() if n not in grads or not grads[n].abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"
    # sized to run forward + backward in well under a second on a 2-core CPU (the size is asserted, not a time)
    assert model.num_parameters() < 100_000 and batch.views.shape[-1] <= 32


def test_no_cxrfast_op_so_fused_and_reference_paths_coincide(monkeypatch):
    """Vacuous by construction, and checked as such: the preset calls none of cxrfast's fused ops (its losses
    are a cross-entropy over the vocabulary and an L1 over pixels, for which cxrfast has no fused op; its
    attention is SDPA), so CXRFAST_IMPL=reference changes nothing, bit for bit. This fails the day an op is
    wired in (its dispatch is counted), which then needs DESIGN's earned-tolerance test instead."""
    import cxrfast.ops._dispatch as dispatch

    calls = []
    real = dispatch.select
    monkeypatch.setattr(dispatch, "select", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    model = tiny(PRESET).eval()
    batch = _batch(model, seed=1)
    got, got_g, _ = forward_backward(model, batch)
    with impl("reference"):
        ref, ref_g, _ = forward_backward(model, batch)
    assert calls == []
    assert all(torch.equal(got[k], ref[k]) for k in got)
    assert all(torch.equal(got_g[n], ref_g[n]) for n in got_g)


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _layer_norm(x, weight, bias, eps):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_losses_equal_the_formulas_on_the_same_features_and_masks():
    """MLM: −log softmax of BERT's head (dense, GELU, LayerNorm, tied decoder + bias) at the original token,
    averaged over the batch's masked tokens; MVM at scale f: mean |W_f h + b_f − (the patch's pixels averaged
    over f × f blocks)| over the masked patches, the scales averaged. One token and one patch at a time."""
    model = tiny(PRESET).double().eval()
    batch = _batch(model, seed=2, dtype=torch.float64)
    c = model.config
    with torch.no_grad():
        out = model(batch)
        masks = model.make_masks(batch)
        patch_h, token_h = model.hidden_states(batch, masks)
    head, E = model.mlm_head, model.text_embed.word.weight
    nll = []
    B, K = masks["positions"].shape
    for b in range(B):
        for k in range(K):
            if not masks["valid"][b, k]:
                continue
            t = int(masks["positions"][b, k])
            z = _layer_norm(_gelu(head.dense.weight @ token_h[b, t] + head.dense.bias), head.norm.weight,
                            head.norm.bias, c.layer_norm_eps)
            logits = E @ z + head.bias
            nll.append(torch.logsumexp(logits, 0) - logits[batch.input_ids[b, t]])
    torch.testing.assert_close(out["mlm"], torch.stack(nll).mean(), rtol=1e-10, atol=1e-10)

    P, g = c.patch_size, model.grid
    image = batch.views[:, 0, 0]
    per_scale = []
    for f, lin in zip(c.mvm_scales, model.mvm_heads):
        q, errs = P // f, []
        for b in range(B):
            for n in range(g * g):
                if not masks["patch_mask"][b, n]:
                    continue
                i, j = divmod(n, g)
                block = image[b, i * P:(i + 1) * P, j * P:(j + 1) * P]
                target = torch.stack([block[u * f:(u + 1) * f, v * f:(v + 1) * f].mean()
                                      for u in range(q) for v in range(q)])
                errs.append((lin.weight @ patch_h[b, n] + lin.bias - target).abs().mean())
        want = torch.stack(errs).mean()
        torch.testing.assert_close(out[f"mvm_x{f}"], want, rtol=1e-10, atol=1e-10)
        per_scale.append(want)
    torch.testing.assert_close(out["mvm"], torch.stack(per_scale).mean(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["loss"], out["mlm"] + out["mvm"], rtol=1e-12, atol=1e-12)


def test_masks_follow_bert_and_simmim():
    """Exactly round(0.15·n) of a report's n real non-special tokens (≥ 1, ≤ K), 80 / 10 / 10 replacement,
    nothing else touched; exactly round(0.6·N) patches of each image; none where the modality is absent."""
    model = tiny(PRESET)
    c = model.config
    kinds = ["paired", "image", "text"] * 256
    batch = _batch(model, kinds=kinds, seed=3)
    m = model.make_masks(batch)
    ids, attn = batch.input_ids, batch.attention_mask
    K = m["positions"].shape[1]
    assert K == math.ceil(0.15 * ids.shape[1])
    special = (ids == c.pad_id) | (ids == c.cls_id) | (ids == c.sep_id) | (ids == c.mask_id)
    actions = {"mask": 0, "random": 0, "kept": 0}
    for b, kind in enumerate(kinds):
        eligible = (attn[b] & ~special[b]).nonzero().flatten().tolist()
        n = len(eligible)
        want = 0 if kind == "image" or n == 0 else min(K, max(1, math.floor(0.15 * n + 0.5)))
        picked = m["positions"][b][m["valid"][b]].tolist()
        assert len(picked) == want and len(set(picked)) == want and set(picked) <= set(eligible), b
        assert m["labels"][b][m["valid"][b]].tolist() == ids[b, picked].tolist()
        untouched = [t for t in range(ids.shape[1]) if t not in picked]
        assert torch.equal(m["input_ids"][b, untouched], ids[b, untouched])
        for t in picked:
            new = int(m["input_ids"][b, t])
            actions["mask" if new == c.mask_id else "kept" if new == int(ids[b, t]) else "random"] += 1
            assert new == c.mask_id or new > max(c.pad_id, c.cls_id, c.sep_id, c.mask_id)
        n_patches = int(m["patch_mask"][b].sum())
        assert n_patches == (0 if kind == "text" else round(0.6 * model.grid ** 2)), b
    total = sum(actions.values())
    assert total > 800
    assert 0.74 < actions["mask"] / total < 0.86 and 0.05 < actions["random"] / total < 0.15, actions


def test_masks_are_seeded_and_drawn_per_sample_alike():
    model = tiny(PRESET)
    batch = _batch(model, seed=4)
    a, b = model.make_masks(batch), model.make_masks(batch)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other_step = model.make_masks(batch, step=1)
    other_seed = tiny(PRESET, mask_seed=7).make_masks(batch)
    for m in (other_step, other_seed):
        assert not torch.equal(m["patch_mask"], a["patch_mask"]) and not torch.equal(m["input_ids"], a["input_ids"])
    # one sample at a time (the baseline's and a dataset's way) gives the same masks as the batched draw
    c, key = model.config, mask_key(model.config.mask_seed, model.mask_step)
    image, text = model.presence(batch)
    for r in range(len(batch)):
        row = torch.tensor([r])
        one = mlm_masks(c, key, row, batch.input_ids[r:r + 1], batch.attention_mask[r:r + 1], text[r:r + 1],
                        a["positions"].shape[1])
        assert all(torch.equal(one[k][0], a[k][r]) for k in one)
        assert torch.equal(mvm_mask(c, key, row, image[r:r + 1], model.grid ** 2)[0], a["patch_mask"][r])
    # training advances the counter (fresh masks every step), evaluation does not
    model.eval()
    model(batch)
    assert int(model.mask_step) == 0
    model.train()
    model(batch)
    model(batch)
    assert int(model.mask_step) == 2


def test_each_loss_only_where_its_inputs_exist():
    model = tiny(PRESET)
    # image-only: no MLM term (a zero that still has a graph), and nothing reaches the text side
    out = model(_batch(model, kinds=["image"] * 3, seed=5))
    assert out["mlm"].item() == 0.0 and out["mlm"].requires_grad and out["mvm"] > 0
    model.zero_grad(set_to_none=True)
    out["loss"].backward()
    assert all(p.grad is None or not p.grad.any() for n, p in model.named_parameters()
               if n.startswith(("mlm_head", "text_embed")))
    # text-only: no MVM term at any scale, and nothing reaches the image side
    out = model(_batch(model, kinds=["text"] * 3, seed=6))
    assert all(out[k].item() == 0.0 and out[k].requires_grad for k in ("mvm", "mvm_x1", "mvm_x2", "mvm_x4"))
    assert out["mlm"] > 0
    model.zero_grad(set_to_none=True)
    out["loss"].backward()
    assert all(p.grad is None or not p.grad.any() for n, p in model.named_parameters()
               if n.startswith(("mvm_heads", "image_embed")))
    # mixed: what an absent modality holds changes nothing (kind decides, even against the masks: an
    # image-only sample whose attention mask claims tokens, a text-only sample with pixels)
    model.eval()
    batch = _batch(model, seed=7)
    clean, clean_g, _ = forward_backward(model, batch)
    kind = batch.kind
    g = torch.Generator().manual_seed(8)
    batch.views[kind == 2] = torch.randn(batch.views[kind == 2].shape, generator=g)
    batch.input_ids[kind == 1] = torch.randint(5, model.config.vocab_size, batch.input_ids[kind == 1].shape,
                                               generator=g)
    batch.attention_mask[kind == 1] = True
    dirty, dirty_g, _ = forward_backward(model, batch)
    for k in clean:
        torch.testing.assert_close(dirty[k], clean[k], rtol=1e-6, atol=1e-7)
    for n in clean_g:
        torch.testing.assert_close(dirty_g[n], clean_g[n], rtol=1e-5, atol=1e-7)


def test_baseline_loop_equals_the_model():
    """cxrfast.bench.presets.mixed.baseline_loss (per-sample loop, per-sample masks, each sample's present
    modalities only) equals model(batch)["loss"]: in float32 to rounding, in float64 with its gradients."""
    model = tiny(PRESET)
    batch = _batch(model, seed=9)
    model.mask_step.fill_(5)
    base = baseline_loss(model, batch)
    assert int(model.mask_step) == 6          # training mode: the baseline advances the counter as forward does
    model.mask_step.fill_(5)
    torch.testing.assert_close(base, model(batch)["loss"], rtol=2e-6, atol=2e-6)

    model64 = tiny(PRESET).double().eval()
    batch64 = _batch(model64, seed=10, dtype=torch.float64)
    params = [p for p in model64.parameters()]
    base = baseline_loss(model64, batch64)
    base_g = torch.autograd.grad(base, params, allow_unused=True)
    fused = model64(batch64)["loss"]
    fused_g = torch.autograd.grad(fused, params, allow_unused=True)
    torch.testing.assert_close(base, fused, rtol=1e-12, atol=1e-12)
    for a, b in zip(base_g, fused_g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_reconstructions_are_the_mvm_predictions():
    model = tiny(PRESET).eval()
    batch = _batch(model, seed=11)
    out = model(batch)
    pics = model.reconstruct(batch)
    assert int(model.mask_step) == 0
    P, H = model.config.patch_size, batch.views.shape[-1]
    assert pics["mask"].shape == (len(batch), 1, H, H)
    assert int(pics["mask"].sum()) == int(pics["patch_mask"].sum()) * P * P
    for f, s in pics["scales"].items():
        assert s["prediction"].shape == (len(batch), 1, H // f, H // f)
        hole = pics["mask"][..., ::f, ::f]
        assert torch.equal(s["composite"][~hole], s["target"][~hole])
        assert torch.equal(s["composite"][hole], s["prediction"][hole])
        # the loss at this scale, recomputed from the pictures
        err = (s["prediction"] - s["target"]).abs()[hole].mean()
        torch.testing.assert_close(err, out[f"mvm_x{f}"].detach())


def test_features_are_the_stream_on_one_modality():
    model = tiny(PRESET).eval()
    batch = _batch(model, kinds=["paired"] * 3, seed=12)
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        D = model.config.hidden_size
        assert img["global"].shape == (3, D) and img["local"].shape == (3, model.grid ** 2, D)
        assert txt["global"].shape == (3, D) and txt["tokens"].shape == (3, batch.input_ids.shape[1], D)
        # the text features are the joint stream's [CLS] when the image is absent (and vice versa)
        n = model.grid ** 2
        text_only = _batch(model, kinds=["paired"] * 3, seed=12)
        text_only.kind = torch.full_like(batch.kind, 2)
        text_only.view_mask[:] = False
        unmasked = {"input_ids": batch.input_ids, "patch_mask": torch.zeros(3, n, dtype=torch.bool)}
        _, tokens = model.hidden_states(text_only, unmasked)
        torch.testing.assert_close(txt["global"], tokens[:, 0], rtol=1e-5, atol=1e-6)
        image_only = _batch(model, kinds=["paired"] * 3, seed=12)
        image_only.kind = torch.ones_like(batch.kind)
        patches, _ = model.hidden_states(image_only, unmasked)
        torch.testing.assert_close(img["local"], patches, rtol=1e-5, atol=1e-6)
        # and one modality's features do not depend on the other's content
        other = _batch(model, kinds=["paired"] * 3, seed=13)
        batch.input_ids[:, 1:] = other.input_ids[:, 1:]
        torch.testing.assert_close(model.encode_image(batch)["global"], img["global"])
    sim = model.similarity(img["global"], txt["global"])
    assert sim.shape == (3, 3) and sim.abs().max() <= 1 + 1e-6


def test_bf16_autocast_and_compile():
    model = tiny(PRESET).eval()
    batch = _batch(model, seed=14)
    with torch.no_grad():
        eager = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(batch)
    for k in ("mlm", "mvm"):
        assert torch.isfinite(auto[k]) and abs(auto[k].item() - eager[k].item()) < 0.05 * abs(eager[k].item()) + 0.05
    # one graph (fullgraph: the masks' hashing, the gathers and the key-padding attention trace without a break)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        got = compiled(batch)
    for k in eager:
        torch.testing.assert_close(got[k], eager[k], rtol=1e-5, atol=1e-5)


def test_no_host_sync_in_forward():
    model = tiny(PRESET)
    batch = _batch(model, seed=15)
    model(batch)  # warm-up
    with count_host_syncs() as syncs:
        model(batch)
    assert syncs["count"] == 0, f"{syncs['count']} host syncs in one forward:\n" + "\n".join(syncs["where"])


def test_attention_backends_agree():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why = xformers_reason(device)
    if why:
        pytest.skip(f"the xformers backend cannot run here: {why}")
    model = tiny(PRESET).to(device).eval()
    batch = _batch(model, seed=16).to(device)
    with torch.no_grad():
        sdpa = model(batch)
        for block in model.transformer.blocks:
            block.backend = "xformers"
        xf = model(batch)
    for k in sdpa:
        torch.testing.assert_close(xf[k], sdpa[k], rtol=1e-4, atol=1e-5)


def test_paper_size_parameter_count():
    """The paper size is ViT-B/16 at 224 px (one channel) + BERT-base's vocabulary: the image side equals
    transformers' ViTModel of that size (no pooler) plus the [MASK] vector; the rest is counted by hand."""
    from transformers import ViTConfig, ViTModel

    from cxrfast.models.encoders import VITS
    from cxrfast.models.factory import create_model

    with torch.device("meta"):  # counted, not allocated nor initialised
        model = create_model(PRESET, size="paper")
        vit = ViTModel(ViTConfig(num_channels=1, image_size=224, **VITS["vit-b16"]), add_pooling_layer=False)
    c = model.config
    s = model.parameter_summary()
    D, V, T = c.hidden_size, c.vocab_size, c.max_length
    assert s["image_embed"] + s["transformer"] == sum(p.numel() for p in vit.parameters()) + D
    assert s["text_embed"] == V * D + T * D + 2 * D and s["modality_embed"] == 2 * D
    assert s["mlm_head"] == D * D + D + 2 * D + V
    assert s["mvm_heads"] == sum((D + 1) * (16 // f) ** 2 for f in (1, 2, 4))
    total = model.num_parameters()
    assert total == sum(s.values())
    print(f"mixed paper size: {total / 1e6:.2f} M parameters ({(s['image_embed'] + s['transformer']) / 1e6:.2f} M "
          f"ViT-B/16 side)")
    assert abs(total / 1e6 - 109.83) < 0.01
