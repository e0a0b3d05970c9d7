"""Dataset adapters on small replicas of each layout, written by the tests: MIMIC-CXR (DICOM and JPG
releases, plain and gzipped CSVs), IU X-ray / OpenI (NLMCXR and Kaggle layouts), CheXpert and NIH
ChestX-ray14. Each case checks the studies, views, order, splits, labels, reports and every kind of
problem and error; the images= join runs `prepare` on the replica (needs the compiled extension)."""

import csv
import gzip
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the MIMIC replica's images are DICOM files written with pydicom")
pytest.importorskip("PIL", reason="the replicas' PNG/JPEG images are written with Pillow")
sys.path.insert(0, os.path.dirname(__file__))
import radiograph_files as rf  # noqa: E402

from cxrfast.data import DatasetError, list_datasets, open_dataset  # noqa: E402
from cxrfast.data.datasets import DATASETS, image_key, register_dataset  # noqa: E402
from cxrfast.data.studies import CHEXPERT_FINDINGS, NIH14_FINDINGS, Study, ImageRef, view_matches  # noqa: E402


def _needs_prepare():
    from cxrfast import _ext

    if not _ext.load():
        pytest.skip(f"images= needs `prepare`, which needs cxrfast._C: {_ext.unavailable_reason()}")


def _prepare(src, out):
    _needs_prepare()
    from cxrfast.data.prepare import prepare

    prepare(src, out, size=32, workers=0, progress=False)
    from cxrfast.data import ShardedImages

    return ShardedImages(out)


def _write_csv(path, header, rows, gz=False):
    path = Path(str(path) + (".gz" if gz else ""))
    opener = (lambda: gzip.open(path, "wt", newline="", encoding="utf-8")) if gz else \
        (lambda: open(path, "w", newline="", encoding="utf-8"))
    with opener() as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rf.write_png(path, rf.radiograph(20, 24, seed, bits=8).astype(np.uint8))


def _jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rf.write_jpeg(path, rf.radiograph(20, 24, seed, bits=8))


def _where(p):
    """A problem's file name (without the :line suffix of a table row)."""
    return os.path.basename(p.where).split(":")[0]


def assert_problems(ds, expected):
    """Each (file name, message fragment) matches one problem, and there are no others."""
    left = list(ds.problems)
    for name, fragment in expected:
        hit = [p for p in left if _where(p) == name and fragment in p.message]
        assert hit, f"no problem {name}: ...{fragment}... among:\n" + "\n".join(map(str, left))
        left.remove(hit[0])
    assert not left, "unexpected problems:\n" + "\n".join(map(str, left))


def ids(ds):
    return [s.study_id for s in ds]


def image_ids(study):
    return [im.image_id for im in study.images]


def same_labels(a, b):
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR

MIMIC_REPORTS = {
    ("10000032", "50414267"): """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 The heart is mildly enlarged.  There is a small right pleural effusion.  Streaky
 left basilar opacity likely reflects atelectasis.  No pneumothorax.
 
 IMPRESSION: 
 
 1. Mild cardiomegaly.
 2. Small right pleural effusion.
""",
    ("10000032", "53189527"): """ WET READ: ___ ___ ___ 9:12 AM
  ET tube 3 cm above the carina.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Intubated patient.
 
 FINDINGS AND IMPRESSION:  Endotracheal tube tip 3.2 cm above the carina.  No
 pneumothorax.
""",
    ("10000764", "57375967"): """                                 FINAL REPORT
 INDICATION:  Fever.
 
 IMPRESSION:  No acute cardiopulmonary process.
""",
    ("10000898", "50771383"): """ PORTABLE CHEST OF ___
 
 Comparison to ___.  Lateral view only.
 
 No pleural effusion is seen on the lateral view.
""",
    ("10001122", "51234567"): """                                 FINAL REPORT
 INDICATION:  Cough.
 COMPARISON:  None.
""",
    ("10001217", "58913004"): "   \n \n",
}
# (subject, study, dicom_id, ViewPosition, written?)
MIMIC_IMAGES = [
    ("10000032", "50414267", "e1f2a3b4-lateral", "LATERAL", True),
    ("10000032", "50414267", "c2d3e4f5-pa", "PA", True),
    ("10000032", "50414267", "a3b4c5d6-ap", "AP", True),
    ("10000032", "53189527", "b7c8d9e0-ap", "AP", True),
    ("10000764", "57375967", "c9d0e1f2-pa", "PA", False),
    ("10000764", "57375967", "d0e1f2a3-lat", "LATERAL", True),
    ("10000898", "50771383", "e5f6a7b8-lat", "LATERAL", True),
    ("10001176", "53186264", "f3a4b5c6-pa", "PA", True),
    ("10001217", "58913004", "a8b9c0d1-pa", "PA", True),
    ("10001217", "58913004", "b9c0d1e2-noview", "", True),
]
MIMIC_SPLITS = {"50414267": "train", "53189527": "train", "57375967": "validate", "50771383": "test",
                "51234567": "test", "53186264": "train", "58913004": "test"}
_BLANK = {f: "" for f in CHEXPERT_FINDINGS}
MIMIC_CHEXPERT = [
    ("10000032", "50414267", {**_BLANK, "Cardiomegaly": "1.0", "Pleural Effusion": "1.0", "Atelectasis": "-1.0",
                              "Pneumothorax": "0.0"}),
    ("10000032", "53189527", {**_BLANK, "Support Devices": "1.0", "Pneumothorax": "0.0", "Edema": "yes"}),
    ("10001122", "51234567", {**_BLANK, "No Finding": "1.0"}),
]


