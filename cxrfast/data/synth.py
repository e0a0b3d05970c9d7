"""The synthetic paired dataset: procedurally drawn chest radiographs with reports and labels, in the
MIMIC-CXR layout, the embedded default dataset that the demo pre-trains on.

    cxrfast synth OUT --n 2000 [--seed 0] [--size 512]        # the command
    from cxrfast.data.synth import write_synthetic
    summary = write_synthetic("OUT", n=2000, seed=0)           # the same from Python
    print("\\n".join(summary.lines()))

OUT then holds what the `mimic-cxr` adapter and `cxrfast prepare` read:

    files/pXX/p<subject>/s<study>/<dicom_id>.dcm   1-3 images per study: a frontal view (PA or AP), often a lateral
    files/pXX/p<subject>/s<study>.txt              the report (FINDINGS / IMPRESSION, MIMIC-CXR's layout)
    mimic-cxr-2.0.0-metadata.csv                   dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
                                                   ViewPosition, Rows, Columns, StudyDate, StudyTime,
                                                   ProcedureCodeSequence_CodeMeaning, ViewCodeSequence_CodeMeaning,
                                                   PatientOrientationCodeSequence_CodeMeaning
    mimic-cxr-2.0.0-chexpert.csv                   subject_id, study_id, the 14 CHEXPERT_FINDINGS: 1.0 / 0.0 / -1.0 / blank
    mimic-cxr-2.0.0-negbio.csv                     the same labels (identical file: one labeler, the report's own)
    mimic-cxr-2.0.0-split.csv                      dicom_id, study_id, subject_id, split (train / validate / test, by subject)
    masks/<dicom_id>.npz                           frontal views: one uint8 [size, size] 0/1 mask per drawn finding
                                                   (keys: finding names) plus "lungs" and "heart" (anatomy)
    synth.json                                     the arguments, counts and prevalences

What is drawn (cxrfast/data/_synth_draw.py has the details): a thorax with lungs, heart, mediastinum and
aortic knob, trachea, hemidiaphragms with sharp costophrenic angles, ribs, clavicles and spine, lung
markings, exposure and noise; each image with its own small rotation, scale and shift. Cardiomegaly is a
wider heart (cardiothoracic ratio 0.53-0.68 against 0.37-0.47); pleural effusion a basal fluid opacity with a
meniscus and blunted angle, one or both sides; consolidation a dense lobar or patchy opacity, sometimes with
air bronchograms; atelectasis linear / plate-like bands, with volume loss when said; edema a bilateral
perihilar haze with Kerley B lines; support devices radiopaque tubes, lines and a pacemaker. A finding is
the same in every view of its study. Labels: a finding is 1.0 when drawn and described, -1.0 when drawn mild
and described with a hedge ("possible ..."), 0.0 when the report negates it, blank when it does not mention
it; "No Finding" is 1.0 when none of the pathologies is positive or uncertain, blank otherwise.

The files are real DICOM (cxrfast.io.write): 12 bits stored in 16, MONOCHROME2 or MONOCHROME1 (stored values
inverted), a window centre / width on most files and a rescale slope / intercept on some, the UIDs and ids of
the study, and mixed transfer syntaxes (explicit, implicit and deflated explicit VR little endian, RLE
Lossless, JPEG Lossless SV1). The same seed gives byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrfast.data import _synth_draw as draw
from cxrfast.data import _synth_text as text
from cxrfast.data.studies import CHEXPERT_FINDINGS, COMPETITION_FINDINGS

__all__ = ["write_synthetic", "sample_study", "render_view", "draw_study", "view_pixels", "SynthSummary", "SynthError", "save_examples",
           "METADATA_COLUMNS", "SPLIT_COLUMNS", "LABEL_COLUMNS", "SYNTAX_WEIGHTS", "MASK_KEYS"]

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
LABEL_COLUMNS = ("subject_id", "study_id") + CHEXPERT_FINDINGS
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
DRAWN = COMPETITION_FINDINGS + ("Support Devices",)
MASK_KEYS = DRAWN + ("lungs", "heart")
SPLITS = (("train", 0.8), ("validate", 0.1), ("test", 0.1))

# transfer syntax of each file, drawn with these weights (the slow encoders get smaller shares)
SYNTAX_WEIGHTS = {
    "1.2.840.10008.1.2.1": 0.35,  # explicit VR little endian
    "1.2.840.10008.1.2": 0.20,  # implicit VR little endian
    "1.2.840.10008.1.2.1.99": 0.15,  # deflated explicit VR little endian (about 10 ms at 512 px)
    "1.2.840.10008.1.2.5": 0.15,  # RLE lossless (about 15 ms)
    "1.2.840.10008.1.2.4.70": 0.15,  # JPEG lossless SV1 (about 17 ms)
}
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
VIEW_CODE = {"PA": "R-10214", "AP": "R-10206", "LATERAL": "R-10232", "LL": "R-10236"}
PROCEDURE = {"PA": "CHEST (PA AND LAT)", "AP": "CHEST (PORTABLE AP)"}

# latent clinical states and the findings each makes likely: co-occurrence as in real studies
# (heart failure: cardiomegaly + edema + bilateral effusions; pneumonia: consolidation ± a parapneumonic
# effusion; ICU: devices, atelectasis, effusions); "other" studies have at least one finding
STATES = {
    "normal": (0.17, {"Support Devices": 0.05}),
    "heart failure": (0.20, {"Cardiomegaly": 0.75, "Edema": 0.75, "Pleural Effusion": 0.6, "Atelectasis": 0.35,
                             "Consolidation": 0.05, "Support Devices": 0.2}),
    "pneumonia": (0.19, {"Consolidation": 0.92, "Pleural Effusion": 0.3, "Atelectasis": 0.3, "Cardiomegaly": 0.15,
                         "Edema": 0.05, "Support Devices": 0.1}),
    "icu": (0.18, {"Support Devices": 0.95, "Atelectasis": 0.6, "Pleural Effusion": 0.45, "Edema": 0.35,
                   "Cardiomegaly": 0.3, "Consolidation": 0.2}),
    "other": (0.26, {"Cardiomegaly": 0.3, "Atelectasis": 0.35, "Pleural Effusion": 0.3, "Consolidation": 0.25,
                     "Edema": 0.15, "Support Devices": 0.1}),
}
UNCERTAIN = 0.06  # share of drawn findings reported with a hedge (label -1.0), drawn mild


class SynthError(ValueError):
    """write_synthetic cannot start: a bad argument or an OUT that already holds files."""


def _choice(rng, options, weights=None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(weights, np.float64)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


# --------------------------------------------------------------------------------------------------
# sampling a study


def _severity(rng):
    return _choice(rng, ("mild", "moderate", "severe"), (0.45, 0.4, 0.15))


def _finding(name: str, certain: bool, state: str, rng) -> dict:
    """The parameters of one drawn finding (shared by the study's views and its report)."""
    f: dict = {"certain": certain}
    if name == "Cardiomegaly":
        f["severity"] = _severity(rng) if certain else "mild"
        f["ctr"] = float(rng.uniform(*{"mild": (0.54, 0.58), "moderate": (0.58, 0.63), "severe": (0.63, 0.69)}[
            f["severity"]])) if certain else float(rng.uniform(0.50, 0.53))
    elif name == "Pleural Effusion":
        side = _choice(rng, ("bilateral", "right", "left"), (0.7, 0.15, 0.15) if state == "heart failure" else (0.35, 0.35, 0.3))
        size = _choice(rng, ("small", "moderate", "large"), (0.5, 0.35, 0.15)) if certain else "small"
        lo, hi = {"small": (0.11, 0.16), "moderate": (0.19, 0.27), "large": (0.3, 0.42)}[size] if certain else (0.06, 0.09)
        sides = ("right", "left") if side == "bilateral" else (side,)
        f.update(side=side, size=size, heights={s: float(rng.uniform(lo, hi)) for s in sides},
                 density=float(rng.uniform(0.85, 0.95)))
    elif name == "Consolidation":
        lobe = _choice(rng, tuple(draw.LOBES), (0.15, 0.1, 0.3, 0.1, 0.1, 0.25))
        pattern = _choice(rng, ("dense", "patchy", "focal", "lobar"), (0.3, 0.3, 0.2, 0.2)) if certain else "patchy"
        k = int(rng.integers(8, 11)) if pattern == "lobar" else int(rng.integers(4, 8)) if certain else 2
        rmin, rmax = (0.11, 0.16) if pattern == "lobar" else (0.08, 0.13) if certain else (0.05, 0.07)
        blobs = [[float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85)), float(rng.uniform(rmin, rmax))]
                 for _ in range(k)]
        density = {"dense": (0.8, 0.92), "lobar": (0.82, 0.92), "focal": (0.72, 0.85), "patchy": (0.55, 0.7)}[pattern]
        f.update(lobe=lobe, pattern=pattern, blobs=blobs,
                 density=float(rng.uniform(*density)) if certain else float(rng.uniform(0.4, 0.5)),
                 bronchograms=bool(certain and pattern in ("dense", "lobar") and rng.random() < 0.5))
        f["branches"] = [[float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.1, 0.9)),
                          float(rng.uniform(0.5, 0.9))] for _ in range(int(rng.integers(2, 5)))] if f["bronchograms"] else []
    elif name == "Atelectasis":
        where = _choice(rng, ("bibasilar", "right basilar", "left basilar", "right midlung", "left midlung"),
                        (0.45, 0.2, 0.2, 0.075, 0.075))
        kind = _choice(rng, ("plate-like", "linear", "subsegmental"))
        sides = ("right", "left") if where == "bibasilar" else (where.split()[0],)
        loss = None
        if certain and where == "bibasilar" and rng.random() < 0.2:
            loss = "both"
        elif certain and where.endswith("basilar") and where != "bibasilar" and rng.random() < 0.4:
            loss = sides[0]
        bands = []
        thick = {"linear": (0.014, 0.02), "plate-like": (0.02, 0.03), "subsegmental": (0.028, 0.042)}[kind]
        for s in sides:
            for _ in range(int(rng.integers(2, 4)) if certain else 1):
                dv = rng.uniform(-0.2, -0.07) if where.endswith("basilar") else rng.uniform(-0.5, -0.38)
                length = rng.uniform(0.08, 0.12) if kind == "subsegmental" else rng.uniform(0.12, 0.22)
                bands.append([s, float(rng.uniform(-0.3, 0.5)), float(dv), float(length), float(rng.uniform(*thick)),
                              float(rng.normal(0, 0.15))])
        f.update(where=where, kind=kind, volume_loss=loss, bands=bands,
                 density=float(rng.uniform(0.72, 0.9)) if certain else 0.5)
    elif name == "Edema":
        sev = _severity(rng) if certain else "mild"
        f.update(severity=sev, density=float(rng.uniform(*{"mild": (0.24, 0.3), "moderate": (0.34, 0.42),
                                                              "severe": (0.46, 0.56)}[sev])) if certain else 0.16)
        kerley = certain and sev != "mild" and rng.random() < 0.7
        f["kerley"] = [[s, float(rng.uniform(0.85, 1.0)), float(rng.uniform(-0.32, -0.04)), float(rng.uniform(0.03, 0.06))]
                       for s in ("right", "left") for _ in range(int(rng.integers(3, 7)))] if kerley else []
    elif name == "Support Devices":
        devices = [d for d, p in (("ett", 0.5), ("cvc", 0.5), ("ngt", 0.4), ("pacemaker", 0.2)) if rng.random() < p]
        f.update(devices=devices or ["cvc"], ett_cm=float(rng.uniform(2.5, 6.0)), cvc_tip=float(rng.uniform(-0.25, 0.02)))
    return f


