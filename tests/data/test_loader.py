"""The batch contract, the sampler, augmentation, the torch DataLoader fallback and the DALI pipeline."""

import math

import numpy as np
import pytest
import torch
from loader_fixtures import split, toy_studies

from cxrfast.data.batch import Batch
from cxrfast.data.loader import EpochBatches, ImageReader, StudyBatches, make_loader, steps_per_epoch
from cxrfast.data.text import train_tokenizer
from cxrfast.data.transforms import Augment, WarpParams, draw, sample_generator, warp_torch


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    return toy_studies(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def tokenizer(studies):
    return train_tokenizer([s.report for s in studies if s.report], vocab_size=80, min_frequency=1,
                           split_sentences=split)


def _batches(studies, tokenizer, **kw):
    kw.setdefault("augment", Augment(size=24))
    return StudyBatches(studies, tokenizer, views=2, seed=5, reader=ImageReader(source_size=40), **kw)


# ---------------------------------------------------------------------------------------------- sampler

@pytest.mark.parametrize("n,batch,world", [(11, 3, 1), (11, 2, 2), (10, 4, 3), (7, 1, 7), (13, 5, 2), (1, 4, 1)])
def test_every_sample_once_per_epoch_and_equal_steps(n, batch, world):
    for epoch in (0, 1):
        seen, steps = [], set()
        for rank in range(world):
            s = EpochBatches(n, batch, rank=rank, world=world, seed=9)
            s.set_epoch(epoch)
            parts = list(s)
            steps.add(len(parts))
            assert all(len(p) >= 1 for p in parts), "a rank got an empty batch"
            assert all(len(p) <= batch + world for p in parts)
            seen += [i for p in parts for i in p]
        assert sorted(seen) == list(range(n)), "each sample exactly once per epoch, over all ranks"
        assert len(steps) == 1 and steps.pop() == steps_per_epoch(n, batch, world)


def test_sampler_order_is_seeded_and_changes_with_the_epoch():
    a, b = EpochBatches(50, 8, seed=1), EpochBatches(50, 8, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(EpochBatches(50, 8, seed=1, shuffle=False))[0] == list(range(8))


def test_sampler_errors_name_the_argument():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        EpochBatches(5, 0)
    with pytest.raises(ValueError, match="0 <= rank < world"):
        EpochBatches(5, 1, rank=2, world=2)
    with pytest.raises(ValueError, match="3 samples cannot give each of 4 ranks one"):
        EpochBatches(3, 1, world=4)
    with pytest.raises(ValueError, match="empty"):
        EpochBatches(0, 1)


# ---------------------------------------------------------------------------------------------- augment

def test_draw_is_a_function_of_seed_epoch_index_view():
    aug = Augment(size=32)
    p = draw(aug, sample_generator(1, 2, 3, 0), 100, 80)
    assert p == draw(aug, sample_generator(1, 2, 3, 0), 100, 80)
    assert p != draw(aug, sample_generator(1, 2, 3, 1), 100, 80)
    assert p != draw(aug, sample_generator(1, 3, 3, 0), 100, 80)


def test_identity_warp_reproduces_the_image():
    img = torch.rand(1, 16, 16)
    ident = WarpParams(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), 1.0, 1.0, 16)
    torch.testing.assert_close(warp_torch(img, ident), img, rtol=0, atol=1e-6)


def test_eval_mode_fits_the_whole_image_padded():
    img = torch.ones(1, 20, 40)
    out = warp_torch(img, draw(Augment(size=20, train=False), sample_generator(0, 0, 0, 0), 20, 40))[0]
    assert out.shape == (20, 20)
    assert out[5:15].min() > 0.99 and out[:4].max() < 0.01 and out[16:].max() < 0.01  # letterboxed


def test_crop_stays_inside_and_no_flip_by_default():
    """A left-right gradient stays increasing left to right (no flip), and the crop covers image only."""
    img = torch.linspace(0, 1, 64).repeat(64, 1)[None]
    aug = Augment(size=32, degrees=0, translate=0)
    for i in range(20):
        out = warp_torch(img, draw(aug, sample_generator(0, 0, i, 0), 64, 64))[0]
        p = draw(aug, sample_generator(0, 0, i, 0), 64, 64)
        base = WarpParams(p.matrix, 1.0, 1.0, 32)
        geo = warp_torch(img, base)[0]
        assert (geo[:, -1] > geo[:, 0]).all()
        assert out.min() >= 0 and out.max() <= 1


def test_brightness_contrast_formula():
    img = torch.full((1, 4, 4), 0.8)
    p = WarpParams(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), 1.1, 0.7, 4)
    torch.testing.assert_close(warp_torch(img, p), torch.full((1, 4, 4), 1.1 * (0.7 * (0.8 - 0.5) + 0.5)))


def test_augment_validates():
    with pytest.raises(ValueError, match="Augment.scale"):
        Augment(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="Augment.hflip"):
        Augment(hflip=2.0)


# ---------------------------------------------------------------------------------------------- batches

