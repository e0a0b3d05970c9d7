"""Chosen negatives for the triplet losses (JoImTeRNet): `negatives=<indices>` and `negatives="random"` of
cxrfast.triplet_loss and cxrfast.local_triplet_loss, every impl against an oracle written here from the
released code (JoImTeR_MLMI_2021, misc/losses.py: sent_triplet_loss, words_triplet_loss, func_attention), a
per-sample loop in float64, and the fast paths against the float64 reference (DESIGN's earned tolerance)."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_earned, loss_and_grads

import cxrfast
from cxrfast import reference as R

IMPLS = ["reference", "chunked", "triton"]
MARGIN = 0.5  # JoImTeRNet's sent_margin / word_margin


# ---- the oracle: the released code's per-sample loops (float64) ----------------------------------------------

def _cosine_distance(x1, x2, eps=1e-8):
    """misc/losses.py cosine_distance: 1 − x1·x2 / max(‖x1‖‖x2‖, eps), along dim 1."""
    return 1 - (x1 * x2).sum(1) / (x1.norm(dim=1) * x2.norm(dim=1)).clamp(min=eps)


def released_sentence_triplets(img, txt, neg, margin=MARGIN):
    """sent_triplet_loss, per anchor: (i2t [B], t2i [B]); image i's negative text and text i's negative image
    are both neg[i] (``rnn_code[negative_ids]``, ``cnn_code[negative_ids]``)."""
    i2t, t2i = [], []
    for i in range(img.shape[0]):
        n = int(neg[i])
        a, p = img[i:i + 1], txt[i:i + 1]
        i2t.append(F.relu(_cosine_distance(a, p) - _cosine_distance(a, txt[n:n + 1]) + margin))
        a, p = txt[i:i + 1], img[i:i + 1]
        t2i.append(F.relu(_cosine_distance(a, p) - _cosine_distance(a, img[n:n + 1]) + margin))
    return torch.cat(i2t), torch.cat(t2i)


def _func_attention(query, context, gamma1):
    """GlobalAttention.func_attention: query [1, D, n], context [1, D, h, w] → weighted context [1, D, n]."""
    b, n = query.shape[0], query.shape[2]
    context = context.reshape(b, context.shape[1], -1)                  # [1, D, hw]
    attn = torch.bmm(context.transpose(1, 2), query)                     # [1, hw, n]
    attn = torch.softmax(attn, dim=-1)                                   # over words
    attn = torch.softmax(attn.transpose(1, 2) * gamma1, dim=-1)          # over regions: [1, n, hw]
    return torch.bmm(context, attn.transpose(1, 2))                      # [1, D, n]


def _word_similarity(img, words, n, gamma1=4.0, gamma2=5.0):
    """word_similarity: img [1, D, h, w], words [1, D, L] read up to n → −log Σ_t exp(γ2 · cos(w_t, c_t))."""
    word = words[:, :, :n]
    ctx = _func_attention(word, img, gamma1)
    w, c = word[0].t(), ctx[0].t()                                       # [n, D]
    cos = (w * c).sum(1) / (w.norm(dim=1) * c.norm(dim=1)).clamp(min=1e-8)
    return -torch.log(torch.exp(gamma2 * cos).sum())


def released_word_triplets(regions, words, lengths, neg, grid, margin=MARGIN, anchor_length_for_negative=False):
    """words_triplet_loss, per anchor: (i2t [B], t2i [B]). regions [B, R, D] are the released [B, D, h, w]
    feature maps flattened row-major; words [B, L, D] (already without [CLS]). The released code reads the
    negative report neg[i] with the anchor's own length cap_lens[i]; anchor_length_for_negative=True replays
    that quirk, False reads every report with its own length (what cxrfast does)."""
    B, Rg, D = regions.shape
    maps = regions.transpose(1, 2).reshape(B, D, *grid)
    emb = words.transpose(1, 2)                                          # [B, D, L]
    i2t, t2i = [], []
    for i in range(B):
        n, ln = int(neg[i]), int(lengths[i])
        pos = _word_similarity(maps[i:i + 1], emb[i:i + 1], ln)
        neg_len = ln if anchor_length_for_negative else int(lengths[n])
        i2t.append(F.relu(pos - _word_similarity(maps[i:i + 1], emb[n:n + 1], neg_len) + margin))
        t2i.append(F.relu(pos - _word_similarity(maps[n:n + 1], emb[i:i + 1], ln) + margin))
    return torch.stack(i2t), torch.stack(t2i)


def _reduce(i2t, t2i, reduction):
    """The released losses are i2t.mean() + t2i.mean(): cxrfast's reduction="mean"."""
    if reduction == "none":
        return i2t + t2i
    return i2t.sum() + t2i.sum() if reduction == "sum" else i2t.mean() + t2i.mean()