def sample_study(rng: np.random.Generator) -> dict:
    """One study's plan: clinical state, anatomy, findings with their parameters, views, procedure."""
    names = list(STATES)
    state = _choice(rng, names, [STATES[s][0] for s in names])
    probs = STATES[state][1]
    while True:
        present = [f for f in DRAWN if rng.random() < probs.get(f, 0.0)]
        if state != "other" or any(f in COMPETITION_FINDINGS for f in present):
            break
    findings = {}
    for name in present:
        certain = name == "Support Devices" or rng.random() >= UNCERTAIN
        findings[name] = _finding(name, certain, state, rng)
    sex = _choice(rng, ("F", "M"))
    dome_r = float(rng.uniform(0.36, 0.44))
    anatomy = {
        "body_w": float(rng.uniform(0.84, 0.93) if sex == "F" else rng.uniform(0.88, 0.97)),
        "lung_w": float(rng.uniform(0.93, 1.04)), "lung_h": float(rng.uniform(0.93, 1.04)),
        "dome_right": dome_r, "dome_left": dome_r + float(rng.uniform(0.02, 0.06)),
        "ctr": findings["Cardiomegaly"]["ctr"] if "Cardiomegaly" in findings else float(rng.uniform(0.36, 0.46)),
        "scale": float(rng.uniform(0.96, 1.02)), "rib_gap": float(rng.uniform(0.105, 0.125)),
        "clav": float(rng.uniform(-0.04, 0.04)), "depth": float(rng.uniform(0.86, 1.0)),
    }
    portable = rng.random() < (0.75 if state == "icu" or "Support Devices" in findings else 0.2)
    frontal = "AP" if portable else "PA"
    views = [frontal]
    if frontal == "PA" and rng.random() < 0.85 or frontal == "AP" and rng.random() < 0.1:
        views.append(_choice(rng, ("LATERAL", "LL"), (0.75, 0.25)))
    if rng.random() < 0.07:
        views.append(frontal)  # a repeated frontal exposure
    return {"state": state, "sex": sex, "anatomy": anatomy, "findings": findings, "views": views,
            "procedure": PROCEDURE[frontal],
            "orientation": "Recumbent" if portable and rng.random() < 0.6 else "Erect"}


