"""The presets' shared blocks against straightforward loops, configs, the factory and random batches."""

import dataclasses
import math

import pytest
import torch

from cxrfast.models.attention import attention, xformers_reason
from cxrfast.models.common import masked_mean, merge_words, pool_sentences
from cxrfast.models.config import load_config
from cxrfast.models.factory import PRESETS, create_model, list_presets, random_batch


def _indices(B=3, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    word = torch.full((B, T), -1)
    sent = torch.full((B, T), -1)
    for b, n in enumerate([10, 4, 0][:B]):
        starts = torch.rand(n, generator=g) < 0.6
        if n:
            starts[0] = True
        w = torch.cumsum(starts.long(), 0) - 1
        word[b, 1:n + 1] = w
        sent[b, 1:n + 1] = w // 2
    return word, sent


def test_merge_words_equals_the_loop():
    word, _ = _indices()
    tokens = torch.randn(3, 12, 5, dtype=torch.float64)
    for reduce in ("sum", "mean"):
        words, lengths, mask = merge_words(tokens, word, reduce)
        for b in range(3):
            n = int(word[b].max()) + 1 if (word[b] >= 0).any() else 0
            assert lengths[b] == n and mask[b].sum() == n
            for w in range(n):
                pieces = tokens[b, word[b] == w]
                want = pieces.sum(0) if reduce == "sum" else pieces.mean(0)
                torch.testing.assert_close(words[b, w], want)
            assert (words[b, n:] == 0).all()


def test_pool_sentences_equals_the_loop():
    _, sent = _indices()
    tokens = torch.randn(3, 12, 4, dtype=torch.float64)
    for reduce in ("max", "mean"):
        out, lengths, mask = pool_sentences(tokens, sent, reduce)
        for b in range(3):
            n = int(sent[b].max()) + 1 if (sent[b] >= 0).any() else 0
            assert lengths[b] == n
            for s in range(n):
                rows = tokens[b, sent[b] == s]
                torch.testing.assert_close(out[b, s], rows.amax(0) if reduce == "max" else rows.mean(0))
            assert (out[b, n:] == 0).all()


def test_masked_mean():
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    m = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = masked_mean(x, m)
    torch.testing.assert_close(out[0], x[0, :2].mean(0))
    assert (out[1] == 0).all()


def test_attention_matches_the_formula_and_masks():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    pad = torch.tensor([[True] * 5, [True, True, False, False, False]])
    for causal in (False, True):
        got = attention(q, k, v, key_padding=pad, causal=causal)
        scores = q @ k.transpose(-1, -2) / math.sqrt(8)
        scores = scores.masked_fill(~pad[:, None, None, :], float("-inf"))
        if causal:
            scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(got, torch.softmax(scores, -1) @ v)
    none = attention(q, k, v, key_padding=torch.zeros(2, 5, dtype=torch.bool))
    assert torch.isfinite(none).all() and (none == 0).all()  # no key at all: zeros, not NaN
    with pytest.raises(ValueError, match="backend must be one of"):
        attention(q, k, v, backend="flash")


def test_xformers_backend_says_why_it_cannot_run_here():
    q = torch.randn(1, 1, 2, 4)
    why = xformers_reason(q.device)
    if why is None:
        torch.testing.assert_close(attention(q, q, q, backend="xformers"), attention(q, q, q), rtol=1e-3, atol=1e-3)
    else:
        with pytest.raises(RuntimeError, match="xformers"):
            attention(q, q, q, backend="xformers")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_configs_round_trip_through_json(preset, tmp_path):
    from cxrfast.models.factory import model_class

    try:
        cls = model_class(preset).CONFIG
    except ModuleNotFoundError:
        pytest.skip(f"preset {preset} is not implemented in this build")
    for size in ("paper", "small", "tiny"):
        cfg = cls.for_size(size)
        path = tmp_path / f"{preset}-{size}.json"
        cfg.to_json(path)
        assert load_config(path) == cfg
    with pytest.raises(TypeError, match="unknown field"):
        cls.for_size("tiny", not_a_field=1)
    with pytest.raises(ValueError, match="size must be one of"):
        cls.for_size("huge")


def test_factory_errors_and_listing():
    assert set(list_presets()) == set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'gloria'"):
        create_model("gloria")


def test_random_batch_is_valid_and_seeded():
    from cxrfast.models.config import PresetConfig

    cfg = dataclasses.replace(PresetConfig(), image_size=16, max_views=3, max_length=20, vocab_size=50)
    a, b = random_batch(cfg, 5, seed=3), random_batch(cfg, 5, seed=3)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.views, b.views)
    assert a.view_mask[:, 0].all() and a.attention_mask.any(1).all()
    assert (a.input_ids[a.attention_mask & (a.word_index >= 0)] > 4).all()
    mixed = random_batch(cfg, 6, seed=0, kinds=["paired", "image", "text", "paired", "image", "text"])
    assert not mixed.has_text[1] and not mixed.has_image[2]


def test_a_preset_model_without_its_encoders_is_refused_when_defined():
    from cxrfast.models.base import PresetModel

    with pytest.raises(TypeError, match="Half \\(a PresetModel\\) must define encode_text"):
        class Half(PresetModel):  # noqa: F841 - defining it is the test
            def encode_image(self, batch):
                return {}
