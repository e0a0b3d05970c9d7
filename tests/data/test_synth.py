"""`cxrfast synth`: the synthetic paired dataset. Its layout and CSV columns are MIMIC-CXR's; every DICOM
reads back pixel-exact (cxrfast.io.read_dicom and pydicom) and holds exactly the drawn image; the labels
agree with the reports (parsed back here with keyword + negation / hedge cues, as a CheXpert-style labeler
does) and with the images (simple image statistics and a linear probe on held-out studies separate
positives from negatives); masks mark brighter regions inside the thorax; one seed, one set of bytes,
whatever the number of workers."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest

from cxrfast.data import synth
from cxrfast.data.studies import CHEXPERT_FINDINGS, COMPETITION_FINDINGS
from cxrfast.io import load_radiograph, read_dicom
from cxrfast.io.write import SYNTAXES

N, SEED, SIZE = 400, 1, 128
FIVE = list(COMPETITION_FINDINGS)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    summary = synth.write_synthetic(out, n=N, seed=SEED, size=SIZE, workers=0)
    labels = _read_csv(out / "mimic-cxr-2.0.0-chexpert.csv")
    meta = _read_csv(out / "mimic-cxr-2.0.0-metadata.csv")
    return {"out": out, "summary": summary, "labels": labels, "meta": meta,
            "split": _read_csv(out / "mimic-cxr-2.0.0-split.csv")}


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return {"columns": tuple(reader.fieldnames), "rows": list(reader)}


def _dcm(out, row):
    return out / "files" / f"p{row['subject_id'][:2]}" / f"p{row['subject_id']}" / f"s{row['study_id']}" / f"{row['dicom_id']}.dcm"


def _report(out, row):
    return (out / "files" / f"p{row['subject_id'][:2]}" / f"p{row['subject_id']}" / f"s{row['study_id']}.txt").read_text()


def _frontal_rows(ds):
    """The first frontal image of each study, in study order."""
    seen, rows = set(), []
    for r in ds["meta"]["rows"]:
        if r["ViewPosition"] in ("PA", "AP") and r["study_id"] not in seen:
            seen.add(r["study_id"])
            rows.append(r)
    return rows


# ------------------------------------------------------------------------------------------ layout


def test_layout_and_columns_are_mimic_cxr(ds):
    out = ds["out"]
    assert ds["meta"]["columns"] == (
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
        "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning")
    assert ds["labels"]["columns"] == ("subject_id", "study_id") + CHEXPERT_FINDINGS
    assert ds["split"]["columns"] == ("dicom_id", "study_id", "subject_id", "split")
    assert (out / "mimic-cxr-2.0.0-negbio.csv").read_bytes() == (out / "mimic-cxr-2.0.0-chexpert.csv").read_bytes()

    labels, meta = ds["labels"]["rows"], ds["meta"]["rows"]
    assert len(labels) == N and len({r["study_id"] for r in labels}) == N
    by_study = {}
    for r in meta:
        by_study.setdefault(r["study_id"], []).append(r)
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", r["dicom_id"])
        assert re.fullmatch(r"1\d{7}", r["subject_id"]) and re.fullmatch(r"5\d{7}", r["study_id"])
        assert (r["Rows"], r["Columns"]) == (str(SIZE), str(SIZE))
        assert re.fullmatch(r"2[12]\d{6}", r["StudyDate"]) and re.fullmatch(r"\d{6}\.\d{3}", r["StudyTime"])
        assert r["ViewCodeSequence_CodeMeaning"] == {"PA": "postero-anterior", "AP": "antero-posterior",
                                                     "LATERAL": "lateral", "LL": "left lateral"}[r["ViewPosition"]]
        assert r["PerformedProcedureStepDescription"] == r["ProcedureCodeSequence_CodeMeaning"]
        assert r["PatientOrientationCodeSequence_CodeMeaning"] in ("Erect", "Recumbent")
        assert _dcm(out, r).is_file()
    assert len({r["dicom_id"] for r in meta}) == len(meta) == ds["summary"].images
    assert set(by_study) == {r["study_id"] for r in labels}
    for rows in by_study.values():  # 1-3 images, a frontal view first, one subject
        assert 1 <= len(rows) <= 3 and rows[0]["ViewPosition"] in ("PA", "AP")
        assert len({r["subject_id"] for r in rows}) == 1
    assert {r["ViewPosition"] for r in meta} == {"PA", "AP", "LATERAL", "LL"}
    # every file on disk is listed, every study has its report
    on_disk = {p.stem for p in (out / "files").rglob("*.dcm")}
    assert on_disk == {r["dicom_id"] for r in meta}
    assert len(list((out / "files").rglob("s*.txt"))) == N
    for r in labels:
        assert all(r[c] in ("", "1.0", "0.0", "-1.0") for c in CHEXPERT_FINDINGS)


def test_split_is_by_subject_about_80_10_10(ds):
    split = ds["split"]["rows"]
    assert [r["dicom_id"] for r in split] == [r["dicom_id"] for r in ds["meta"]["rows"]]
    of_subject = {}
    for r in split:
        assert r["split"] in ("train", "validate", "test")
        assert of_subject.setdefault(r["subject_id"], r["split"]) == r["split"], "a subject in two splits"
    shares = {s: sum(v == s for v in of_subject.values()) / len(of_subject) for s in ("train", "validate", "test")}
    assert abs(shares["train"] - 0.8) < 0.02 and abs(shares["validate"] - 0.1) < 0.02


def test_prevalences_and_co_occurrence(ds):
    labels = ds["labels"]["rows"]
    for f in FIVE:
        share = np.mean([r[f] == "1.0" for r in labels])
        assert 0.18 <= share <= 0.4, (f, share)  # 20-35% in the population, n = 400 here
    none = np.mean([r["No Finding"] == "1.0" for r in labels])
    assert 0.13 <= none <= 0.24
    card = np.array([r["Cardiomegaly"] == "1.0" for r in labels])
    edema = np.array([r["Edema"] == "1.0" for r in labels])
    assert edema[card].mean() > 1.5 * edema[~card].mean()  # heart failure: cardiomegaly with edema


# ------------------------------------------------------------------------------------------ DICOM


def test_every_file_reads_back_pixel_exact_with_both_readers(ds):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("pylibjpeg")  # pydicom's JPEG lossless decoder
    out = ds["out"]
    seen = {"syntax": set(), "photometric": set(), "rescale": 0, "no_window": 0}
    subjects = {r["study_id"]: r["subject_id"] for r in ds["labels"]["rows"]}
    for r in ds["meta"]["rows"]:
        img = read_dicom(_dcm(out, r))
        m = img.meta
        ref = pydicom.dcmread(_dcm(out, r))
        assert np.array_equal(img.pixels, ref.pixel_array), r["dicom_id"]
        assert img.pixels.dtype == np.uint16 and img.pixels.shape == (SIZE, SIZE) and img.pixels.max() < 4096
        assert (m["bits_allocated"], m["bits_stored"], m["pixel_representation"]) == (16, 12, 0)
        assert m["view_position"] == r["ViewPosition"] and m["patient_id"] == subjects[r["study_id"]]
        assert m["study_date"] == r["StudyDate"] and ref.StudyID == r["study_id"]
        assert ref.ViewCodeSequence[0].CodeMeaning == r["ViewCodeSequence_CodeMeaning"]
        assert ref.PatientOrientationCodeSequence[0].CodeMeaning == r["PatientOrientationCodeSequence_CodeMeaning"]
        assert m["sop_instance_uid"] == ref.file_meta.MediaStorageSOPInstanceUID
        seen["syntax"].add(m["transfer_syntax"])
        seen["photometric"].add(m["photometric_interpretation"])
        seen["rescale"] += m["has_rescale"]
        seen["no_window"] += not m["window_center"]
    assert seen["syntax"] == set(SYNTAXES) and seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["rescale"] > 0 and seen["no_window"] > 0


def test_files_hold_exactly_the_drawn_images(ds):
    """The stored values are the drawn ones (MONOCHROME1: 4095 minus them); one study's views share its
    UIDs; the pixel pipeline shows bone bright whichever the photometric interpretation."""
    out = ds["out"]
    meta = ds["meta"]["rows"]
    by_study = {}
    for r in meta:
        by_study.setdefault(r["study_id"], []).append(r)
    for index, lab in enumerate(ds["labels"]["rows"][:12]):
        spec = synth.draw_study(SEED, index)[0]
        rows = by_study[lab["study_id"]]
        assert [r["ViewPosition"] for r in rows] == spec["views"]
        uids = set()
        for k, r in enumerate(rows):
            img = read_dicom(_dcm(out, r))
            drawn, _ = synth.view_pixels(SEED, index, k, SIZE, spec)
            flipped = img.meta["photometric_interpretation"] == "MONOCHROME1"
            assert np.array_equal(4095 - img.pixels if flipped else img.pixels, drawn)
            uids.add(img.meta["study_instance_uid"])
        assert len(uids) == 1
    for r in _frontal_rows(ds)[:40]:  # displayed: the mediastinum (centre) brighter than the lungs
        im = load_radiograph(_dcm(out, r), size=64).image.astype(float)
        assert im[20:36, 29:35].mean() > im[20:36, 10:20].mean() + 20


# ------------------------------------------------------------------------------------------ reports

_HEADERS = ("EXAMINATION:", "INDICATION:", "TECHNIQUE:", "COMPARISON:", "History:")
_TERMS = {"Atelectasis": r"atelectasis", "Consolidation": r"consolidation", "Edema": r"edema",
          "Pleural Effusion": r"effusion|pleural fluid", "Pneumonia": r"pneumonia", "Pneumothorax": r"pneumothorax",
          "Cardiomegaly": r"cardiomegaly|enlarg|heart size",
          "Support Devices": r"\btube\b|catheter|central line|jugular line|pacemaker|pacer|lines and tubes|support devices"}
_NEG = r"\b(no|without)\b"
_HEDGE_BEFORE = r"\b(possible|possibly|questionable|borderline|concerning for|may reflect|may represent|trace)\b"
_HEDGE_AFTER = r"(cannot be excluded|not excluded|is possible)"


def _sentences(report: str) -> list[str]:
    """The sentences of the report's findings and impression (the header fields and headings left out)."""
    keep, skip = [], False
    for line in report.splitlines():
        s = line.strip()
        if not s:
            skip = False
            continue
        if s.startswith(_HEADERS):
            skip = True
        if skip or s in ("FINAL REPORT", "FINDINGS:", "IMPRESSION:") or s.startswith(("WET READ:", "___")):
            continue
        keep.append(s)
    text = " ".join(keep)
    return [t for t in re.split(r"(?<=\.)\s+", text) if t]


