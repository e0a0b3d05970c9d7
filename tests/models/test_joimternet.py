"""`joimternet`: tiny forward/backward, fused vs reference, the paper's formulas written out, the step's draws
(negatives, MLM corruption), autocast, torch.compile, no host sync per token or sample, parameter counts, and the
benchmark baseline (the released code's loops) against the model."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_earned
from preset_checks import batch_for, count_host_syncs, forward_backward, impl, tiny

from cxrfast.models.sampling import CounterDraws, mlm_corrupt

PRESET = "joimternet"
LOSSES = {"global", "local", "global_triplet", "local_triplet", "mlm", "loss"}
PARTS = ("image_encoder", "soft_attention", "region_embed", "global_embed", "text_encoder", "sentence_embed",
         "word_embed", "mlm_head")


def _double(model, batch):
    model = model.double()
    batch.views = batch.views.double()
    return model, batch


def test_tiny_forward_backward_is_fast_and_trains_every_part():
    model = tiny(PRESET)
    batch = batch_for(model, 4)
    forward_backward(model, batch)  # warm-up (first-call allocations)
    losses, grads, seconds = forward_backward(model, batch)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert all(losses[k] > 0 for k in ("global", "local", "mlm"))
    total = losses["global"] + losses["local"] + 2.0 * (losses["global_triplet"] + losses["local_triplet"]) \
        + losses["mlm"]
    torch.testing.assert_close(losses["loss"], total)
    for part in PARTS:
        assert any(n.startswith(part) and g.abs().sum() > 0 for n, g in grads.items()), part
    for name, p in model.named_parameters():  # every parameter is used (the soft attentions' γ included)
        assert name in grads, name
    # sized to run forward + backward in about a second on a 2-core CPU; the size is asserted, not the time
    assert model.num_parameters() < 1_000_000 and batch.views.shape[-1] <= 64
    assert model.encode_image(batch)["grid"] == (4, 4)


def test_fused_and_reference_paths_agree():
    """Same weights, batch and draws (eval mode: the step stands still): cxrfast's fast path (the chunked CPU
    path) vs CXRFAST_IMPL=reference, with DESIGN's earned tolerance."""
    model = tiny(PRESET).eval()
    batch = batch_for(model, 5, seed=1)
    got, got_g, _ = forward_backward(model, batch)
    with impl("reference"):
        lo, lo_g, _ = forward_backward(model, batch)
        model64 = tiny(PRESET).eval()
        model64.load_state_dict(model.state_dict())
        model64, b64 = _double(model64, batch.to("cpu"))
        hi, hi_g, _ = forward_backward(model64, b64)
    assert got["local_triplet"] > 0 and got["global_triplet"] > 0  # the triplet terms take part
    for k in got:
        assert_earned(k, got[k], hi[k], lo[k], torch.float32, k=4.0)
    for name in ("region_embed.weight", "global_embed.weight", "word_embed.weight", "sentence_embed.weight",
                 "soft_attention.3.scale", "text_encoder.model.embeddings.word_embeddings.weight"):
        assert_earned(name, got_g[name], hi_g[name], lo_g[name], torch.float32, k=4.0)


# ---- the paper's formulas, written out on the model's features ------------------------------------------------------

