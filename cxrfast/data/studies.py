"""Studies: what a dataset adapter returns, whatever the layout on disk.

A `Study` is one imaging study: its id, its images (several views, each with its ViewPosition), the
report (full text and its sections) and the labels. Paired studies have both images and a report;
image-only studies (CheXpert, NIH14) have no report; text-only studies (reports whose images are missing
or left out) have no images. A `StudyDataset` is a sequence of studies plus what the adapter noticed on
the way: the `problems` (a malformed report, a missing image, a row that names no file), each reported,
never silently dropped.

Labels are a dict finding → value, with the CheXpert coding kept as it is in the files: 1.0 positive,
0.0 negative, -1.0 uncertain, NaN not mentioned. `label_vector` turns them into a fixed-order float
vector with an uncertain-label policy ("zeros", "ones" or "ignore" → NaN), the form a batch carries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["CHEXPERT_FINDINGS", "NIH14_FINDINGS", "COMPETITION_FINDINGS", "FRONTAL_VIEWS", "FRONTAL", "KINDS",
           "ImageRef", "Study", "StudyDataset", "Problem", "label_vector", "view_matches", "UNCERTAIN_POLICIES",
           "UNCERTAIN_VALUES"]

# The 14 CheXpert / MIMIC-CXR labels, in the column order of mimic-cxr-2.0.0-chexpert.csv.
CHEXPERT_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                     "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
                     "Pneumonia", "Pneumothorax", "Support Devices")
# NIH ChestX-ray14's labels, in Data_Entry_2017's spelling.
NIH14_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
# The five findings of the CheXpert competition, GLoRIA's and the demo's zero-shot task.
COMPETITION_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
FRONTAL_VIEWS = ("PA", "AP")
# The view of a frontal image whose PA/AP is not recorded (OpenI; CheXpert rows without AP/PA). It passes a
# view filter that names PA, AP or FRONTAL: see view_matches.
FRONTAL = "FRONTAL"
KINDS = ("paired", "image", "text")
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
# what an uncertain (-1) label becomes under each policy: U-Zeros, U-Ones, or unknown
UNCERTAIN_VALUES = {"zeros": 0.0, "ones": 1.0, "ignore": math.nan}


@dataclass(frozen=True)
class ImageRef:
    """One image of a study. `path` is the file (DICOM, PNG or JPEG); `image_id` is the key that joins
    with the metadata of prepared shards (MIMIC's dicom_id, a file stem elsewhere); `shard` is
    (shard folder, global row) when the study was opened with images= (read from shards)."""

    path: str
    image_id: str
    view: str | None = None
    shard: tuple[str, int] | None = None


@dataclass
class Study:
    """One study: ids, images, report, labels. `sections` holds the report's parts by lower-case name
    ("findings", "impression", ...); `text` is what a model reads."""

    study_id: str
    images: list[ImageRef] = field(default_factory=list)
    report: str | None = None
    sections: dict[str, str] = field(default_factory=dict)
    labels: dict[str, float] = field(default_factory=dict)
    subject_id: str | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """"paired" (images and a report), "image" (no report) or "text" (no images)."""
        if self.images and self.report is not None:
            return "paired"
        return "image" if self.images else "text"

    @property
    def text(self) -> str:
        """FINDINGS then IMPRESSION when the report has them, else the whole report ("" without one)."""
        parts = [self.sections[k] for k in ("findings", "impression") if self.sections.get(k)]
        return "\n".join(parts) if parts else (self.report or "").strip()

    def views(self, allowed: Iterable[str] | None = None) -> list[ImageRef]:
        """The images whose view matches `allowed` (all when None; see view_matches), in their stored order."""
        if allowed is None:
            return list(self.images)
        allowed = {v.upper() for v in allowed}
        return [im for im in self.images if view_matches(im.view, allowed)]


def view_matches(view: str | None, allowed: Iterable[str] | None) -> bool:
    """Whether an image of ViewPosition `view` passes the filter `allowed` (None: every image passes).

    Names compare case-insensitively. FRONTAL (a frontal image of unknown PA/AP) passes when `allowed`
    names PA, AP or FRONTAL, and FRONTAL in `allowed` admits PA, AP and FRONTAL images: views=("PA", "AP")
    means "frontal images" on every dataset. An image without a view passes only the None filter."""
    if allowed is None:
        return True
    allowed = {a.upper() for a in allowed}
    v = (view or "").upper()
    if not v:
        return False
    if v in allowed:
        return True
    frontal = set(FRONTAL_VIEWS) | {FRONTAL}
    return v in frontal and bool(allowed & frontal) and (v == FRONTAL or FRONTAL in allowed)


@dataclass(frozen=True)
class Problem:
    """Something an adapter could not use: the file (or row) and what was wrong with it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class StudyDataset(Sequence):
    """A sequence of `Study` with the dataset's name, root, label names and problems. `options` records
    how it was opened (open_dataset's split, views, images, uncertain policy, the adapter's options) and
    what was left out on request (e.g. {"dropped_text_only": 12})."""

    def __init__(self, name: str, root: str, studies: list[Study], findings: Sequence[str],
                 problems: list[Problem] | None = None, options: dict | None = None):
        self.name, self.root = name, str(root)
        self.studies = list(studies)
        self.findings = tuple(findings)
        self.problems = list(problems or [])
        self.options = dict(options or {})

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._with(self.studies[i])
        return self.studies[i]

    def _with(self, studies: list[Study]) -> "StudyDataset":
        return StudyDataset(self.name, self.root, studies, self.findings, self.problems, self.options)

    def __repr__(self) -> str:
        kinds = {k: sum(s.kind == k for s in self.studies) for k in KINDS}
        shown = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        return (f"StudyDataset({self.name!r}, {len(self)} studies: {shown or 'none'}; "
                f"{len(self.problems)} problems)")

    def subset(self, keep) -> "StudyDataset":
        """The studies for which keep(study) is true (problems kept)."""
        return self._with([s for s in self.studies if keep(s)])

    def split(self, name: str) -> "StudyDataset":
        """The studies of one split ("train", "validate", "test")."""
        return self.subset(lambda s: s.split == name)


def label_vector(labels: dict[str, float], findings: Sequence[str], uncertain: str = "ignore") -> list[float]:
    """Labels in `findings` order as floats: 1 positive, 0 negative, NaN unknown. Uncertain (-1) becomes
    0 ("zeros", CheXpert's U-Zeros), 1 ("ones", U-Ones) or NaN ("ignore")."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    out = []
    for f in findings:
        v = labels.get(f, math.nan)
        if v == -1.0:
            v = UNCERTAIN_VALUES[uncertain]
        out.append(float(v))
    return out
