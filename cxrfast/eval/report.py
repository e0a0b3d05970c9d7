"""evaluate(): every metric of a frozen model on a StudyDataset, the metrics.json file and the table.

    metrics = evaluate(model, tokenizer, studies, out="RUN/eval")     # test split: zero-shot, retrieval;
    print(format_table(metrics))                                      # train split: the probes' training

What runs (`which`): "zeroshot", "retrieval", "probe", "localized", "pictures" (ALL). One pass over the test
studies gives their global image and report features (and local ones for the localized probe); one pass
over the training studies gives the probes' inputs. A metric the preset cannot give (local features, word
features, reconstructions) is recorded as {"skipped": reason}, never dropped silently.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.features import eval_batches, encode_studies
from cxrfast.eval.localized import load_finding_masks, localized_probe, mask_rows
from cxrfast.eval.pictures import pictures as make_pictures
from cxrfast.eval.probe import FRACTIONS, linear_probe
from cxrfast.eval.retrieval import retrieval
from cxrfast.eval.zeroshot import zero_shot

__all__ = ["ALL", "DEFAULT_SPLITS", "evaluate", "format_table", "write_metrics", "json_safe"]

ALL = ("zeroshot", "retrieval", "probe", "localized", "pictures")
DEFAULT_SPLITS = {"train": "train", "test": "test"}
METRICS_FORMAT = "cxrfast eval 1"


def _split(studies, names, role: str):
    names = (names,) if isinstance(names, str) else tuple(names)
    part = studies if names == ("all",) else studies.subset(lambda s: s.split in names)
    if len(part) == 0:
        found = sorted({s.split for s in studies if s.split is not None})
        if not found:
            raise ValueError(f"evaluate: splits[{role!r}] = {names} selects no study: the dataset's studies have no "
                             "split (e.g. openi); evaluate all of them (splits={'test': 'all'}; cxrfast eval "
                             "--test-split all, with --which zeroshot,retrieval: the probes need a training split) "
                             "or assign Study.split yourself")
        raise ValueError(f"evaluate: splits[{role!r}] = {names} selects no study; the dataset's splits are {found}"
                         " (cxrfast eval: --test-split / --train-split)")
    return part


def evaluate(model, tokenizer, studies, *, splits: Mapping | None = None, device=None, batch_size: int = 32,
             seed: int = 0, out=None, which: Sequence[str] = ALL, findings: Sequence[str] = COMPETITION_FINDINGS,
             n_prompts: int = 10, reduce: str = "mean", n_boot: int = 1000, fractions: Sequence[float] = FRACTIONS,
             probe_l2: float = 1e-2, localized_l2: float = 1e-3, localized_max: int = 500,
             picture_study: str | None = None, picture_text: str | None = None,
             picture_words: Sequence[str] | None = None, workers: int = 0, show_progress: bool = True,
             meta: Mapping | None = None) -> dict:
    """Evaluate a frozen `model` (any PresetModel) with its `tokenizer` on `studies` (a StudyDataset).

    splits: {"train": name(s), "test": name(s)} of Study.split, or "all" (default train / test; e.g. {"test":
    ("validate", "test")}); device: where the model runs (it is moved there; default: where it is);
    seed: prompt sampling, bootstrap, probe splits, subsets; out: a folder for metrics.json, metrics.md,
    the probe split files and the pictures (None: nothing written); n_boot: bootstrap replicates;
    localized_max: at most this many training and test studies (seeded) in the localized probe;
    picture_*: the study, replacement text and words of the attention picture (pictures.one_study_batch /
    pick_words); meta: entries added to metrics["meta"] (run_eval's run folder and step). Returns the
    metrics dict (format_table renders it)."""
    if not hasattr(studies, "subset"):
        raise TypeError(f"evaluate: `studies` must be a StudyDataset (open_dataset's), got {type(studies).__name__}")
    which = (which,) if isinstance(which, str) else tuple(which)
    unknown = sorted(set(which) - set(ALL))
    if unknown:
        raise ValueError(f"evaluate: unknown metric(s) {unknown} in `which`; known: {ALL}")
    splits = {**DEFAULT_SPLITS, **(splits or {})}
    bad = sorted(set(splits) - set(DEFAULT_SPLITS))
    if bad:
        raise ValueError(f"evaluate: `splits` takes the keys {sorted(DEFAULT_SPLITS)}, got {bad}")
    device = torch.device(device) if device is not None else model.device
    model.to(device).eval()
    findings = tuple(findings)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    test = _split(studies, splits["test"], "test")
    need_train = bool({"probe", "localized"} & set(which))
    train = _split(studies, splits["train"], "train") if need_train else None
    if train is not None:
        shared = {s.study_id for s in test} & {s.study_id for s in train}
        if shared:
            raise ValueError(f"evaluate: the probes' training split {splits['train']} and the test split "
                             f"{splits['test']} share {len(shared)} studies (e.g. {sorted(shared)[0]!r}): a probe "
                             "would be scored on studies it was fitted to; choose disjoint splits")
    cfg = model.config
    metrics = {"format": METRICS_FORMAT,
               "meta": {"preset": cfg.preset, "size": cfg.size, "dataset": getattr(studies, "name", None),
                        "root": getattr(studies, "root", None), "splits": {k: list((v,) if isinstance(v, str) else v)
                                                                            for k, v in splits.items()},
                        "n_test": len(test), "n_train": len(train) if train is not None else None,
                        "findings": list(findings), "seed": seed, "device": str(device),
                        "labels": "1 positive / 0 negative; uncertain (-1) and unmentioned labels are left out per "
                                  "finding", "torch": torch.__version__, "python": platform.python_version()},
               "which": list(which)}
    metrics["meta"].update(meta or {})

    local_test = local_train = []
    if "localized" in which:
        root = getattr(studies, "root", None)
        batches = eval_batches(model, tokenizer, test, findings, seed)

        def first_id(study):  # the image of the study's first view slot, as the evaluation batches choose it
            refs = batches.image_refs(study)
            return refs[0].image_id if refs else None

        local_test = mask_rows(test, first_id, root, localized_max, seed)
        local_train = mask_rows(train, first_id, root, localized_max, seed)
    common = dict(findings=findings, device=device, batch_size=batch_size, workers=workers, seed=seed,
                  show_progress=show_progress)
    if set(which) - {"pictures"}:  # every metric but the pictures reads the test studies' features
        test_f = encode_studies(model, tokenizer, test, text=bool({"zeroshot", "retrieval"} & set(which)),
                                local=[r for r, _ in local_test], desc="eval: test", **common)
    if need_train:
        train_f = encode_studies(model, tokenizer, train, text=False, local=[r for r, _ in local_train],
                                 desc="eval: train", **common)

    if "zeroshot" in which:
        metrics["zeroshot"] = zero_shot(model, tokenizer, test_f, n_prompts=n_prompts, seed=seed, reduce=reduce,
                                        n_boot=n_boot, device=device, batch_size=max(batch_size, 64))
    if "retrieval" in which:
        metrics["retrieval"] = retrieval(test_f, similarity=model.similarity)
    if "probe" in which:
        metrics["probe"] = linear_probe(train_f, test_f, fractions=fractions, seed=seed, folder=out, l2=probe_l2)
    if "localized" in which:
        metrics["localized"] = _localized(train_f, test_f, local_train, local_test, findings, cfg.image_size,
                                          localized_l2, seed)
    if "pictures" in which:
        folder = out / "pictures" if out is not None else None
        metrics["pictures"] = (make_pictures(model, tokenizer, test, folder, study_id=picture_study, text=picture_text,
                                             words=picture_words, device=device, findings=findings)
                               if folder is not None else {"skipped": "no output folder (out=None)"})
    if out is not None:
        write_metrics(metrics, out)
    return metrics


def _localized(train_f, test_f, rows_train, rows_test, findings, size, l2, seed) -> dict:
    if not rows_train or not rows_test:
        return {"skipped": "no region masks for the training or the test studies (the synthetic dataset writes "
                           "masks/<dicom_id>.npz; other datasets have none)"}
    for f, rows in ((train_f, rows_train), (test_f, rows_test)):
        if f.local is None:
            return {"skipped": f.local_reason or "no local features"}
        if f.local_index.tolist() != [r for r, _ in rows]:  # the masks below are stacked in these rows' order
            raise RuntimeError("evaluate: the local features' rows differ from the masks' rows")
    masks = [torch.stack([load_finding_masks(p, findings, size) for _, p in rows]) for rows in (rows_train, rows_test)]
    return localized_probe(train_f.local, masks[0], test_f.local, masks[1], train_f.grid, findings, l2=l2, seed=seed)


def json_safe(x):
    """x with NaN / inf floats as None (JSON has no NaN), tuples as lists, paths as strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_metrics(metrics: dict, out) -> tuple[Path, Path]:
    """metrics.json (NaN as null) and metrics.md (format_table) in the folder `out`, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("metrics.json", json.dumps(json_safe(metrics), indent=1) + "\n"),
                       ("metrics.md", format_table(metrics) + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
        paths.append(out / name)
    return tuple(paths)


def _num(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _ci(d: Mapping) -> str:
    lo, hi = d.get("ci", (None, None))
    return f"{_num(d.get('auc'))} [{_num(lo)}, {_num(hi)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def format_table(metrics: Mapping) -> str:
    """The metrics as Markdown tables (plain text that reads well in a terminal too): zero-shot AUC with its
    95% interval per finding and the mean, retrieval recalls, probe AUCs per label fraction, localized Dice,
    pictures; a skipped metric as its reason."""
    meta = metrics.get("meta", {})
    findings = list(meta.get("findings", []))
    lines = [f"## cxrfast eval: {meta.get('preset')} ({meta.get('size')}) on {meta.get('dataset')}, "
             f"{meta.get('n_test')} test studies", ""]

    def skipped(title, d):
        lines.extend([f"### {title}", "", f"skipped: {d['skipped']}", ""])

    zs = metrics.get("zeroshot")
    if zs is not None:
        if "skipped" in zs:
            skipped("Zero-shot classification", zs)
        else:
            a, b = zs["prompt_ensemble"], zs["posneg"]
            rows = [[f, _ci(a["per_finding"][f]), _ci(b["per_finding"][f]),
                     f"{a['per_finding'][f]['n_pos']}/{a['per_finding'][f]['n_neg']}"] for f in findings]
            rows.append(["**mean**", _ci(a["mean"]), _ci(b["mean"]), ""])
            lines += ["### Zero-shot classification: ROC AUC [95% bootstrap interval]", ""]
            lines += _table(["finding", "prompt ensemble", "positive vs negative", "pos/neg"], rows)
            lines += ["", f"{a['n_boot']} study-bootstrap replicates; {zs['label_policy']}.", ""]
    rt = metrics.get("retrieval")
    if rt is not None:
        if "skipped" in rt:
            skipped("Retrieval", rt)
        else:
            ks = [k for k in rt["image_to_text"] if k.startswith("R@")]
            rows = [[name, *(_num(rt[key][k]) for k in ks), _num(rt[key]["median_rank"], 1)]
                    for name, key in (("image → report", "image_to_text"), ("report → image", "text_to_image"))]
            lines += [f"### Retrieval ({rt['n']} paired test studies; ties pessimistic)", ""]
            lines += _table(["direction", *ks, "median rank"], rows) + [""]
    pr = metrics.get("probe")
    if pr is not None:
        if "skipped" in pr:
            skipped("Linear probe", pr)
        else:
            fracs = [k for k in pr if k.endswith("%")]
            rows = [[f, *(_num(pr[k]["per_finding"][f]["auc"]) for k in fracs)] for f in findings]
            rows.append(["**mean**", *(_num(pr[k]["mean"]) for k in fracs)])
            rows.append(["training studies", *(str(pr[k]["n_train"]) for k in fracs)])
            lines += ["### Linear probe on frozen global image features: test ROC AUC", ""]
            lines += _table(["finding", *(f"{k} of labels" for k in fracs)], rows) + [""]
    lo = metrics.get("localized")
    if lo is not None:
        if "skipped" in lo:
            skipped("Localized probe", lo)
        else:
            rows = [[f, _num(lo["per_finding"][f]["dice"]), _num(lo["per_finding"][f]["dice_present"]),
                     str(lo["per_finding"][f]["n_present"])] for f in findings]
            rows.append(["**mean**", _num(lo["mean"]), "", ""])
            lines += [f"### Localized probe (1×1 on the {lo['grid'][0]}×{lo['grid'][1]} local features): Dice", ""]
            lines += _table(["finding", "Dice (pooled)", "Dice (images with it)", "test images with it"], rows)
            lines += [""]
    pics = metrics.get("pictures")
    if pics is not None:
        if "skipped" in pics:
            skipped("Pictures", pics)
        else:
            lines += ["### Pictures", ""]
            for key in ("attention", "reconstruction"):
                d = pics[key]
                lines.append(f"- {key}: {d['file'] if 'file' in d else 'skipped: ' + d['skipped']}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