def _cos(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()


def _both_ways(S):
    labels = torch.arange(S.shape[0])
    return F.cross_entropy(S, labels) + F.cross_entropy(S.t(), labels)


def _word_region(v, w, t1=4.0, t2=5.0):
    """One image's regions v [R, D] and one report's words w [n, D]: attention over regions of each word
    (softmax over words, × t1, softmax over regions), cosine of each word with its context, log Σ exp(t2 ·)."""
    a = torch.softmax(v @ w.t(), dim=1)
    alpha = torch.softmax(t1 * a, dim=0)
    context = alpha.t() @ v
    return torch.logsumexp(t2 * F.cosine_similarity(context, w, dim=1, eps=1e-8), dim=0)


def _hinges(S, neg, margin=0.5):
    """One chosen negative per anchor, both ways: image i vs report neg[i], report i vs image neg[i]; each
    direction averaged over the batch."""
    i = torch.arange(S.shape[0])
    d = S.diagonal()
    return (margin + S[i, neg] - d).clamp(min=0).mean() + (margin + S[neg, i] - d).clamp(min=0).mean()


def test_losses_equal_the_papers_formulas_on_the_same_features():
    model = tiny(PRESET).eval()
    model, batch = _double(model, batch_for(model, 4, seed=2))
    with torch.no_grad():
        out = model(batch)
        img, txt, drawn = model.encode_image(batch), model.encode_text(batch), model.draw(batch)
        B, n = 4, txt["word_lengths"]
        S = torch.stack([torch.stack([_word_region(img["local"][b], txt["words"][i, :n[i]]) for i in range(B)])
                         for b in range(B)])                                   # [image, report]
        neg = drawn["negatives"]
        logits = model.mlm_head(model.text_encoder(drawn["mlm_input_ids"], batch.attention_mask)[-1])
    want = {
        "global": _both_ways(10.0 * _cos(img["global"], txt["global"])),
        "local": _both_ways(10.0 * S),
        "global_triplet": _hinges(_cos(img["global"], txt["global"]), neg),
        "local_triplet": _hinges(S, neg),
        "mlm": F.cross_entropy(logits.flatten(0, 1), drawn["mlm_labels"].flatten(), ignore_index=-100),
    }
    assert want["global_triplet"] > 0 and want["local_triplet"] > 0
    for k, v in want.items():
        torch.testing.assert_close(out[k], v, rtol=1e-9, atol=1e-9, msg=k)
    # the words are the report's words, without [CLS] / [SEP]: as many as the batch's word indices say
    assert torch.equal(txt["word_lengths"], batch.word_index.amax(1) + 1)


def test_word_pieces_are_averaged_into_words_and_the_sentence_is_cls():
    model = tiny(PRESET).double().eval()
    batch = batch_for(model, 2, seed=3)
    with torch.no_grad():
        last = model.text_encoder(batch.input_ids, batch.attention_mask)[-1]
        txt = model.encode_text(batch)
    b, w = 1, int(batch.word_index[1].max())
    torch.testing.assert_close(txt["words"][b, w], model.word_embed(last[b, batch.word_index[b] == w].mean(0)))
    torch.testing.assert_close(txt["global"][b], model.sentence_embed(last[b, 0]))
    assert batch.input_ids[b, 0] == model.config.cls_id


def test_soft_attention_is_the_released_conv3d_form():
    from cxrfast.models.joimternet import SoftAttention

    torch.manual_seed(0)
    sa = SoftAttention(6, heads=3).double()
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    conv3d = torch.nn.Conv3d(1, 3, kernel_size=(6, 1, 1), stride=(6, 1, 1)).double()
    with torch.no_grad():
        conv3d.weight.copy_(sa.conv.weight.view(3, 1, 6, 1, 1))
        conv3d.bias.copy_(sa.conv.bias)
    c = F.leaky_relu(conv3d(x.unsqueeze(1)), 0.01).squeeze(2)               # the released forward
    c = torch.softmax(c.view(2, 3, 20), dim=-1).view(2, 3, 4, 5)
    maps = c.sum(1, keepdim=True)
    torch.testing.assert_close(sa(x), x + x * maps * sa.scale)


# ---- the step's draws -----------------------------------------------------------------------------------------------

def test_negatives_are_other_samples_drawn_anew_each_training_step():
    model = tiny(PRESET)
    batch = batch_for(model, 5, seed=4)
    counts = torch.zeros(5, 5)
    for step in range(1000):
        model.draws.step.fill_(step)
        counts[torch.arange(5), model.draw(batch)["negatives"]] += 1
    assert counts.diagonal().sum() == 0
    off = counts[~torch.eye(5, dtype=torch.bool)]
    assert (off - 250).abs().max() < 6 * (1000 * 0.25 * 0.75) ** 0.5, counts  # uniform over the other four
    model.draws.step.zero_()
    before = model.draw(batch)
    model.train()(batch)
    assert int(model.draws.step) == 1 and not torch.equal(model.draw(batch)["mlm_labels"], before["mlm_labels"])
    model.eval()(batch)
    assert int(model.draws.step) == 1  # evaluation sees the same draws every time


def test_draws_are_reproducible_from_seed_and_step_alone():
    from cxrfast.models.factory import create_model

    a, b = tiny(PRESET, seed=0), tiny(PRESET, seed=1)  # other weights, the same config seed (0)
    batch = batch_for(a, 6, seed=5)
    torch.manual_seed(123)  # torch's global generator plays no part
    da = a.draw(batch)
    torch.manual_seed(7)
    db = b.draw(batch)
    assert all(torch.equal(da[k], db[k]) for k in da)
    other = create_model(PRESET, size="tiny", seed=1)
    assert not torch.equal(other.draw(batch)["mlm_labels"], da["mlm_labels"])
    # the step is part of the state dict: a resumed model continues the sequence
    a.draws.step.fill_(41)
    fresh = tiny(PRESET)
    fresh.load_state_dict(a.state_dict())
    assert int(fresh.draws.step) == 41 and torch.equal(fresh.draw(batch)["negatives"], a.draw(batch)["negatives"])
    assert not all(torch.equal(fresh.draw(batch)[k], da[k]) for k in da)


def test_mlm_corruption_is_berts_rule():
    draws = CounterDraws(5)
    B, T, V, low, mask_id = 200, 200, 1000, 5, 4
    ids = torch.randint(low, V, (B, T))
    candidates = torch.rand(B, T) < 0.9
    out, labels = mlm_corrupt(draws, ids, candidates, vocab_size=V, mask_id=mask_id, random_low=low)
    chosen = labels != -100
    assert not (chosen & ~candidates).any()                      # specials and padding are never chosen
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(out[~chosen], ids[~chosen])
    n = int(candidates.sum())
    sd = (n * 0.15 * 0.85) ** 0.5
    assert abs(int(chosen.sum()) - 0.15 * n) < 6 * sd
    k = int(chosen.sum())
    masked = int((out[chosen] == mask_id).sum())
    replaced = int(((out[chosen] != mask_id) & (out[chosen] != ids[chosen])).sum())
    assert abs(masked - 0.8 * k) < 6 * (k * 0.16) ** 0.5
    # random tokens (10%) that happen to draw the original id (1 in V − low) count as kept
    assert abs(replaced - 0.1 * k) < 6 * (k * 0.09) ** 0.5 + 0.1 * k / (V - low)
    assert ((out >= low) | (out == mask_id)).all() and (out < V).all()
    # the model corrupts word pieces only ([CLS], [SEP] and padding keep their ids and carry no label)
    model = tiny(PRESET)
    batch = batch_for(model, 8, seed=6)
    drawn = model.draw(batch)
    special = batch.word_index < 0
    assert torch.equal(drawn["mlm_input_ids"][special], batch.input_ids[special])
    assert (drawn["mlm_labels"][special] == -100).all() and (drawn["mlm_labels"] != -100).any()


# ---- autocast, compile, host syncs ---------------------------------------------------------------------------------

def test_bf16_autocast_and_compile():
    model = tiny(PRESET).eval()
    batch = batch_for(model, 4, seed=7)
    with torch.no_grad():
        eager = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(batch)
    for k in LOSSES:
        assert torch.isfinite(auto[k]) and abs(auto[k].item() - eager[k].item()) < 0.1 * abs(eager[k].item()) + 0.5, k
    # one graph: no break inside the encoders or at the draws (cxrfast's ops stay opaque custom ops)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(batch)
    for k in LOSSES:
        torch.testing.assert_close(out[k], eager[k], rtol=1e-4, atol=1e-4, msg=k)


def test_no_host_sync_per_token_or_sample():
    """One forward reads the report lengths once (local_contrastive_loss's word–region op, its documented
    length read); the local triplet's chosen pairs, the draws and the word merge read nothing."""
    model = tiny(PRESET)
    batch = batch_for(model, 6, seed=8)
    model(batch)  # warm-up
    with count_host_syncs() as syncs:
        model(batch)
    assert syncs["count"] <= 1, f"{syncs['count']} host syncs in one forward:\n" + "\n".join(syncs["where"])


@pytest.mark.gpu
def test_cuda_sync_debug_mode_finds_no_sync_per_sample():
    """On a GPU, torch.cuda.set_sync_debug_mode("warn") reports every synchronising call of a forward: a fixed
    few per op call (the word–region op's length read, the ops' input checks), none per token or sample, so
    the same number at 2 and at 8 samples."""
    import warnings

    model = tiny(PRESET).cuda()
    counts = []
    for size in (2, 8):
        batch = batch_for(model, size, seed=10)
        model(batch)  # warm-up
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model(batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1], f"synchronising calls at 2 and 8 samples: {counts}"


# ---- sizes -----------------------------------------------------------------------------------------------------------

def _basic_resnet_parameters(embedding, widths, depths):
    """Parameters of a BasicBlock ResNet written out: a 7×7 stem + BN, per block two 3×3 convolutions + BNs,
    and a 1×1 projection + BN where a block changes width or stride (every first block here)."""
    total = 7 * 7 * embedding + 2 * embedding
    c_in = embedding
    for c, n in zip(widths, depths):
        for block in range(n):
            total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            if block == 0:
                total += c_in * c + 2 * c
            c_in = c
    return total


def _bert_parameters(vocab, hidden, layers, ff, positions=512):
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ff + ff) + (ff * hidden + hidden) + 2 * hidden
    return embeddings + layers * layer


