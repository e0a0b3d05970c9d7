"""Dataset adapters: the on-disk layouts of MIMIC-CXR, IU X-ray (OpenI), CheXpert and NIH ChestX-ray14,
read into a `StudyDataset` of `Study` records (cxrfast.data.studies).

    ds = open_dataset("mimic-cxr", "/data/mimic-cxr-jpg/2.0.0", split="train")
    ds = open_dataset("openi", "/data/openi", views=None)             # frontal and lateral
    ds = open_dataset("chexpert", "/data/CheXpert-v1.0-small", uncertain="ones")
    ds = open_dataset("nih14", "/data/nih", images="/data/nih-512")  # images read from `cxrfast prepare` shards
    ds.problems                                                      # what could not be used, and why

Layouts (one function per adapter below documents its files and columns): see the README section
"Datasets". What every adapter shares is done here, once, after the adapter has listed its studies:
  1. split:  the studies of `split` (a name or several) are kept; names are checked against the
             adapter's splits ("train" / "validate" / "test").
  2. views:  images whose ViewPosition does not match `views` are left out (studies.view_matches; None
             keeps all). A study left without images becomes text-only when it has a report, and is
             left out when it has none (an image-only dataset's lateral-only study under the default
             frontal filter). text_only="drop" leaves the text-only studies out too; their number is
             recorded in dataset.options["dropped_text_only"].
  3. images: without `images=`, every image file must exist: one that does not is a Problem and leaves
             the study. With `images=` (a `cxrfast prepare` output folder, or a ShardedImages), the
             source files need not exist: each image is joined to the shard row whose `path` ends in
             the image's id (file name without its image extensions: a MIMIC dicom_id, an NIH image
             index, an OpenI image id; CheXpert's ids are patientN/studyM/viewK_frontal, so the last
             three path components are compared) and gets ImageRef.shard = (folder, global row). An
             image absent from the shards is a Problem (naming the reason prepare gave when it skipped
             the file) and leaves the study; a key that several shard rows share is a Problem too (the
             first row is used).
  4. order:  each study's images are sorted frontal first (PA, AP, FRONTAL), then by image id.
  5. labels: kept as coded in the files (1 / 0 / -1 / NaN) unless uncertain= maps -1 to 0 ("zeros"), 1
             ("ones") or NaN ("ignore"); the choice is recorded in dataset.options["uncertain"].
Problems (dataset.problems, never dropped silently): a malformed report (empty, not UTF-8, or with no
FINDINGS / IMPRESSION / last paragraph), a report file missing, an image file missing, a row with
a bad id or label value, an unreadable XML. With strict=True the first problem raises DatasetError.
A missing required file or column raises DatasetError naming it and what was expected.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrfast.data.studies import (CHEXPERT_FINDINGS, FRONTAL, FRONTAL_VIEWS, NIH14_FINDINGS, UNCERTAIN_POLICIES,
                                  UNCERTAIN_VALUES, ImageRef, Problem, Study, StudyDataset, view_matches)

__all__ = ["open_dataset", "list_datasets", "register_dataset", "DATASETS", "DatasetError", "OpenContext",
           "image_key", "MESH_TO_CHEXPERT"]

IMAGE_EXTENSIONS = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A dataset that cannot be opened: a missing file or column (the message names it and what was
    expected), a bad argument, or, with strict=True, the first problem met (then `.problem` holds it)."""

    def __init__(self, message: str, problem: Problem | None = None):
        super().__init__(message)
        self.problem = problem


@dataclass
class OpenContext:
    """What open_dataset hands to an adapter: the root folder, the options every adapter shares, and
    `problem()` to report what cannot be used. An adapter lists its studies with all their images (every
    view) and raw labels; open_dataset applies split, views, image checks, order and the uncertain policy."""

    name: str
    root: Path
    split: frozenset | None
    views: tuple | None
    images: object | None  # ShardedImages or None
    strict: bool
    problems: list = field(default_factory=list)

    def problem(self, where, message: str) -> None:
        p = Problem(str(where), message)
        if self.strict:
            raise DatasetError(f"{p} (strict=True stops at the first problem)", p)
        self.problems.append(p)

    def wants(self, split: str | None) -> bool:
        """Whether studies of `split` are asked for (adapters may skip reading the others)."""
        return self.split is None or split in self.split


# name → adapter: fn(ctx: OpenContext, **options) -> list[Study], carrying `splits` (the split names it
# assigns; none: no official split) and `findings` (its label names, in order) as attributes
DATASETS: dict[str, Callable[..., list[Study]]] = {}


