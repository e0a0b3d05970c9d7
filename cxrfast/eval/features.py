"""Frozen features of a model over studies, and of free texts (prompts), through the PresetModel interface only.

    feats = encode_studies(model, tokenizer, studies, findings=COMPETITION_FINDINGS, device="cpu")
    feats.image [N, E], feats.text [N, E], feats.labels [N, F] (1 / 0 / NaN), feats.local [M, R, E] or None
    prompts = encode_texts(model, tokenizer, ["small left pleural effusion", ...])     # [n, E]

Images go through the evaluation transform (cxrfast.data.transforms.Augment(train=False): the whole image,
aspect kept, padded; no jitter) at the model's image size, reports through the tokenizer at the model's
max_length: what the data layer feeds the trainer, minus the augmentation. Labels use the "ignore" policy:
an uncertain (-1) or unmentioned label is NaN and each metric leaves that study out for that finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cxrfast._progress import progress as make_bar
from cxrfast.data.batch import KIND_CODES, Batch
from cxrfast.data.loader import StudyBatches, make_loader
from cxrfast.data.transforms import Augment

__all__ = ["Features", "eval_batches", "encode_studies", "text_batch", "encode_texts"]


@dataclass
class Features:
    """What one pass over studies gives. Rows follow the studies' order.

    study_ids [N]; labels float [N, F] in `findings` order (NaN: uncertain or unknown); image / text float
    [N, E] global features (rows of studies without that modality hold whatever the encoder returned for an
    empty input: use has_image / has_text); image_ids [N] the first view's image id (None without images);
    local float [M, R, E] the local (region) features of the rows `local_index` [M] (None when not asked
    for or when the model has none: `local_reason` says why); grid (h, w) of the regions, row-major."""

    study_ids: list
    findings: tuple
    labels: torch.Tensor
    has_image: torch.Tensor
    has_text: torch.Tensor
    image: torch.Tensor | None = None
    text: torch.Tensor | None = None
    image_ids: list = field(default_factory=list)
    local: torch.Tensor | None = None
    local_index: torch.Tensor | None = None
    grid: tuple | None = None
    local_reason: str | None = None

    def __len__(self) -> int:
        return len(self.study_ids)


def eval_batches(model, tokenizer, studies, findings: Sequence[str], seed: int = 0) -> StudyBatches:
    """The StudyBatches that evaluation reads: the model's view slots, image size and token length, the
    evaluation transform, uncertain labels ignored."""
    cfg = model.config
    return StudyBatches(studies, tokenizer, views=cfg.max_views, augment=Augment(size=cfg.image_size, train=False),
                        seed=seed, max_length=cfg.max_length, findings=tuple(findings), uncertain="ignore")


def local_parts(out: dict) -> tuple[torch.Tensor | None, tuple | None, str | None]:
    """(local [B, R, E], grid (h, w), None) from encode_image's dict, or (None, None, the reason) when the
    preset has no spatial local features."""
    local, grid = out.get("local"), out.get("grid")
    if local is None:
        return None, None, "the preset's encode_image returns no local (region) features"
    if grid is None:
        return None, None, "the preset's local features have no spatial grid (encode_image returns no 'grid')"
    h, w = (int(v) for v in grid)
    if local.dim() != 3 or local.shape[1] != h * w:
        return None, None, (f"the preset's local features {tuple(local.shape)} do not form its grid {h}×{w} "
                            "(several views or extra tokens)")
    return local, (h, w), None


@torch.inference_mode()
def encode_studies(model, tokenizer, studies, *, findings: Sequence[str], device="cpu", batch_size: int = 32,
                   text: bool = True, local=False, workers: int = 0, seed: int = 0, desc: str | None = "features",
                   show_progress: bool = True) -> Features:
    """One pass of the frozen `model` (eval mode, no gradient) over `studies` (a StudyDataset or a sequence
    of Study). text: also encode the reports; local: False, True (every row) or row indices whose local
    features to keep (the local features of a large split do not fit in memory; the localized probe takes a
    subset). A progress bar on stderr names `desc` (show_progress=False: none)."""
    if batch_size < 1:
        raise ValueError(f"encode_studies: batch_size must be >= 1, got {batch_size}")
    if len(studies) == 0:
        raise ValueError("encode_studies: `studies` is empty")
    model.eval()
    batches = eval_batches(model, tokenizer, studies, findings, seed)
    loader = make_loader(batches, batch_size, shuffle=False, workers=workers)
    keep = np.zeros(len(studies), bool)
    if local is True:
        keep[:] = True
    elif local is not False:
        idx = np.asarray(list(local), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(studies)):
            raise ValueError(f"encode_studies: `local` indices must lie in [0, {len(studies)}), got "
                             f"{int(idx.min())}..{int(idx.max())}")
        keep[idx] = True
    ids, labels, has_img, has_txt, imgs, txts, image_ids, locs, loc_rows = [], [], [], [], [], [], [], [], []
    grid, reason, row = None, None, 0
    bar = make_bar(len(loader), desc, unit="batches", min_interval=0.5) if show_progress and desc else None
    for batch in loader:
        b = len(batch)
        for i in range(b):
            refs = batches.image_refs(studies[row + i])
            image_ids.append(refs[0].image_id if refs else None)
        batch = batch.to(device)
        ids += batch.study_ids
        labels.append(batch.labels.cpu())
        has_img.append(batch.has_image.cpu())
        has_txt.append(batch.has_text.cpu())
        out = model.encode_image(batch)
        imgs.append(out["global"].float().cpu())
        if text:
            txts.append(model.encode_text(batch)["global"].float().cpu())
        sel = torch.from_numpy(keep[row:row + b])
        if sel.any() and reason is None:
            loc, grid, reason = local_parts(out)
            if loc is not None:
                locs.append(loc.float().cpu()[sel])
                loc_rows.append(torch.arange(row, row + b)[sel])
        row += b
        if bar is not None:
            bar.step()
    if bar is not None:
        bar.close()
    feats = Features(study_ids=ids, findings=tuple(findings), labels=torch.cat(labels), has_image=torch.cat(has_img),
                     has_text=torch.cat(has_txt), image=torch.cat(imgs), text=torch.cat(txts) if text else None,
                     image_ids=image_ids)
    if keep.any():
        feats.grid, feats.local_reason = grid, reason
        if reason is None:
            feats.local, feats.local_index = torch.cat(locs), torch.cat(loc_rows)
    return feats


def text_batch(tokenizer, texts: Sequence[str], config) -> Batch:
    """A text-only Batch of free `texts` (prompts) for a model of `config`: no views, kind "text"."""
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"text_batch: `texts` must be non-empty strings, got {texts[:3]!r}")
    enc = tokenizer.encode(texts, max_length=config.max_length)
    n, S = len(texts), config.image_size
    V = config.max_views
    return Batch(views=torch.zeros(n, V, 1, S, S), view_mask=torch.zeros(n, V, dtype=torch.bool),
                 input_ids=torch.from_numpy(enc.input_ids), attention_mask=torch.from_numpy(enc.attention_mask),
                 word_index=torch.from_numpy(enc.word_index), sentence_index=torch.from_numpy(enc.sentence_index),
                 kind=torch.full((n,), KIND_CODES["text"], dtype=torch.int64),
                 labels=torch.zeros(n, len(config.findings)), study_ids=[f"text{i}" for i in range(n)],
                 findings=tuple(config.findings))


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], *, device="cpu", batch_size: int = 64) -> torch.Tensor:
    """Global text features [n, E] (float32, CPU) of free texts, through model.encode_text."""
    model.eval()
    texts = list(texts)
    out = []
    for i in range(0, len(texts), batch_size):
        batch = text_batch(tokenizer, texts[i:i + batch_size], model.config).to(device)
        out.append(model.encode_text(batch)["global"].float().cpu())
    return torch.cat(out)