# --------------------------------------------------------------------------------------------------
# one image


def render_view(spec: dict, k: int, size: int, rng: np.random.Generator):
    """(stored uint16 [size, size] 12-bit MONOCHROME2 values, masks or None, exposure) of view k of a study."""
    view = spec["views"][k]
    half = size % 2 == 0 and size >= 256  # drawn at half resolution, then upsampled (noise at full)
    at = size // 2 if half else size
    if view in ("PA", "AP"):
        A, masks = draw.draw_frontal(spec["anatomy"], spec["findings"], view, rng, at)
    else:
        A, masks = draw.draw_lateral(spec["anatomy"], spec["findings"], rng, at), None
    if half:
        A = draw.upsample2(A)
        if masks is not None:
            masks = {key: m.repeat(2, 0).repeat(2, 1) for key, m in masks.items()}  # nearest
    exposure = {"gain": float(rng.uniform(2700, 3500)), "offset": float(rng.uniform(60, 350)),
                "gamma": float(rng.uniform(0.85, 1.2)), "noise": float(rng.uniform(12, 40)),
                "grad_x": float(rng.normal(0, 0.02)), "grad_y": float(rng.normal(0, 0.02))}
    return draw.expose(A, exposure, rng), masks, exposure


def draw_study(seed: int, index: int) -> tuple[dict, str, dict, str]:
    """(plan, report, labels, report frame) of study `index` of the dataset of `seed`, as write_synthetic
    writes it; view_pixels(seed, index, k, size, spec) gives its images."""
    rng = np.random.default_rng([seed, 1, index])
    spec = sample_study(rng)
    report, labels, frame = text.write_report(spec, rng)
    return spec, report, labels, frame