# ---- inputs -------------------------------------------------------------------------------------------------------

def _negatives(B, seed=0):
    """Per-sample negatives as the released trainer draws them: np.random.choice(ids[ids != i])."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.tensor([j for j in range(B) if j != i])[torch.randint(0, B - 1, (), generator=g)]
                        for i in range(B)])


def _embeddings(B=7, D=11, dtype=torch.float64, device="cpu"):
    """Pairs of which the first half match closely (their hinges mostly inactive at margin 0.5) and the rest
    not at all (mostly active): both sides of every hinge are exercised, so the comparisons can fail."""
    x = torch.randn(B, D, dtype=torch.float64)
    y = torch.randn(B, D, dtype=torch.float64)
    y[:B // 2] = x[:B // 2] + 0.1 * y[:B // 2]
    return x.to(dtype).to(device), y.to(dtype).to(device)


GRID = (3, 4)


def _local(B=6, L=7, D=5, dtype=torch.float64, device="cpu"):
    regions = torch.randn(B, GRID[0] * GRID[1], D, dtype=torch.float64)
    words = torch.randn(B, L, D, dtype=torch.float64)
    lengths = torch.randint(1, L + 1, (B,))
    lengths[0], lengths[1] = L, 1
    for j, n in enumerate(lengths):
        words[j, n:] = 0.0
    return regions.to(dtype).to(device), words.to(dtype).to(device), lengths


def _dev(impl, device):
    return device if impl == "triton" else "cpu"


def _dtype(impl):
    return torch.float32 if impl == "triton" else torch.float64  # the Triton path takes fp16/bf16/fp32


# ---- sentence-level triplet ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_triplet_indices_equal_the_released_loop(impl, reduction, device):
    dev, dtype = _dev(impl, device), _dtype(impl)
    x, y = _embeddings(dtype=dtype, device=dev)
    neg = _negatives(7)
    got = cxrfast.triplet_loss(x, y, margin=MARGIN, negatives=neg.to(dev), reduction=reduction, impl=impl)
    i2t, t2i = released_sentence_triplets(x.double().cpu(), y.double().cpu(), neg)
    active = torch.cat([i2t, t2i]) > 0
    assert active.any() and not active.all()  # hinges on both sides of the margin: the comparison can fail
    want = _reduce(i2t, t2i, reduction)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", ["chunked", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_triplet_indices_gradients_earned(impl, dtype, distance, device):
    dev = _dev(impl, device)
    x, y = _embeddings(B=9, D=6, dtype=dtype, device=dev)
    neg = _negatives(9, seed=3)
    neg[4] = -1  # an anchor without a negative
    kw = dict(margin=0.3, negatives=neg, distance=distance, reduction="none")
    coef = torch.rand(9, dtype=torch.float64) + 0.5

    def mixed(fn, ts):
        return loss_and_grads(lambda a, b: (fn(a, b) * coef.to(a.device, torch.promote_types(a.dtype,
                                                                                             torch.float32))).sum(), ts)
    got, got_g = mixed(lambda a, b: cxrfast.triplet_loss(a, b, impl=impl, **{**kw, "negatives": neg.to(dev)}), (x, y))
    cpu = [t.detach().cpu() for t in (x, y)]
    ref64, g64 = mixed(lambda a, b: R.triplet_loss(a, b, **kw), [t.double() for t in cpu])
    ref_lo, g_lo = mixed(lambda a, b: R.triplet_loss(a, b, **kw), cpu)
    assert ref64 > 0
    assert_earned("loss", got, ref64, ref_lo, dtype)
    for name, g, a, b in zip(("d image_emb", "d text_emb"), got_g, g64, g_lo):
        assert g.dtype == dtype
        assert_earned(name, g, a, b, dtype)


def test_no_negative_gives_no_hinge():
    x, y = _embeddings(B=4)
    neg = torch.tensor([-1, 0, -1, 1])
    per = cxrfast.triplet_loss(x, y, margin=5.0, negatives=neg, reduction="none")  # margin 5: every hinge active
    assert per[0] == 0 and per[2] == 0 and (per[[1, 3]] > 0).all()
    one = cxrfast.triplet_loss(x[:1], y[:1], margin=5.0, negatives="random", generator=torch.Generator())
    assert one == 0  # B = 1: no other sample


# ---- word-level triplet -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_local_triplet_indices_equal_the_released_loop(impl, reduction, device):
    dev, dtype = _dev(impl, device), _dtype(impl)
    regions, words, lengths = _local(dtype=dtype, device=dev)
    neg = _negatives(6, seed=1)
    got = cxrfast.local_triplet_loss(regions, words, lengths.to(dev), margin=MARGIN, negatives=neg.to(dev),
                                     reduction=reduction, impl=impl)
    i2t, t2i = released_word_triplets(regions.double().cpu(), words.double().cpu(), lengths, neg, GRID)
    assert (torch.cat([i2t, t2i]) > 0).any()  # (the clamp of inactive hinges is chosen_hinges', tested above)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double().cpu(), _reduce(i2t, t2i, reduction), rtol=tol, atol=tol)


def test_the_released_length_quirk_is_not_copied():
    """The oracle replaying the released quirk (negative report read at the anchor's length) differs, so the
    comparison above does check which length is used."""
    regions, words, lengths = _local()
    neg = torch.tensor([1, 0, 0, 0, 0, 0])  # report 0 (full length) against 1 (one word) and back
    got = cxrfast.local_triplet_loss(regions, words, lengths, margin=20.0, negatives=neg, reduction="none")
    true_len = _reduce(*released_word_triplets(regions, words, lengths, neg, GRID, margin=20.0), "none")
    quirk = _reduce(*released_word_triplets(regions, words, lengths, neg, GRID, margin=20.0,
                                            anchor_length_for_negative=True), "none")
    torch.testing.assert_close(got, true_len, rtol=1e-12, atol=1e-12)
    assert (got[:2] - quirk[:2]).abs().min() > 1e-3


@pytest.mark.parametrize("impl", ["chunked", "triton"])
@pytest.mark.parametrize("variant,aggregate", [("gloria", "sum"), ("single", "mean")])
def test_local_triplet_indices_gradients_earned(impl, variant, aggregate, device):
    dev = _dev(impl, device)
    regions, words, lengths = _local(B=5, L=6, D=4, dtype=torch.float32, device=dev)
    neg = torch.tensor([3, 2, -1, 0, 1])
    kw = dict(margin=1.0, negatives=neg, variant=variant, aggregate=aggregate, reduction="none")
    coef = torch.rand(5, dtype=torch.float64) + 0.5

    def mixed(fn, ts):
        return loss_and_grads(lambda v, w: (fn(v, w) * coef.to(v.device, torch.promote_types(v.dtype,
                                                                                             torch.float32))).sum(), ts)
    got, got_g = mixed(lambda v, w: cxrfast.local_triplet_loss(v, w, lengths.to(dev), impl=impl,
                                                               **{**kw, "negatives": neg.to(dev)}), (regions, words))
    cpu = [t.detach().cpu() for t in (regions, words)]
    ref64, g64 = mixed(lambda v, w: R.local_triplet_loss(v, w, lengths, **kw), [t.double() for t in cpu])
    ref_lo, g_lo = mixed(lambda v, w: R.local_triplet_loss(v, w, lengths, **kw), cpu)
    assert ref64 > 0
    assert_earned("loss", got, ref64, ref_lo, torch.float32, k=4.0)
    for name, g, a, b in zip(("d regions", "d words"), got_g, g64, g_lo):
        assert_earned(name, g, a, b, torch.float32, k=4.0)


def test_paired_similarity_is_the_diagonal():
    regions, words, lengths = _local(B=5)
    for variant, aggregate in (("gloria", "sum"), ("single", "mean")):
        full = R.word_region_similarity(regions, words, lengths, variant=variant, aggregate=aggregate)
        pairs = R.paired_word_region_similarity(regions, words, lengths, variant=variant, aggregate=aggregate)
        torch.testing.assert_close(pairs, full.diagonal(), rtol=1e-12, atol=1e-12)


def test_chosen_negatives_compute_no_batch_by_batch_similarity(monkeypatch):
    """Both losses with indices gather their 3·B pairs: the B × B paths are never entered."""
    from cxrfast.ops import _chunked, _wordregion
    from cxrfast.reference import local as reference_local

    def forbidden(*a, **k):
        raise AssertionError("a B x B similarity was computed")

    monkeypatch.setattr(_chunked, "row_chunks", forbidden)
    monkeypatch.setattr(_wordregion, "similarity", forbidden)
    monkeypatch.setattr(reference_local, "word_region_similarity", forbidden)
    x, y = _embeddings(B=6)
    regions, words, lengths = _local(B=6)
    neg = _negatives(6)
    g = torch.Generator().manual_seed(0)
    for negatives, gen in ((neg, None), ("random", g)):
        cxrfast.triplet_loss(x, y, negatives=negatives, generator=gen, impl="chunked")
        cxrfast.local_triplet_loss(regions, words, lengths, negatives=negatives, generator=gen, impl="chunked")
    with pytest.raises(AssertionError, match="B x B"):  # the guard works: "hardest" does need S
        cxrfast.local_triplet_loss(regions, words, lengths, negatives="hardest", impl="chunked")


# ---- "random" -----------------------------------------------------------------------------------------------------

def test_random_negatives_are_other_samples_uniformly():
    g = torch.Generator().manual_seed(7)
    B, draws = 5, 4000
    counts = torch.zeros(B, B)
    for _ in range(draws):
        n = R.random_negatives(B, g)
        assert n.dtype == torch.int64 and (n != torch.arange(B)).all() and ((n >= 0) & (n < B)).all()
        counts[torch.arange(B), n] += 1
    assert counts.diagonal().sum() == 0
    expected = draws / (B - 1)  # each of the 4 others: 1000 ± 27 (binomial sd); 6 sd tolerance
    off = counts[~torch.eye(B, dtype=torch.bool)]
    assert (off - expected).abs().max() < 6 * (draws * 0.25 * 0.75) ** 0.5, counts
    assert R.random_negatives(1, g).tolist() == [-1]


@pytest.mark.parametrize("op", ["triplet", "local"])
def test_random_is_seeded_by_the_generator_alone_and_equal_across_impls(op, device):
    x, y = _embeddings(B=8, dtype=torch.float32)
    regions, words, lengths = _local(B=8, dtype=torch.float32)

    def run(impl, seed):
        dev = _dev(impl, device)
        g = torch.Generator().manual_seed(seed)
        if op == "triplet":
            return cxrfast.triplet_loss(x.to(dev), y.to(dev), margin=MARGIN, negatives="random", generator=g,
                                        reduction="none", impl=impl).cpu()
        return cxrfast.local_triplet_loss(regions.to(dev), words.to(dev), lengths, margin=MARGIN,
                                          negatives="random", generator=g, reduction="none", impl=impl).cpu()

    state = torch.get_rng_state()
    runs = {impl: run(impl, 11) for impl in IMPLS}
    assert torch.equal(torch.get_rng_state(), state)  # torch's default generator is left alone
    # the same draw as the explicit indices random_negatives gives for that seed, in every impl
    neg = R.random_negatives(8, torch.Generator().manual_seed(11))
    if op == "triplet":
        want = _reduce(*released_sentence_triplets(x.double(), y.double(), neg), "none")
    else:
        want = _reduce(*released_word_triplets(regions.double(), words.double(), lengths, neg, GRID), "none")
    for impl, got in runs.items():
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=impl)
    assert not torch.equal(run("chunked", 12), runs["chunked"])  # another seed, another draw


def test_random_draws_anew_per_call_from_the_generator():
    x, y = _embeddings(B=16)
    g = torch.Generator().manual_seed(0)
    a = cxrfast.triplet_loss(x, y, negatives="random", generator=g, reduction="none", margin=2.0)
    b = cxrfast.triplet_loss(x, y, negatives="random", generator=g, reduction="none", margin=2.0)
    assert not torch.equal(a, b)


def test_compile_fullgraph_with_indices():
    x, y = _embeddings(B=6, dtype=torch.float32)
    regions, words, lengths = _local(B=6, dtype=torch.float32)
    neg = _negatives(6)

    def f(a, b, v, w):
        return (cxrfast.triplet_loss(a, b, margin=MARGIN, negatives=neg, reduction="mean", impl="chunked")
                + cxrfast.local_triplet_loss(v, w, lengths, margin=MARGIN, negatives=neg, reduction="mean",
                                             impl="chunked"))

    eager = loss_and_grads(f, (x, y, regions, words))
    compiled = loss_and_grads(torch.compile(f, backend="aot_eager", fullgraph=True), (x, y, regions, words))
    torch.testing.assert_close(compiled[0], eager[0])
    for g, h in zip(compiled[1], eager[1]):
        torch.testing.assert_close(g, h)


# ---- errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["triplet_loss", "local_triplet_loss"])
def test_errors_name_the_argument(op):
    x, y = _embeddings(B=4, dtype=torch.float32)
    regions, words, lengths = _local(B=4, dtype=torch.float32)

    def f(**kw):
        if op == "triplet_loss":
            return cxrfast.triplet_loss(x, y, **kw)
        return cxrfast.local_triplet_loss(regions, words, lengths, **kw)

    cases = [
        (dict(negatives=torch.tensor([1.0, 0, 0, 0])), TypeError, "`negatives` indices must be an integer tensor"),
        (dict(negatives=torch.tensor([1, 0, 0])), ValueError, r"`negatives` indices must have shape \[4\]"),
        (dict(negatives=torch.tensor([[1, 0, 0, 0]])), ValueError, r"must have shape \[4\]"),
        (dict(negatives=torch.tensor([1, 0, 4, 0])), ValueError, r"`negatives\[2\]` = 4 is outside -1..3"),
        (dict(negatives=torch.tensor([1, 1, 0, 0])), ValueError, r"`negatives\[1\]` = 1 is the sample itself"),
        (dict(negatives=torch.tensor([1, 0, -2, 0])), ValueError, r"`negatives\[2\]` = -2 is outside"),
        (dict(negatives=[1, 0, 0, 0]), TypeError, r"`negatives` must be one of .* or an integer tensor"),
        (dict(negatives="semi"), ValueError, r"`negatives` must be one of \('hardest', 'all', 'random'\)"),
        (dict(negatives="hardest", generator=torch.Generator()), ValueError,
         "`generator` is only used with negatives='random'"),
        (dict(negatives=torch.tensor([1, 0, 0, 0]), generator=torch.Generator()), ValueError,
         "`generator` is only used with negatives='random'"),
        (dict(negatives="random", generator=0), TypeError, "`generator` must be a torch.Generator"),
        (dict(negatives=torch.tensor([1, 0, 0, 0], device="meta")), ValueError, "`negatives` is on meta"),
    ]
    for kw, exc, match in cases:
        with pytest.raises(exc, match=f"^{op}: .*{match}"):
            f(**kw)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    with pytest.raises(ValueError, match="`reduction`"):
        f(negatives="random", generator=g, reduction="batch")
    assert torch.equal(g.get_state(), state)  # a refused call draws nothing


def test_modules_draw_from_their_generator():
    x, y = _embeddings(B=8, dtype=torch.float32)
    regions, words, lengths = _local(B=8, dtype=torch.float32)
    for module, fn, args in ((cxrfast.nn.TripletLoss, cxrfast.triplet_loss, (x, y)),
                             (cxrfast.nn.LocalTripletLoss, cxrfast.local_triplet_loss, (regions, words, lengths))):
        m = module(margin=0.5, negatives="random", reduction="none", generator=torch.Generator().manual_seed(3))
        want = fn(*args, margin=0.5, negatives="random", reduction="none", generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(m(*args), want)
        assert not torch.equal(m(*args), want)  # the module's generator moved on
        with pytest.raises(ValueError, match=f"^{module.__name__}: `generator` is only used with negatives='random'"):
            module(negatives="hardest", generator=torch.Generator())
        with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
            module(negatives="random", generator=1)


def test_chosen_pairs_ignore_the_callers_autocast():
    """The gathered pairs are computed in fp32 whatever autocast the caller runs (as every cxrfast op body):
    under a bf16 autocast the fp32 inputs give the fp32 loss, not a bf16-rounded one."""
    x, y = _embeddings(B=6, dtype=torch.float32)
    regions, words, lengths = _local(B=6, dtype=torch.float32)
    neg = _negatives(6)
    plain = (cxrfast.triplet_loss(x, y, negatives=neg, reduction="none"),
             cxrfast.local_triplet_loss(regions, words, lengths, margin=5.0, negatives=neg, reduction="none"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = (cxrfast.triplet_loss(x, y, negatives=neg, reduction="none"),
                cxrfast.local_triplet_loss(regions, words, lengths, margin=5.0, negatives=neg, reduction="none"))
    for a, b in zip(auto, plain):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