def register_dataset(name: str, *, splits: Sequence[str] = (), findings: Sequence[str] = ()):
    """Decorator that registers `fn(ctx: OpenContext, **options) -> list[Study]` as the adapter `name`
    (DATASETS[name] = fn, with fn.splits and fn.findings set). `splits`: the split names it assigns (empty:
    the dataset has no official split); `findings`: its label names, in order."""
    def deco(fn):
        fn.splits, fn.findings = tuple(splits), tuple(findings)
        DATASETS[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    """The names open_dataset accepts."""
    return sorted(DATASETS)


def open_dataset(name: str, root, *, split: str | Iterable[str] | None = None,
                 views: Iterable[str] | None = FRONTAL_VIEWS, images=None, uncertain: str | None = None,
                 text_only: str = "keep", strict: bool = False, **options) -> StudyDataset:
    """The studies of dataset `name` (list_datasets()) stored under `root`, as a StudyDataset.

    split: None (all), a split name or several ("train", "validate", "test"; which exist depends on the
        dataset). views: ViewPositions to keep (None: all; "FRONTAL" and the PA/AP rule: view_matches).
    images: a `cxrfast prepare` output folder (or ShardedImages): images are joined to its rows.
    uncertain: None keeps -1 (uncertain) labels; "zeros", "ones" or "ignore" (NaN) maps them.
    text_only: "keep" or "drop" the studies that have a report and no image (of `views`).
    strict: raise DatasetError at the first problem instead of listing it in dataset.problems.
    options: the adapter's own (see its docstring: help(cxrfast.data.datasets.mimic_cxr) etc.).
    Steps and rules: the module docstring."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())}")
    adapter = DATASETS[name]
    accepted = [p for p in inspect.signature(adapter).parameters][1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"open_dataset({name!r}): unknown option(s) {', '.join(unknown)}; {name} takes "
                           f"{', '.join(accepted) or 'no options of its own'}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (the {name} dataset's root)")
    splits = _check_split(name, tuple(getattr(adapter, "splits", ())), split)
    if views is not None:
        views = (views,) if isinstance(views, str) else tuple(views)
        if not all(isinstance(v, str) and v for v in views):
            raise DatasetError(f"views must be None or ViewPosition names (e.g. ('PA', 'AP')), got {views!r}")
        views = tuple(v.upper() for v in views)
    if uncertain is not None and uncertain not in UNCERTAIN_POLICIES:
        raise DatasetError(f"uncertain must be None (keep -1) or one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if text_only not in ("keep", "drop"):
        raise DatasetError(f"text_only must be 'keep' or 'drop', got {text_only!r}")
    shards = _open_shards(images)
    ctx = OpenContext(name, root, splits, views, shards, strict)
    studies = adapter(ctx, **options)
    out, dropped = _finish(ctx, studies, uncertain, text_only)
    recorded = {"split": sorted(splits) if splits else None, "views": views, "uncertain": uncertain,
                "text_only": text_only, "images": str(shards.root) if shards is not None else None, **options}
    if text_only == "drop":
        recorded["dropped_text_only"] = dropped
    return StudyDataset(name, str(root), out, getattr(adapter, "findings", ()), ctx.problems, recorded)


def _check_split(name: str, known: tuple, split) -> frozenset | None:
    if split is None:
        return None
    wanted = frozenset([split] if isinstance(split, str) else split)
    if not known:
        raise DatasetError(f"{name} has no official split; open it with split=None and split it yourself")
    bad = sorted(wanted - set(known))
    if bad or not wanted:
        raise DatasetError(f"split {split!r}: unknown split {', '.join(map(repr, bad)) or '(none given)'}; "
                           f"{name}'s splits are {', '.join(known)}")
    return wanted


def _open_shards(images):
    if images is None:
        return None
    from cxrfast.data.shards import ShardedImages

    return images if isinstance(images, ShardedImages) else ShardedImages(images)


# --------------------------------------------------------------------------------------------------
# the shared steps


def image_key(path: str, depth: int = 1) -> str:
    """The join key of an image file: its last `depth` path components, the last one without its image
    extensions (.dcm .dicom .png .jpg .jpeg, any case, repeated: "1_IM-0001-3001.dcm.png" →
    "1_IM-0001-3001"). Backslashes count as separators."""
    parts = str(path).replace("\\", "/").split("/")[-depth:]
    last = parts[-1]
    while True:
        stem, ext = os.path.splitext(last)
        if ext.lower() not in IMAGE_EXTENSIONS or not stem:
            break
        last = stem
    return "/".join(parts[:-1] + [last])


def _view_rank(im: ImageRef) -> tuple:
    return (0 if (im.view or "").upper() in (*FRONTAL_VIEWS, FRONTAL) else 1, im.image_id)


class _ShardIndex:
    """The rows of prepared shards by image key, built per key depth on first use."""

    def __init__(self, shards):
        self.shards = shards
        self.folder = str(shards.root)
        self._by_depth: dict[int, dict[str, list[int]]] = {}
        self._bad: dict[int, dict[str, str]] = {}

    def lookup(self, image_id: str) -> tuple[list[int], str | None]:
        depth = image_id.count("/") + 1
        if depth not in self._by_depth:
            rows: dict[str, list[int]] = {}
            for row in self.shards.metadata:
                rows.setdefault(image_key(row["path"], depth), []).append(row["index"])
            self._by_depth[depth] = rows
            self._bad[depth] = {image_key(b["path"], depth): b["reason"] for b in self.shards.bad_files}
        return self._by_depth[depth].get(image_id, []), self._bad[depth].get(image_id)


def _resolve_images(ctx: OpenContext, study: Study, index: _ShardIndex | None) -> list[ImageRef]:
    kept = []
    for im in study.images:
        if not view_matches(im.view, ctx.views):
            continue
        if index is None:
            if os.path.isfile(im.path):
                kept.append(im)
            else:
                ctx.problem(im.path, f"image of study {study.study_id} not found")
            continue
        rows, bad = index.lookup(im.image_id)
        if not rows:
            why = f"; prepare skipped it: {bad}" if bad else ""
            ctx.problem(im.path, f"image {im.image_id} of study {study.study_id} is not in the shards of "
                                 f"{index.folder}{why}")
            continue
        if len(rows) > 1:
            ctx.problem(im.path, f"image {im.image_id} matches shard rows {rows[:5]} of {index.folder}; "
                                 f"row {rows[0]} is used")
        kept.append(ImageRef(im.path, im.image_id, im.view, (index.folder, rows[0])))
    return sorted(kept, key=_view_rank)


def _finish(ctx: OpenContext, studies: list[Study], uncertain: str | None, text_only: str):
    index = _ShardIndex(ctx.images) if ctx.images is not None else None
    out, dropped = [], 0
    for s in studies:
        if not ctx.wants(s.split):
            continue
        s.images = _resolve_images(ctx, s, index)
        if not s.images:
            if s.report is None:
                continue  # nothing left: no image of these views, no report
            if text_only == "drop":
                dropped += 1
                continue
        if uncertain is not None:
            s.labels = {k: (UNCERTAIN_VALUES[uncertain] if v == -1.0 else v) for k, v in s.labels.items()}
        out.append(s)
    return out, dropped


# --------------------------------------------------------------------------------------------------
# files and tables


def _find(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of `names` (or its .gz) in `folder`; DatasetError naming them and `what` they hold."""
    for n in names:
        for candidate in (folder / n, folder / f"{n}.gz"):
            if candidate.is_file():
                return candidate
    listed = " or ".join(f"{n}[.gz]" for n in names)
    raise DatasetError(f"{folder}: no {listed}; expected {what}")


def read_table(path: Path, required: Sequence[str], what: str) -> list[dict]:
    """The rows of a CSV (plain or gzipped) as dicts; DatasetError naming the file and the columns
    missing from `required` (what it should hold: `what`)."""
    try:
        raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
        with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(f"{path}: no column {', '.join(map(repr, missing))}; expected {what} with "
                                   f"columns {', '.join(required)} (found: {', '.join(header) or 'none'})")
            return list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read it as a CSV{' (gzip)' if path.name.endswith('.gz') else ''}: "
                           f"{exc}") from None