def mimic_replica(root, *, ext=".dcm", gz=False, negbio=True, split=True):
    root = Path(root)
    for seed, (subject, study, dicom_id, _, written) in enumerate(MIMIC_IMAGES):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        if not written:
            continue
        if dicom_id.startswith("f3"):  # exists, but prepare will skip it
            (folder / f"{dicom_id}{ext}").write_text("not an image\n" * 20)
        elif ext == ".dcm":
            (folder / f"{dicom_id}.dcm").write_bytes(rf.dicom_bytes(rf.radiograph(20, 24, seed), seed))
        else:
            _jpeg(folder / f"{dicom_id}.jpg", seed)
    for (subject, study), text in MIMIC_REPORTS.items():
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
    meta = [(d, sub, st, "CHEST (PA AND LAT)", v, 3056, 2544) for sub, st, d, v, _ in MIMIC_IMAGES]
    meta.append(("0bad0row-0000", "1000abc", "55555555", "", "PA", 1, 1))
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv",
               ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                "Columns"], meta, gz)
    header = ["subject_id", "study_id", *CHEXPERT_FINDINGS]
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", header,
               [(sub, st, *[v[f] for f in CHEXPERT_FINDINGS]) for sub, st, v in MIMIC_CHEXPERT], gz)
    if negbio:
        _write_csv(root / "mimic-cxr-2.0.0-negbio.csv", header,
                   [(sub, st, *["0.0" if f == "Cardiomegaly" else v[f] for f in CHEXPERT_FINDINGS])
                    for sub, st, v in MIMIC_CHEXPERT[:1]], gz)
    if split:
        rows = [(d, st, sub, MIMIC_SPLITS[st]) for sub, st, d, _, _ in MIMIC_IMAGES]
        rows.append(("0text0only-0000", "51234567", "10001122", "test"))
        _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], rows, gz)
    return root


MIMIC_PROBLEMS = [
    ("mimic-cxr-2.0.0-metadata.csv", "'subject_id': '1000abc' is not an integer id"),
    ("mimic-cxr-2.0.0-chexpert.csv", "column 'Edema': value 'yes'"),
    ("c9d0e1f2-pa.dcm", "image of study 57375967 not found"),
    ("s53186264.txt", "report of study 53186264 not found"),
    ("s58913004.txt", "report of study 58913004 is empty"),
    ("s51234567.txt", "no FINDINGS or IMPRESSION section and no last paragraph"),
]


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    return mimic_replica(tmp_path_factory.mktemp("mimic"))


def test_mimic_cxr_studies_views_reports_labels_splits(mimic):
    ds = open_dataset("mimic-cxr", mimic)
    assert ds.name == "mimic-cxr" and ds.findings == CHEXPERT_FINDINGS
    assert ids(ds) == ["50414267", "53189527", "57375967", "50771383", "51234567", "53186264", "58913004"]
    by = {s.study_id: s for s in ds}
    a = by["50414267"]
    # frontal views only (the default), frontal first then by id
    assert image_ids(a) == ["a3b4c5d6-ap", "c2d3e4f5-pa"] and [im.view for im in a.images] == ["AP", "PA"]
    assert a.images[0].path == str(mimic / "files/p10/p10000032/s50414267/a3b4c5d6-ap.dcm")
    assert a.subject_id == "10000032" and a.split == "train" and a.kind == "paired"
    assert a.sections["findings"].startswith("The heart is mildly enlarged.")
    assert a.sections["impression"] == "1. Mild cardiomegaly.\n2. Small right pleural effusion."
    assert a.extra["report_fallback"] is None and a.report == MIMIC_REPORTS[("10000032", "50414267")]
    assert a.labels["Cardiomegaly"] == 1.0 and a.labels["Atelectasis"] == -1.0 and a.labels["Pneumothorax"] == 0.0
    assert math.isnan(a.labels["Edema"]) and set(a.labels) == set(CHEXPERT_FINDINGS)
    b = by["53189527"]
    assert b.sections["wet read"] == "___ ___ ___ 9:12 AM\nET tube 3 cm above the carina."
    assert b.sections["impression"].startswith("Endotracheal tube tip 3.2 cm") and "findings" not in b.sections
    assert b.extra["report_fallback"] == "impression only" and math.isnan(b.labels["Edema"])  # "yes": a problem
    # the PA file is missing (a problem) and the lateral is filtered out: text-only
    assert by["57375967"].kind == "text" and by["57375967"].split == "validate"
    # lateral-only study: text-only; its report has no headers: last paragraph
    c = by["50771383"]
    assert c.kind == "text" and c.extra["report_fallback"] == "last paragraph"
    assert c.text == "No pleural effusion is seen on the lateral view."
    # labelled, with a report, no image rows at all: text-only
    assert by["51234567"].kind == "text" and by["51234567"].labels["No Finding"] == 1.0
    assert by["51234567"].extra["report_fallback"] == "none"
    # report missing / empty: image-only, no labels row: no labels
    assert by["53186264"].kind == "image" and by["53186264"].labels == {}
    assert by["58913004"].kind == "image" and image_ids(by["58913004"]) == ["a8b9c0d1-pa"]
    assert_problems(ds, MIMIC_PROBLEMS)
    assert ds.options["views"] == ("PA", "AP") and ds.options["uncertain"] is None
    assert repr(ds) == "StudyDataset('mimic-cxr', 7 studies: 2 paired, 2 image, 3 text; 6 problems)"


def test_mimic_cxr_all_views_and_split_filter(mimic):
    ds = open_dataset("mimic-cxr", mimic, views=None)
    by = {s.study_id: s for s in ds}
    assert image_ids(by["50414267"]) == ["a3b4c5d6-ap", "c2d3e4f5-pa", "e1f2a3b4-lateral"]
    assert image_ids(by["57375967"]) == ["d0e1f2a3-lat"] and by["57375967"].kind == "paired"
    assert [im.view for im in by["58913004"].images] == ["PA", None]  # no ViewPosition: kept only by views=None
    lateral = open_dataset("mimic-cxr", mimic, views="lateral")
    assert [image_ids(s) for s in lateral if s.images] == [["e1f2a3b4-lateral"], ["d0e1f2a3-lat"], ["e5f6a7b8-lat"]]
    test = open_dataset("mimic-cxr", mimic, split="test")
    assert ids(test) == ["50771383", "51234567", "58913004"] and {s.split for s in test} == {"test"}
    # only the asked-for split's reports are read: the other splits' report problems are not met
    assert not any("53186264" in p.message for p in test.problems)
    two = open_dataset("mimic-cxr", mimic, split=["train", "validate"])
    assert ids(two) == ["50414267", "53189527", "57375967", "53186264"]
    assert ds.split("validate").studies == [by["57375967"]]


