"""Pictures of what a model learned, as PNG files.

    attention_<study>.png       word–region attention for one image and one report (the study's own, or a
                                text you give): the image, then one panel per word with its attention map
                                laid on it (cxrfast.viz). The attention is GLoRIA's, computed by cxrfast's
                                op from the model's own features: word_region_similarity(local, words,
                                return_attention=True) at the preset's temp_attention (α: softmax over the
                                regions of temp_attention · the word-normalised region–word similarities).
                                Needs a preset with spatial local features and word features (globallocal;
                                others are skipped with the reason).
    reconstruction_<study>.png  masked-vision reconstructions (presets with `reconstruct`: mixed): per
                                study a row of the image, the masked input and the reconstruction at each
                                scale (masked patches predicted, visible ones kept).

Words shown: those you name (`words`), else the report's words that name a finding or a place first
(KEY_WORDS), then its other words, up to max_words, in reading order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.features import eval_batches, local_parts

__all__ = ["KEY_WORDS", "word_strings", "pick_words", "one_study_batch", "attention_picture",
           "reconstruction_picture", "pictures"]

KEY_WORDS = frozenset("""atelectasis cardiomegaly consolidation edema effusion effusions pleural fluid heart cardiac
silhouette enlarged enlargement opacity opacities airspace pulmonary interstitial bibasilar basilar lobe base bases
left right bilateral small moderate large mild severe""".split())
_SKIP = frozenset("a an the of and or with is are in at to there no not this as be for on".split())


def word_strings(tokenizer, input_ids: torch.Tensor, word_index: torch.Tensor) -> list[str]:
    """The words of one encoded report (input_ids, word_index [T]): word w is its pieces decoded together."""
    n = int(word_index.max()) + 1 if (word_index >= 0).any() else 0
    return [tokenizer.decode(input_ids[word_index == w].tolist()).replace(" ", "") for w in range(n)]


def pick_words(words: Sequence[str], wanted: Sequence[str] | None = None, max_words: int = 8) -> list[int]:
    """Indices of the words to draw (see the module docstring), in reading order."""
    low = [w.lower() for w in words]
    if wanted is not None:
        want = {w.lower() for w in wanted}
        return [i for i, w in enumerate(low) if w in want][:max_words]
    content = [i for i, w in enumerate(low) if re.search(r"[a-z]", w) and w not in _SKIP]
    key = [i for i in content if low[i] in KEY_WORDS]
    rest = [i for i in content if low[i] not in KEY_WORDS]
    return sorted((key + rest)[:max_words])


def one_study_batch(model, tokenizer, studies, study_id: str | None = None, text: str | None = None,
                    findings: Sequence[str] = COMPETITION_FINDINGS):
    """(Batch of one study, the study): `study_id`'s, or the first paired study with a positive finding
    (else the first paired one); with `text`, that text replaces the study's report."""
    ids = [s.study_id for s in studies]
    if study_id is not None:
        if str(study_id) not in ids:
            raise ValueError(f"pictures: study_id {study_id!r} is not among the {len(ids)} studies evaluated")
        index = ids.index(str(study_id))
    else:
        paired = [i for i, s in enumerate(studies) if s.kind == "paired"]
        if not paired:
            raise ValueError("pictures: no paired study (image and report) among the studies evaluated")
        positive = [i for i in paired if any(studies[i].labels.get(f) == 1.0 for f in findings)]
        index = (positive or paired)[0]
    batches = eval_batches(model, tokenizer, studies, findings)
    batch = batches.collate([batches[index]])
    if text is not None:
        enc = tokenizer.encode([text], max_length=model.config.max_length)
        batch = dataclasses.replace(batch, input_ids=torch.from_numpy(enc.input_ids),
                                    attention_mask=torch.from_numpy(enc.attention_mask),
                                    word_index=torch.from_numpy(enc.word_index),
                                    sentence_index=torch.from_numpy(enc.sentence_index),
                                    kind=torch.zeros(1, dtype=torch.int64))
    return batch, studies[index]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