def _label(ctx: OpenContext, where: str, column: str, value) -> float:
    """One CheXpert-coded cell: 1 / 0 / -1, blank → NaN; anything else is a problem (and NaN)."""
    v = (value or "").strip()
    if not v:
        return math.nan
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if x in (1.0, 0.0, -1.0):
        return x
    ctx.problem(where, f"column {column!r}: value {value!r}, expected 1.0, 0.0, -1.0 or blank")
    return math.nan


def _read_report(ctx: OpenContext, path: Path, study: Study) -> None:
    """Read and section a report file into `study` (report, sections, extra["report_fallback"]),
    reporting a missing, unreadable, non-UTF-8, empty or unsectionable one."""
    from cxrfast.data.reports import parse_report

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        ctx.problem(path, f"report of study {study.study_id} not found")
        return
    except OSError as exc:
        ctx.problem(path, f"report of study {study.study_id} unreadable: {exc.strerror or exc}")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        ctx.problem(path, f"report of study {study.study_id} is not UTF-8 (byte {exc.start}); read with "
                          "replacement characters")
        text = data.decode("utf-8", errors="replace")
    _set_report(ctx, path, study, text, parse_report(text) if text.strip() else None)


def _set_report(ctx, where, study: Study, text: str, parsed) -> None:
    """Give `study` its report (text, sections, fallback) or report why it has none / no usable section."""
    if parsed is None or not text.strip():
        ctx.problem(where, f"report of study {study.study_id} is empty; the study has no report")
        return
    study.report, study.sections = text, parsed.sections
    study.extra["report_fallback"] = parsed.fallback
    if parsed.fallback == "none":
        ctx.problem(where, f"report of study {study.study_id} has no FINDINGS or IMPRESSION section and no "
                           "last paragraph to stand for one; Study.text is the whole report")


