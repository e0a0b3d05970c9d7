"""Pictures: the attention PNG of the globallocal preset (from cxrfast's op on the model's own features), the
mixed preset's reconstructions, the words shown, and the reasons other presets are skipped."""

import matplotlib.image
import pytest
import torch
from conftest import TEST_SPLITS

import cxrfast
from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.pictures import (attention_picture, one_study_batch, pick_words, pictures, reconstruction_picture,
                                   word_strings)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def test_studies(studies):
    return studies.subset(lambda s: s.split in TEST_SPLITS["test"])


def png_shape(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000
    return matplotlib.image.imread(path).shape


def test_attention_picture(model, tokenizer, test_studies, tmp_path):
    r = pictures(model, tokenizer, test_studies, tmp_path, words=["effusion", "pleural", "heart", "consolidation"])
    sid = r["study_id"]
    study = next(s for s in test_studies if s.study_id == sid)
    assert study.kind == "paired" and any(study.labels.get(f) == 1.0 for f in COMPETITION_FINDINGS)
    att = r["attention"]
    assert att["file"] == str(tmp_path / f"attention_{sid}.png")
    h, w = png_shape(tmp_path / f"attention_{sid}.png")[:2]
    assert 1 <= len(att["words"]) <= 4 and w > (len(att["words"]) + 0.5) * h  # the image + one panel per word
    assert "skipped" in r["reconstruction"] and "reconstruct" in r["reconstruction"]["skipped"]


def test_attention_is_the_ops_on_the_models_features(model, tokenizer, test_studies, tmp_path, monkeypatch):
    """What is drawn is word_region_similarity's attention of (local, words) at the preset's temperature:
    capture the maps handed to cxrfast.viz and recompute them."""
    from cxrfast import viz

    seen = {}

    def capture(path, image, attention, words=None, **kw):
        seen.update(image=image, attention=attention, words=words, grid=kw.get("grid"))
        path.write_bytes(PNG)
        return path

    monkeypatch.setattr(viz, "save_word_attention", capture)
    text = "small left pleural effusion. heart size is normal."
    batch, _ = one_study_batch(model, tokenizer, test_studies, text=text)
    r = attention_picture(model, tokenizer, batch, tmp_path / "a.png", max_words=20)
    names = word_strings(tokenizer, batch.input_ids[0], batch.word_index[0])
    assert names == ["small", "left", "pleural", "effusion", ".", "heart", "size", "is", "normal", "."]
    assert r["words"] == seen["words"] == ["small", "left", "pleural", "effusion", "heart", "size", "normal"]
    with torch.no_grad():
        img, txt = model.encode_image(batch), model.encode_text(batch)
        _, want = cxrfast.word_region_similarity(img["local"], txt["words"], txt["word_lengths"],
                                                 temp_attention=model.config.temp_attention, return_attention=True)
    keep = [names.index(w) for w in r["words"]]
    torch.testing.assert_close(seen["attention"], want[0, keep])
    torch.testing.assert_close(seen["attention"].sum(-1), torch.ones(len(keep)))  # a distribution over regions
    assert seen["grid"] == img["grid"] and torch.equal(seen["image"], batch.views[0, 0])


def test_pick_words():
    words = ["the", "heart", "is", "mildly", "enlarged", ".", "small", "left", "effusion"]
    assert pick_words(words, max_words=3) == [1, 4, 6]  # key words first, kept in reading order
    assert pick_words(words, wanted=["EFFUSION", "heart"]) == [1, 8]
    assert pick_words(words, max_words=20) == [1, 3, 4, 6, 7, 8]


def test_reconstruction_picture(tokenizer, test_studies, tmp_path):
    from cxrfast.models import create_model

    torch.manual_seed(0)
    mixed = create_model("mixed", size="tiny", vocab_size=1000).eval()
    r = pictures(mixed, tokenizer, test_studies, tmp_path)
    assert r["reconstruction"]["scales"] == [1, 2, 4]
    h, w = png_shape(tmp_path / f"reconstruction_{r['study_id']}.png")[:2]
    assert w > 4 * h  # image, masked input and three scales side by side
    assert "word features" in r["attention"]["skipped"]
    batch, _ = one_study_batch(mixed, tokenizer, test_studies)
    step = int(mixed.mask_step)
    reconstruction_picture(mixed, batch, tmp_path / "again.png")
    assert int(mixed.mask_step) == step  # pictures do not advance the model's masking counter


def test_choices_and_errors(model, tokenizer, test_studies):
    sid = test_studies[2].study_id
    batch, study = one_study_batch(model, tokenizer, test_studies, study_id=sid)
    assert study.study_id == sid and batch.study_ids == [sid]
    with pytest.raises(ValueError, match="study_id 'nope' is not among the 19 studies"):
        one_study_batch(model, tokenizer, test_studies, study_id="nope")