def test_batches_follow_the_contract(studies, tokenizer):
    ds = _batches(studies, tokenizer)
    loader = make_loader(ds, batch_size=4)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(studies)
    for b in batches:
        assert isinstance(b, Batch)
        assert b.views.shape[1:] == (2, 1, 24, 24) and b.views.dtype == torch.float32
        for i, sid in enumerate(b.study_ids):
            st = studies[int(sid[1:])]
            assert b.view_mask[i].sum().item() == min(2, len(st.views(("PA", "AP"))))
            assert b.has_text[i].item() == (st.report is not None)
            assert b.kind[i].item() == {"paired": 0, "image": 1, "text": 2}[st.kind]
            assert torch.all(b.views[i][~b.view_mask[i]] == 0)
        # uncertain Edema (study 5) is NaN under "ignore"; unknown findings NaN
        col = list(b.findings).index("Edema")
        for i, sid in enumerate(b.study_ids):
            assert math.isnan(b.labels[i, col].item()) == (sid == "s5")


def test_workers_give_the_same_batches(studies, tokenizer):
    ds = _batches(studies, tokenizer)
    a = make_loader(ds, batch_size=3, workers=0)
    b = make_loader(ds, batch_size=3, workers=2)
    for epoch in (0, 1):
        a.batch_sampler.set_epoch(epoch)
        b.batch_sampler.set_epoch(epoch)
        for x, y in zip(a, b):
            assert x.study_ids == y.study_ids
            torch.testing.assert_close(x.views, y.views, rtol=0, atol=0)


def test_word_and_sentence_indices(tokenizer):
    enc = tokenizer.encode(["Heart size is normal. No pleural effusion.", None, ""], max_length=16)
    ids, mask, word, sent = enc.input_ids[0], enc.attention_mask[0], enc.word_index[0], enc.sentence_index[0]
    assert ids[0] == tokenizer.cls_id and ids[mask.sum() - 1] == tokenizer.sep_id
    real = mask & (word >= 0)
    assert word[real].tolist() == sorted(word[real].tolist()) and word[real].min() == 0
    assert set(sent[real].tolist()) == {0, 1}
    assert (word[~real] == -1).all() and (sent[~real] == -1).all()
    assert not enc.attention_mask[1].any()  # no report: an image-only sample
    assert enc.attention_mask[2].sum() == 2  # an empty report: [CLS] [SEP]


# ---------------------------------------------------------------------------------------------- DALI

dali = pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is optional (pip install nvidia-dali-cuda130)")


@pytest.mark.parametrize("world", [1, 2])
def test_dali_gives_the_same_samples_and_crops(studies, tokenizer, world):
    """For one seed the DALI CPU pipeline and the torch fallback give the same samples on each rank, the
    same crops (the same augmentation numbers), and pixels within one grey level (DALI rounds the warped
    uint8 image; torch keeps it in float)."""
    from cxrfast.data.dali import DaliLoader

    ds = _batches(studies, tokenizer)
    for rank in range(world):
        ref = make_loader(ds, batch_size=3, rank=rank, world=world)
        got = DaliLoader(ds, batch_size=3, rank=rank, world=world, num_threads=2)
        for epoch in (0, 1):
            ref.batch_sampler.set_epoch(epoch)
            got.set_epoch(epoch)
            pairs = list(zip(ref, got))
            assert len(pairs) == len(got) == len(ref)
            for a, b in pairs:
                assert a.study_ids == b.study_ids
                for name in ("view_mask", "input_ids", "attention_mask", "word_index", "sentence_index", "kind"):
                    assert torch.equal(getattr(a, name), getattr(b, name)), name
                torch.testing.assert_close(a.labels, b.labels, equal_nan=True)
                grey = (a.views - b.views).abs().max().item() * ds.std * 255
                assert grey <= 1.0, f"DALI differs from torch by {grey:.2f} grey levels"


def test_dali_reads_shards(studies, tokenizer, tmp_path):
    """Images from `cxrfast prepare` shards (ImageRef.shard) go through DALI like files."""
    import dataclasses

    from cxrfast.data.dali import DaliLoader
    from cxrfast.data.prepare import prepare
    from cxrfast.data.shards import ShardedImages

    out = tmp_path / "prepared"
    prepare(studies.root, str(out), size=40, progress=False)
    rows = {r["path"].rsplit("/", 1)[-1].split(".")[0]: int(r["index"]) for _, r in
            (ShardedImages(str(out))[i] for i in range(len(ShardedImages(str(out)))))}
    sharded = studies.subset(lambda s: True)
    sharded.studies = [dataclasses.replace(s, images=[dataclasses.replace(r, shard=(str(out), rows[r.image_id]))
                                                      for r in s.images]) for s in studies]
    a = list(make_loader(_batches(sharded, tokenizer), batch_size=4))
    b = list(DaliLoader(_batches(sharded, tokenizer), batch_size=4))
    for x, y in zip(a, b):
        assert x.study_ids == y.study_ids
        assert (x.views - y.views).abs().max().item() * 0.25 * 255 <= 1.0