def _id(ctx: OpenContext, where: str, column: str, value) -> str | None:
    v = (value or "").strip()
    if v.endswith(".0"):
        v = v[:-2]  # ids written through a float column ("10000032.0")
    if v.isdigit():
        return v
    ctx.problem(where, f"column {column!r}: {value!r} is not an integer id; row skipped")
    return None


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR

_MIMIC_VERSION = "mimic-cxr-2.0.0"


@register_dataset("mimic-cxr", splits=("train", "validate", "test"), findings=CHEXPERT_FINDINGS)
def mimic_cxr(ctx: OpenContext, *, labels: str | None = "chexpert", tables=None, reports=None,
              ext: str | None = None) -> list[Study]:
    """MIMIC-CXR (DICOM release) or MIMIC-CXR-JPG: paired studies, their views and CheXpert labels.

    Layout under root (PhysioNet's; each CSV may be gzipped, .csv.gz):
        files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.dcm   (or .jpg)
        files/p10/p10000032/s50414267.txt                  the report (from mimic-cxr-reports.zip)
        mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ViewPosition, ...      required
        mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, the 14 findings (1.0 / 0.0 / -1.0 / blank)
        mimic-cxr-2.0.0-negbio.csv     the same columns, labelled by NegBio
        mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train / validate / test)
    Options: labels: "chexpert" (default), "negbio" or None (no labels file read); tables: the folder of
    the CSVs (default root); reports: the folder whose files/ holds the reports (default root; False:
    no reports, image-only studies); ext: ".dcm" or ".jpg" (default: per image, .dcm if it exists, else
    .jpg). The split CSV is required when split= is given, else read when present.
    Studies: those of the metadata and of the labels CSV (a labelled study without image rows is
    text-only), by subject then study id; study_id and subject_id as in the CSVs ("50414267",
    "10000032"); image_id = dicom_id; view = ViewPosition. extra["report_fallback"]: parse_report's;
    extra["masks"]: image_id → masks/<image_id>.npz where a masks/ folder holds one (the synthetic dataset's
    per-finding region masks)."""
    root = ctx.root
    tables = Path(tables) if tables else root
    reports_root = None if reports is False else Path(reports) if reports else root
    if labels not in ("chexpert", "negbio", None):
        raise DatasetError(f"mimic-cxr: labels must be 'chexpert', 'negbio' or None, got {labels!r}")
    if ext not in (None, ".dcm", ".jpg"):
        raise DatasetError(f"mimic-cxr: ext must be None, '.dcm' or '.jpg', got {ext!r}")
    for folder, need in ((root, ctx.images is None), (reports_root, reports_root is not None)):
        if need and not (folder / "files").is_dir():
            raise DatasetError(f"{folder / 'files'}: no such folder; expected MIMIC-CXR's files/pXX/p<subject>/"
                               "s<study>/ image folders and s<study>.txt reports")
    meta_path = _find(tables, [f"{_MIMIC_VERSION}-metadata.csv"],
                      "MIMIC-CXR-JPG's image metadata (dicom_id, subject_id, study_id, ViewPosition)")
    meta = read_table(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), "the image metadata")

    studies: dict[tuple[str, str], Study] = {}

    def study_of(subject: str, study_id: str) -> Study:
        key = (subject, study_id)
        if key not in studies:
            studies[key] = Study(study_id, subject_id=subject)
        return studies[key]

    seen: set[str] = set()
    for line, row in enumerate(meta, start=2):
        where = f"{meta_path}:{line}"
        subject, study_id = _id(ctx, where, "subject_id", row["subject_id"]), _id(ctx, where, "study_id",
                                                                                  row["study_id"])
        dicom_id = (row["dicom_id"] or "").strip()
        if subject is None or study_id is None:
            continue
        if not dicom_id or dicom_id in seen:
            ctx.problem(where, f"dicom_id {dicom_id!r} {'is empty' if not dicom_id else 'listed twice'}; row skipped")
            continue
        seen.add(dicom_id)
        base = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}" / dicom_id
        path = base.with_name(dicom_id + ext) if ext else next(
            (p for p in (base.with_name(dicom_id + ".dcm"), base.with_name(dicom_id + ".jpg")) if p.is_file()),
            base.with_name(dicom_id + ".dcm"))
        view = (row["ViewPosition"] or "").strip().upper() or None
        study_of(subject, study_id).images.append(ImageRef(str(path), dicom_id, view))

    if labels:
        lab_path = _find(tables, [f"{_MIMIC_VERSION}-{labels}.csv"],
                         f"the {labels} labels (subject_id, study_id, the 14 CheXpert findings); labels=None "
                         "opens the dataset without labels")
        for line, row in enumerate(read_table(lab_path, ("subject_id", "study_id", *CHEXPERT_FINDINGS),
                                              f"the {labels} labels"), start=2):
            where = f"{lab_path}:{line}"
            subject, study_id = _id(ctx, where, "subject_id", row["subject_id"]), _id(ctx, where, "study_id",
                                                                                      row["study_id"])
            if subject is None or study_id is None:
                continue
            s = study_of(subject, study_id)
            if s.labels:
                ctx.problem(where, f"study {study_id} labelled twice; the first row is used")
                continue
            s.labels = {f: _label(ctx, where, f, row[f]) for f in CHEXPERT_FINDINGS}

    splits = _mimic_splits(ctx, tables)
    masks = root / "masks"  # the synthetic dataset's region masks (cxrfast.data.synth): masks/<dicom_id>.npz
    for (subject, study_id), s in studies.items():
        s.split = splits.get(study_id)
        if reports_root is not None and ctx.wants(s.split):
            _read_report(ctx, reports_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}.txt", s)
        if masks.is_dir():
            found = {im.image_id: str(masks / f"{im.image_id}.npz") for im in s.images
                     if (masks / f"{im.image_id}.npz").is_file()}
            if found:
                s.extra["masks"] = found
    return [studies[k] for k in sorted(studies, key=lambda k: (int(k[0]), int(k[1])))]