def test_mimic_cxr_text_only_drop_and_uncertain_policies(mimic):
    ds = open_dataset("mimic-cxr", mimic, text_only="drop")
    assert ids(ds) == ["50414267", "53189527", "53186264", "58913004"]
    assert ds.options["dropped_text_only"] == 3 and ds.options["text_only"] == "drop"
    for policy, value in (("zeros", 0.0), ("ones", 1.0), ("ignore", math.nan)):
        d = open_dataset("mimic-cxr", mimic, uncertain=policy)
        got = d[0].labels["Atelectasis"]
        assert (math.isnan(got) if math.isnan(value) else got == value), policy
        assert d[0].labels["Cardiomegaly"] == 1.0 and d.options["uncertain"] == policy


def test_mimic_cxr_negbio_and_no_labels_and_no_reports(mimic):
    nb = open_dataset("mimic-cxr", mimic, labels="negbio")
    assert nb[0].labels["Cardiomegaly"] == 0.0 and nb.options["labels"] == "negbio"
    assert {s.study_id for s in nb} == {s.study_id for s in open_dataset("mimic-cxr", mimic)} - {"51234567"}
    plain = open_dataset("mimic-cxr", mimic, labels=None)
    assert all(s.labels == {} for s in plain)
    images_only = open_dataset("mimic-cxr", mimic, reports=False)
    assert {s.kind for s in images_only} == {"image"} and not any("report" in p.message for p in images_only.problems)


def test_mimic_cxr_gzipped_csvs_and_jpg_release(tmp_path):
    plain = open_dataset("mimic-cxr", mimic_replica(tmp_path / "plain"))
    gz = open_dataset("mimic-cxr", mimic_replica(tmp_path / "gz", gz=True))
    assert ids(gz) == ids(plain) and [s.split for s in gz] == [s.split for s in plain]
    assert all(same_labels(a.labels, b.labels) for a, b in zip(gz, plain))
    assert_problems(gz, [(n + ".gz" if n.endswith(".csv") else n, m) for n, m in MIMIC_PROBLEMS])
    jpg = open_dataset("mimic-cxr", mimic_replica(tmp_path / "jpg", ext=".jpg"))
    assert jpg[0].images[0].path.endswith("s50414267/a3b4c5d6-ap.jpg") and image_ids(jpg[0]) == image_ids(plain[0])
    fixed = open_dataset("mimic-cxr", tmp_path / "jpg", ext=".jpg")
    assert [im.path for s in fixed for im in s.images] == [im.path for s in jpg for im in s.images]


def test_mimic_cxr_separate_tables_and_reports_folders(tmp_path, mimic):
    tables, reports = tmp_path / "tables", tmp_path / "reports"
    tables.mkdir()
    for name in os.listdir(mimic):
        if name.endswith(".csv"):
            shutil.copy(mimic / name, tables / name)
    shutil.copytree(mimic / "files", reports / "files", ignore=shutil.ignore_patterns("*.dcm"))
    images = tmp_path / "images"
    shutil.copytree(mimic / "files", images / "files", ignore=shutil.ignore_patterns("*.txt"))
    ds = open_dataset("mimic-cxr", images, tables=tables, reports=reports)
    assert ids(ds) == ids(open_dataset("mimic-cxr", mimic)) and ds[0].sections["impression"].startswith("1. Mild")


def test_mimic_cxr_errors(tmp_path):
    root = mimic_replica(tmp_path / "m", split=False)
    with pytest.raises(DatasetError, match=r"mimic-cxr-2\.0\.0-split\.csv\[\.gz\]; expected the official split"):
        open_dataset("mimic-cxr", root, split="train")
    assert {s.split for s in open_dataset("mimic-cxr", root)} == {None}  # no split file, none asked for
    os.remove(root / "mimic-cxr-2.0.0-negbio.csv")
    with pytest.raises(DatasetError, match=r"no mimic-cxr-2\.0\.0-negbio\.csv\[\.gz\]; expected the negbio labels "
                                           r".*labels=None opens the dataset without labels"):
        open_dataset("mimic-cxr", root, labels="negbio")
    with pytest.raises(DatasetError, match=r"labels must be 'chexpert', 'negbio' or None"):
        open_dataset("mimic-cxr", root, labels="chexbert")
    with pytest.raises(DatasetError, match=r"split 'val': unknown split 'val'; mimic-cxr's splits are train, "
                                           r"validate, test"):
        open_dataset("mimic-cxr", root, split="val")
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id"], [("a", "1", "2")])
    with pytest.raises(DatasetError, match=r"metadata\.csv: no column 'ViewPosition'; expected the image metadata "
                                           r"with columns dicom_id, subject_id, study_id, ViewPosition \(found: "
                                           r"dicom_id, subject_id, study_id\)"):
        open_dataset("mimic-cxr", root)
    os.remove(root / "mimic-cxr-2.0.0-metadata.csv")
    with pytest.raises(DatasetError, match=r"no mimic-cxr-2\.0\.0-metadata\.csv\[\.gz\]; expected MIMIC-CXR-JPG's "
                                           r"image metadata"):
        open_dataset("mimic-cxr", root)
    shutil.rmtree(root / "files")
    with pytest.raises(DatasetError, match=r"files: no such folder; expected MIMIC-CXR's files/pXX"):
        open_dataset("mimic-cxr", root)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "files").mkdir()
    (tmp_path / "broken" / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"metadata\.csv\.gz: cannot read it as a CSV \(gzip\)"):
        open_dataset("mimic-cxr", tmp_path / "broken")


