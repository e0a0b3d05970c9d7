"""Reports of the synthetic dataset (cxrfast.data.synth) and the labels they imply.

Every sentence is built with the labels it states: a positive description sets its finding to 1.0, a
hedged one ("possible small left pleural effusion") to -1.0, a negation ("No pleural effusion or
pneumothorax.") to 0.0 for each finding it negates; a finding the report does not mention stays blank.
The labels written to the CSVs are exactly the union of the report's sentences (no sentence contradicts
another), so labels and text agree by construction, and a test parses the text back to check it.

Variety, so that a text encoder has to read rather than match one template: several phrasings per finding,
severity and side words, synonyms (effusion / pleural fluid, consolidation / airspace opacity, cardiomegaly /
enlarged cardiac silhouette), negations alone or grouped in lists, sentence order shuffled, an IMPRESSION
that rephrases (or enumerates) the positives, and the report's frame: sometimes an EXAMINATION /
INDICATION / TECHNIQUE / COMPARISON header, a WET READ preamble, only an IMPRESSION, or no section
headings at all; lines wrapped at 78 columns with MIMIC-CXR's leading space.
"""

from __future__ import annotations

import textwrap

__all__ = ["write_report"]

SEVERITY_ADV = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Report:
    """Sentences with their labels."""

    def __init__(self):
        self.labels: dict[str, float] = {}

    def state(self, **labels) -> None:
        for key, value in labels.items():
            name = key.replace("_", " ")
            old = self.labels.get(name)
            if old is not None and old != value:
                raise AssertionError(f"report contradicts itself on {name}: {old} then {value}")
            self.labels[name] = value


# ----------------------------------------------------------------------------------- positive phrases
# Each returns (findings sentence, impression phrase), given the finding's parameters.

def _cardiomegaly(f, rng):
    sev = f["severity"]
    if not f["certain"]:
        s = _pick(rng, ["The heart size is borderline enlarged.", "Possible mild cardiomegaly.",
                        "Mild cardiomegaly cannot be excluded.", "The cardiac silhouette is possibly mildly enlarged."])
        return s, _pick(rng, ["possible mild cardiomegaly", "borderline heart size"])
    word = "marked" if sev == "severe" and rng.random() < 0.5 else sev
    s = _pick(rng, [f"{_cap(word)} cardiomegaly.", f"The heart is {SEVERITY_ADV[sev]} enlarged.",
                    f"There is {word} cardiomegaly.", f"The cardiac silhouette is {SEVERITY_ADV[sev]} enlarged.",
                    f"{_cap(word)} enlargement of the cardiac silhouette is again seen.",
                    f"Heart size is {SEVERITY_ADV[sev]} enlarged."])
    imp = _pick(rng, [f"{word} cardiomegaly", f"{word} enlargement of the cardiac silhouette",
                      f"{SEVERITY_ADV[sev]} enlarged heart"])
    return s, imp


def _effusion_words(f):
    side, size = f["side"], f["size"]
    if side == "bilateral":
        return size, "bilateral", "pleural effusions", "effusions"
    return size, side, "pleural effusion", "effusion"