def _mimic_splits(ctx: OpenContext, tables: Path) -> dict[str, str]:
    """study_id → split from mimic-cxr-2.0.0-split.csv (required when a split is asked for)."""
    try:
        path = _find(tables, [f"{_MIMIC_VERSION}-split.csv"],
                     "the official split (dicom_id, study_id, subject_id, split)")
    except DatasetError:
        if ctx.split is not None:
            raise
        return {}
    out: dict[str, str] = {}
    for line, row in enumerate(read_table(path, ("study_id", "split"), "the official split"), start=2):
        study_id, split = (row["study_id"] or "").strip(), (row["split"] or "").strip()
        if split not in ("train", "validate", "test"):
            ctx.problem(f"{path}:{line}", f"split {split!r}, expected train, validate or test")
            continue
        if out.setdefault(study_id, split) != split:
            ctx.problem(f"{path}:{line}", f"study {study_id} is in {out[study_id]} and {split}; "
                                          f"{out[study_id]} is used")
    return out


# --------------------------------------------------------------------------------------------------
# IU X-ray (OpenI)

# MeSH descriptor (the part of a term before its first "/", lower case) → CheXpert finding. OpenI codes
# what a report finds as MeSH terms ("Pulmonary Atelectasis/base/left", "Cardiomegaly/borderline"); only
# descriptors that name the finding itself are mapped. Not mapped, hence unknown: Enlarged
# Cardiomediastinum (no descriptor for it); qualifiers that change the meaning are handled in
# _mesh_labels (Opacity only for the lung, Thickening only for the pleura, "borderline" = uncertain).
MESH_TO_CHEXPERT = {
    "pulmonary atelectasis": "Atelectasis", "atelectasis": "Atelectasis",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pulmonary edema": "Edema",
    "fractures, bone": "Fracture",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "lung neoplasms": "Lung Lesion",
    "opacity": "Lung Opacity", "airspace disease": "Lung Opacity", "infiltrate": "Lung Opacity",
    "pleural effusion": "Pleural Effusion", "hydropneumothorax": ("Pleural Effusion", "Pneumothorax"),
    "thickening": "Pleural Other",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "catheters, indwelling": "Support Devices", "medical device": "Support Devices",
    "implanted medical device": "Support Devices", "tube, inserted": "Support Devices",
    "pacemaker, artificial": "Support Devices",
}
# the qualifiers a descriptor needs to count (any one; "" admits the bare descriptor): an opacity of the
# ribs is no Lung Opacity, a thickening elsewhere than the pleura no Pleural Other
_MESH_SITE = {"opacity": ("lung", ""), "thickening": ("pleura",)}
# terms that say nothing about the patient's findings
_MESH_NEUTRAL = {"normal", "technical quality of image unsatisfactory", "no indexing"}


def _mesh_labels(terms: list[str]) -> dict[str, float]:
    """CheXpert labels from OpenI's MeSH terms (major and minor).

    No terms: {} (unknown). Only "normal": No Finding 1 and the other 13 findings 0. Otherwise each mapped
    term's finding is 1, or -1 (uncertain) when its only terms carry the qualifier "borderline"; No Finding
    is 0 when a term other than "normal", a support device or a technical-quality note is present;
    unmapped findings stay unknown (NaN)."""
    terms = [t.strip() for t in terms if t and t.strip()]
    if not terms:
        return {}
    if all(t.lower() == "normal" for t in terms):
        return {f: (1.0 if f == "No Finding" else 0.0) for f in CHEXPERT_FINDINGS}
    out: dict[str, float] = {}
    abnormal = False
    for term in terms:
        descriptor, *qualifiers = [p.strip().lower() for p in term.split("/")]
        targets = MESH_TO_CHEXPERT.get(descriptor, ())
        if descriptor in _MESH_SITE and not (set(qualifiers) or {""}) & set(_MESH_SITE[descriptor]):
            targets = ()
        targets = (targets,) if isinstance(targets, str) else targets
        if descriptor not in _MESH_NEUTRAL and targets != ("Support Devices",):
            abnormal = True
        value = -1.0 if "borderline" in qualifiers else 1.0
        for f in targets:
            out[f] = max(out.get(f, -1.0), value)
    if abnormal:
        out["No Finding"] = 0.0
    return out


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


