"""`lovt`: LoVT, Joint Learning of Localized Representations from Medical Images and Reports (Müller et al.,
ECCV 2022; code github.com/philip-mueller/lovt, configs/experiment/LoVT_100.yaml).

    image  ResNet-50 at 224 px: the 7 × 7 regions of stage 4 (2048-d, row-major) are the image's locals
           y_l; its global y_g is attention pooling over them (an 8-head attention whose query is the mean
           region, LoVT's ``avgpool_attention``), whose head-averaged weights are the regions' local weights
           (nn.MultiheadAttention, as LoVT: these weights are needed, and SDPA does not return them)
    text   BERT's last layer; tokens max-pooled into sentences (special tokens and padding excluded: the
           batch's sentence indices, a scatter, no loop) are the report's locals; its global is attention
           pooling over the sentences (as the image's; the query is the mean of the real sentences)
    heads  per modality two 2-layer projections (Linear → BatchNorm → ReLU → Linear, 2048 hidden) into the
           512-d joint space: locals z_l, global z_g
    align  LoVT's symmetric cross-attention (``attention.py``, ``CrossAttention``): scores
           K(z_a) · K(z_b)ᵀ / √512, one matrix used both ways; values V(z); the attended vectors go through
           an output projection and a BatchNorm: z̃ per region (over the report's sentences) and z̃ per
           sentence (over the image's regions). The losses compare z itself with z̃. Attention goes through
           cxrfast.models.attention (one head of SDPA per direction)
    loss   global: InfoNCE over cosine similarities / 0.1, weights 0.75 (image anchors, "a2b") and 0.25
           (report anchors, "b2a"), no same-modality negatives: cxrfast.contrastive_loss;
           local: cxrfast.lovt_local_loss(attended=z̃), τ = 0.3, region positives within half the grid
           diagonal weighted exp(−d), sentence positives the identity, per-local weights from the pooling
           (detached); total = 1.0 · global + 0.375 · (region_l2att + region_att2l + sentence_l2att +
           sentence_att2l) (LoVT_100's loss_weights)

Returned losses: "global" (0.75 · a2b + 0.25 · b2a), "region_l2att", "region_att2l", "sentence_l2att",
"sentence_att2l" (LoVT's local_a_* / local_b_*), "loss". LoVT's other defaults, kept as config fields: BERT's
embeddings and first 6 layers frozen (ConVIRT's recipe; tiny and small freeze proportionally fewer) when the
text encoder is loaded from a pretrained directory (a random BERT is trained whole: freezing random layers
would fix noise), attention temperature 1. LoVT starts from ImageNet's ResNet-50 and Bio_ClinicalBERT; here the encoders are
random unless EncoderSpec.pretrained names a local Hugging Face directory (nothing is downloaded). Its
training recipe (AdamW 1e-4, weight decay 1e-6, batch 32, cosine schedule,
16-step gradient accumulation) is the trainer's business, not the model's. LoVT trains on image–report
pairs: every sample of a batch must be paired (kind 0) with at least one sentence (lovt_local_loss checks
the sentence counts; image-only or text-only samples are not supported).

Where this differs from the released code, deliberately:
- BatchNorm over sentences counts the real sentences only. LoVT pads each batch's reports to its longest
  report's sentence count and its BatchNorms (the local projection's and the attention output's) include
  those zero-filled slots in their batch statistics, so a report's features depend on how long the other
  reports of its batch are. Here the batch has a fixed number of sentence slots (one per token), and a
  masked BatchNorm takes its statistics over the real sentences: the statistics LoVT would have with no
  padding at all. Regions are never padded: their BatchNorms are plain.
- The report's pooling query is the mean of its real sentences; LoVT's ``GlobalAvgPool`` zero-fills the
  padding and divides by the padded count (the batch's longest report) — the same dependence on the batch.
- Projections are nn.Linear where LoVT's local ones are Conv1d with kernel size 1 (the same map; the
  weights have no trailing unit dimension). Initialisation follows LoVT (Kaiming-normal, fan-out, zero
  biases; nn.MultiheadAttention's own for the pooling).
- Under torch.distributed every BatchNorm (the ResNet's, the projections', the attention output's) takes
  its training statistics over the global batch (cxrfast.models.common.batch_norm: SyncBatchNorm's
  semantics, on any backend), so W ranks train as one process with the whole batch. LoVT's released
  training runs on one GPU (configs/base_config.yaml: gpus [0]; Lightning with num_processes=1, no
  sync_batchnorm): its BatchNorms see the whole batch, as here.
- The region positives' distance threshold is decided on exact integer squared distances (see
  cxrfast.reference.lovt); LoVT's float32 cdist could drop a pair lying exactly on the boundary. No pair
  does on LoVT's 7 × 7 grid or the tiny preset's 3 × 3 one.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

import cxrfast
from cxrfast import distributed
from cxrfast.data.batch import Batch
from cxrfast.models.attention import attention
from cxrfast.models.base import PresetModel, common_dtype, weighted_total
from cxrfast.models.common import batch_norm, masked_mean, pool_sentences
from cxrfast.models.config import EncoderSpec, PresetConfig
from cxrfast.models.encoders import BERTS, RESNETS, BertEncoder, ResNetEncoder
from cxrfast.reference.lovt import LOSS_NAMES as LOCAL_NAMES

__all__ = ["LovtConfig", "LovtModel", "MaskedBatchNorm1d", "LovtProjection", "LovtCrossAttention", "LOCAL_NAMES",
           "MODEL"]


@dataclasses.dataclass
class LovtConfig(PresetConfig):
    PRESET = "lovt"
    image_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("resnet", RESNETS["resnet50"]))
    text_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("bert", BERTS["base"]))
    image_size: int = 224            # 7 × 7 regions from stage 4 (region_feature_layer: conv5)
    max_length: int = 512            # bioclinicalbert_sentatt.yaml
    proj_dim: int = 512              # d_z = d_zg
    proj_hidden: int = 2048          # d_hidden
    pool_heads: int = 8              # GlobalAvgAttentionAggregator's MultiheadAttention
    attention_temperature: float = 1.0
    attention_backend: str = "sdpa"  # cxrfast.models.attention's backend for the cross-attention
    temp_global: float = 0.1         # global_contrastive.yaml
    global_weights: tuple = (0.75, 0.25)   # global_a2b (image anchors), global_b2a (report anchors)
    temp_local: float = 0.3          # scan_local / report_sent_intra_contrastive.yaml
    distance_threshold: float = 0.5  # relative to the grid diagonal
    smooth_lambda: float = 1.0
    local_weights_from_pooling: bool = True   # l_weights_a/b: from_aggregation, l_weights_stop_grad
    global_weight: float = 1.0
    local_weight: float = 0.375      # each of the four local parts
    freeze_text_embeddings: bool = True
    freeze_text_layers: int = 6

    @classmethod
    def sizes(cls):
        return {
            "paper": {},
            "small": dict(image_encoder=EncoderSpec("resnet", RESNETS["resnet18"]),
                          text_encoder=EncoderSpec("bert", BERTS["small"]), proj_dim=256, proj_hidden=512,
                          vocab_size=8000, max_length=64, freeze_text_layers=2),
            # 72 px → 3 × 3 regions (no distance on the threshold's boundary), 2 BERT layers, the first frozen
            "tiny": dict(image_encoder=EncoderSpec("resnet", RESNETS["resnet-tiny"]),
                         text_encoder=EncoderSpec("bert", BERTS["tiny"]), proj_dim=16, proj_hidden=32, pool_heads=2,
                         image_size=72, vocab_size=1000, max_length=40, freeze_text_layers=1),
        }


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the positions of x [..., C] where mask [...] is True (all of them when mask is None).

    Training: normalised with the mean and (biased) variance of the selected positions, running statistics
    updated with their unbiased variance, as nn.BatchNorm1d over just those rows would (the same
    parameters and buffers, so state dicts are interchangeable); under torch.distributed the statistics are
    those of the selected positions of every rank (synchronised: one process with the whole batch).
    Evaluation: the running statistics. See cxrfast.models.common.batch_norm."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return batch_norm(self, x, mask)


class LovtProjection(nn.Module):
    """LoVT's projection head (``fc.py``: MLP / SequenceMLP with norm='batch', norm_before_act=True):
    Linear(d_in, hidden) → BatchNorm → ReLU → Linear(hidden, d_out), on [N, d_in] or [B, L, d_in] (the
    BatchNorm over all B·L positions, or over those where mask [B, L] is True)."""

    def __init__(self, d_in: int, d_out: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.norm = MaskedBatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.fc2.weight, mode="fan_out", nonlinearity="linear")
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc2(F.relu(self.norm(self.fc1(x), mask)))


class LovtCrossAttention(nn.Module):
    """LoVT's alignment model (``attention.py``: ``CrossAttention(symmetric=True)`` with projected keys,
    values and outputs and a BatchNorm, BiModalModelConfig's defaults).

    forward(regions z_a [B, R, D], sentences z_b [B, M, D], sentence_mask [B, M]) →
    (z̃ per region [B, R, D], z̃ per sentence [B, M, D], zero at padded sentences), with s = K(z_a) K(z_b)ᵀ /
    (√D · τ):  z̃_a = BN(O(softmax_m(s, padded m masked) V(z_b))),  z̃_b = BN(O(softmax_r(sᵀ) V(z_a)))."""

    def __init__(self, d: int, temperature: float = 1.0, backend: str = "sdpa"):
        super().__init__()
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)
        self.norm = MaskedBatchNorm1d(d)
        self.temperature = float(temperature)
        self.backend = backend
        for layer in (self.key, self.value, self.output):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="linear")
            nn.init.zeros_(layer.bias)

    def forward(self, regions: torch.Tensor, sentences: torch.Tensor, sentence_mask: torch.Tensor):
        k_a, k_b = self.key(regions)[:, None], self.key(sentences)[:, None]  # one head: [B, 1, N, D]
        v_a, v_b = self.value(regions)[:, None], self.value(sentences)[:, None]
        # SDPA scales by 1/√D; a temperature divides the queries (the scores are bilinear in q and k)
        q_a, q_b = (k_a, k_b) if self.temperature == 1.0 else (k_a / self.temperature, k_b / self.temperature)
        to_regions = attention(q_a, k_b, v_b, key_padding=sentence_mask, backend=self.backend)[:, 0]
        to_sentences = attention(q_b, k_a, v_a, backend=self.backend)[:, 0]
        to_sentences = to_sentences * sentence_mask[..., None].to(to_sentences.dtype)  # LoVT: probs · mask
        # LoVT applies the one BatchNorm to each direction in turn (b2a first): two sets of batch statistics
        to_regions = self.norm(self.output(to_regions))
        to_sentences = self.norm(self.output(to_sentences), sentence_mask)
        return to_regions, to_sentences.masked_fill(~sentence_mask[..., None], 0.0)


class LovtModel(PresetModel):
    CONFIG = LovtConfig

    def __init__(self, config: LovtConfig):
        super().__init__(config)
        c = config
        self.image_encoder = ResNetEncoder(c.image_encoder)
        self.text_encoder = BertEncoder(c.text_encoder, c.vocab_size, c.max_length)
        n_layers = self.text_encoder.model.config.num_hidden_layers
        if not 0 <= c.freeze_text_layers <= n_layers:
            raise ValueError(f"LovtConfig.freeze_text_layers must be 0..{n_layers} (the BERT's layers), "
                             f"got {c.freeze_text_layers}")
        d_img, d_txt = self.image_encoder.channels[-1], self.text_encoder.hidden
        for name, d in (("image", d_img), ("text", d_txt)):
            if d % c.pool_heads:
                raise ValueError(f"LovtConfig.pool_heads ({c.pool_heads}) must divide the {name} features' "
                                 f"width {d}")
        self.image_pool = nn.MultiheadAttention(d_img, c.pool_heads, batch_first=True)
        self.text_pool = nn.MultiheadAttention(d_txt, c.pool_heads, batch_first=True)
        self.image_local = LovtProjection(d_img, c.proj_dim, c.proj_hidden)
        self.image_global = LovtProjection(d_img, c.proj_dim, c.proj_hidden)
        self.text_local = LovtProjection(d_txt, c.proj_dim, c.proj_hidden)
        self.text_global = LovtProjection(d_txt, c.proj_dim, c.proj_hidden)
        self.attention = LovtCrossAttention(c.proj_dim, c.attention_temperature, c.attention_backend)
        # ConVIRT's and LoVT's freezing keeps *pretrained* lower layers as they are; freezing randomly initialised
        # layers would only fix noise in place, so it applies when the text encoder is loaded from a directory
        if c.text_encoder.pretrained:
            bert = self.text_encoder.model
            frozen = (([bert.embeddings] if c.freeze_text_embeddings else [])
                      + list(bert.encoder.layer[:c.freeze_text_layers]))
            for module in frozen:
                module.requires_grad_(False)

    @staticmethod
    def _pool(pool: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None):
        """LoVT's avgpool_attention: the mean local as the query of a multi-head attention over the locals →
        (global [B, d], head-averaged attention weights [B, N], 0 at padding)."""
        query = x.mean(1) if mask is None else masked_mean(x, mask)
        out, weights = pool(query[:, None], x, x, key_padding_mask=None if mask is None else ~mask,
                            need_weights=True, average_attn_weights=True)
        return out[:, 0], weights[:, 0]

    def encode_image(self, batch: Batch) -> dict:
        """{"global": z_g [B, E], "local": z_l [B, R, E], "grid": (h, w), "weights": pooling weights [B, R]}
        of each sample's first view."""
        maps, _ = self.image_encoder(batch.views[:, 0])
        y = maps[-1]
        h, w = y.shape[-2:]
        regions = y.flatten(2).transpose(1, 2)  # [B, h·w, C], row-major
        pooled, weights = self._pool(self.image_pool, regions, None)
        return {"global": self.image_global(pooled), "local": self.image_local(regions), "grid": (h, w),
                "weights": weights}

    def encode_text(self, batch: Batch) -> dict:
        """{"global": z_g [B, E], "sentences": z_l [B, T, E] (zero past each report's sentences),
        "sentence_lengths": [B], "sentence_mask": [B, T], "weights": pooling weights [B, T]}."""
        tokens = self.text_encoder(batch.input_ids, batch.attention_mask)[-1]
        sentences, lengths, mask = pool_sentences(tokens, batch.sentence_index, "max")
        pooled, weights = self._pool(self.text_pool, sentences, mask)
        local = self.text_local(sentences, mask).masked_fill(~mask[..., None], 0.0)
        return {"global": self.text_global(pooled), "sentences": local, "sentence_lengths": lengths,
                "sentence_mask": mask, "weights": weights}

    def forward(self, batch: Batch) -> dict:
        c = self.config
        img, txt = self.encode_image(batch), self.encode_text(batch)
        to_regions, to_sentences = self.attention(img["local"], txt["sentences"], txt["sentence_mask"])
        regions, sentences, to_regions, to_sentences = common_dtype(img["local"], txt["sentences"], to_regions,
                                                                    to_sentences)
        weights = {}
        if c.local_weights_from_pooling:  # LoVT: l_weights_stop_grad
            weights = dict(region_weights=img["weights"].detach().to(regions.dtype),
                           sentence_weights=txt["weights"].detach().to(regions.dtype))
        local = cxrfast.lovt_local_loss(regions, sentences, txt["sentence_lengths"], grid=img["grid"],
                                        temperature=c.temp_local, distance_threshold=c.distance_threshold,
                                        smooth_lambda=c.smooth_lambda, attended=(to_regions, to_sentences),
                                        reduction="sum", **weights)
        losses = {"global": self.contrastive_loss(img["global"], txt["global"], 1.0 / c.temp_global,
                                                  weights=c.global_weights)}
        # LoVT averages the local losses over the batch's samples: over the global batch, W × this rank's share
        means = distributed.global_mean(torch.stack([local[name] for name in LOCAL_NAMES]), regions.shape[0])
        losses.update(zip(LOCAL_NAMES, means.unbind()))
        losses["loss"] = weighted_total(losses, {"global": c.global_weight,
                                                 **{name: c.local_weight for name in LOCAL_NAMES}})
        return losses


MODEL = LovtModel
