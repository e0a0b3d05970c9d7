"""The base of every preset: a config, forward(batch) → named losses + "loss", and the encoders' faces
that evaluation and retrieval use.

    out = model(batch)                       # {"global": ..., "local": ..., "loss": weighted sum}
    img = model.encode_image(batch)          # {"global": [B, E], "local": [B, R, E] or absent, ...}
    txt = model.encode_text(batch)           # {"global": [B, E], "words": [B, T, E], "word_lengths": [B], ...}
    model.similarity(img["global"], txt["global"])    # [B_img, B_txt] cosine similarities

Presets call cxrfast's public ops (contrastive_loss, local_contrastive_loss, ...), never the kernels.

Under torch.distributed (torchrun, DDP) each rank's forward returns, for every loss term, W × its share of
the term of the global batch (cxrfast.distributed), so that DDP's gradient averaging gives the gradients of
one process with the whole batch; the mean over ranks of a returned value is that process's value. The
forward is then a collective in training and in evaluation alike (every rank calls it, in step);
encode_image / encode_text in evaluation mode are rank-local.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrfast import distributed
from cxrfast.models.config import PresetConfig

__all__ = ["PresetModel", "weighted_total", "common_dtype"]


def common_dtype(*tensors: torch.Tensor):
    """The tensors cast to one floating dtype for cxrfast's ops (which refuse mixed dtypes): under
    autocast the encoders' outputs come out bf16 or fp16 on one side and fp32 on the other; the 16-bit
    dtype wins (the kernels' fast path), else the widest."""
    dtypes = {t.dtype for t in tensors}
    for low in (torch.bfloat16, torch.float16):
        if low in dtypes:
            return tuple(t.to(low) for t in tensors)
    target = torch.float64 if torch.float64 in dtypes else torch.float32
    return tuple(t.to(target) for t in tensors)


def weighted_total(losses: dict, weights: dict) -> torch.Tensor:
    """Σ weights[name] · losses[name] over the named losses (a missing weight is an error naming it)."""
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"no weight for the loss(es) {missing}; weights: {sorted(weights)}")
    return sum(weights[k] * v for k, v in losses.items())


class PresetModel(nn.Module):
    """Subclasses set CONFIG (their config class) and implement encode_image and encode_text (checked when the
    subclass is defined: evaluation needs only these) and forward (the training losses; without one, calling
    the model raises nn.Module's own error)."""

    CONFIG: type = PresetConfig
    REQUIRED = ("encode_image", "encode_text")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in cls.REQUIRED if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__name__} (a PresetModel) must define {', '.join(missing)}")

    def __init__(self, config: PresetConfig):
        super().__init__()
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"{type(self).__name__} takes a {self.CONFIG.__name__}, got {type(config).__name__}")
        self.config = config

    @staticmethod
    def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale, *,
                         weights=(0.5, 0.5)) -> torch.Tensor:
        """InfoNCE of the global batch over cosine similarities × logit_scale (weights: image→text,
        text→image), the embeddings cast to one dtype (common_dtype): cxrfast.distributed.contrastive_loss —
        under torch.distributed this rank's rows against the gathered batch, W × its share of the global
        loss (so DDP's averaged gradients are the whole batch's), cxrfast.contrastive_loss in one process."""
        x, y = common_dtype(image_emb, text_emb)
        return distributed.contrastive_loss(x, y, logit_scale, weights=weights)

    @staticmethod
    def similarity(image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [B_img, B_txt] (fp32)."""
        return F.normalize(image_global.float(), dim=-1) @ F.normalize(text_global.float(), dim=-1).t()

    def num_parameters(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)

    def parameter_summary(self) -> dict[str, int]:
        """Parameters per top-level child (encoders, projections, heads)."""
        return {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
