"""The presets by name: create_model, list_presets, random_batch.

    model = create_model("globallocal", size="tiny")            # paper's defaults at the tiny size
    model = create_model("lovt", size="small", proj_dim=256)    # overrides by config field
    batch = random_batch(model, batch_size=4, seed=0)           # a valid random Batch for it
    out = model(batch); out["loss"].backward()
"""

from __future__ import annotations

import importlib

import torch

from cxrfast.data.batch import Batch
from cxrfast.models.config import PresetConfig

__all__ = ["PRESETS", "create_model", "list_presets", "random_batch", "model_class"]

# name → (module, one line)
PRESETS = {
    "globallocal": ("cxrfast.models.globallocal",
                    "Cross-Modal Global-Local (GLoRIA-style): ResNet-50 + BERT, global InfoNCE + word-region loss"),
    "joimternet": ("cxrfast.models.joimternet",
                   "JoImTeRNet: word-region alignment, cross-entropy + triplet matching, MLM"),
    "lovt": ("cxrfast.models.lovt", "LoVT: instance InfoNCE + local region/sentence contrast"),
    "mixed": ("cxrfast.models.mixed", "Mixed-data pre-training: single-stream transformer, MLM + multi-scale MVM"),
    "refers": ("cxrfast.models.refers", "REFERS: multi-view ViT fusion, report generation + contrastive"),
}


def _module(preset: str):
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    return importlib.import_module(PRESETS[preset][0])


def _load_presets() -> None:
    """Import every preset module that exists (they register their configs)."""
    for name in PRESETS:
        try:
            _module(name)
        except ModuleNotFoundError as exc:
            if exc.name != PRESETS[name][0]:
                raise


def model_class(preset: str) -> type:
    return _module(preset).MODEL


def list_presets() -> dict[str, str]:
    """Preset name → one-line description."""
    return {name: line for name, (_, line) in PRESETS.items()}


def create_model(preset: str, size: str = "paper", *, config: PresetConfig | None = None, **overrides):
    """The preset's model at `size` ("paper", "small", "tiny") with config `overrides` (or an explicit
    `config`, e.g. one loaded from a checkpoint)."""
    cls = model_class(preset)
    if config is None:
        config = cls.CONFIG.for_size(size, **overrides)
    elif overrides:
        raise TypeError("create_model: pass either config= or overrides, not both")
    return cls(config)


def random_batch(model_or_config, batch_size: int, seed: int = 0, device=None, kinds=None) -> Batch:
    """A valid random Batch for a model (or a config): random views, random reports with word pieces,
    several sentences, labels. kinds: per-sample "paired" / "image" / "text" (default: all paired, or a mix
    for presets that train on mixed data, config.mixed_kinds)."""
    cfg = model_or_config.config if hasattr(model_or_config, "config") else model_or_config
    if device is None and hasattr(model_or_config, "parameters"):
        device = next(model_or_config.parameters()).device
    g = torch.Generator().manual_seed(seed)
    B, V, S, T = batch_size, cfg.max_views, cfg.image_size, cfg.max_length
    if batch_size < 1:
        raise ValueError(f"random_batch: batch_size must be >= 1, got {batch_size}")
    if kinds is None:
        if getattr(cfg, "mixed_kinds", False):
            codes = torch.randint(0, 3, (B,), generator=g)
            codes[0] = 0
        else:
            codes = torch.zeros(B, dtype=torch.int64)
    else:
        codes = torch.tensor([{"paired": 0, "image": 1, "text": 2}[k] for k in kinds], dtype=torch.int64)
    views = torch.randn(B, V, 1, S, S, generator=g)
    view_mask = torch.zeros(B, V, dtype=torch.bool)
    view_mask[:, 0] = True
    if V > 1:
        view_mask[:, 1:] = torch.rand(B, V - 1, generator=g) < 0.6
    view_mask[codes == 2] = False
    views = views * view_mask[:, :, None, None, None]
    special = max(cfg.pad_id, cfg.cls_id, cfg.sep_id, cfg.mask_id) + 1
    ids = torch.full((B, T), cfg.pad_id, dtype=torch.int64)
    attn = torch.zeros(B, T, dtype=torch.bool)
    word = torch.full((B, T), -1, dtype=torch.int64)
    sent = torch.full((B, T), -1, dtype=torch.int64)
    n_tok = torch.randint(min(4, T - 2), T - 1, (B,), generator=g)
    for b in range(B):  # building test data: a loop over samples here is fine (not in a model's forward)
        if codes[b] == 1:
            continue
        n = int(n_tok[b])
        ids[b, 0], ids[b, n + 1] = cfg.cls_id, cfg.sep_id
        ids[b, 1:n + 1] = torch.randint(special, cfg.vocab_size, (n,), generator=g)
        attn[b, :n + 2] = True
        starts = torch.rand(n, generator=g) < 0.75
        starts[0] = True
        w = torch.cumsum(starts.long(), 0) - 1
        word[b, 1:n + 1] = w
        sent[b, 1:n + 1] = w // 6
    labels = (torch.rand(B, len(cfg.findings), generator=g) < 0.3).float()
    batch = Batch(views=views, view_mask=view_mask, input_ids=ids, attention_mask=attn, word_index=word,
                  sentence_index=sent, kind=codes, labels=labels, study_ids=[f"random{b}" for b in range(B)],
                  findings=tuple(cfg.findings))
    return batch.to(device) if device is not None else batch