def _effusion(f, rng):
    size, side, noun, short = _effusion_words(f)
    if not f["certain"]:
        where = "right" if side == "right" else "left" if side == "left" else "either"
        s = _pick(rng, [f"Possible small {side} {noun}.",
                        f"Blunting of the {'costophrenic angles' if side == 'bilateral' else side + ' costophrenic angle'} "
                        f"may reflect a small {short}.",
                        f"A trace {side} {noun} cannot be excluded." if side != "bilateral" else
                        f"Small {noun} cannot be excluded."])
        return s, _pick(rng, [f"possible small {side} {short}", f"questionable trace {side} {noun}"]) \
            if where != "either" else f"possible small {noun}"
    sided = f"{side}-sided" if side != "bilateral" else "bilateral"
    opts = [f"{_cap(size)} {side} {noun}.", f"There is a {size} {side} {noun}." if side != "bilateral" else
            f"There are {size} bilateral {noun}.", f"{_cap(size)} {sided} {short}.",
            f"{_cap(size)} {side} {noun} with blunting of the costophrenic "
            f"{'angles' if side == 'bilateral' else 'angle'}.",
            f"A {size} amount of {side} pleural fluid is present." if side != "bilateral" else
            f"{_cap(size)} amounts of pleural fluid are present bilaterally."]
    if size == "large":
        opts.append(f"{_cap(size)} {side} {noun} obscures the {'hemidiaphragms' if side == 'bilateral' else side + ' hemidiaphragm'}.")
    if size == "small" and side != "bilateral":
        opts.append(f"Layering small {side} {noun}.")
    imp = _pick(rng, [f"{size} {side} {noun}", f"{size} {sided} {short}"])
    return _pick(rng, opts), imp


def _consolidation(f, rng):
    lobe, pattern = f["lobe"], f["pattern"]
    if not f["certain"]:
        s = _pick(rng, [f"Subtle opacity in the {lobe} may reflect early consolidation.",
                        f"Possible {lobe} consolidation.", f"A focal consolidation in the {lobe} cannot be excluded."])
        return s, _pick(rng, [f"possible {lobe} consolidation", f"questionable early {lobe} consolidation"])
    bronch = " with air bronchograms" if f.get("bronchograms") else ""
    opts = [f"{_cap(pattern)} consolidation in the {lobe}{bronch}.",
            f"There is {pattern} {lobe} consolidation{bronch}.",
            f"{_cap(pattern)} airspace consolidation is seen in the {lobe}{bronch}.",
            f"Focal consolidation is present in the {lobe}{bronch}." if pattern != "patchy" else
            f"Patchy consolidation in the {lobe}{bronch}.",
            f"{_cap(lobe)} consolidation{bronch}."]
    imp = _pick(rng, [f"{pattern} {lobe} consolidation", f"consolidation in the {lobe}"])
    return _pick(rng, opts), imp


def _atelectasis(f, rng):
    where, kind = f["where"], f["kind"]
    if not f["certain"]:
        s = _pick(rng, [f"Minimal {where} atelectasis is possible.",
                        f"Streaky {where} opacities may reflect atelectasis.",
                        f"Possible {kind} atelectasis at the {where.replace('basilar', 'base')}."
                        if where != "bibasilar" else "Possible minimal bibasilar atelectasis."])
        return s, _pick(rng, [f"possible {where} atelectasis", f"{where} opacities, possibly atelectasis"])
    loss = f.get("volume_loss")
    tail = ""
    if loss in ("right", "left"):
        tail = _pick(rng, [f" with elevation of the {loss} hemidiaphragm", " with associated volume loss",
                           f" with mild volume loss and elevation of the {loss} hemidiaphragm"])
    elif loss == "both":
        tail = " with low lung volumes"
    base = {"bibasilar": "both lung bases", "right basilar": "the right lung base", "left basilar": "the left lung base",
            "right midlung": "the right midlung", "left midlung": "the left midlung"}[where]
    opts = [f"{_cap(where)} {kind} atelectasis{tail}.", f"There is {kind} atelectasis at {base}{tail}.",
            f"{_cap(kind)} atelectasis is seen in {base}{tail}.", f"{_cap(where)} atelectasis{tail}."]
    imp = _pick(rng, [f"{where} atelectasis", f"{where} {kind} atelectasis"])
    return _pick(rng, opts), imp