def parse_labels(report: str) -> dict:
    """Labels from the text, sentence by sentence: a finding's mention is negated after 'no' / 'without'
    (or, for the heart, by 'normal'; for effusions, by sharp costophrenic angles), uncertain after a hedge
    ('possible', 'borderline', 'may reflect', ...) or before 'cannot be excluded', else positive; a
    study's label is its strongest mention (1 > -1 > 0), blank if none."""
    found: dict = {}

    def note(name, value):
        rank = {1.0: 3, -1.0: 2, 0.0: 1}
        if name not in found or rank[value] > rank[found[name]]:
            found[name] = value

    for s in _sentences(report):
        low = s.lower()
        if re.search(r"heart|cardiac|cardiomediastinal", low) and "normal" in low:
            note("Cardiomegaly", 0.0)
            if "cardiomediastinal" in low:
                note("Enlarged Cardiomediastinum", 0.0)
            continue
        if "costophrenic angles are sharp" in low:
            note("Pleural Effusion", 0.0)
            continue
        for name, term in _TERMS.items():
            hits = list(re.finditer(term, low))
            if not hits:
                continue
            if re.search(_NEG, low[:hits[0].start()]):
                note(name, 0.0)
            elif re.search(_HEDGE_BEFORE, low[:hits[-1].start()]) or re.search(_HEDGE_AFTER, low[hits[0].end():]):
                note(name, -1.0)
            else:
                note(name, 1.0)
    pathologies = FIVE + ["Pneumonia"]
    if not any(found.get(f) in (1.0, -1.0) for f in pathologies):
        found["No Finding"] = 1.0
    return found


