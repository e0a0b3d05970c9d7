"""Zero-shot prompts and scores: the generator (clean, deduplicated, seeded, per finding), the score
formulas written out one prompt at a time, and the whole classifier on planted features (oracle.py)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_SPLITS

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.features import encode_studies
from cxrfast.eval.zeroshot import (CLASS_PROMPTS, POSNEG_TEMPLATES, candidate_prompts, class_prompts, ensemble_scores,
                                   posneg_prompts, posneg_scores, zero_shot)


def test_candidates_are_clean_unique_and_name_their_finding():
    for f in COMPETITION_FINDINGS:
        cands = candidate_prompts(f)
        e = CLASS_PROMPTS[f]
        assert len(cands) == len(set(cands)) > 20
        assert all(c == " ".join(c.split()) and c for c in cands)  # no double, leading or trailing spaces
        assert all(any(sub in c for sub in e["subtype"]) for c in cands)
        # the order is severity → subtype → location
        assert f"{e['severity'][1]} {e['subtype'][0]} {e['location'][1]}" in cands
    with pytest.raises(ValueError, match="no prompt words for the finding 'Fracture'"):
        candidate_prompts("Fracture")
    with pytest.raises(ValueError, match=r"missing or empty list\(s\) \['location'\]"):
        candidate_prompts("X", {"X": {"severity": [""], "subtype": ["x"], "location": []}})


def test_class_prompts_are_seeded_per_finding():
    a = class_prompts(7, seed=3)
    assert a == class_prompts(7, seed=3)
    assert a != class_prompts(7, seed=4)
    assert list(a) == list(COMPETITION_FINDINGS)
    for f, ps in a.items():
        assert len(ps) == len(set(ps)) == 7 and set(ps) <= set(candidate_prompts(f))
    # one finding's draw does not depend on the others asked for
    assert class_prompts(7, seed=3, findings=("Edema",))["Edema"] == a["Edema"]
    small = {"X": {"severity": ["", "big"], "subtype": ["x"], "location": [""]}}
    assert class_prompts(10, findings=("X",), table=small) == {"X": ["x", "big x"]}  # fewer than n: all
    with pytest.raises(ValueError, match="n must be >= 1"):
        class_prompts(0)


def test_ensemble_scores_written_out():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 5, generator=g)
    prompts = {"a": torch.randn(3, 5, generator=g), "b": torch.randn(4, 5, generator=g)}
    for reduce in ("mean", "max", "centroid"):
        got = ensemble_scores(img, prompts, reduce)
        assert got.shape == (6, 2)
        for i in range(6):
            for k, emb in enumerate(prompts.values()):
                sims = [F.cosine_similarity(img[i].double(), p.double(), dim=0) for p in emb]
                if reduce == "centroid":
                    centre = torch.stack([F.normalize(p.double(), dim=0) for p in emb]).mean(0)
                    want = F.cosine_similarity(img[i].double(), centre, dim=0)
                else:
                    want = torch.stack(sims).mean() if reduce == "mean" else torch.stack(sims).max()
                assert float(got[i, k]) == pytest.approx(float(want), abs=1e-12)
    with pytest.raises(ValueError, match="reduce must be one of"):
        ensemble_scores(img, prompts, "median")


def test_posneg_scores_written_out():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 6, generator=g)
    pos, neg = {"a": torch.randn(3, 6, generator=g)}, {"a": torch.randn(3, 6, generator=g)}
    got = posneg_scores(img, pos, neg, temperature=0.5)
    for i in range(4):
        probs = []
        for k in range(3):
            pair = torch.stack([F.cosine_similarity(img[i], pos["a"][k], dim=0),
                                F.cosine_similarity(img[i], neg["a"][k], dim=0)]) / 0.5
            probs.append(torch.softmax(pair.double(), 0)[0])
        assert float(got[i, 0]) == pytest.approx(float(torch.stack(probs).mean()), abs=1e-6)
    assert ((got > 0) & (got < 1)).all()
    with pytest.raises(ValueError, match="come in pairs"):
        posneg_scores(img, pos, {"a": neg["a"][:2]})


def test_posneg_prompts():
    p = posneg_prompts(("Edema",))
    assert p["Edema"][0] == ("pulmonary edema", "no pulmonary edema")
    assert len(p["Edema"]) == len(POSNEG_TEMPLATES) and all("no" in n.split() for _, n in p["Edema"])


def test_zero_shot_finds_the_planted_signal(oracle, tokenizer, studies):
    """The oracle's image vector carries each label's sign, its prompts point at their finding: both
    classifiers must rank every positive above every negative (a finding's column swapped with another's,
    or a negation read as a positive, would not)."""
    test = studies.subset(lambda s: s.split in TEST_SPLITS["test"])
    feats = encode_studies(oracle, tokenizer, test, findings=COMPETITION_FINDINGS, show_progress=False)
    r = zero_shot(oracle, tokenizer, feats, n_prompts=5, n_boot=100, seed=0)
    for style in ("prompt_ensemble", "posneg"):
        for f in COMPETITION_FINDINGS:
            d = r[style]["per_finding"][f]
            assert d["n_pos"] > 0 and d["n_neg"] > 0
            assert d["auc"] == 1.0 and d["ci"] == [1.0, 1.0], (style, f)
        assert r[style]["mean"]["auc"] == 1.0
    assert r["prompt_ensemble"]["prompts"] == class_prompts(5, 0)
    # labels: uncertain (-1) and unmentioned ones are left out; the counts are those of the 0 / 1 labels
    for f in COMPETITION_FINDINGS:
        values = [s.labels.get(f) for s in test]
        assert r["posneg"]["per_finding"][f]["n_pos"] == sum(v == 1.0 for v in values)
        assert r["posneg"]["per_finding"][f]["n_neg"] == sum(v == 0.0 for v in values)
    # the opposite sign flips every AUC: the score is oriented, not just separating
    flipped = dataclasses.replace(feats, image=-feats.image)
    r2 = zero_shot(oracle, tokenizer, flipped, n_prompts=5, n_boot=10, seed=0)
    assert all(np.isclose(r2["posneg"]["per_finding"][f]["auc"], 0.0) for f in COMPETITION_FINDINGS)