def _edema(f, rng):
    sev = f["severity"]
    if not f["certain"]:
        s = _pick(rng, ["Possible mild pulmonary edema.", "Mild interstitial edema cannot be excluded.",
                        "Subtle perihilar haziness may reflect mild edema."])
        return s, _pick(rng, ["possible mild pulmonary edema", "questionable mild interstitial edema"])
    kerley = " with Kerley B lines" if f.get("kerley") else ""
    opts = [f"{_cap(sev)} pulmonary edema{kerley}.", f"There is {sev} interstitial pulmonary edema{kerley}.",
            f"Perihilar haziness and vascular indistinctness are consistent with {sev} pulmonary edema.",
            f"{_cap(sev)} pulmonary vascular congestion and interstitial edema{kerley}.",
            f"Findings are compatible with {sev} pulmonary edema{kerley}."]
    imp = _pick(rng, [f"{sev} pulmonary edema", f"{sev} interstitial edema", f"{sev} pulmonary edema{kerley}"])
    return _pick(rng, opts), imp


DEVICE_TEXT = {
    "ett": ["Endotracheal tube terminates {x} cm above the carina.", "The endotracheal tube tip is {x} cm above the carina.",
            "ET tube in standard position, {x} cm above the carina."],
    "cvc": ["Right internal jugular central venous catheter terminates in the {svc}.",
            "A right IJ central line ends in the {svc}.", "Right internal jugular line tip projects over the {svc}."],
    "ngt": ["Enteric tube courses below the diaphragm with tip in the stomach.",
            "Nasogastric tube passes below the diaphragm, tip in the stomach.",
            "An orogastric tube is seen coursing into the stomach."],
    "pacemaker": ["Left chest wall pacemaker with leads in the right atrium and right ventricle.",
                  "A left-sided pacer device is present with leads terminating in the right heart.",
                  "Dual-lead pacemaker overlies the left chest."],
}


def _devices(f, rng):
    """One sentence per device; the ETT's distance to the carina and the line's tip are the drawn ones."""
    tip = f["cvc_tip"]
    svc = "mid SVC" if tip < -0.15 else "lower SVC" if tip < -0.05 else "cavoatrial junction"
    return [_pick(rng, DEVICE_TEXT[d]).format(x=f"{f['ett_cm']:.1f}", svc=svc) for d in f["devices"]]


POSITIVE = {"Cardiomegaly": _cardiomegaly, "Pleural Effusion": _effusion, "Consolidation": _consolidation,
            "Atelectasis": _atelectasis, "Edema": _edema}

# ----------------------------------------------------------------------------------- negations
NEG_NOUN = {"Pleural Effusion": ["pleural effusion", "effusion"], "Consolidation": ["focal consolidation", "consolidation"],
            "Edema": ["pulmonary edema", "edema"], "Atelectasis": ["atelectasis"], "Pneumothorax": ["pneumothorax"]}
NEG_ALONE = {
    "Cardiomegaly": ["Heart size is normal.", "The heart is normal in size.", "Normal heart size.",
                     "The cardiac silhouette is within normal limits.", "No cardiomegaly.",
                     "The cardiomediastinal silhouette is normal."],
    "Pleural Effusion": ["No pleural effusion.", "There is no pleural effusion.", "The costophrenic angles are sharp.",
                         "No pleural effusions are seen."],
    "Consolidation": ["No focal consolidation.", "There is no focal consolidation.",
                      "No focal airspace consolidation is seen."],
    "Edema": ["No pulmonary edema.", "There is no pulmonary edema.", "No evidence of pulmonary edema.",
              "There is no pulmonary vascular congestion or edema."],
    "Atelectasis": ["No atelectasis.", "Lungs are well expanded without atelectasis."],
    "Pneumothorax": ["No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."],
}


