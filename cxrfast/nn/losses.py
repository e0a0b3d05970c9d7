"""Loss modules: they hold the hyper-parameters (checked when the module is built) and forward is one call
into cxrfast.ops."""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrfast.ops import _dispatch, _validate
from cxrfast.ops import lovt as _lovt
from cxrfast.ops import contrastive_loss, local_contrastive_loss, local_triplet_loss, lovt_local_loss, triplet_loss
from cxrfast.ops.contrastive import SCALE_MEANING
from cxrfast.reference.contrastive import REDUCTIONS
from cxrfast.reference.triplet import REDUCTIONS as TRIPLET_REDUCTIONS

__all__ = ["ContrastiveLoss", "LocalContrastiveLoss", "LocalTripletLoss", "LovtLocalLoss", "TripletLoss"]

DEFAULT_MAX_LOGIT_SCALE = 100.0  # CLIP's bound on its learnable multiplier


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE (CLIP / ConVIRT / LoVT global loss) with a fixed or a learnable temperature.

    Args:
        logit_scale: the multiplier of the cosine similarities, 1/τ (default 10: ConVIRT / LoVT's τ = 0.1;
            CLIP starts its learnable one at 1/0.07).
        learnable: False (default): the scale is a fixed buffer, used exactly as given and never changed
            or clamped. True (CLIP): log(logit_scale) is a parameter (`log_logit_scale`), clamped in place
            to log(max_logit_scale) at the start of each forward, outside the graph (CLIP's
            ``logit_scale.clamp_(0, ln 100)``): the gradient keeps flowing at the bound, so an optimizer
            step past it is undone, not frozen. The module's parameters must then reach the optimizer.
        max_logit_scale: the bound of a learnable scale (default 100, CLIP's); an initial logit_scale above it
            is refused. Giving it with learnable=False is an error (a fixed scale has no bound).
        normalize, weights, label_smoothing, reduction, impl: as in :func:`cxrfast.contrastive_loss`.

    Why the default is fixed: four of the five supported papers (ConVIRT, GLoRIA, LoVT, Global-Local) use a
    fixed temperature; a learnable one only learns when the module's parameters are given to the optimizer,
    and is clamped, so the value passed is not the value used. Opt in with learnable=True.

    forward(image_emb [B, D], text_emb [B, D], groups=None) → 0-dim loss ([B] for reduction="none").

    Example::

        loss_fn = cxrfast.nn.ContrastiveLoss(logit_scale=1 / 0.07, learnable=True)   # CLIP
        loss = loss_fn(img, txt)   # ≡ CLIP's loss, without the B×B logits
    """

    def __init__(self, logit_scale: float = 10.0, *, learnable: bool = False, max_logit_scale: float | None = None,
                 normalize: bool = True, weights=(0.5, 0.5), label_smoothing: float = 0.0, reduction: str = "mean",
                 impl: str = "auto"):
        super().__init__()
        op = type(self).__name__
        scale = _validate.finite_number(op, "logit_scale", logit_scale)
        if not scale > 0:
            raise ValueError(f"{op}: `logit_scale` must be > 0 ({SCALE_MEANING}), got {scale}")
        if learnable:
            bound = DEFAULT_MAX_LOGIT_SCALE if max_logit_scale is None else _validate.positive_number(
                op, "max_logit_scale", max_logit_scale)
            if scale > bound:
                raise ValueError(f"{op}: `logit_scale` {scale} exceeds `max_logit_scale` {bound}: a learnable scale "
                                 "is clamped to its bound, so it would not start where it was asked to "
                                 "(raise max_logit_scale, or pass learnable=False for a fixed scale)")
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))
            self.max_log_logit_scale = math.log(bound)
        else:
            if max_logit_scale is not None:
                raise ValueError(f"{op}: `max_logit_scale` bounds a learnable scale; with learnable=False the scale "
                                 f"{scale} is used as given (drop max_logit_scale, or pass learnable=True)")
            self.register_buffer("fixed_logit_scale", torch.tensor(scale, dtype=torch.float32))
            self.max_log_logit_scale = None
        self.learnable = bool(learnable)
        self.normalize, self.weights = normalize, _validate.weights_arg(op, weights)
        self.label_smoothing = _validate.probability(op, "label_smoothing", label_smoothing)
        self.reduction = _validate.choice(op, "reduction", reduction, REDUCTIONS)
        self.impl = _validate.choice(op, "impl", impl, _dispatch.IMPLS)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The multiplier used: the fixed buffer, or exp(log_logit_scale) (≤ max_logit_scale after a forward)."""
        return self.log_logit_scale.exp() if self.learnable else self.fixed_logit_scale

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor | None = None):
        if self.learnable:
            with torch.no_grad():
                self.log_logit_scale.clamp_(max=self.max_log_logit_scale)
        return contrastive_loss(image_emb, text_emb, self.logit_scale, normalize=self.normalize,
                                weights=self.weights, label_smoothing=self.label_smoothing, groups=groups,
                                reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        bound = f", max_logit_scale={math.exp(self.max_log_logit_scale):.4g}" if self.learnable else ""
        return (f"logit_scale={self.logit_scale.detach().item():.4g}, learnable={self.learnable}{bound}, "
                f"weights={self.weights}, label_smoothing={self.label_smoothing}, reduction={self.reduction!r}, "
                f"impl={self.impl!r}")


def _generator(op: str, generator, negatives: str):
    """The triplet modules' generator: used with negatives="random" (one draw per call), refused otherwise."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{op}: `generator` must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and negatives != "random":
        raise ValueError(f"{op}: `generator` is only used with negatives='random', got negatives={negatives!r}")
    return generator


class TripletLoss(nn.Module):
    """Bidirectional hinge ranking loss (VSE++ max violation; JoImTeRNet: margin=0.5, cosine, random negatives).
    negatives="random" draws one random other sample per anchor on every call, from `generator` (None:
    torch's default generator); per-sample indices are a functional-only argument (cxrfast.triplet_loss).

    forward(image_emb [B, D], text_emb [B, D]) → 0-dim loss ([B] for reduction="none"); arguments as in
    :func:`cxrfast.triplet_loss`.
    """

    def __init__(self, margin: float = 0.2, *, negatives: str = "hardest", reduction: str = "sum",
                 distance: str = "cosine", impl: str = "auto", generator: torch.Generator | None = None):
        super().__init__()
        op = type(self).__name__
        self.margin = _validate.finite_number(op, "margin", margin)
        self.negatives = _validate.choice(op, "negatives", negatives, ("hardest", "all", "random"))
        self.reduction = _validate.choice(op, "reduction", reduction, TRIPLET_REDUCTIONS)
        self.distance = _validate.choice(op, "distance", distance, ("cosine", "dot"))
        self.impl = _validate.choice(op, "impl", impl, _dispatch.IMPLS)
        self.generator = _generator(op, generator, self.negatives)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor):
        return triplet_loss(image_emb, text_emb, margin=self.margin, negatives=self.negatives,
                            reduction=self.reduction, distance=self.distance, impl=self.impl,
                            generator=self.generator)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, negatives={self.negatives!r}, reduction={self.reduction!r}, "
                f"distance={self.distance!r}, impl={self.impl!r}")


class LocalContrastiveLoss(nn.Module):
    """GLoRIA / Global-Local local loss over word–region attention.

    forward(regions [B, R, D], words [B, L, D], word_lengths [B]) → 0-dim loss ([B] for reduction="none"); the
    hyper-parameters are those of :func:`cxrfast.local_contrastive_loss` (GLoRIA: temp_attention 4,
    temp_aggregate 5, temp_logits 10, aggregate "sum", variant "gloria", weights (1, 1)).
    """

    def __init__(self, *, temp_attention: float = 4.0, temp_aggregate: float = 5.0, temp_logits: float = 10.0,
                 aggregate: str = "sum", variant: str = "gloria", weights=(1.0, 1.0), reduction: str = "mean",
                 impl: str = "auto"):
        super().__init__()
        op = type(self).__name__
        self.kwargs = dict(temp_attention=_validate.positive_number(op, "temp_attention", temp_attention),
                           temp_aggregate=_validate.positive_number(op, "temp_aggregate", temp_aggregate),
                           temp_logits=_validate.positive_number(op, "temp_logits", temp_logits),
                           aggregate=_validate.choice(op, "aggregate", aggregate, ("sum", "mean")),
                           variant=_validate.choice(op, "variant", variant, ("gloria", "single")),
                           weights=_validate.weights_arg(op, weights),
                           reduction=_validate.choice(op, "reduction", reduction, REDUCTIONS),
                           impl=_validate.choice(op, "impl", impl, _dispatch.IMPLS))

    def forward(self, regions: torch.Tensor, words: torch.Tensor, word_lengths):
        return local_contrastive_loss(regions, words, word_lengths, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


class LocalTripletLoss(nn.Module):
    """JoImTeRNet's word-level ranking loss on the word–region similarity S.

    forward(regions [B, R, D], words [B, L, D], word_lengths [B]) → 0-dim loss ([B] for reduction="none");
    arguments as in :func:`cxrfast.local_triplet_loss`.
    """

    def __init__(self, margin: float = 0.2, *, negatives: str = "hardest", reduction: str = "sum",
                 temp_attention: float = 4.0, temp_aggregate: float = 5.0, aggregate: str = "sum",
                 variant: str = "gloria", impl: str = "auto", generator: torch.Generator | None = None):
        super().__init__()
        op = type(self).__name__
        self.kwargs = dict(margin=_validate.finite_number(op, "margin", margin),
                           negatives=_validate.choice(op, "negatives", negatives, ("hardest", "all", "random")),
                           reduction=_validate.choice(op, "reduction", reduction, TRIPLET_REDUCTIONS),
                           temp_attention=_validate.positive_number(op, "temp_attention", temp_attention),
                           temp_aggregate=_validate.positive_number(op, "temp_aggregate", temp_aggregate),
                           aggregate=_validate.choice(op, "aggregate", aggregate, ("sum", "mean")),
                           variant=_validate.choice(op, "variant", variant, ("gloria", "single")),
                           impl=_validate.choice(op, "impl", impl, _dispatch.IMPLS))
        self.generator = _generator(op, generator, self.kwargs["negatives"])

    def forward(self, regions: torch.Tensor, words: torch.Tensor, word_lengths):
        return local_triplet_loss(regions, words, word_lengths, generator=self.generator, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


class LovtLocalLoss(nn.Module):
    """LoVT's intra-sample local losses (regions ↔ sentences), :func:`cxrfast.lovt_local_loss`.

    forward(regions [B, H·W, D], sentences [B, M, D], sentence_lengths [B], region_weights=None,
    sentence_weights=None, attended=None) → {"region_l2att", "region_att2l", "sentence_l2att", "sentence_att2l", "loss"}
    (0-dim each; [B] each for reduction="none"). The per-call weights are LoVT's attention-pooling weights
    (detach them first, as LoVT does). LoVT_100: grid=(7, 7) and the defaults, total += 1.5 · out["loss"].
    """

    def __init__(self, *, grid: tuple[int, int], temperature: float = _lovt.TEMPERATURE,
                 attention_temperature: float = _lovt.ATTENTION_TEMPERATURE,
                 distance_threshold: float = _lovt.DISTANCE_THRESHOLD, smooth_lambda: float = _lovt.SMOOTH_LAMBDA,
                 reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        self.kwargs = dict(grid=_lovt.grid_pair(grid),
                           **_lovt.hyper_parameters(temperature, attention_temperature, distance_threshold,
                                                    smooth_lambda),
                           reduction=_validate.choice(_lovt.OP, "reduction", reduction, REDUCTIONS),
                           impl=_validate.choice(_lovt.OP, "impl", impl, _lovt.IMPLS))

    def forward(self, regions: torch.Tensor, sentences: torch.Tensor, sentence_lengths: torch.Tensor,
                region_weights: torch.Tensor | None = None, sentence_weights: torch.Tensor | None = None,
                attended=None):
        return lovt_local_loss(regions, sentences, sentence_lengths, region_weights=region_weights,
                               sentence_weights=sentence_weights, attended=attended, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