def test_mimic_cxr_report_not_utf8_and_duplicate_or_conflicting_rows(tmp_path):
    root = mimic_replica(tmp_path / "m")
    report = root / "files/p10/p10000032/s50414267.txt"
    report.write_bytes("FINDINGS: Lungs clear.\nIMPRESSION: Temperature 38\u00b0.\n".encode("latin-1"))

    def append(name, *rows):
        with open(root / name, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)

    append("mimic-cxr-2.0.0-metadata.csv", ("c2d3e4f5-pa", "10000032", "50414267", "", "LATERAL", 1, 1),
           ("", "10000032", "50414267", "", "PA", 1, 1))
    append("mimic-cxr-2.0.0-chexpert.csv", ("10000032", "50414267", *["0.0"] * 14))
    append("mimic-cxr-2.0.0-split.csv", ("x", "50414267", "10000032", "test"), ("y", "53189527", "10000032", "dev"))
    ds = open_dataset("mimic-cxr", root)
    a = ds[0]
    assert a.sections["impression"] == "Temperature 38\ufffd." and a.split == "train"
    assert a.labels["Cardiomegaly"] == 1.0 and image_ids(a) == ["a3b4c5d6-ap", "c2d3e4f5-pa"]
    assert_problems(ds, MIMIC_PROBLEMS + [
        ("s50414267.txt", "report of study 50414267 is not UTF-8 (byte 49); read with replacement characters"),
        ("mimic-cxr-2.0.0-metadata.csv", "dicom_id 'c2d3e4f5-pa' listed twice; row skipped"),
        ("mimic-cxr-2.0.0-metadata.csv", "dicom_id '' is empty; row skipped"),
        ("mimic-cxr-2.0.0-chexpert.csv", "study 50414267 labelled twice; the first row is used"),
        ("mimic-cxr-2.0.0-split.csv", "study 50414267 is in train and test; train is used"),
        ("mimic-cxr-2.0.0-split.csv", "split 'dev', expected train, validate or test")])


def test_strict_raises_at_the_first_problem(mimic):
    with pytest.raises(DatasetError, match=r"metadata\.csv:12: column 'subject_id'.*strict=True") as err:
        open_dataset("mimic-cxr", mimic, strict=True)
    assert err.value.problem is not None and "1000abc" in err.value.problem.message


def test_mimic_cxr_images_from_shards(tmp_path):
    root = mimic_replica(tmp_path / "m")
    out = tmp_path / "prepared"
    shards = _prepare(root / "files", out)
    assert [b["path"] for b in shards.bad_files] == ["p10/p10001176/s53186264/f3a4b5c6-pa.dcm"]
    os.remove(root / "files/p10/p10000032/s50414267/a3b4c5d6-ap.dcm")  # the shards hold it: no problem
    ds = open_dataset("mimic-cxr", root, images=out, views=None)
    rows = {image_key(r["path"]): r["index"] for r in shards.metadata}
    joined = [im for s in ds for im in s.images]
    assert joined and all(im.shard == (str(out), rows[im.image_id]) for im in joined)
    assert shards[joined[0].shard[1]][1]["path"].endswith(f"{joined[0].image_id}.dcm")
    by = {s.study_id: s for s in ds}
    assert image_ids(by["50414267"]) == ["a3b4c5d6-ap", "c2d3e4f5-pa", "e1f2a3b4-lateral"]
    assert "53186264" not in by  # prepare skipped its only image, and its report is missing: nothing left
    assert_problems(ds, [p for p in MIMIC_PROBLEMS if "c9d0e1f2" not in p[0]] + [
        ("c9d0e1f2-pa.dcm", f"image c9d0e1f2-pa of study 57375967 is not in the shards of {out}"),
        ("f3a4b5c6-pa.dcm", "image f3a4b5c6-pa of study 53186264 is not in the shards of"),
    ])
    skipped = next(p for p in ds.problems if "f3a4b5c6" in p.where)
    assert "; prepare skipped it: " in skipped.message and shards.bad_files[0]["reason"] in skipped.message
    assert ds.options["images"] == str(out)
    from cxrfast.data import ShardedImages

    again = open_dataset("mimic-cxr", root, images=ShardedImages(out), views=None)
    assert [im.shard for s in again for im in s.images] == [im.shard for im in joined]


def test_duplicate_keys_in_shards_are_a_problem(tmp_path):
    root = mimic_replica(tmp_path / "m")
    src = tmp_path / "src"
    for copy in ("a", "b"):
        (src / copy).mkdir(parents=True)
        shutil.copy(root / "files/p10/p10000032/s53189527/b7c8d9e0-ap.dcm", src / copy)
    out = tmp_path / "prepared"
    _prepare(src, out)
    ds = open_dataset("mimic-cxr", root, images=out, split="train")
    by = {s.study_id: s for s in ds}
    assert by["53189527"].images[0].shard == (str(out), 0)
    assert any("matches shard rows [0, 1]" in p.message and "row 0 is used" in p.message for p in ds.problems)


# --------------------------------------------------------------------------------------------------
# IU X-ray / OpenI