def _negations(absent: list[str], rng, report: _Report) -> list[str]:
    """Sentences negating each finding of `absent` (an ordered list): alone, or several in one list."""
    out = []
    todo = list(absent)
    rng.shuffle(todo)
    while todo:
        listable = [a for a in todo if a in NEG_NOUN]
        if len(listable) >= 2 and rng.random() < 0.55:
            k = int(rng.integers(2, min(3, len(listable)) + 1))
            group = listable[:k]
            nouns = [_pick(rng, NEG_NOUN[a][:1] if i == 0 else NEG_NOUN[a]) for i, a in enumerate(group)]
            joined = " or ".join(nouns) if k == 2 else f"{', '.join(nouns[:-1])}, or {nouns[-1]}"
            out.append(_pick(rng, [f"No {joined}.", f"There is no {joined}.", f"No evidence of {joined}."]))
            for a in group:
                report.state(**{a.replace(" ", "_"): 0.0})
                todo.remove(a)
            continue
        a = todo.pop(0)
        s = _pick(rng, NEG_ALONE[a])
        if a == "Cardiomegaly" and "cardiomediastinal" in s:
            report.state(Enlarged_Cardiomediastinum=0.0)
        report.state(**{a.replace(" ", "_"): 0.0})
        out.append(s)
    return out


FILLERS = ["The mediastinal and hilar contours are unremarkable.", "Hilar contours are normal.",
           "No acute osseous abnormality.", "The visualized osseous structures are unremarkable.",
           "Degenerative changes are noted in the thoracic spine.", "The upper abdomen is unremarkable.",
           "The aorta is mildly tortuous."]
INDICATIONS = ["___-year-old {sex} with shortness of breath.", "___-year-old {sex} with cough and fever.",
               "___-year-old {sex} with chest pain, evaluate for acute process.",
               "History: ___{sexletter} with dyspnea.", "___-year-old {sex} status post line placement.",
               "Evaluate for pneumonia.", "___-year-old {sex} with hypoxia.", "Preoperative chest radiograph.",
               "___-year-old {sex} with tachycardia and low oxygen saturation."]
TECHNIQUE = {"PA": ["Chest PA and lateral", "PA and lateral views of the chest"], "AP": ["Portable AP chest radiograph",
                                                                                       "AP portable upright view of the chest"]}
COMPARISON = ["___", "None.", "Chest radiograph from ___.", "No prior studies available."]


def _impression(certain: list[str], hedged: list[str], rng) -> str:
    """The findings enumerated ("1. A.\n2. B."), or the certain ones as one sentence ("A, B and C.") and
    each hedged one as a sentence of its own, so that a hedge never seems to cover its neighbours."""
    phrases = certain + hedged
    if len(phrases) > 2 and rng.random() < 0.4:
        return "\n".join(f"{i + 1}. {_cap(p)}." for i, p in enumerate(phrases))
    out = []
    if certain:
        out.append(_cap(certain[0] if len(certain) == 1 else ", ".join(certain[:-1]) + " and " + certain[-1]) + ".")
    out += [_cap(p) + "." for p in hedged]
    return " ".join(out)