_OPENI_NAME = re.compile(r"(?:CXR)?(\d+)_(?:.*_)?(IM-[\w-]+)", re.I)


def _openi_norm(name: str) -> str:
    """OpenI image ids and file names to one key, <report number>_IM-<series>-<instance>: the NLMCXR ids
    and PNGs "CXR1_1_IM-0001-3001(.png)" and "CXR2_IM-0652-1001(.png)", and Kaggle's converted
    "1_IM-0001-3001.dcm.png" and "2_IM-0652-1001.dcm.png" → "1_IM-0001-3001", "2_IM-0652-1001". A name
    of another form is its image_key."""
    key = image_key(name)
    m = _OPENI_NAME.fullmatch(key)
    return f"{m[1]}_{m[2]}" if m else key


@register_dataset("openi", findings=CHEXPERT_FINDINGS)
def openi(ctx: OpenContext, *, reports_dir: str = "ecgen-radiology", images_dir=None,
          projections=None) -> list[Study]:
    """IU X-ray (OpenI, NLMCXR): the XML reports with their PNG images, frontal and lateral.

    Layout under root:
        ecgen-radiology/1.xml ...          one report each (NLMCXR_reports.tgz)
        NLMCXR_png/CXR1_1_IM-0001-3001.png (NLMCXR_png.tgz; or images/, searched recursively, where
                                            Kaggle's images_normalized/1_IM-0001-3001.dcm.png are found too;
                                            ids and file names are joined by _openi_norm)
        indiana_projections.csv            optional (Kaggle's layout): uid, filename, projection
    Each XML: <uId id="CXR1"/> (the study id; the file name's stem without it), <AbstractText
    Label="FINDINGS|IMPRESSION|INDICATION|COMPARISON">, <MeSH><major>/<minor> terms, and one <parentImage
    id="CXR1_1_IM-0001-3001"/> per image. Report texts are clean_report'ed (XXXX removed); the report is
    "LABEL: text" lines; sections come from the labels, not from parsing (so no last-paragraph fallback:
    a report without FINDINGS and IMPRESSION text is a problem, fallback "none"). Labels from MeSH:
    _mesh_labels and MESH_TO_CHEXPERT. OpenI has no official split.
    Views: OpenI's XML records no ViewPosition. An image listed in the projections CSV (option
    `projections`, default root/indiana_projections.csv when present; joined by _openi_norm) is FRONTAL
    or LATERAL as it says; otherwise the order rule: the first parentImage of a report is FRONTAL, the
    others LATERAL (IU studies are mostly a PA then a lateral; the rule is wrong for the few studies
    with two frontal images). extra["view_source"]: "projections", "order" or "mixed". FRONTAL passes
    views=("PA", "AP") (view_matches).
    Options: reports_dir (folder name or path), images_dir (default: root/NLMCXR_png, else root/images),
    projections (CSV path)."""
    from cxrfast.data.reports import ParsedReport, clean_report, header_fallback

    root = ctx.root
    xml_dir = Path(reports_dir) if os.path.isabs(reports_dir) else root / reports_dir
    if not xml_dir.is_dir():
        raise DatasetError(f"{xml_dir}: no such folder; expected OpenI's XML reports (ecgen-radiology/*.xml)")
    found: dict[str, str] = {}
    image_root = Path(images_dir) if images_dir else next(
        (root / d for d in ("NLMCXR_png", "images") if (root / d).is_dir()), None)
    if image_root is None or not image_root.is_dir():
        if ctx.images is None:
            raise DatasetError(f"{image_root or root / 'NLMCXR_png'}: no such folder; expected OpenI's PNG images "
                               f"(NLMCXR_png/ or images/), or images= pointing at their prepared shards")
        image_root = image_root or root / "NLMCXR_png"
    else:
        for dirpath, _, names in os.walk(image_root):
            for n in names:
                if n.lower().endswith(IMAGE_EXTENSIONS):
                    found.setdefault(_openi_norm(n), os.path.join(dirpath, n))
    proj_path = Path(projections) if projections else root / "indiana_projections.csv"
    proj: dict[str, str] = {}
    if projections or proj_path.is_file():
        if not proj_path.is_file():
            raise DatasetError(f"{proj_path}: no such file; expected the projections CSV (uid, filename, projection)")
        for line, row in enumerate(read_table(proj_path, ("filename", "projection"), "the image projections"),
                                   start=2):
            p = (row["projection"] or "").strip().upper()
            if p not in (FRONTAL, "LATERAL"):
                ctx.problem(f"{proj_path}:{line}", f"projection {row['projection']!r}, expected Frontal or Lateral; "
                                                   "the order rule is used for that image")
                continue
            proj[_openi_norm(row["filename"])] = p

    studies = []
    for path in sorted(xml_dir.glob("*.xml"), key=lambda p: _natural(p.name)):
        try:
            doc = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            ctx.problem(path, f"not a readable XML report: {exc}")
            continue
        uid = doc.find("uId")
        study = Study(uid.get("id") if uid is not None and uid.get("id") else path.stem)
        sections = {}
        for node in doc.iter("AbstractText"):
            label = (node.get("Label") or "").strip().lower()
            text = clean_report("".join(node.itertext()))
            if label and text:
                sections[label] = text
        text = "\n".join(f"{k.upper()}: {v}" for k, v in sections.items())
        _set_report(ctx, path, study, text, ParsedReport(sections, header_fallback(sections)))
        mesh = doc.find("MeSH")
        major = [t.text or "" for t in mesh.findall("major")] if mesh is not None else []
        minor = [t.text or "" for t in mesh.findall("minor")] if mesh is not None else []
        study.extra["mesh"] = {"major": [t.strip() for t in major], "minor": [t.strip() for t in minor]}
        study.labels = _mesh_labels(major + minor)
        sources = set()
        for i, node in enumerate(doc.iter("parentImage")):
            image_id = (node.get("id") or "").strip()
            if not image_id:
                ctx.problem(path, "a <parentImage> without an id; skipped")
                continue
            key = _openi_norm(image_id)
            file = found.get(key, str(image_root / f"{image_id}.png"))
            view = proj.get(key)
            sources.add("projections" if view else "order")
            study.images.append(ImageRef(file, image_key(file), view or (FRONTAL if i == 0 else "LATERAL")))
        if sources:
            study.extra["view_source"] = sources.pop() if len(sources) == 1 else "mixed"
        studies.append(study)
    return studies