def _openi_xml(uid, abstract, major=(), minor=(), images=()):
    texts = "\n".join(f'            <AbstractText Label="{k}">{v}</AbstractText>' if v is not None else
                      f'            <AbstractText Label="{k}"/>' for k, v in abstract)
    mesh = "".join(f"<major>{t}</major>" for t in major) + "".join(f"<minor>{t}</minor>" for t in minor)
    parents = "\n".join(f'   <parentImage id="{i}">\n      <figureId>F{n + 1}</figureId>\n      <caption>Xray Chest '
                        f'PA and Lateral</caption>\n      <panel type="single"><url>/hadoop/storage/radiology/extract/'
                        f'{i}.jpg</url></panel>\n   </parentImage>' for n, i in enumerate(images))
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <pmcId id="{uid[3:]}"/>
   <docSource>CXR</docSource>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{texts}
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}</MeSH>
{parents}
</eCitation>
"""


OPENI_XML = {
    "1.xml": _openi_xml("CXR1", [("COMPARISON", "None."), ("INDICATION", "XXXX-year-old male, chest pain."),
                                 ("FINDINGS", "The cardiac silhouette and mediastinum size are within normal limits. "
                                              "There is no pulmonary edema. There are no XXXX of a pleural effusion."),
                                 ("IMPRESSION", "Normal chest x-XXXX.")],
                        major=["normal"], images=["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
    "2.xml": _openi_xml("CXR2", [("COMPARISON", "XXXX XXXX"), ("INDICATION", "Dyspnea"), ("FINDINGS", None),
                                 ("IMPRESSION", "Borderline cardiomegaly. Small right effusion. PICC in XXXX-XXXX.")],
                        major=["Cardiomegaly/borderline", "Pleural Effusion/right/small", "Catheters, Indwelling"],
                        minor=["Opacity/ribs/right/posterior", "Pulmonary Atelectasis/base/left"],
                        images=["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"]),
    "3.xml": "<eCitation><uId id='CXR3'/><MedlineCitation>",
    "4.xml": _openi_xml("CXR4", [("COMPARISON", None), ("FINDINGS", None), ("IMPRESSION", None)],
                        major=["No Indexing"], images=["CXR4_IM-2050-1001"]),
    "5.xml": _openi_xml("CXR5", [("INDICATION", "Chest pain"), ("FINDINGS", None), ("IMPRESSION", None)]),
    "10.xml": _openi_xml("CXR10", [("FINDINGS", "Heart size normal. Lungs clear.")]),
}
OPENI_PNGS = ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-2001", "CXR4_IM-2050-1001"]


def openi_replica(root, *, kaggle=False):
    root = Path(root)
    (root / "ecgen-radiology").mkdir(parents=True)
    for name, xml in OPENI_XML.items():
        (root / "ecgen-radiology" / name).write_text(xml)
    for seed, image in enumerate(OPENI_PNGS):
        if kaggle:  # Kaggle's "Chest X-rays (Indiana University)": images/images_normalized/1_IM-0001-3001.dcm.png
            number, _, rest = image[3:].partition("_")
            _png(root / "images" / "images_normalized" / f"{number}_{rest.rpartition('_')[2]}.dcm.png", seed)
        else:
            _png(root / "NLMCXR_png" / f"{image}.png", seed)
    return root


OPENI_PROBLEMS = [("3.xml", "not a readable XML report"),
                  ("CXR2_1_IM-0652-1001.png", "image of study CXR2 not found"),
                  ("4.xml", "report of study CXR4 is empty"),
                  ("5.xml", "report of study CXR5 has no FINDINGS or IMPRESSION section")]


def test_openi_reports_mesh_labels_and_views(tmp_path):
    root = openi_replica(tmp_path / "openi")
    ds = open_dataset("openi", root)
    assert ids(ds) == ["CXR1", "CXR2", "CXR4", "CXR5", "CXR10"]  # natural order of the XML names; 3.xml is broken
    by = {s.study_id: s for s in ds}
    one = by["CXR1"]
    # default views: the frontal one, by the order rule (first parentImage)
    assert image_ids(one) == ["CXR1_1_IM-0001-3001"] and one.images[0].view == "FRONTAL"
    assert one.images[0].path == str(root / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png")
    assert one.extra["view_source"] == "order" and one.kind == "paired"
    assert one.sections == {"comparison": "None.", "indication": "year-old male, chest pain.",
                            "findings": "The cardiac silhouette and mediastinum size are within normal limits. "
                                        "There is no pulmonary edema. There are no of a pleural effusion.",
                            "impression": "Normal chest x."}
    assert "XXXX" not in one.report and one.report.startswith("COMPARISON: None.\nINDICATION: year-old male")
    assert one.extra["report_fallback"] is None and one.extra["mesh"] == {"major": ["normal"], "minor": []}
    assert one.labels["No Finding"] == 1.0 and all(one.labels[f] == 0.0 for f in CHEXPERT_FINDINGS if f != "No Finding")
    two = by["CXR2"]
    assert two.kind == "text"  # its frontal image is missing (a problem); the lateral is filtered out
    assert two.sections == {"indication": "Dyspnea",
                            "impression": "Borderline cardiomegaly. Small right effusion. PICC in."}
    assert two.extra["report_fallback"] == "impression only"
    assert two.labels == {"Cardiomegaly": -1.0, "Pleural Effusion": 1.0, "Support Devices": 1.0, "Atelectasis": 1.0,
                          "No Finding": 0.0}  # the rib opacity is no Lung Opacity; borderline = uncertain
    four = by["CXR4"]
    assert four.kind == "image" and four.report is None and four.labels == {}  # "No Indexing" says nothing
    five = by["CXR5"]  # only an indication: kept, with its problem; Study.text falls back to the whole report
    assert five.kind == "text" and five.extra["report_fallback"] == "none" and five.text == "INDICATION: Chest pain"
    ten = by["CXR10"]
    assert ten.kind == "text" and ten.images == [] and ten.labels == {}
    assert ten.extra["report_fallback"] == "findings only"
    assert_problems(ds, OPENI_PROBLEMS)
    both = open_dataset("openi", root, views=None)
    assert [(im.image_id, im.view) for im in both[0].images] == [("CXR1_1_IM-0001-3001", "FRONTAL"),
                                                               ("CXR1_1_IM-0001-4001", "LATERAL")]
    assert image_ids(both[1]) == ["CXR2_1_IM-0652-2001"]
    lateral = open_dataset("openi", root, views=["LATERAL"])
    assert image_ids(lateral[0]) == ["CXR1_1_IM-0001-4001"]
    assert open_dataset("openi", root, views=["FRONTAL"]).studies[0].images == one.images


def test_openi_kaggle_layout_and_projections_csv(tmp_path):
    root = openi_replica(tmp_path / "kaggle", kaggle=True)
    # the CSV says the first image of CXR1 is the lateral one; CXR2's images are not listed
    _write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"],
               [(1, "1_IM-0001-4001.dcm.png", "Frontal"), (1, "1_IM-0001-3001.dcm.png", "Lateral"),
                (4, "4_IM-2050-1001.dcm.png", "Sideways")])
    ds = open_dataset("openi", root, views=None)
    one = ds[0]
    assert [(im.image_id, im.view) for im in one.images] == [("1_IM-0001-4001", "FRONTAL"),
                                                             ("1_IM-0001-3001", "LATERAL")]
    assert one.images[0].path == str(root / "images" / "images_normalized" / "1_IM-0001-4001.dcm.png")
    assert one.extra["view_source"] == "projections" and ds[2].extra["view_source"] == "order"
    assert_problems(ds, OPENI_PROBLEMS + [("indiana_projections.csv", "projection 'Sideways'")])
    with pytest.raises(DatasetError, match=r"nowhere\.csv: no such file; expected the projections CSV"):
        open_dataset("openi", root, projections=tmp_path / "nowhere.csv")
    _write_csv(root / "indiana_projections.csv", ["uid", "file"], [(1, "x")])
    with pytest.raises(DatasetError, match=r"indiana_projections\.csv: no column 'filename', 'projection'"):
        open_dataset("openi", root)


def test_openi_errors(tmp_path):
    root = openi_replica(tmp_path / "openi")
    with pytest.raises(DatasetError, match=r"openi has no official split"):
        open_dataset("openi", root, split="train")
    shutil.rmtree(root / "NLMCXR_png")
    with pytest.raises(DatasetError, match=r"NLMCXR_png: no such folder; expected OpenI's PNG images"):
        open_dataset("openi", root)
    shutil.rmtree(root / "ecgen-radiology")
    with pytest.raises(DatasetError, match=r"ecgen-radiology: no such folder; expected OpenI's XML reports"):
        open_dataset("openi", root)


def test_openi_images_from_shards(tmp_path):
    root = openi_replica(tmp_path / "openi")
    out = tmp_path / "prepared"
    _prepare(root / "NLMCXR_png", out)
    shutil.rmtree(root / "NLMCXR_png")  # with images=, the source folder may be gone
    ds = open_dataset("openi", root, images=out, views=None)
    one = ds[0]
    assert [im.shard for im in one.images] == [(str(out), 0), (str(out), 1)]
    assert [im.view for im in one.images] == ["FRONTAL", "LATERAL"]
    assert_problems(ds, [("3.xml", "not a readable XML report"), ("4.xml", "is empty"), OPENI_PROBLEMS[3],
                         ("CXR2_1_IM-0652-1001.png", "is not in the shards of")])


# --------------------------------------------------------------------------------------------------
# CheXpert

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                   "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def _chexpert_row(path, sex, age, side, appa, **labels):
    cells = {f: "" for f in CHEXPERT_FINDINGS}
    cells.update({k.replace("_", " "): v for k, v in labels.items()})
    return [path, sex, age, side, appa, *[cells[f] for f in CHEXPERT_HEADER[5:]]]


P = "CheXpert-v1.0-small"
CHEXPERT_TRAIN = [
    _chexpert_row(f"{P}/train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP",
                  Support_Devices="1.0", Edema="-1.0", Pleural_Effusion="0.0"),
    _chexpert_row(f"{P}/train/patient00001/study1/view2_lateral.jpg", "Female", "68", "Lateral", "",
                  Support_Devices="1.0", Edema="-1.0", Pleural_Effusion="0.0"),
    _chexpert_row(f"{P}/train/patient00002/study2/view1_frontal.jpg", "Male", "87", "Frontal", "PA",
                  Cardiomegaly="-1.0", Pleural_Effusion="1.0"),
    _chexpert_row(f"{P}/train/patient00002/study1/view1_lateral.jpg", "Male", "83", "Lateral", "", No_Finding="1.0"),
    _chexpert_row(f"{P}/train/patient00003/study1/view1_frontal.jpg", "Male", "41", "Frontal", "AP", Edema="1.0"),
    _chexpert_row(f"{P}/train/patient00004/study1/view1_frontal.jpg", "Female", "20", "Frontal", "",
                  Fracture="maybe", No_Finding="1.0"),
    _chexpert_row("view1_frontal.jpg", "Female", "20", "Frontal", "AP"),
    _chexpert_row(f"{P}/train/patient00001/study1/view3_frontal.jpg", "Female", "68", "Frontal", "AP",
                  Support_Devices="1.0", Edema="1.0", Pleural_Effusion="0.0"),
]
CHEXPERT_VALID = [
    _chexpert_row(f"{P}/valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP",
                  Cardiomegaly="1.0", Edema="0.0"),
]


def chexpert_replica(parent, name=P):
    root = Path(parent) / name
    root.mkdir(parents=True)
    _write_csv(root / "train.csv", CHEXPERT_HEADER, CHEXPERT_TRAIN)
    _write_csv(root / "valid.csv", CHEXPERT_HEADER, CHEXPERT_VALID)
    for seed, row in enumerate(CHEXPERT_TRAIN + CHEXPERT_VALID):
        rel = row[0].split("/", 1)[-1]
        if "patient00003" in rel or "/" not in row[0]:
            continue  # listed, not on disk
        _jpeg(root / rel, seed)
    return root


CHEXPERT_PROBLEMS = [("view1_frontal.jpg", "image of study patient00003/study1 not found"),
                     ("train.csv", "column 'Fracture': value 'maybe'"),
                     ("train.csv", "Path 'view1_frontal.jpg': expected <dataset>/<split>/patientN/studyM/<view>.jpg"),
                     ("train.csv", "labels differ from the first row of study patient00001/study1")]


def test_chexpert_studies_views_labels_and_splits(tmp_path):
    root = chexpert_replica(tmp_path)
    ds = open_dataset("chexpert", root)
    assert ds.findings == CHEXPERT_FINDINGS
    # patient00002/study1 (lateral only) and patient00003 (its file missing) have nothing left
    assert ids(ds) == ["patient00001/study1", "patient00002/study2", "patient00004/study1", "patient64541/study1"]
    one = ds[0]
    assert image_ids(one) == ["patient00001/study1/view1_frontal", "patient00001/study1/view3_frontal"]
    assert one.images[0].path == str(root / "train/patient00001/study1/view1_frontal.jpg")
    assert one.kind == "image" and one.report is None and one.subject_id == "patient00001" and one.split == "train"
    assert one.labels["Edema"] == -1.0 and one.labels["Support Devices"] == 1.0
    assert one.labels["Pleural Effusion"] == 0.0
    assert math.isnan(one.labels["Cardiomegaly"]) and one.extra == {"sex": "Female", "age": "68"}
    assert [im.view for im in ds[1].images] == ["PA"] and [im.view for im in ds[2].images] == ["FRONTAL"]
    assert math.isnan(ds[2].labels["Fracture"])
    assert ds[3].split == "validate" and ds[3].labels["Cardiomegaly"] == 1.0
    assert_problems(ds, CHEXPERT_PROBLEMS)
    both = open_dataset("chexpert", root, views=None)
    assert image_ids(both[0]) == ["patient00001/study1/view1_frontal", "patient00001/study1/view3_frontal",
                                  "patient00001/study1/view2_lateral"]
    assert [im.view for im in both[0].images] == ["AP", "AP", "LATERAL"]
    assert "patient00002/study1" in ids(both)
    assert ids(open_dataset("chexpert", root, split="validate")) == ["patient64541/study1"]


@pytest.mark.parametrize("policy, value", [(None, -1.0), ("zeros", 0.0), ("ones", 1.0), ("ignore", math.nan)])
def test_chexpert_uncertain_policy_is_applied_and_recorded(tmp_path, policy, value):
    ds = open_dataset("chexpert", chexpert_replica(tmp_path), uncertain=policy)
    got = ds[0].labels["Edema"]
    assert math.isnan(got) if math.isnan(value) else got == value
    assert ds[0].labels["Support Devices"] == 1.0 and ds.options["uncertain"] == policy


def test_chexpert_renamed_folder_and_missing_files(tmp_path):
    root = chexpert_replica(tmp_path, name="chexpert")  # Paths still say CheXpert-v1.0-small/...
    ds = open_dataset("chexpert", root)
    assert ds[0].images[0].path == str(root / "train/patient00001/study1/view1_frontal.jpg")
    assert_problems(ds, CHEXPERT_PROBLEMS)
    os.remove(root / "train.csv")
    assert ids(open_dataset("chexpert", root, split="validate")) == ["patient64541/study1"]
    with pytest.raises(DatasetError, match=r"train\.csv: no such file; expected CheXpert's train\.csv"):
        open_dataset("chexpert", root)
    _write_csv(root / "valid.csv", CHEXPERT_HEADER[:5], [])
    with pytest.raises(DatasetError, match=r"valid\.csv: no column 'Atelectasis', 'Cardiomegaly'"):
        open_dataset("chexpert", root, split="validate")


def test_chexpert_images_from_shards_join_on_three_components(tmp_path):
    root = chexpert_replica(tmp_path)
    out = tmp_path / "prepared"
    shards = _prepare(root, out)
    ds = open_dataset("chexpert", root, images=out, views=None)
    joined = {im.image_id: im.shard[1] for s in ds for im in s.images}
    # view1_frontal is the stem of four files: the join tells them apart by patient and study
    for image_id, row in joined.items():
        assert shards.metadata[row]["path"].endswith(f"{image_id}.jpg")
    assert len(set(joined.values())) == len(joined) == 7
    assert_problems(ds, [("view1_frontal.jpg", "image patient00003/study1/view1_frontal of study patient00003/study1 "
                                               "is not in the shards"), *CHEXPERT_PROBLEMS[1:]])


# --------------------------------------------------------------------------------------------------
# NIH ChestX-ray14

NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, 57, "M", "PA", 2682, 2749, 0.143, 0.143),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA", 2894, 2729, 0.143, 0.143),
    ("00000002_000.png", "No Finding", 0, 2, 80, "M", "AP", 2500, 2048, 0.168, 0.168),
    ("00000003_000.png", "Hernia", 0, 3, 74, "F", "PA", 2500, 2048, 0.168, 0.168),
    ("00000004_000.png", "Mass|Nodule|Covid", 0, 4, 82, "M", "AP", 2500, 2048, 0.168, 0.168),
]


def nih_replica(root, *, flat=False, lists=True, entry="Data_Entry_2017_v2020.csv"):
    root = Path(root)
    root.mkdir(parents=True)
    _write_csv(root / entry, NIH_HEADER, NIH_ROWS)
    for seed, name in enumerate(["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000004_000.png"]):
        folder = root / "images" if flat else root / ("images_001" if seed < 2 else "images_002") / "images"
        _png(folder / name, seed)
    if lists:
        (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
        (root / "test_list.txt").write_text("00000002_000.png\n")
    return root


NIH_PROBLEMS = [("00000003_000.png", "image of study 00000003_000 not found"),
                ("Data_Entry_2017_v2020.csv", "unknown label 'Covid'"),
                ("Data_Entry_2017_v2020.csv", "00000004_000.png is in neither train_val_list.txt nor test_list.txt")]


def test_nih14_studies_labels_views_and_splits(tmp_path):
    root = nih_replica(tmp_path / "nih")
    ds = open_dataset("nih14", root)
    assert ds.findings == NIH14_FINDINGS
    assert ids(ds) == ["00000001_000", "00000001_001", "00000002_000", "00000004_000"]
    first = ds[0]
    assert first.images == [ImageRef(str(root / "images_001/images/00000001_000.png"), "00000001_000", "PA")]
    assert first.kind == "image" and first.subject_id == "1" and first.split == "train"
    assert first.labels == {f: float(f == "Cardiomegaly") for f in NIH14_FINDINGS}
    assert ds[1].labels["Emphysema"] == 1.0 and ds[1].extra == {"follow_up": "1", "age": "58", "gender": "M"}
    assert all(v == 0.0 for v in ds[2].labels.values()) and ds[2].split == "test"
    assert ds[3].labels["Mass"] == ds[3].labels["Nodule"] == 1.0 and ds[3].split is None
    assert_problems(ds, NIH_PROBLEMS)
    assert ids(open_dataset("nih14", root, views=["AP"])) == ["00000002_000", "00000004_000"]
    assert ids(open_dataset("nih14", root, split="test")) == ["00000002_000"]
    assert ids(open_dataset("nih14", root, split="train")) == ["00000001_000", "00000001_001"]


def test_nih14_flat_images_old_entry_name_and_errors(tmp_path):
    root = nih_replica(tmp_path / "flat", flat=True, lists=False, entry="Data_Entry_2017.csv")
    ds = open_dataset("nih14", root)
    assert ds[0].images[0].path == str(root / "images/00000001_000.png") and {s.split for s in ds} == {None}
    assert_problems(ds, [NIH_PROBLEMS[0], ("Data_Entry_2017.csv", "unknown label 'Covid'")])
    with pytest.raises(DatasetError, match=r"train_val_list\.txt: no such file; expected the official train list"):
        open_dataset("nih14", root, split="train")
    shutil.rmtree(root / "images")
    with pytest.raises(DatasetError, match=r"no images_0XX/images/ or images/ folder"):
        open_dataset("nih14", root)
    os.remove(root / "Data_Entry_2017.csv")
    with pytest.raises(DatasetError, match=r"no Data_Entry_2017_v2020\.csv\[\.gz\] or Data_Entry_2017\.csv\[\.gz\]; "
                                           r"expected NIH ChestX-ray14's image table"):
        open_dataset("nih14", root)


def test_nih14_images_from_shards_with_a_bad_file(tmp_path):
    root = nih_replica(tmp_path / "nih")
    (root / "images_002/images/00000004_000.png").write_bytes(b"")  # prepare skips it
    out = tmp_path / "prepared"
    _prepare(root, out)
    ds = open_dataset("nih14", root, images=out)
    assert [(s.study_id, s.images[0].shard) for s in ds] == [
        ("00000001_000", (str(out), 0)), ("00000001_001", (str(out), 1)), ("00000002_000", (str(out), 2))]
    assert_problems(ds, [("00000003_000.png", "is not in the shards of"), *NIH_PROBLEMS[1:],
                         ("00000004_000.png", "prepare skipped it")])


# --------------------------------------------------------------------------------------------------
# the shared parts


def test_registry_and_argument_errors(tmp_path, mimic):
    assert list_datasets() == ["chexpert", "mimic-cxr", "nih14", "openi"]
    with pytest.raises(DatasetError, match=r"unknown dataset 'mimic'; expected one of chexpert, mimic-cxr"):
        open_dataset("mimic", mimic)
    with pytest.raises(DatasetError, match=r"no such folder \(the nih14 dataset's root\)"):
        open_dataset("nih14", tmp_path / "absent")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) labels; nih14 takes no options of its own"):
        open_dataset("nih14", mimic, labels="chexpert")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) label; mimic-cxr takes labels, tables, reports, ext"):
        open_dataset("mimic-cxr", mimic, label="chexpert")
    with pytest.raises(DatasetError, match=r"uncertain must be None \(keep -1\) or one of"):
        open_dataset("mimic-cxr", mimic, uncertain="U-ones")
    with pytest.raises(DatasetError, match=r"text_only must be 'keep' or 'drop'"):
        open_dataset("mimic-cxr", mimic, text_only="skip")
    with pytest.raises(DatasetError, match=r"views must be None or ViewPosition names"):
        open_dataset("mimic-cxr", mimic, views=[1])


def test_a_registered_adapter_gets_the_shared_steps(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")

    @register_dataset("toy", splits=("train",), findings=("Edema",))
    def toy(ctx, *, n=2):
        return [Study(f"s{i}", [ImageRef(str(tmp_path / "a.png"), "a", "LATERAL"),
                                ImageRef(str(tmp_path / "b.png"), "b", "PA")],
                      report="Lungs clear." if i else None, labels={"Edema": -1.0}, split="train") for i in range(n)]

    try:
        ds = open_dataset("toy", tmp_path, views=None, n=3, uncertain="zeros")
        assert ids(ds) == ["s0", "s1", "s2"] and image_ids(ds[0]) == ["a"] and ds[0].labels == {"Edema": 0.0}
        assert len(ds.problems) == 3 and ds.options["n"] == 3
        frontal = open_dataset("toy", tmp_path, n=3)  # b.png (PA) is missing: s0 has nothing left, s1 and s2 are text
        assert ids(frontal) == ["s1", "s2"] and {s.kind for s in frontal} == {"text"}
        # a plain function assigned to the registry works too (no splits, no findings)
        DATASETS["plain"] = lambda ctx: [Study("only", report="No effusion.")]
        plain = open_dataset("plain", tmp_path)
        assert ids(plain) == ["only"] and plain.findings == () and "plain" in list_datasets()
        with pytest.raises(DatasetError, match=r"plain has no official split"):
            open_dataset("plain", tmp_path, split="train")
    finally:
        DATASETS.pop("toy", None)
        DATASETS.pop("plain", None)


def test_view_matches():
    assert view_matches("PA", ("PA", "AP")) and view_matches("FRONTAL", ("PA", "AP"))
    assert view_matches("ap", ["FRONTAL"]) and view_matches("FRONTAL", ["PA"])
    assert not view_matches("AP", ["PA"]) and not view_matches("LATERAL", ("PA", "AP"))
    assert not view_matches(None, ("PA",)) and view_matches(None, None) and view_matches("LL", None)
    s = Study("x", [ImageRef("a", "a", "LATERAL"), ImageRef("b", "b", "FRONTAL")])
    assert [im.image_id for im in s.views(("PA", "AP"))] == ["b"]


def test_image_key():
    assert image_key("p10/p10000032/s5/abc.dcm") == "abc"
    assert image_key("images/images_normalized/1_IM-0001-3001.dcm.png") == "1_IM-0001-3001"
    assert image_key(r"train\patient1\study1\view1_frontal.JPG", 3) == "patient1/study1/view1_frontal"
    assert image_key("1.2.840.113619.2") == "1.2.840.113619.2"  # UID-named DICOM: no image extension to drop


def test_import_stays_lean():
    code = ("import sys, cxrfast, cxrfast.data as d\n"
            "assert 'cxrfast.data.datasets' not in sys.modules and 'cxrfast.data.reports' not in sys.modules\n"
            "d.open_dataset, d.list_datasets, d.DatasetError\n"
            "assert 'cxrfast.data.datasets' in sys.modules and 'cxrfast.io' not in sys.modules\n"
            "assert 'cxrfast.data.shards' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