@torch.inference_mode()
def attention_picture(model, tokenizer, batch, path, *, words: Sequence[str] | None = None, max_words: int = 8) -> dict:
    """Write the word–region attention PNG of the batch's first sample to `path`; {"file", "words"} or
    {"skipped": reason}."""
    model.eval()
    if not bool(batch.has_image[0]) or not bool(batch.has_text[0]):
        return {"skipped": "the chosen study needs both an image and a report"}
    img, txt = model.encode_image(batch), model.encode_text(batch)
    regions, grid, reason = local_parts(img)
    if reason is not None:
        return {"skipped": reason}
    if "words" not in txt or "word_lengths" not in txt:
        return {"skipped": "the preset's encode_text returns no word features ('words', 'word_lengths')"}
    n = int(txt["word_lengths"][0])
    if n < 1:
        return {"skipped": "the report has no words"}
    import cxrfast
    from cxrfast import viz

    temp = float(getattr(model.config, "temp_attention", 4.0))
    _, att = cxrfast.word_region_similarity(regions[:1].float(), txt["words"][:1, :n].float(),
                                            txt["word_lengths"][:1], temp_attention=temp, return_attention=True)
    names = word_strings(tokenizer, batch.input_ids[0].cpu(), batch.word_index[0].cpu())[:n]
    pick = pick_words(names, words, max_words)
    if not pick:
        return {"skipped": f"none of the words {list(words or [])} is in the report"}
    shown = [names[i] for i in pick]
    viz.save_word_attention(path, batch.views[0, 0].cpu(), att[0, pick].cpu(), words=shown, grid=grid,
                            max_words=len(pick))
    return {"file": str(path), "words": shown, "temp_attention": temp}


@torch.inference_mode()
def reconstruction_picture(model, batch, path) -> dict:
    """Write the masked-vision reconstruction PNG of every sample of `batch` (a row each); {"file",
    "scales"} or {"skipped": reason}."""
    if not callable(getattr(model, "reconstruct", None)):
        return {"skipped": "the preset has no masked-vision reconstruction (no `reconstruct`)"}
    model.eval()
    rec = model.reconstruct(batch)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted(rec["scales"])
    first = rec["scales"][scales[0]]["target"].float().cpu()
    masked = first.masked_fill(rec["mask"].cpu(), float("nan"))
    cols = [("image", first), ("masked input", masked)] + [
        (f"reconstruction ×{f}" if f != 1 else "reconstruction", rec["scales"][f]["composite"].float().cpu())
        for f in scales]
    B = first.shape[0]
    fig, axes = plt.subplots(B, len(cols), figsize=(2.4 * len(cols), 2.5 * B), squeeze=False)
    for b in range(B):
        lo, hi = float(first[b].min()), float(first[b].max())
        for c, (title, t) in enumerate(cols):
            ax = axes[b, c]
            ax.imshow(t[b, 0].numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"file": str(path), "scales": [int(f) for f in scales]}


def pictures(model, tokenizer, studies, out, *, study_id: str | None = None, text: str | None = None,
             words: Sequence[str] | None = None, device="cpu", findings: Sequence[str] = COMPETITION_FINDINGS) -> dict:
    """Both pictures for one study of `studies` (one_study_batch's choice) into the folder `out`:
    {"study_id", "attention": {...}, "reconstruction": {...}} (each a file or the reason it was skipped)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch, study = one_study_batch(model, tokenizer, studies, study_id, text, findings)
    batch = batch.to(device)
    name = _safe(study.study_id)
    return {"study_id": study.study_id, "text": text if text is not None else "the study's report",
            "attention": attention_picture(model, tokenizer, batch, out / f"attention_{name}.png", words=words),
            "reconstruction": reconstruction_picture(model, batch, out / f"reconstruction_{name}.png")}