def test_paper_size_parameter_counts_and_grid():
    from cxrfast.models.factory import create_model

    with torch.device("meta"):  # shapes only: a 2048-px forward on meta tensors costs nothing
        model = create_model(PRESET, size="paper")
    grid = model.encode_image(batch_for(model, 2))["grid"]  # (the batch is built on the CPU, moved to meta)
    c = model.config
    summary = model.parameter_summary()
    widths = [16, 32, 64, 128, 256, 512]
    assert summary["image_encoder"] == _basic_resnet_parameters(8, widths, [2] * 6) == 11_192_568
    assert summary["soft_attention"] == (128 * 16 + 16 + 1) + (256 * 16 + 16 + 1)
    assert summary["region_embed"] == 256 * 512 and summary["global_embed"] == 2048 * 512 + 512
    assert summary["text_encoder"] == _bert_parameters(c.vocab_size, 512, 3, 2048)
    assert _bert_parameters(0, 512, 3, 2048) - (512 + 2) * 512 - 1024 == 9_457_152  # the 3 layers: 9.46 M
    assert summary["sentence_embed"] == summary["word_embed"] == 512 * 512 + 512
    assert summary["mlm_head"] == 512 * 512 + 512 + 2 * 512 + 512 * c.vocab_size + c.vocab_size
    assert grid == (16, 16) and c.image_size == 2048  # 2048 px / stride 128 at stage 5


# ---- the benchmark baseline ------------------------------------------------------------------------------------------

def test_benchmark_baseline_is_the_same_loss():
    """cxrfast.bench.presets.joimternet.baseline_loss: the released code's loops (per-token word merge, B × B
    matrices, per-sample triplets) on the model's encoders and draws: the same total to rounding, in float64."""
    from cxrfast.bench.presets.joimternet import baseline_loss

    model = tiny(PRESET).eval()
    model, batch = _double(model, batch_for(model, 5, seed=9))
    with torch.no_grad():
        want = model(batch)["loss"]
        got = baseline_loss(model, batch)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    model.train()
    step = int(model.draws.step)
    baseline_loss(model, batch)
    assert int(model.draws.step) == step + 1  # a training step of the baseline draws anew, as the model's


@pytest.mark.parametrize("field,value", [("region_stage", 5), ("soft_attention_stages", (0,)),
                                         ("mlm_probability", 1.5), ("word_reduce", "max")])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"JoImTeRNetConfig.{field}"):
        tiny(PRESET, **{field: value})