def view_pixels(seed: int, index: int, k: int, size: int, spec: dict):
    """(stored 12-bit MONOCHROME2 values, masks or None) of view k of study `index`, as write_synthetic
    draws them (a MONOCHROME1 file stores 4095 minus these)."""
    stored, masks, _ = render_view(spec, k, size, np.random.default_rng([seed, 2, index, k]))
    return stored, masks


def _dicom_attributes(plan: dict, spec: dict, k: int, stored: np.ndarray, rng) -> tuple[dict, str, str, np.ndarray]:
    """(attributes, syntax, photometric, stored values to write) of view k: MONOCHROME1 inverts the
    values; the window covers the image's 0.5-99.5 percentiles (a few files have none); some files carry a
    rescale and their window in rescaled units."""
    view = spec["views"][k]
    photometric = "MONOCHROME1" if rng.random() < 0.4 else "MONOCHROME2"
    syntax = _choice(rng, tuple(SYNTAX_WEIGHTS), tuple(SYNTAX_WEIGHTS.values()))
    if photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)
    lo, hi = np.percentile(stored[::4, ::4], (0.5, 99.5))
    width = max((hi - lo) * rng.uniform(1.0, 1.2), 64.0)
    center = (hi + lo) / 2 + rng.normal(0, 0.03) * width
    slope, intercept = 1.0, 0.0
    rescale = rng.random() < 0.25
    if rescale:
        slope, intercept = _choice(rng, ((1.0, -1024.0), (0.5, 0.0), (1.0, 0.0), (2.0, -4096.0)))
    ids = plan["images"][k]
    attrs = {
        "SpecificCharacterSet": "ISO_IR 100", "ImageType": ["ORIGINAL", "PRIMARY"],
        "SOPInstanceUID": ids["sop_uid"], "StudyDate": plan["date"], "SeriesDate": plan["date"],
        "StudyTime": plan["time"], "AccessionNumber": plan["accession"], "Modality": "DX",
        "Manufacturer": "cxrfast synthetic", "StudyDescription": spec["procedure"],
        "ProcedureCodeSequence": [{"CodeValue": "CHEST", "CodingSchemeDesignator": "L", "CodeMeaning": spec["procedure"]}],
        "SeriesDescription": view, "PatientName": "Synthetic^" + plan["subject_id"], "PatientID": plan["subject_id"],
        "PatientSex": spec["sex"], "BodyPartExamined": "CHEST", "ViewPosition": view,
        "StudyInstanceUID": plan["study_uid"], "SeriesInstanceUID": ids["series_uid"], "StudyID": plan["study_id"],
        "SeriesNumber": k + 1, "InstanceNumber": 1,
        "PatientOrientation": ["A", "F"] if view in ("LATERAL", "LL") else ["L", "F"],
        "PixelSpacing": [0.139 * 2500 / stored.shape[0]] * 2, "LossyImageCompression": "00",
        "PerformedProcedureStepDescription": spec["procedure"],
        "ViewCodeSequence": [{"CodeValue": VIEW_CODE[view], "CodingSchemeDesignator": "SRT",
                              "CodeMeaning": VIEW_MEANING[view]}],
        "PatientOrientationCodeSequence": [{"CodeValue": "F-10440" if spec["orientation"] == "Erect" else "F-10450",
                                            "CodingSchemeDesignator": "SRT", "CodeMeaning": spec["orientation"]}],
    }
    if rescale:
        attrs.update(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="US")
    if rng.random() < 0.92:
        attrs.update(WindowCenter=round(center * slope + intercept, 1), WindowWidth=round(width * slope, 1))
    return attrs, syntax, photometric, stored


