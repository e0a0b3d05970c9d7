"""Small studies on disk for the loader and DALI tests: PNG radiograph stand-ins of varied sizes, 1–2
views, a report-less (image-only) and an image-less (text-only) study, labels."""

from __future__ import annotations

import os

import numpy as np

from cxrfast.data.studies import CHEXPERT_FINDINGS, ImageRef, Study, StudyDataset


def split(text: str) -> list[str]:
    """A plain sentence splitter for these tests (the library's is tested in test_reports.py)."""
    return [s.strip() for s in text.replace("\n", " ").split(". ") if s.strip()]


def toy_studies(folder, n: int = 11, seed: int = 0) -> StudyDataset:
    from PIL import Image

    rng = np.random.default_rng(seed)
    studies = []
    for i in range(n):
        refs = []
        for v in range(2 if i % 3 else 1):
            h, w = 40 + 3 * i, 50 + (i % 4) * 5
            yy, xx = np.mgrid[0:h, 0:w]
            img = (127 + 90 * np.sin(yy / 5.0 + v) * np.cos(xx / 7.0) + rng.normal(0, 8, (h, w))).clip(0, 255)
            path = os.path.join(folder, f"img{i}_{v}.png")
            Image.fromarray(img.astype(np.uint8)).save(path)
            refs.append(ImageRef(path, f"img{i}_{v}", "PA" if v == 0 else "AP"))
        report = None if i == 4 else f"Heart size is normal. No pleural effusion in study {i}. Lungs clear."
        if i == 7:
            refs = []
        labels = {"Cardiomegaly": float(i % 2), "Edema": -1.0 if i == 5 else 0.0}
        studies.append(Study(f"s{i}", refs, report, {}, labels, subject_id=f"p{i // 2}"))
    return StudyDataset("toy", folder, studies, CHEXPERT_FINDINGS)