def test_labels_agree_with_the_report_text(ds):
    out = ds["out"]
    meta_of = {r["study_id"]: r for r in ds["meta"]["rows"]}
    frames = set()
    for r in ds["labels"]["rows"]:
        report = _report(out, meta_of[r["study_id"]])
        parsed = parse_labels(report)
        for c in CHEXPERT_FINDINGS:
            want = "" if c not in parsed else f"{parsed[c]:.1f}"
            assert r[c] == want, f"study {r['study_id']}: {c} is {r[c]!r} in the CSV, {want!r} in the text:\n{report}"
        frames.add("FINDINGS:" in report)
        frames.add("WET READ" in report)
    assert frames == {True, False}


def test_reports_vary(ds):
    """Several phrasings per finding, frames with and without sections, a WET READ now and then."""
    out = ds["out"]
    meta_of = {r["study_id"]: r for r in ds["meta"]["rows"]}
    reports = [_report(out, meta_of[r["study_id"]]) for r in ds["labels"]["rows"]]
    assert len(set(reports)) == len(reports)
    share = lambda pattern: np.mean([bool(re.search(pattern, t)) for t in reports])  # noqa: E731
    assert 0.3 < share(r"FINDINGS:") < 0.95 and 0.05 < share(r"WET READ") < 0.3
    assert share(r"IMPRESSION:") < 1 and share(r"INDICATION:") > 0.3
    sentences = {s for t in reports for s in _sentences(t)}
    for pattern in (r"effusion", r"consolidation", r"cardiomegaly|enlarged", r"edema", r"atelectasis",
                    r"^No .*\bor\b"):
        variants = {re.sub(r"\b(small|moderate|large|mild|severe|right|left|bilateral)\b", "", s.lower())
                    for s in sentences if re.search(pattern, s, re.I)}
        assert len(variants) >= 8, (pattern, variants)
    for words in ("small left pleural effusion", "moderate cardiomegaly", "right lower lobe consolidation",
                  "mild pulmonary edema", "bibasilar", "No pleural effusion or pneumothorax", "Heart size is normal"):
        assert share(re.escape(words)) > 0, words


