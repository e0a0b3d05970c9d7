"""`globallocal`: tiny forward/backward, fused vs reference, the paper's formulas written out, autocast,
torch.compile, no host sync per token or sample, parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_earned
from preset_checks import batch_for, count_host_syncs, forward_backward, impl, tiny

PRESET = "globallocal"


def test_tiny_forward_backward_is_fast_and_trains_every_part():
    model = tiny(PRESET)
    batch = batch_for(model, 4)
    forward_backward(model, batch)  # warm-up (first-call allocations)
    losses, grads, seconds = forward_backward(model, batch)
    assert set(losses) == {"global", "local", "loss"} and all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["global"] + losses["local"])
    for part in ("image_encoder", "text_encoder", "local_embed", "global_embed", "word_embed", "report_embed"):
        if any(n.startswith(part) for n, _ in model.named_parameters()):  # (identity where the dims agree)
            assert any(n.startswith(part) and g.abs().sum() > 0 for n, g in grads.items()), part
    # "tiny" is sized to run forward + backward in about a second on a 2-core CPU (a timing assert would fail
    # by chance on a loaded machine: the size is what is asserted, the time is in the test's duration)
    assert model.num_parameters() < 1_000_000 and batch.views.shape[-1] <= 64


def test_fused_and_reference_paths_agree():
    """Same weights and batch: cxrfast's fast path (here the chunked CPU path) vs CXRFAST_IMPL=reference, with
    DESIGN's earned tolerance (the reference in float64 is the oracle, in float32 the yardstick)."""
    model = tiny(PRESET).eval()
    batch = batch_for(model, 5, seed=1)
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
    for name in ("local_embed.weight", "global_embed.weight", "text_encoder.model.embeddings.word_embeddings.weight"):
        assert_earned(name, got_g[name], hi_g[name], lo_g[name], torch.float32, k=4.0)


def _gloria_local(img_l, words, lengths, t1=4.0, t2=5.0, t3=10.0):
    """GLoRIA's local_loss as released (loops over reports, attention_fn, cosine, log-sum-exp), written here
    from the paper's formulas: for report i and every image b, word-region attention over regions
    (softmax over words first, × t1, softmax over regions), cosine of each word with its context, ×t2,
    log-sum-exp over words; then cross-entropy × t3 both ways."""
    B, R, E = img_l.shape
    sims = []
    for i in range(words.shape[0]):
        n = int(lengths[i])
        w = words[i, :n]                                       # [n, E]
        s = img_l @ w.t()                                      # [B, R, n]
        a = torch.softmax(s, dim=2)                            # over words
        attn = torch.softmax(t1 * a, dim=1)                    # over regions
        c = attn.transpose(1, 2) @ img_l                       # [B, n, E]
        cos = F.cosine_similarity(c, w[None].expand(B, -1, -1), dim=2, eps=1e-8)
        sims.append(torch.log(torch.exp(t2 * cos).sum(1)))     # [B]
    S = torch.stack(sims, 1) * t3                              # [B_img, B_txt]
    labels = torch.arange(B)
    return F.cross_entropy(S, labels) + F.cross_entropy(S.t(), labels)


def _gloria_global(img_g, txt_g, t3=10.0):
    S = F.normalize(img_g, dim=1) @ F.normalize(txt_g, dim=1).t() * t3
    labels = torch.arange(S.shape[0])
    return F.cross_entropy(S, labels) + F.cross_entropy(S.t(), labels)


def test_losses_equal_the_papers_formulas_on_the_same_features():
    model = tiny(PRESET).double().eval()
    batch = batch_for(model, 4, seed=2)
    batch.views = batch.views.double()
    with torch.no_grad():
        out = model(batch)
        img, txt = model.encode_image(batch), model.encode_text(batch)
    torch.testing.assert_close(out["global"], _gloria_global(img["global"], txt["global"]), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["local"], _gloria_local(img["local"], txt["words"], txt["word_lengths"]),
                               rtol=1e-9, atol=1e-9)


def test_word_merge_sums_the_last_layers_pieces():
    """Words are the sum of their pieces' summed last-n-layer states (GLoRIA's aggregate_tokens)."""
    model = tiny(PRESET).double().eval()
    batch = batch_for(model, 2, seed=3)
    with torch.no_grad():
        states = model.text_encoder(batch.input_ids, batch.attention_mask)
        tokens = torch.stack(states[-model.config.last_n_layers:]).sum(0)
        words = model.encode_text(batch)["words"]
    b = 0
    w = int(batch.word_index[b].max())
    want = model.word_embed(tokens[b, batch.word_index[b] == w].sum(0))
    torch.testing.assert_close(words[b, w], want)


def test_bf16_autocast_and_compile():
    model = tiny(PRESET).eval()
    batch = batch_for(model, 4, seed=4)
    with torch.no_grad():
        eager = model(batch)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(batch)["loss"]
    assert torch.isfinite(auto) and abs(auto.item() - eager.item()) < 0.1 * abs(eager.item()) + 0.5
    # one graph, no break inside the encoders (cxrfast's ops stay opaque custom ops); aot_eager keeps the
    # CPU test fast, inductor compiles the same graph
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(batch)["loss"], eager, rtol=1e-4, atol=1e-4)


def test_no_host_sync_per_token_or_sample():
    """The forward reads the report lengths once (the word-region op's documented length read), nothing
    per token or per sample."""
    model = tiny(PRESET)
    batch = batch_for(model, 6, seed=5)
    model(batch)  # warm-up
    with count_host_syncs() as syncs:
        model(batch)
    assert syncs["count"] <= 1, f"{syncs['count']} host syncs in one forward:\n" + "\n".join(syncs["where"])


def test_paper_size_parameter_counts():
    from cxrfast.models.factory import create_model

    model = create_model(PRESET, size="paper")
    summary = model.parameter_summary()
    assert abs(summary["image_encoder"] / 1e6 - 23.5) < 0.1       # transformers' ResNet-50 trunk
    assert abs(summary["text_encoder"] / 1e6 - 108.9) < 1.0       # BERT-base without its pooler
    assert summary["local_embed"] == 1024 * 768 and summary["global_embed"] == 2048 * 768 + 768


def test_benchmark_baseline_equals_the_preset():
    """cxrfast.bench.presets.globallocal.baseline_loss (GLoRIA's token-by-token word merge, its per-report
    local loss loop, its bmm/norm global loss) = model(batch)["loss"], loss and gradients, training mode
    (BERT's dropout drawn from the same seed), in float64 and in float32."""
    from cxrfast.bench.presets.globallocal import baseline_loss

    model = tiny(PRESET).double()
    batch = batch_for(model, 5, seed=5)
    batch.views = batch.views.double()
    names = ("local_embed.weight", "global_embed.weight", "text_encoder.model.encoder.layer.1.output.dense.weight",
             "image_encoder.model.embedder.embedder.convolution.weight")
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
    model32 = tiny(PRESET)
    batch32 = batch_for(model32, 5, seed=5)
    torch.manual_seed(7)
    got32 = model32(batch32)["loss"]
    torch.manual_seed(7)
    torch.testing.assert_close(got32, baseline_loss(model32, batch32), rtol=1e-5, atol=1e-5)