def _npz_bytes(arrays: dict) -> bytes:
    """np.savez_compressed's format with fixed time stamps (numpy's own writes the current time, so two
    runs would differ): one .npy member per key, deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# one study (in a worker)


def _study_dir(out: Path, subject: str, study: str) -> Path:
    return out / "files" / f"p{subject[:2]}" / f"p{subject}"


def _make_study(task: tuple) -> dict:
    """Draw, encode and write one study; returns its CSV rows and counts. Everything random comes from
    generators seeded by (seed, study index[, view]), so the output does not depend on the worker."""
    from cxrfast.io.write import dicom_bytes

    t0 = time.process_time()
    out, size, seed, index, plan = task
    out = Path(out)
    spec, report, labels, frame = draw_study(seed, index)
    folder = _study_dir(out, plan["subject_id"], plan["study_id"])
    (folder / f"s{plan['study_id']}").mkdir(parents=True, exist_ok=True)
    (folder / f"s{plan['study_id']}.txt").write_text(report)
    plan = dict(plan, images=[])
    files = []
    for k, view in enumerate(spec["views"]):
        ids = _image_ids(seed, index, k)
        plan["images"].append(ids)
        img_rng = np.random.default_rng([seed, 2, index, k])
        stored, masks, _ = render_view(spec, k, size, img_rng)
        attrs, syntax, photometric, values = _dicom_attributes(plan, spec, k, stored, img_rng)
        data = dicom_bytes(values, syntax=syntax, photometric=photometric, bits_stored=12, attributes=attrs,
                           deflate_level=1)
        (folder / f"s{plan['study_id']}" / f"{ids['dicom_id']}.dcm").write_bytes(data)
        if masks is not None:
            (out / "masks" / f"{ids['dicom_id']}.npz").write_bytes(
                _npz_bytes({key: m.astype(np.uint8) for key, m in masks.items()}))
        files.append({"dicom_id": ids["dicom_id"], "view": view, "syntax": syntax, "photometric": photometric,
                      "bytes": len(data)})
    return {"index": index, "files": files, "labels": labels, "frame": frame, "state": spec["state"],
            "views": spec["views"], "procedure": spec["procedure"], "orientation": spec["orientation"],
            "cpu": time.process_time() - t0}


def _image_ids(seed: int, index: int, k: int) -> dict:
    """dicom_id (MIMIC's five groups of 8 hex digits) and UIDs of view k of study `index`."""
    r = np.random.default_rng([seed, 3, index, k]).integers(0, 2**32, 8, dtype=np.uint64)
    dicom_id = "-".join(f"{int(x):08x}" for x in r[:5])
    big = (int(r[5]) << 64) | (int(r[6]) << 32) | int(r[7])
    return {"dicom_id": dicom_id, "sop_uid": f"2.25.{big}", "series_uid": f"2.25.{big + 1}"}


# --------------------------------------------------------------------------------------------------
# the dataset


def _plans(n: int, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Subjects, ids and dates of n studies (1-4 studies per subject), and each subject's split."""
    rng = np.random.default_rng([seed, 0])
    counts = []
    while sum(counts) < n:
        counts.append(min(int(_choice(rng, (1, 2, 3, 4), (0.55, 0.25, 0.12, 0.08))), n - sum(counts)))
    subjects = [str(10_000_000 + int(s)) for s in rng.choice(10_000_000, len(counts), replace=False)]
    study_ids = [str(50_000_000 + int(s)) for s in rng.choice(10_000_000, n, replace=False)]
    plans = []
    for subject, c in zip(subjects, counts):
        day = int(rng.integers(0, 365 * 80))  # MIMIC's shifted years 2110-2190
        for _ in range(c):
            day += int(rng.integers(1, 400))
            date = np.datetime64("2110-01-01") + np.timedelta64(day, "D")
            secs = int(rng.integers(0, 86400))
            i = len(plans)
            plans.append({"subject_id": subject, "study_id": study_ids[i], "date": str(date).replace("-", ""),
                          "time": f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.{int(rng.integers(0, 1000)):03d}",
                          "accession": f"{int(rng.integers(10**7, 10**8))}",
                          "study_uid": f"2.25.{int(rng.integers(2**62))}{int(rng.integers(2**62)):019d}"})
    order = np.random.default_rng([seed, 4]).permutation(len(subjects))
    split = {}
    cuts = [round(len(subjects) * 0.8), round(len(subjects) * 0.9)]
    if len(subjects) >= 3:  # every split gets a subject
        cuts = [min(max(cuts[0], 1), len(subjects) - 2), min(max(cuts[1], cuts[0] + 1), len(subjects) - 1)]
    for rank, i in enumerate(order):
        split[subjects[i]] = "train" if rank < cuts[0] else "validate" if rank < cuts[1] else "test"
    return plans, split


def _fmt_label(v) -> str:
    return "" if v is None else f"{float(v):.1f}"


@dataclass
class SynthSummary:
    """What write_synthetic wrote: counts, prevalences and the time it took."""

    out: str
    studies: int
    subjects: int
    images: int
    size: int
    seed: int
    seconds: float
    bytes: int
    views: dict = field(default_factory=dict)
    syntaxes: dict = field(default_factory=dict)
    photometric: dict = field(default_factory=dict)
    prevalence: dict = field(default_factory=dict)  # finding -> share of studies with label 1.0
    uncertain: dict = field(default_factory=dict)  # finding -> share with -1.0
    no_finding: float = 0.0
    splits: dict = field(default_factory=dict)
    workers: int = 0
    cpu_seconds: float = 0.0  # CPU time spent drawing and writing the studies, all workers together

    def lines(self) -> list[str]:
        from cxrfast.io.write import SYNTAXES

        share = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
        return [
            f"cxrfast synth: {self.studies} studies of {self.subjects} subjects, {self.images} images "
            f"({self.size} px) in {self.out}",
            f"  time      {self.seconds:.1f} s ({self.images / max(self.seconds, 1e-9):.0f} images/s, "
            f"{self.workers} workers, {self.cpu_seconds:.0f} CPU-s), {self.bytes / 2**20:.0f} MiB of DICOM",
            f"  views     {share(self.views)}",
            f"  syntaxes  {share({SYNTAXES[k]: v for k, v in self.syntaxes.items()})}",
            f"  pixels    {share(self.photometric)}",
            "  findings  " + ", ".join(f"{k} {100 * v:.0f}%" + (f" (+{100 * self.uncertain[k]:.0f}% uncertain)"
                                                               if self.uncertain.get(k) else "")
                                       for k, v in self.prevalence.items()),
            f"  none      {100 * self.no_finding:.0f}% of studies have No Finding = 1",
            f"  splits    {share(self.splits)} (studies)",
        ]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_args(out, n, seed, size, workers) -> Path:
    for name, value, low in (("n", n, 1), ("size", size, 64), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise SynthError(f"write_synthetic: `{name}` must be an int >= {low}, got {value!r}")
    if size > 4096:
        raise SynthError(f"write_synthetic: `size` must be <= 4096, got {size}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise SynthError(f"write_synthetic: `workers` must be an int >= 0 or None, got {workers!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"write_synthetic: `out` {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise SynthError(f"write_synthetic: `out` {str(out)!r} is not empty (synth writes a fresh dataset)")
    return out


def _worker_init() -> None:
    """Keep freed memory in the worker's heap (glibc): each image allocates and frees a few MB of arrays,
    which glibc would otherwise return to the system and fault in again, page by page; that costs about a
    quarter of the CPU time (kernel time). The workers are this module's own processes."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: arrays up to 32 MB from the heap
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD: keep up to 512 MB of free heap
    except (OSError, AttributeError):
        pass  # not glibc: the default allocator, a little slower


def _results(tasks: list, workers: int):
    """_make_study over the tasks, in order: in this process, or in a pool of `workers` processes
    (forkserver, which imports this module once and forks the workers from it; else spawn)."""
    if workers == 0:
        for t in tasks:
            yield _make_study(t)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["cxrfast.data.synth", "cxrfast.io.write"])
    else:
        ctx = multiprocessing.get_context("spawn")
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        try:
            yield from pool.map(_make_study, tasks, chunksize=4)
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "write_synthetic: a worker process died. Its processes are started by multiprocessing's "
                f"{ctx.get_start_method()} method, which imports the main module again: a script that calls this "
                "(or cxrfast.train.pretrain on the synthetic data) must do so under `if __name__ == \"__main__\":`; "
                "or pass workers=0. The worker's own error is printed above.") from exc


def write_synthetic(out, n: int = 2000, *, seed: int = 0, size: int = 512, workers: int | None = None,
                    progress: bool = False) -> SynthSummary:
    """Write n synthetic studies in the MIMIC-CXR layout to `out` (a new or empty folder); see the module
    docstring for the layout, the drawing and the labels. size: the side of the square images in pixels;
    workers: processes drawing studies (None: the CPUs this process may use, or this process for fewer
    than 16 studies; 0: this process); progress: a bar on stderr. The same (n, seed, size) gives
    byte-identical files for any number of workers. An interrupted run leaves a partial OUT, which a
    rerun refuses: delete it first. A script calling this with workers > 0 needs the usual
    ``if __name__ == "__main__":`` guard (the workers are started by forkserver or spawn)."""
    out = _check_args(out, n, seed, size, workers)
    if workers is None:
        from cxrfast.data.prepare import default_workers

        workers = default_workers() if n >= 16 else 0
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir()
    plans, split = _plans(n, seed)
    tasks = [(str(out), size, seed, i, plans[i]) for i in range(n)]
    bar = None
    if progress:
        from cxrfast._progress import progress as make_bar

        bar = make_bar(n, "synth", unit="studies", min_interval=0.2)
    results = []
    try:
        for r in _results(tasks, workers):
            results.append(r)
            if bar is not None:
                bar.step()
    finally:
        if bar is not None:
            bar.close()

    meta_rows, label_rows, split_rows = [], [], []
    for plan, r in zip(plans, results):
        for f in r["files"]:
            view = f["view"]
            meta_rows.append([f["dicom_id"], plan["subject_id"], plan["study_id"], r["procedure"], view, size, size,
                              plan["date"], plan["time"], r["procedure"], VIEW_MEANING[view], r["orientation"]])
            split_rows.append([f["dicom_id"], plan["study_id"], plan["subject_id"], split[plan["subject_id"]]])
        label_rows.append([plan["subject_id"], plan["study_id"]] + [_fmt_label(r["labels"].get(c)) for c in CHEXPERT_FINDINGS])
    _write_csv(out / "mimic-cxr-2.0.0-metadata.csv", METADATA_COLUMNS, meta_rows)
    _write_csv(out / "mimic-cxr-2.0.0-chexpert.csv", LABEL_COLUMNS, label_rows)
    _write_csv(out / "mimic-cxr-2.0.0-negbio.csv", LABEL_COLUMNS, label_rows)
    _write_csv(out / "mimic-cxr-2.0.0-split.csv", SPLIT_COLUMNS, split_rows)

    files = [f for r in results for f in r["files"]]
    count = lambda key: {k: sum(f[key] == k for f in files) for k in sorted({f[key] for f in files})}  # noqa: E731
    labels = [r["labels"] for r in results]
    summary = SynthSummary(
        out=str(out), studies=n, subjects=len(split), images=len(files), size=size, seed=seed,
        seconds=time.perf_counter() - t0, bytes=sum(f["bytes"] for f in files), workers=workers,
        cpu_seconds=sum(r["cpu"] for r in results),
        views=count("view"), syntaxes=count("syntax"), photometric=count("photometric"),
        prevalence={c: sum(lb.get(c) == 1.0 for lb in labels) / n for c in DRAWN},
        uncertain={c: sum(lb.get(c) == -1.0 for lb in labels) / n for c in DRAWN},
        no_finding=sum(lb.get("No Finding") == 1.0 for lb in labels) / n,
        splits={s: sum(split[p["subject_id"]] == s for p in plans) for s, _ in SPLITS})
    record = {k: v for k, v in summary.as_dict().items() if k not in ("seconds", "out", "workers", "cpu_seconds")}
    record["format"] = "cxrfast synth 1"
    record["masks"] = "masks/<dicom_id>.npz: frontal views; uint8 [size, size] 0/1 per key: drawn findings, lungs, heart"
    (out / "synth.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)


# --------------------------------------------------------------------------------------------------
# pictures


def save_examples(path, *, seed: int = 0, size: int = 384, columns: int = 4) -> Path:
    """A PNG montage of synthetic radiographs with their findings, drawn in memory exactly as
    write_synthetic draws them (displayed through the file's window): a normal study, one study for
    each drawn finding, and a lateral view; the finding masks outlined in colour. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = ["none"] + list(DRAWN) + ["lateral"]
    picks: dict = {}
    i = 0
    while len(picks) < len(wanted) and i < 5000:
        spec = draw_study(seed, i)[0]
        present = [f for f in DRAWN if f in spec["findings"] and spec["findings"][f]["certain"]]
        key = None
        if not spec["findings"] and "none" not in picks:
            key = "none"
        elif len(present) == 1 and present[0] not in picks and len(spec["findings"]) == 1:
            key = present[0]
        elif "lateral" not in picks and len(spec["views"]) > 1 and len(present) >= 2 and \
                spec["views"][1] in ("LATERAL", "LL"):
            key = "lateral"
        if key is not None:
            picks[key] = (i, spec)
        i += 1
    colours = {"Atelectasis": "tab:orange", "Cardiomegaly": "tab:red", "Consolidation": "tab:green",
               "Edema": "tab:cyan", "Pleural Effusion": "tab:blue", "Support Devices": "tab:purple"}
    keys = [k for k in wanted if k in picks]
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, key in zip(axes.ravel(), keys):
        i, spec = picks[key]
        k = 1 if key == "lateral" else 0
        stored, masks = view_pixels(seed, i, k, size, spec)
        lo, hi = np.percentile(stored, (0.5, 99.5))
        ax.imshow(np.clip((stored - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
        for name in (masks or {}):
            if name in colours:
                ax.contour(masks[name].astype(float), levels=[0.5], colors=colours[name], linewidths=0.8)
        f = spec["findings"]
        words = []
        for name, p in f.items():
            detail = {"Cardiomegaly": lambda p: f"{p['severity']}, CTR {p['ctr']:.2f}",
                      "Pleural Effusion": lambda p: f"{p['size']} {p['side']}",
                      "Consolidation": lambda p: p["lobe"].replace("right ", "R").replace("left ", "L")
                      .replace("upper lobe", "UL").replace("lower lobe", "LL").replace("middle lobe", "ML"),
                      "Atelectasis": lambda p: p["where"], "Edema": lambda p: p["severity"],
                      "Support Devices": lambda p: "+".join(p["devices"])}[name](p)
            words.append(f"{name} ({detail})")
        title = f"{spec['views'][k]}: " + ("\n".join(words) if words else f"no finding, CTR {spec['anatomy']['ctr']:.2f}")
        ax.set_title(title, fontsize=7.5)
    fig.suptitle(f"cxrfast synth (seed {seed}): outlines = finding masks", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, pil_kwargs={"optimize": True})
    plt.close(fig)
    return path