def write_report(spec: dict, rng) -> tuple[str, dict[str, float], str]:
    """(report text, labels {label name: 1.0 / 0.0 / -1.0}, frame) of a study's findings. The frame is how
    the report is laid out: "full" (EXAMINATION, INDICATION, TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION),
    "bare" (FINDINGS and IMPRESSION, sometimes an INDICATION), "impression-only", "no-headings" (two
    paragraphs); any of them may start with a WET READ."""
    findings = spec["findings"]
    rep = _Report()
    positives, imp_phrases, hedged, pneumonia = [], [], [], None
    for name in ("Cardiomegaly", "Edema", "Pleural Effusion", "Consolidation", "Atelectasis"):
        if name in findings:
            f = findings[name]
            sentence, phrase = POSITIVE[name](f, rng)
            rep.state(**{name.replace(" ", "_"): 1.0 if f["certain"] else -1.0})
            if name == "Consolidation" and f["certain"] and rng.random() < 0.6:
                # its own sentence at the end of the impression: a hedge on pneumonia must not read as one
                # on the findings listed with the consolidation
                pneumonia, value = _pick(rng, [("This is consistent with pneumonia.", 1.0),
                                               ("Findings are concerning for pneumonia.", -1.0),
                                               ("The consolidation may represent pneumonia.", -1.0),
                                               ("Compatible with pneumonia.", 1.0)])
                rep.state(Pneumonia=value)
            positives.append(sentence)
            (imp_phrases if f["certain"] else hedged).append(phrase)
    devices = _devices(findings["Support Devices"], rng) if "Support Devices" in findings else []
    if devices:
        rep.state(Support_Devices=1.0)

    # negate most absent findings (atelectasis rarely, as radiologists do)
    mention = {"Cardiomegaly": 0.85, "Pleural Effusion": 0.9, "Consolidation": 0.75, "Edema": 0.6,
               "Atelectasis": 0.3, "Pneumothorax": 0.8}
    absent = [a for a in mention if a not in findings and rng.random() < mention[a]]
    negs = _negations(absent, rng, rep)
    if "Consolidation" in absent and rng.random() < 0.25:
        negs.append("No findings to suggest pneumonia.")
        rep.state(Pneumonia=0.0)
    fillers = [FILLERS[i] for i in rng.permutation(len(FILLERS))[: int(rng.integers(0, 3))]]
    others = devices + negs + fillers
    body = positives + others
    if rng.random() < 0.3:  # usually the positives first; sometimes everything mixed
        body = [body[i] for i in rng.permutation(len(body))]

    abnormal = bool(imp_phrases or hedged)
    if abnormal:
        impression = _impression(imp_phrases, hedged, rng)
        if pneumonia:
            impression += ("\n" if "\n" in impression else " ") + pneumonia
        if devices and rng.random() < 0.5:
            impression += " " + _pick(rng, ["Lines and tubes as above.", "Support devices as described."])
    else:
        impression = _pick(rng, ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                                 "Normal chest radiograph.", "No evidence of acute cardiopulmonary disease."])
        if devices:
            impression = _pick(rng, ["Lines and tubes as described.", "Support devices in standard position."]) \
                + " " + impression
        rep.state(No_Finding=1.0)

    r = rng.random()
    frame = "full" if r < 0.55 else "bare" if r < 0.85 else "impression-only" if r < 0.95 else "no-headings"
    sex = "woman" if spec["sex"] == "F" else "man"
    indication = _pick(rng, INDICATIONS).format(sex=sex, sexletter=spec["sex"])

    def para(text: str) -> list[str]:
        return [w for ln in text.split("\n")
                for w in textwrap.wrap(ln, width=77, initial_indent=" ", subsequent_indent=" ")]

    lines = []
    if rng.random() < 0.15:
        first = (imp_phrases + hedged)[:1]
        wet = impression.split("\n")[0] if rng.random() < 0.7 or not first else _cap(first[0]) + "."
        lines += [f" WET READ: ___ ___ ___ {int(rng.integers(1, 13))}:{int(rng.integers(0, 60)):02d} "
                  f"{_pick(rng, ['AM', 'PM'])}", "  " + wet, " " + "_" * 78, ""]
    lines.append(" " * 33 + "FINAL REPORT")
    if frame == "full":
        technique = _pick(rng, TECHNIQUE["AP" if spec["views"][0] == "AP" else "PA"])
        lines += [f" EXAMINATION:  {spec['procedure']}", "", f" INDICATION:  {indication}", "",
                  f" TECHNIQUE:  {technique}", "", f" COMPARISON:  {_pick(rng, COMPARISON)}", ""]
    elif frame == "bare" and rng.random() < 0.5:
        lines += [f" INDICATION:  {indication}", ""]
    if frame == "no-headings":
        lines += para(" ".join(body)) + [""] + para(impression)
    elif frame == "impression-only":  # what the findings would have said goes into the impression
        lines += [" IMPRESSION: ", ""] + para(" ".join([impression.replace("\n", " ")] + others))
    else:
        lines += [" FINDINGS: ", ""] + para(" ".join(body)) + ["", " IMPRESSION: ", ""] + para(impression)
    return "\n".join(lines) + "\n", rep.labels, frame
