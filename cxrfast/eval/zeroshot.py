"""Zero-shot classification of the five competition findings from image–text similarity, two ways.

(a) Prompt ensembles, after GLoRIA (Huang et al. 2021; its released gloria/constants.py and
    generate_chexpert_class_prompts): each finding has word lists of severities, sub-types and locations;
    every combination "{severity} {subtype} {location}" is a candidate prompt, and `n` of them are drawn
    per finding with a seeded generator. The score of image i for finding f is the MEAN over f's prompts of
    the cosine similarity between the image's global feature and the prompt's global feature
    (`reduce="mean"`; "max" is what GLoRIA's code does despite its comment, "centroid" compares the image
    with the mean of the normalised prompt embeddings, as CLIP's ensembles do). The lists below are our
    own, written in the reports' register. What differs from GLoRIA's generator, on purpose: the
    combination is always severity → subtype → location (GLoRIA iterates the dict keys in their stored
    order, so its pleural-effusion prompts read "small left bilateral pleural effusion"), blanks are
    collapsed and duplicates dropped before sampling (its lists hold a repeated subtype and "" entries that
    leave double spaces), and sampling is seeded (it calls random.sample unseeded). Only the global
    similarity is used (GLoRIA averages it with its local one): evaluation sees presets through the
    PresetModel interface, where every preset has global features and not all have words and regions.
(b) Positive vs negative prompts, after CheXzero (Tiu et al. 2022): for each phrasing pair ("{finding}",
    "no {finding}"), ("there is {finding}", "there is no {finding}"), ... the probability of the positive is
    the softmax over the pair's two cosine similarities (temperature 1, CheXzero's raw cosines), and the
    score is its mean over the phrasings.

Per finding: ROC AUC of the score against the labels of the test studies, uncertain (-1) and unmentioned
labels excluded per finding; the mean over the findings; study-bootstrap 95% intervals
(cxrfast.eval.metrics.bootstrap_aucs).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.features import Features, encode_texts
from cxrfast.eval.metrics import bootstrap_aucs

__all__ = ["CLASS_PROMPTS", "FINDING_NOUNS", "POSNEG_TEMPLATES", "REDUCTIONS", "candidate_prompts", "class_prompts",
           "posneg_prompts", "ensemble_scores", "posneg_scores", "zero_shot"]

# finding → severity / subtype / location words. "" is "say nothing" (collapsed when joined).
CLASS_PROMPTS = {
    "Atelectasis": {
        "severity": ["", "mild", "minimal", "moderate", "streaky"],
        "subtype": ["atelectasis", "linear atelectasis", "plate-like atelectasis", "subsegmental atelectasis",
                    "bibasilar atelectasis", "discoid atelectasis", "basilar atelectasis"],
        "location": ["", "at the lung bases", "at the right lung base", "at the left lung base", "in the right midlung",
                     "in the left midlung", "with volume loss", "with elevation of the hemidiaphragm"],
    },
    "Cardiomegaly": {
        "severity": ["", "mild", "moderate", "severe", "marked", "stable"],
        "subtype": ["cardiomegaly", "enlargement of the cardiac silhouette", "enlarged cardiac silhouette",
                    "cardiac enlargement", "enlarged heart"],
        "location": ["", "which is unchanged", "again seen"],
    },
    "Consolidation": {
        "severity": ["", "dense", "patchy", "focal", "lobar", "new"],
        "subtype": ["consolidation", "airspace consolidation", "consolidation with air bronchograms",
                    "airspace opacity"],
        "location": ["", "in the right upper lobe", "in the right middle lobe", "in the right lower lobe",
                     "in the left upper lobe", "in the lingula", "in the left lower lobe", "at the lung bases"],
    },
    "Edema": {
        "severity": ["", "mild", "moderate", "severe", "worsening", "persistent"],
        "subtype": ["pulmonary edema", "interstitial edema", "interstitial pulmonary edema",
                    "pulmonary vascular congestion and edema", "perihilar edema"],
        "location": ["", "with kerley b lines", "bilaterally", "with perihilar haziness"],
    },
    "Pleural Effusion": {
        "severity": ["", "small", "moderate", "large", "trace", "layering"],
        "subtype": ["pleural effusion", "right pleural effusion", "left pleural effusion",
                    "bilateral pleural effusions", "pleural fluid", "subpulmonic pleural effusion"],
        "location": ["", "with blunting of the costophrenic angle", "at the lung base", "obscuring the hemidiaphragm"],
    },
}
# the noun each finding is named by in the positive / negative prompts
FINDING_NOUNS = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
                 "Edema": "pulmonary edema", "Pleural Effusion": "pleural effusion"}
POSNEG_TEMPLATES = (("{}", "no {}"), ("there is {}", "there is no {}"), ("{} is seen", "no {} is seen"),
                    ("findings consistent with {}", "no evidence of {}"))
REDUCTIONS = ("mean", "max", "centroid")


def _table_entry(table: Mapping, finding: str) -> Mapping:
    if finding not in table:
        raise ValueError(f"no prompt words for the finding {finding!r}; the table has {sorted(table)}")
    entry = table[finding]
    missing = [k for k in ("severity", "subtype", "location") if not entry.get(k)]
    if missing:
        raise ValueError(f"prompt words of {finding!r}: missing or empty list(s) {missing}")
    return entry


def candidate_prompts(finding: str, table: Mapping = CLASS_PROMPTS) -> list[str]:
    """Every "{severity} {subtype} {location}" of `finding`, blanks collapsed, duplicates dropped, in the
    lists' order (severity outermost)."""
    e = _table_entry(table, finding)
    out = (" ".join(w for w in (s, t, loc) if w.strip()) for s in e["severity"] for t in e["subtype"]
           for loc in e["location"])
    return list(dict.fromkeys(" ".join(p.split()) for p in out))


