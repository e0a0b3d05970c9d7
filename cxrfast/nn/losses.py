"""Loss modules: forward is one call into cxrfast.ops."""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrfast.ops import contrastive_loss, local_contrastive_loss, local_triplet_loss, triplet_loss


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE (CLIP / ConVIRT / LoVT global loss) with an optional learnable temperature.

    Args:
        logit_scale: initial multiplier of the cosine similarities (CLIP: 1/0.07; ConVIRT/LoVT τ=0.1 → 10).
        learnable: learn log(logit_scale) as a parameter (CLIP). Otherwise the scale is a fixed buffer.
        max_logit_scale: the multiplier never exceeds this (CLIP: 100). As in CLIP / open_clip, the
            log-parameter itself is clamped in place (here at the start of each forward), outside the
            graph: the gradient keeps flowing at the bound, so an optimizer step past it is undone, not
            frozen.
        normalize, weights, label_smoothing, impl: as in :func:`cxrfast.contrastive_loss`.

    forward(image_emb [B, D], text_emb [B, D], groups=None) → 0-dim loss.

    Example::

        loss_fn = cxrfast.nn.ContrastiveLoss(logit_scale=1 / 0.07, learnable=True)
        loss = loss_fn(img, txt)   # ≡ CLIP's loss, without the B×B logits
    """

    def __init__(self, logit_scale: float = 1 / 0.07, *, learnable: bool = True, max_logit_scale: float = 100.0,
                 normalize: bool = True, weights=(0.5, 0.5), label_smoothing: float = 0.0, impl: str = "auto"):
        super().__init__()
        if logit_scale <= 0 or max_logit_scale <= 0:
            raise ValueError(f"ContrastiveLoss: `logit_scale` and `max_logit_scale` must be > 0, "
                             f"got {logit_scale} and {max_logit_scale}")
        log_scale = torch.tensor(math.log(logit_scale), dtype=torch.float32)
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)
        self.max_log_logit_scale = math.log(max_logit_scale)
        self.normalize, self.weights = normalize, tuple(weights)
        self.label_smoothing, self.impl = label_smoothing, impl

    @property
    def logit_scale(self) -> torch.Tensor:
        """The current multiplier, exp(log_logit_scale) (≤ max_logit_scale after the clamp)."""
        return self.log_logit_scale.exp()

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor | None = None):
        with torch.no_grad():
            self.log_logit_scale.clamp_(max=self.max_log_logit_scale)
        return contrastive_loss(image_emb, text_emb, self.logit_scale, normalize=self.normalize,
                                weights=self.weights, label_smoothing=self.label_smoothing,
                                groups=groups, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"logit_scale={float(self.logit_scale):.4g}, learnable={isinstance(self.log_logit_scale, nn.Parameter)}, "
                f"weights={self.weights}, label_smoothing={self.label_smoothing}, impl={self.impl!r}")


class TripletLoss(nn.Module):
    """Bidirectional hinge ranking loss (VSE++ max violation; JoImTeRNet: margin=0.5, cosine).

    forward(image_emb [B, D], text_emb [B, D]) → 0-dim loss; arguments as in :func:`cxrfast.triplet_loss`.
    """

    def __init__(self, margin: float = 0.2, *, negatives: str = "hardest", reduction: str = "sum",
                 distance: str = "cosine", impl: str = "auto"):
        super().__init__()
        self.margin, self.negatives, self.reduction = margin, negatives, reduction
        self.distance, self.impl = distance, impl

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor):
        return triplet_loss(image_emb, text_emb, margin=self.margin, negatives=self.negatives,
                            reduction=self.reduction, distance=self.distance, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, negatives={self.negatives!r}, reduction={self.reduction!r}, "
                f"distance={self.distance!r}, impl={self.impl!r}")


class LocalContrastiveLoss(nn.Module):
    """GLoRIA / Global-Local local loss over word–region attention.

    forward(regions [B, R, D], words [B, L, D], word_lengths [B]) → 0-dim loss; the hyper-parameters are
    those of :func:`cxrfast.local_contrastive_loss` (GLoRIA: temp_attention 4, temp_aggregate 5,
    temp_logits 10, aggregate "sum", variant "gloria", weights (1, 1)).
    """

    def __init__(self, *, temp_attention: float = 4.0, temp_aggregate: float = 5.0, temp_logits: float = 10.0,
                 aggregate: str = "sum", variant: str = "gloria", weights=(1.0, 1.0), impl: str = "auto"):
        super().__init__()
        self.kwargs = dict(temp_attention=temp_attention, temp_aggregate=temp_aggregate, temp_logits=temp_logits,
                           aggregate=aggregate, variant=variant, weights=tuple(weights), impl=impl)

    def forward(self, regions: torch.Tensor, words: torch.Tensor, word_lengths):
        return local_contrastive_loss(regions, words, word_lengths, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


class LocalTripletLoss(nn.Module):
    """JoImTeRNet's word-level ranking loss on the word–region similarity S.

    forward(regions [B, R, D], words [B, L, D], word_lengths [B]) → 0-dim loss; arguments as in
    :func:`cxrfast.local_triplet_loss`.
    """

    def __init__(self, margin: float = 0.2, *, negatives: str = "hardest", reduction: str = "sum",
                 temp_attention: float = 4.0, temp_aggregate: float = 5.0, aggregate: str = "sum",
                 variant: str = "gloria", impl: str = "auto"):
        super().__init__()
        self.kwargs = dict(margin=margin, negatives=negatives, reduction=reduction, temp_attention=temp_attention,
                           temp_aggregate=temp_aggregate, aggregate=aggregate, variant=variant, impl=impl)

    def forward(self, regions: torch.Tensor, words: torch.Tensor, word_lengths):
        return local_triplet_loss(regions, words, word_lengths, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