# ------------------------------------------------------------------------------------------ images


def _auc(score, label):
    keep = ~np.isnan(label)
    score, label = score[keep], label[keep]
    pos, neg = score[label == 1], score[label == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _run(row, c):
    """Length of the run of True through row[c] (0 if row[c] is False)."""
    if not row[c]:
        return 0
    left = c
    while left > 0 and row[left - 1]:
        left -= 1
    right = c
    while right < len(row) - 1 and row[right + 1]:
        right += 1
    return right - left + 1


def heart_width(im):
    """The bright central shadow's width (median over the heart's rows; rows where it reaches the chest
    wall, below the diaphragm or in a large effusion, left out) over the image's width."""
    h, w = im.shape
    zone = im[int(.3 * h):int(.55 * h), int(.12 * w):int(.88 * w)]
    bright = im > (np.percentile(zone, 20) + np.percentile(zone, 90)) / 2
    widths = [_run(bright[y], w // 2) for y in range(int(.45 * h), int(.72 * h))]
    kept = [x for x in widths if x < 0.7 * w]
    return np.median(kept) / w if kept else 1.0


def basal_opacity(im):
    """The brighter lateral lung base (costophrenic region) over the lung's intensity, in units of the
    lung / soft-tissue contrast."""
    h, w = im.shape
    zone = im[int(.3 * h):int(.55 * h), int(.12 * w):int(.88 * w)]
    lung, soft = np.percentile(zone, 20), np.percentile(zone, 90)
    base = max(im[int(.64 * h):int(.75 * h), int(.17 * w):int(.31 * w)].mean(),
               im[int(.64 * h):int(.75 * h), int(.69 * w):int(.83 * w)].mean())
    return (base - lung) / max(soft - lung, 1.0)


@pytest.fixture(scope="module")
def frontal(ds):
    rows = _frontal_rows(ds)
    images = np.stack([load_radiograph(_dcm(ds["out"], r), size=SIZE).image.astype(np.float32) for r in rows])
    lab_of = {r["study_id"]: r for r in ds["labels"]["rows"]}

    def label(name):  # 1 drawn and said, 0 not drawn (negated or not mentioned), NaN uncertain
        v = [lab_of[r["study_id"]][name] for r in rows]
        return np.array([1.0 if x == "1.0" else np.nan if x == "-1.0" else 0.0 for x in v])

    return rows, images, label


def test_simple_image_statistics_separate_cardiomegaly_and_effusion(frontal):
    """Read back through the pixel pipeline at 128 px: the heart's width and the basal opacity alone
    separate the labels (AUC > 0.9), as the radiologist's cardiothoracic ratio and blunted angle do."""
    _, images, label = frontal
    card = _auc(np.array([heart_width(im) for im in images]), label("Cardiomegaly"))
    eff = _auc(np.array([basal_opacity(im) for im in images]), label("Pleural Effusion"))
    assert card > 0.9 and eff > 0.9, (card, eff)


def test_a_linear_probe_on_pixels_finds_every_finding(frontal):
    """Ridge regression on 16 x 16 pixels, fit on half of the studies, scored on the other half: the
    global findings separate almost perfectly; consolidation and atelectasis, whose place varies (six
    lobes, either base), well above chance even for a linear model (a CNN sees them better)."""
    _, images, label = frontal
    x = images.reshape(len(images), 16, SIZE // 16, 16, SIZE // 16).mean((2, 4)).reshape(len(images), -1)
    x = np.hstack([(x - x.mean(0)) / (x.std(0) + 1e-6), np.ones((len(x), 1))])
    train = np.arange(len(x)) < len(x) // 2
    aucs = {}
    for f in FIVE:
        y = label(f)
        fit = train & ~np.isnan(y)
        w = np.linalg.solve(x[fit].T @ x[fit] + 30.0 * np.eye(x.shape[1]), x[fit].T @ (2 * y[fit] - 1))
        aucs[f] = _auc(x[~train] @ w, y[~train])
    assert all(aucs[f] > 0.9 for f in ("Cardiomegaly", "Edema", "Pleural Effusion")), aucs
    assert all(aucs[f] > 0.65 for f in ("Atelectasis", "Consolidation")), aucs


def test_masks_mark_the_drawn_findings_inside_the_thorax(ds, frontal):
    rows, images, _ = frontal
    out = ds["out"]
    lab_of = {r["study_id"]: r for r in ds["labels"]["rows"]}
    brighter, total = 0, 0
    frontal_ids = {r["dicom_id"] for r in ds["meta"]["rows"] if r["ViewPosition"] in ("PA", "AP")}
    assert {p.stem for p in (out / "masks").glob("*.npz")} == frontal_ids  # frontal views only
    for r, im in zip(rows, images):
        with np.load(out / "masks" / f"{r['dicom_id']}.npz") as z:
            masks = {k: z[k] for k in z.files}
        drawn = {f for f in synth.DRAWN if lab_of[r["study_id"]][f] in ("1.0", "-1.0")}
        assert set(masks) == drawn | {"lungs", "heart"}
        for name, m in masks.items():
            assert m.dtype == np.uint8 and m.shape == (SIZE, SIZE) and set(np.unique(m)) <= {0, 1}
            assert m.any(), (r["dicom_id"], name)
        thorax = _dilate(masks["lungs"].astype(bool) | masks["heart"].astype(bool), 2)
        for name in set(masks) & {"Atelectasis", "Consolidation", "Edema", "Pleural Effusion", "Cardiomegaly"}:
            m = masks[name].astype(bool)
            assert (m & ~thorax).sum() <= 0.01 * m.sum(), (r["dicom_id"], name)
            if name != "Cardiomegaly":  # an opacity: brighter than the rest of the lung
                rest = masks["lungs"].astype(bool) & ~m
                total += 1
                brighter += im[m].mean() > im[rest].mean()
    assert total > 100 and brighter >= 0.95 * total, (brighter, total)


def _dilate(m, r):
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(m, dy, 0), dx, 1)
    return out


# ------------------------------------------------------------------------------------------ determinism, CLI


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", n=6, seed=7, size=64, workers=0)
    synth.write_synthetic(tmp_path / "b", n=6, seed=7, size=64, workers=2)
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert ta.keys() == tb.keys() and len(ta) == a.images + sum(1 for _ in (tmp_path / "a" / "masks").iterdir()) + 6 + 5
    assert all(ta[k] == tb[k] for k in ta), [k for k in ta if ta[k] != tb[k]]
    c = synth.write_synthetic(tmp_path / "c", n=6, seed=8, size=64, workers=0)
    assert _tree(tmp_path / "c").keys() != ta.keys() and c.images >= 6


def test_cli_writes_and_refuses_a_non_empty_out(tmp_path, capsys):
    from cxrfast.cli import main

    out = tmp_path / "ds"
    assert main(["synth", str(out), "--n", "3", "--size", "64", "--seed", "2", "--workers", "0", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "3 studies" in text and "images/s" in text and "No Finding" in text
    assert (out / "mimic-cxr-2.0.0-metadata.csv").is_file() and (out / "synth.json").is_file()
    assert main(["synth", str(out), "--n", "3", "--size", "64", "--no-progress"]) == 2
    assert "`out`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "x"), "--size", "16"])


@pytest.mark.parametrize("kw, name", [({"n": 0}, "`n`"), ({"size": 32}, "`size`"), ({"seed": -1}, "`seed`"),
                                      ({"workers": -2}, "`workers`")])
def test_bad_arguments_name_themselves(tmp_path, kw, name):
    with pytest.raises(synth.SynthError, match=re.escape(name)):
        synth.write_synthetic(tmp_path / "o", **{"n": 2, **kw})


def test_examples_picture(tmp_path):
    pytest.importorskip("matplotlib")
    path = synth.save_examples(tmp_path / "ex.png", size=96)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000


def test_prepare_reads_the_files(tmp_path):
    """`cxrfast prepare OUT/files` takes every image, none refused, in the pixel pipeline's output."""
    from cxrfast.data import ShardedImages
    from cxrfast.data.prepare import prepare

    synth.write_synthetic(tmp_path / "ds", n=5, seed=3, size=64, workers=0)
    summary = prepare(tmp_path / "ds" / "files", tmp_path / "prep", size=64, workers=0, progress=False)
    images = ShardedImages(tmp_path / "prep")
    dcms = sorted((tmp_path / "ds" / "files").rglob("*.dcm"))
    assert len(images) == len(dcms) and summary.skipped == 0
    image, row = images[0]
    ref = load_radiograph(tmp_path / "ds" / "files" / row["path"], size=64, dtype="uint8").image
    assert np.array_equal(image, ref)