def class_prompts(n: int = 10, seed: int = 0, findings: Sequence[str] = COMPETITION_FINDINGS,
                  table: Mapping = CLASS_PROMPTS) -> dict[str, list[str]]:
    """{finding: n prompts drawn without replacement from candidate_prompts, in the candidates' order} (all
    of them where there are fewer than n). The generator is seeded by (seed, the finding's name), so a
    finding's draw does not depend on which other findings are asked for, nor on their order."""
    if n < 1:
        raise ValueError(f"class_prompts: n must be >= 1, got {n}")
    out = {}
    for f in findings:
        cands = candidate_prompts(f, table)
        rng = np.random.default_rng([int(seed), zlib.crc32(f.encode()), 0x50524F4D])
        pick = np.sort(rng.choice(len(cands), size=min(n, len(cands)), replace=False))
        out[f] = [cands[i] for i in pick]
    return out


def posneg_prompts(findings: Sequence[str] = COMPETITION_FINDINGS, templates=POSNEG_TEMPLATES,
                   nouns: Mapping = FINDING_NOUNS) -> dict[str, list[tuple[str, str]]]:
    """{finding: [(positive, negative), ...]}: each template pair filled with the finding's noun."""
    out = {}
    for f in findings:
        noun = nouns.get(f, f.lower())
        out[f] = [(p.format(noun), q.format(noun)) for p, q in templates]
    return out


def ensemble_scores(image: torch.Tensor, prompts: Mapping[str, torch.Tensor], reduce: str = "mean") -> torch.Tensor:
    """Scores [N, F]: image [N, E] against each finding's prompt embeddings [P_f, E] (F = len(prompts), in
    its order): the mean (or max) over prompts of the cosine similarity, or ("centroid") the cosine with
    the mean of the normalised prompt embeddings."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"ensemble_scores: reduce must be one of {REDUCTIONS}, got {reduce!r}")
    img = F.normalize(image.double(), dim=-1)
    cols = []
    for name, emb in prompts.items():
        txt = F.normalize(emb.double(), dim=-1)
        if reduce == "centroid":
            cols.append(img @ F.normalize(txt.mean(0), dim=-1))
        else:
            sim = img @ txt.t()
            cols.append(sim.mean(1) if reduce == "mean" else sim.amax(1))
    return torch.stack(cols, dim=1)


def posneg_scores(image: torch.Tensor, positive: Mapping[str, torch.Tensor], negative: Mapping[str, torch.Tensor],
                  temperature: float = 1.0) -> torch.Tensor:
    """Scores [N, F]: mean over a finding's K phrasings of softmax([cos(img, pos_k), cos(img, neg_k)] / τ)[0];
    positive / negative: finding → [K, E] embeddings, row k of each the k-th pair."""
    if temperature <= 0:
        raise ValueError(f"posneg_scores: temperature must be > 0, got {temperature}")
    img = F.normalize(image.double(), dim=-1)
    cols = []
    for name, pos in positive.items():
        neg = negative[name]
        if pos.shape != neg.shape:
            raise ValueError(f"posneg_scores: {name!r} has {tuple(pos.shape)} positive and {tuple(neg.shape)} "
                             "negative embeddings; they come in pairs")
        sp = img @ F.normalize(pos.double(), dim=-1).t()
        sn = img @ F.normalize(neg.double(), dim=-1).t()
        cols.append(torch.sigmoid((sp - sn) / temperature).mean(1))  # softmax over a pair = sigmoid of the gap
    return torch.stack(cols, dim=1)


def zero_shot(model, tokenizer, test: Features, *, n_prompts: int = 10, seed: int = 0, reduce: str = "mean",
              n_boot: int = 1000, device="cpu", batch_size: int = 64) -> dict:
    """Both zero-shot classifiers on the test features (studies with an image). Returns {"prompt_ensemble":
    bootstrap_aucs' dict + "prompts" + "score", "posneg": the same + "prompts" + "score", "label_policy"}."""
    findings = tuple(test.findings)
    rows = test.has_image
    if not rows.any():
        return {"skipped": "no test study has an image"}
    image, labels = test.image[rows], test.labels[rows].numpy()

    def embed(texts):
        return encode_texts(model, tokenizer, texts, device=device, batch_size=batch_size)

    ens = class_prompts(n_prompts, seed, findings)
    flat = [p for f in findings for p in ens[f]]
    emb = embed(flat)
    per, start = {}, 0
    for f in findings:
        per[f], start = emb[start:start + len(ens[f])], start + len(ens[f])
    a = bootstrap_aucs(ensemble_scores(image, per, reduce).numpy(), labels, findings, n_boot=n_boot, seed=seed)
    a.update(prompts=ens, score=f"{reduce} over a finding's prompts of the cosine similarity (global features)")

    pairs = posneg_prompts(findings)
    K = len(POSNEG_TEMPLATES)
    emb = embed([t for f in findings for pair in pairs[f] for t in pair]).view(len(findings), K, 2, -1)
    pos = {f: emb[i, :, 0] for i, f in enumerate(findings)}
    neg = {f: emb[i, :, 1] for i, f in enumerate(findings)}
    b = bootstrap_aucs(posneg_scores(image, pos, neg).numpy(), labels, findings, n_boot=n_boot, seed=seed)
    b.update(prompts={f: [list(p) for p in pairs[f]] for f in findings},
             score="mean over phrasings of softmax(cos(image, positive), cos(image, negative))[positive]")
    return {"prompt_ensemble": a, "posneg": b,
            "label_policy": "uncertain (-1) and unmentioned labels are left out per finding"}