# --------------------------------------------------------------------------------------------------
# CheXpert

_CHEXPERT_FILES = {"train": "train.csv", "validate": "valid.csv"}


def _chexpert_file(root: Path, listed: str) -> tuple[Path, tuple[str, ...]] | None:
    """A CSV's Path (relative to the dataset's parent: CheXpert-v1.0-small/train/patient00001/study1/
    view1_frontal.jpg) under `root`, whatever the dataset folder is called: a path that starts with
    train/ valid/ test/ is taken under root, else its first component (the dataset folder) is replaced
    by root. Returns (file, its last three components) or None when it has fewer than four."""
    parts = tuple(p for p in listed.strip().replace("\\", "/").split("/") if p)
    if parts and parts[0] in ("train", "valid", "test"):
        parts = ("",) + parts
    if len(parts) < 4:
        return None
    return root.joinpath(*parts[1:]), parts[-3:]


@register_dataset("chexpert", splits=("train", "validate"), findings=CHEXPERT_FINDINGS)
def chexpert(ctx: OpenContext) -> list[Study]:
    """CheXpert (v1.0 or v1.0-small): image-only studies with the 14 labels.

    Layout under root (the dataset folder, e.g. CheXpert-v1.0-small/):
        train.csv, valid.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, the 14 findings (1.0 / 0.0 / -1.0 /
                               blank); Path is relative to root's parent (CheXpert-v1.0-small/train/
                               patient00001/study1/view1_frontal.jpg; see _chexpert_file)
        train/patient00001/study1/view1_frontal.jpg ...
    train.csv is split "train", valid.csv "validate"; the files of the splits asked for are required.
    Studies: one per patient + study (study_id "patient00001/study1", subject_id "patient00001"), in file
    order; labels from the study's first row (a later row that disagrees is a problem). image_id: the
    last three path components without extension ("patient00001/study1/view1_frontal"; the file names
    alone repeat across studies). View: AP/PA when it says AP or PA (frontal rows) or LL / RL (lateral
    rows), else FRONTAL or LATERAL from Frontal/Lateral. extra: sex, age."""
    studies: dict[str, Study] = {}
    for split, name in _CHEXPERT_FILES.items():
        if not ctx.wants(split):
            continue
        path = ctx.root / name
        if not path.is_file():
            raise DatasetError(f"{path}: no such file; expected CheXpert's {name} (Path, Frontal/Lateral, AP/PA, "
                               "the 14 findings)")
        rows = read_table(path, ("Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS), f"CheXpert's {name}")
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            located = _chexpert_file(ctx.root, row["Path"] or "")
            if located is None:
                ctx.problem(where, f"Path {row['Path']!r}: expected <dataset>/<split>/patientN/studyM/<view>.jpg; "
                                   "row skipped")
                continue
            file, (patient, study_name, image) = located
            study_id = f"{patient}/{study_name}"
            labels = {f: _label(ctx, where, f, row[f]) for f in CHEXPERT_FINDINGS}
            s = studies.get(study_id)
            if s is None:
                s = studies[study_id] = Study(study_id, subject_id=patient, split=split, labels=labels,
                                              extra={"sex": row.get("Sex"), "age": row.get("Age")})
            elif s.split != split:
                ctx.problem(where, f"study {study_id} is in {s.split} and {split}; {s.split} is used")
            elif not _same_labels(s.labels, labels):
                ctx.problem(where, f"labels differ from the first row of study {study_id}; the first row is used")
            s.images.append(ImageRef(str(file), image_key(f"{study_id}/{image}", 3), _chexpert_view(row)))
    return list(studies.values())


def _same_labels(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def _chexpert_view(row: dict) -> str:
    side = (row["Frontal/Lateral"] or "").strip().upper()
    appa = (row["AP/PA"] or "").strip().upper()
    if side == "LATERAL":
        return appa if appa in ("LL", "RL") else "LATERAL"
    return appa if appa in FRONTAL_VIEWS else FRONTAL


# --------------------------------------------------------------------------------------------------
# NIH ChestX-ray14

_NIH_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}


@register_dataset("nih14", splits=("train", "test"), findings=NIH14_FINDINGS)
def nih14(ctx: OpenContext) -> list[Study]:
    """NIH ChestX-ray14: image-only studies with the 14 labels.

    Layout under root:
        Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv)   Image Index, Finding Labels (pipe-separated,
                                      "No Finding" for none), Follow-up #, Patient ID, Patient Age,
                                      Patient Gender, View Position (PA / AP), ...
        images_001/images/00000001_000.png ... images_012/images/  (as downloaded), or a flat images/
        train_val_list.txt, test_list.txt   image names, one a line: splits "train" and "test"; required
                                      when split= is given, else read when present
    Studies: one per image (study_id = image_id = the image's stem, subject_id = Patient ID), in file
    order; labels: 1 for each finding in Finding Labels, 0 for the others (the dataset has no
    uncertain labels); an unknown label name is a problem. extra: follow_up, age, gender."""
    root = ctx.root
    entry = _find(root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"],
                  "NIH ChestX-ray14's image table (Image Index, Finding Labels, Patient ID, View Position)")
    rows = read_table(entry, ("Image Index", "Finding Labels", "Patient ID", "View Position"),
                      "NIH ChestX-ray14's image table")
    folders = sorted(p / "images" if (p / "images").is_dir() else p for p in root.glob("images*") if p.is_dir())
    if not folders and ctx.images is None:
        raise DatasetError(f"{root}: no images_0XX/images/ or images/ folder; expected NIH ChestX-ray14's PNGs "
                           "(or images= pointing at their prepared shards)")
    found = {}
    for folder in folders:
        for n in os.listdir(folder):
            found.setdefault(n, str(folder / n))
    split_of: dict[str, str] = {}
    for split, name in _NIH_LISTS.items():
        path = root / name
        if not path.is_file():
            if ctx.split is not None:
                raise DatasetError(f"{path}: no such file; expected the official {split} list (one image name a "
                                   "line), needed for split=")
            continue
        for n in path.read_text(encoding="utf-8").split():
            split_of[n] = split
    known = {f.lower(): f for f in NIH14_FINDINGS}
    studies = []
    for line, row in enumerate(rows, start=2):
        where = f"{entry}:{line}"
        name = (row["Image Index"] or "").strip()
        if not name:
            ctx.problem(where, "empty Image Index; row skipped")
            continue
        labels = {f: 0.0 for f in NIH14_FINDINGS}
        for item in (row["Finding Labels"] or "").split("|"):
            item = item.strip()
            if item.lower() in known:
                labels[known[item.lower()]] = 1.0
            elif item and item != "No Finding":
                ctx.problem(where, f"Finding Labels: unknown label {item!r}, expected {', '.join(NIH14_FINDINGS)} "
                                   "or No Finding")
        if split_of and name not in split_of:
            ctx.problem(where, f"{name} is in neither {_NIH_LISTS['train']} nor {_NIH_LISTS['test']}; no split")
        path = found.get(name, str((folders[0] if folders else root / "images") / name))
        view = (row["View Position"] or "").strip().upper() or None
        studies.append(Study(image_key(name), [ImageRef(path, image_key(name), view)],
                             labels=labels, subject_id=(row["Patient ID"] or "").strip() or None,
                             split=split_of.get(name),
                             extra={"follow_up": row.get("Follow-up #"), "age": row.get("Patient Age"),
                                    "gender": row.get("Patient Gender")}))
    return studies
