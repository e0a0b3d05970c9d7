"""`mixed`: Self-supervised Image-text Pre-training With Mixed Data In Chest X-rays (Wang, Xu, Tam, Yang, Xu,
NVIDIA, 2021; arXiv 2103.16022).

One single-stream transformer reads image patches and report tokens together; it is trained by masked
language modelling (MLM) and multi-scale masked vision modelling (MVM: masked patches are regenerated at
several scales), over batches that mix paired, image-only and text-only studies. Each loss is computed only
where its input exists: MLM on the samples with a report, MVM on the samples with an image.

    sequence  [IMG] p_1 … p_N  [CLS] w_1 … [SEP] pad …       (per sample; N = (image_size / patch)²)
    image     the first view [B, 1, H, W] → 16 × 16 patches (a convolution, one channel) → D; a learned
              [IMG] token first; learned positions (1 + N); masked patches replaced by a learned
              [MASK] embedding before the positions are added (BEiT / SimMIM)
    text      word + learned position embeddings, LayerNorm (BERT); the report's own [CLS] first
    both      + a learned modality embedding (ViLT's token-type embedding: 0 image, 1 text)
    encoder   L pre-LayerNorm blocks (ViT / ViLT): x += Attn(LN(x)); x += MLP(LN(x)) (GELU), final LN.
              Attention is cxrfast.models.attention.attention ("sdpa" or "xformers", config
              attention_backend) with a key-padding mask: an absent modality is padding (a text-only sample's
              image positions, an image-only sample's text positions), so it contributes nothing
    MLM head  BERT's: dense → GELU → LayerNorm → decoder tied to the word embeddings + a bias
    MVM heads one linear layer per scale f (SimMIM's linear head): a patch's output state → the patch's
              pixels average-pooled by f, (P/f)² values; scales (1, 2, 4) at P = 16 predict 16², 8² and 4²
    loss      mlm = mean cross-entropy over the masked tokens of the batch's reports;
              mvm_x{f} = mean |prediction − pooled pixels| (L1, SimMIM) over the masked patches of the
              batch's images; mvm = the mean over the scales;
              loss = mlm_weight · mlm + mvm_weight · mvm  (1.0 / 1.0). The dict also holds each mvm_x{f}.
    features  encode_image: the stream run on the image part alone → "global" = the [IMG] output,
              "local" = the patch outputs; encode_text: the stream run on the report alone → "global" =
              the [CLS] output, "tokens" = every token's output. (No contrastive head: the paper's
              objectives are generative; these are the features retrieval and zero-shot use.)

Sizes: "paper" is ViT-B/16 at 224 px (D 768, 12 layers, 12 heads, MLP 3072; 196 patches) with BERT-base's
vocabulary (30522) and 128 report tokens; 109.8 M parameters, of which the image side (patch embedding,
[IMG], positions, blocks, final LayerNorm, [MASK]) is transformers' ViTModel(vit-b16, one channel, no pooler)
+ the [MASK] vector. "small": 128 px, D 256, 4 layers; "tiny": 32 px, patch 8, D 32, 2 layers.

What the paper states (abstract and introduction; no released code was found, and its method section could
not be consulted while writing this): a transformer-based framework that jointly learns image and text
representations; masked language modelling; multi-scale masked vision modelling as a self-supervised task of
image patch regeneration; training on paired data, unpaired data, and their mixture (images and texts may come
from different institutes). Everything else is a standard choice, stated here:
- single stream with modality embeddings, pre-LN blocks, an [IMG] token: ViLT's layout (with ViT-B/16 patches);
- MLM as BERT (create_pretraining_data): among a report's real non-special tokens pick exactly
  round(0.15 · n) (at least 1, at most max_predictions = ceil(0.15 · T), BERT's 20 at T = 128); of those
  80 % → [MASK], 10 % → a random non-special id (ids above the largest special id), 10 % unchanged;
- MVM as SimMIM: random patch masking at ratio 0.6 (exactly round(0.6 · N) patches per image; the masking
  unit is one patch, the unit that is regenerated), [MASK] embedding in the encoder, linear heads, L1 on
  the raw input values (as the batch delivers them; no per-patch normalisation);
- "multi-scale": the same masked patches regenerated at full resolution and downsampled by 2 and 4
  (average pooling), one head per scale, the scales' losses averaged;
- both tasks in one pass: a paired sample has its report and its image masked at the same time (each
  modality is reconstructed from the other's visible part and its own);
- no dropout (dropout = 0.0: MAE / SimMIM / BEiT pre-train ViT-B without it); LayerNorm eps 1e-6 (timm).

Masking is seeded and costs no host sync: every random draw is a 32-bit integer hash (lowbias32) of
(config.mask_seed, the model's step counter, a stream id, the sample's row in the batch, the position),
computed with int64 tensor ops on the batch's device. So the masks are the same on CPU and GPU, eager and
compiled, batched or drawn one sample at a time (the benchmark baseline does that). The counter is a
buffer (`mask_step`, saved in checkpoints) that forward advances by one in training mode; in eval mode it
stays, so validation masks are fixed. Under torch.distributed (DDP) the buffer and the seed are the same on
every rank and the row is the sample's GLOBAL row (cxrfast.distributed.global_rows): a sample gets the mask
one process with the whole batch would give it, and the ranks' masks differ as their rows do. The losses are
means over the global batch's masked tokens and patches (cxrfast.distributed.global_mean: W × this rank's
share, whatever each rank's count), so W ranks give the gradients of one process with the whole batch.

    model = create_model("mixed", size="tiny")
    out = model(random_batch(model, 6))     # {"mlm", "mvm", "mvm_x1", "mvm_x2", "mvm_x4", "loss"}
    pics = model.reconstruct(batch)         # masked-vision reconstructions per scale, for pictures
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from cxrfast import distributed
from cxrfast.data.batch import Batch
from cxrfast.models.attention import BACKENDS, attention
from cxrfast.models.base import PresetModel, weighted_total
from cxrfast.models.config import PresetConfig

__all__ = ["MixedConfig", "MixedModel", "MODEL", "mask_key", "mlm_masks", "mvm_mask", "patchify", "unpatchify",
           "masked_average", "widen"]


@dataclasses.dataclass
class MixedConfig(PresetConfig):
    PRESET = "mixed"
    mixed_kinds: bool = True           # random_batch mixes paired / image-only / text-only samples
    image_size: int = 224
    max_length: int = 128
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_size: int = 3072
    dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    attention_backend: str = "sdpa"
    mlm_probability: float = 0.15
    mlm_mask_fraction: float = 0.8     # of the picked tokens: → [MASK]
    mlm_random_fraction: float = 0.1   # → a random id (the rest stay as they are)
    max_predictions: int | None = None  # per report; None: ceil(mlm_probability · T)
    mvm_mask_ratio: float = 0.6
    mvm_scales: tuple = (1, 2, 4)      # downsampling factors of the regenerated patches
    mvm_loss: str = "l1"               # "l1" (SimMIM) or "l2"
    mlm_weight: float = 1.0
    mvm_weight: float = 1.0
    mask_seed: int = 0

    @classmethod
    def sizes(cls):
        return {
            "paper": {},
            "small": dict(image_size=128, hidden_size=256, num_layers=4, num_heads=4, mlp_size=1024,
                          vocab_size=8000, max_length=64),
            "tiny": dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_size=64,
                         vocab_size=1000, max_length=24),
        }


# ---------------------------------------------------------------------------------------------------------
# seeded masks without a host sync: counter-based hashing in int64 tensor arithmetic
# ---------------------------------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF
_STREAM_PICK, _STREAM_ACTION, _STREAM_RANDOM_ID, _STREAM_PATCH = 0x1B873593, 0x5BD1E995, 0x27D4EB2F, 0x165667B1


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2³² for x in [0, 2³²), in two 16-bit halves of c so that no int64 product overflows
    (signed overflow would be undefined in compiled C++)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a bijective 32-bit integer mixer; x int64 in [0, 2³²)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def mask_key(seed: int, step: torch.Tensor) -> torch.Tensor:
    """The key of one masking draw: a scalar int64 tensor from the seed and the step counter."""
    return _hash32(_hash32(torch.full_like(step, seed & _M32)) ^ (step & _M32))


def _draws(key: torch.Tensor, stream: int, rows: torch.Tensor, length: int) -> torch.Tensor:
    """Uniform 24-bit integers [len(rows), length], a function of (key, stream, row, position) only."""
    k = _hash32(key ^ stream)
    pos = torch.arange(length, device=rows.device)
    idx = (rows[:, None] << 16) | pos[None, :]          # rows and positions < 2¹⁶
    return _hash32(_hash32(idx & _M32) ^ k) >> 8


def _ordered(keys: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Positions sorted by (eligible first, then random key): unique sort keys, so every device and sort
    implementation gives the same order."""
    L = keys.shape[1]
    pos = torch.arange(L, device=keys.device)
    sort_key = torch.where(eligible, keys * L + pos, (1 << 40) + pos)
    return sort_key.argsort(dim=1, stable=True)


def mlm_masks(config: MixedConfig, key: torch.Tensor, rows: torch.Tensor, input_ids: torch.Tensor,
              attention_mask: torch.Tensor, text_present: torch.Tensor, n_predictions: int) -> dict:
    """BERT's masking of the reports (rows [n] of the batch; ids and mask [n, T]; text_present [n]).

    Returns {"input_ids": [n, T] with the picked tokens replaced, "positions": [n, K] the picked positions
    (valid ones first), "labels": [n, K] their original ids, "valid": [n, K] bool}, K = n_predictions."""
    c = config
    n, T = input_ids.shape
    special = ((input_ids == c.pad_id) | (input_ids == c.cls_id) | (input_ids == c.sep_id)
               | (input_ids == c.mask_id))
    eligible = attention_mask & ~special & text_present[:, None]
    n_eligible = eligible.sum(1)
    # exactly round(p · n) tokens (round half up), at least one where there is one, at most K (BERT)
    n_pick = torch.floor(n_eligible.to(torch.float32) * c.mlm_probability + 0.5).long()
    n_pick = torch.minimum(torch.maximum(n_pick, (n_eligible > 0).long()), n_eligible).clamp(max=n_predictions)
    order = _ordered(_draws(key, _STREAM_PICK, rows, T), eligible)
    positions = order[:, :n_predictions]
    valid = torch.arange(n_predictions, device=input_ids.device)[None, :] < n_pick[:, None]
    picked = torch.zeros_like(eligible).scatter(1, positions, valid)
    u = _draws(key, _STREAM_ACTION, rows, T).to(torch.float32) / float(1 << 24)
    low = max(c.pad_id, c.cls_id, c.sep_id, c.mask_id) + 1
    random_ids = low + _draws(key, _STREAM_RANDOM_ID, rows, T) % (c.vocab_size - low)
    masked = torch.where(picked & (u < c.mlm_mask_fraction), torch.full_like(input_ids, c.mask_id), input_ids)
    masked = torch.where(picked & (u >= c.mlm_mask_fraction) & (u < c.mlm_mask_fraction + c.mlm_random_fraction),
                         random_ids, masked)
    return {"input_ids": masked, "positions": positions, "labels": input_ids.gather(1, positions), "valid": valid}


def mvm_mask(config: MixedConfig, key: torch.Tensor, rows: torch.Tensor, image_present: torch.Tensor,
             n_patches: int) -> torch.Tensor:
    """bool [n, N]: exactly round(ratio · N) random patches of every present image (SimMIM), none elsewhere."""
    n_mask = min(n_patches, max(1, round(config.mvm_mask_ratio * n_patches)))
    everywhere = torch.ones(len(rows), n_patches, dtype=torch.bool, device=rows.device)
    order = _ordered(_draws(key, _STREAM_PATCH, rows, n_patches), everywhere)
    mask = torch.zeros(len(rows), n_patches, dtype=torch.bool, device=rows.device)
    mask = mask.scatter(1, order[:, :n_mask], True)
    return mask & image_present[:, None]


# ---------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------
def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 1, H, W] → [B, N, patch²], patches in the convolution's row-major order."""
    B, C, H, W = image.shape
    h, w = H // patch, W // patch
    return image.reshape(B, C, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * patch * patch)


def unpatchify(patches: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """[B, N, patch²] → [B, 1, grid · patch, grid · patch] (the inverse of patchify)."""
    B = patches.shape[0]
    return patches.reshape(B, grid, grid, 1, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(
        B, 1, grid * patch, grid * patch)


def masked_average(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of x over its valid elements of the global batch (cxrfast.distributed.global_mean: under
    torch.distributed W × this rank's share, one all-reduce of the count); 0 (with a graph) where there is
    none. No host sync."""
    return distributed.global_mean(torch.where(valid, x, torch.zeros_like(x)).sum(), valid.sum())


def widen(t: torch.Tensor) -> torch.Tensor:
    """16-bit → float32 for the losses (autocast's outputs); float32 / float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class ImageEmbedding(nn.Module):
    """Patches (a convolution) + [IMG] + learned positions + the image modality embedding is added outside."""

    def __init__(self, c: MixedConfig):
        super().__init__()
        self.grid = c.image_size // c.patch_size
        self.patch = nn.Conv2d(1, c.hidden_size, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.position = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, c.hidden_size))

    def forward(self, image: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """image [B, 1, H, W], patch_mask [B, N] bool or None → [B, 1 + N, D]."""
        x = self.patch(image).flatten(2).transpose(1, 2)
        if patch_mask is not None:
            x = torch.where(patch_mask[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.position.to(x.dtype)


class TextEmbedding(nn.Module):
    """BERT's: word + learned position embeddings, LayerNorm."""

    def __init__(self, c: MixedConfig):
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_id)
        self.position = nn.Embedding(c.max_length, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        return self.norm(self.word(input_ids) + self.position.weight[:T][None])


class Block(nn.Module):
    """Pre-LayerNorm transformer block (ViT); attention through cxrfast.models.attention.attention."""

    def __init__(self, c: MixedConfig):
        super().__init__()
        self.heads, self.dropout, self.backend = c.num_heads, c.dropout, c.attention_backend
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.fc1 = nn.Linear(c.hidden_size, c.mlp_size)
        self.fc2 = nn.Linear(c.mlp_size, c.hidden_size)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(q, k, v, key_padding=key_padding, backend=self.backend, dropout_p=p)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(B, L, D)), p)
        return x + F.dropout(self.fc2(F.dropout(F.gelu(self.fc1(self.norm2(x))), p)), p)


class Transformer(nn.Module):
    def __init__(self, c: MixedConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], key_padding [B, L] bool (True: a real token) → [B, L, D]."""
        for block in self.blocks:
            x = block(x, key_padding)
        return self.norm(x)


class MLMHead(nn.Module):
    """BERT's prediction head; the decoder is the word embedding matrix (tied), passed in."""

    def __init__(self, c: MixedConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, h: torch.Tensor, word_weight: torch.Tensor) -> torch.Tensor:
        t = self.norm(F.gelu(self.dense(h)))
        return F.linear(t, word_weight.to(t.dtype), self.bias.to(t.dtype))


# ---------------------------------------------------------------------------------------------------------
class MixedModel(PresetModel):
    CONFIG = MixedConfig

    def __init__(self, config: MixedConfig):
        super().__init__(config)
        c = config
        if c.image_size % c.patch_size:
            raise ValueError(f"MixedConfig.image_size ({c.image_size}) must be a multiple of patch_size "
                             f"({c.patch_size})")
        if not c.mvm_scales or any(f < 1 or c.patch_size % f for f in c.mvm_scales):
            raise ValueError(f"MixedConfig.mvm_scales must be divisors of patch_size ({c.patch_size}), "
                             f"got {c.mvm_scales}")
        if c.hidden_size % c.num_heads:
            raise ValueError(f"MixedConfig.hidden_size ({c.hidden_size}) must be a multiple of num_heads "
                             f"({c.num_heads})")
        if c.attention_backend not in BACKENDS:
            raise ValueError(f"MixedConfig.attention_backend must be one of {BACKENDS}, got {c.attention_backend!r}")
        if c.mvm_loss not in ("l1", "l2"):
            raise ValueError(f"MixedConfig.mvm_loss must be 'l1' or 'l2', got {c.mvm_loss!r}")
        if not 0.0 < c.mvm_mask_ratio < 1.0 or not 0.0 < c.mlm_probability < 1.0:
            raise ValueError(f"MixedConfig: mvm_mask_ratio and mlm_probability must be in (0, 1), got "
                             f"{c.mvm_mask_ratio} and {c.mlm_probability}")
        if c.mlm_mask_fraction + c.mlm_random_fraction > 1.0:
            raise ValueError("MixedConfig: mlm_mask_fraction + mlm_random_fraction must be <= 1, got "
                             f"{c.mlm_mask_fraction} + {c.mlm_random_fraction}")
        self.image_embed = ImageEmbedding(c)
        self.text_embed = TextEmbedding(c)
        self.modality_embed = nn.Embedding(2, c.hidden_size)
        self.transformer = Transformer(c)
        self.mlm_head = MLMHead(c)
        self.mvm_heads = nn.ModuleList(nn.Linear(c.hidden_size, (c.patch_size // f) ** 2) for f in c.mvm_scales)
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.int64))
        self.apply(self._init)
        for p in (self.image_embed.cls, self.image_embed.mask_token, self.image_embed.position):
            nn.init.trunc_normal_(p, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        """BERT / ViT initialisation: truncated normal (0.02) weights, zero biases, unit LayerNorms."""
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------------- inputs
    @property
    def grid(self) -> int:
        return self.image_embed.grid

    def n_predictions(self, length: int) -> int:
        """K, the MLM slots per report (static: from the config and the batch's token length)."""
        c = self.config
        k = c.max_predictions if c.max_predictions is not None else math.ceil(c.mlm_probability * length)
        return max(1, min(length, k))

    def presence(self, batch: Batch):
        """(image [B], text [B]) bool: which samples have each modality, by `kind` (0 paired, 1 image-only,
        2 text-only) and the batch's own masks."""
        image = (batch.kind != 2) & batch.view_mask[:, 0]
        text = (batch.kind != 1) & batch.attention_mask.any(dim=1)
        return image, text

    def image(self, batch: Batch) -> torch.Tensor:
        """The first view [B, 1, H, W] in the model's dtype (a single-view preset)."""
        return batch.views[:, 0].to(self.image_embed.patch.weight.dtype)

    def make_masks(self, batch: Batch, step=None, row_offset: int = 0) -> dict:
        """The masks of this batch at `step` (default: the model's counter): mlm_masks' dict plus
        "patch_mask" [B, N] (see the module docstring). Deterministic in (mask_seed, step, row, position);
        the rows are row_offset + 0..B-1 (forward passes a rank's first global row)."""
        device = batch.input_ids.device
        step = self.mask_step if step is None else torch.as_tensor(step, dtype=torch.int64)
        key = mask_key(self.config.mask_seed, step.to(device))
        rows = torch.arange(len(batch), device=device) + row_offset
        image, text = self.presence(batch)
        masks = mlm_masks(self.config, key, rows, batch.input_ids, batch.attention_mask, text,
                          self.n_predictions(batch.input_ids.shape[1]))
        masks["patch_mask"] = mvm_mask(self.config, key, rows, image, self.grid ** 2)
        return masks

    # ----------------------------------------------------------------------------------------- stream
    def embed(self, image: torch.Tensor | None, input_ids: torch.Tensor | None, patch_mask=None):
        """Token embeddings of either part or both, with the modality embeddings added: [B, L, D]."""
        parts = []
        if image is not None:
            parts.append(self.image_embed(image, patch_mask) + self.modality_embed.weight[0])
        if input_ids is not None:
            parts.append(self.text_embed(input_ids) + self.modality_embed.weight[1])
        dtype = parts[0].dtype
        return torch.cat([p.to(dtype) for p in parts], dim=1)

    def hidden_states(self, batch: Batch, masks: dict):
        """The joint stream on the masked batch: (patch outputs [B, N, D], token outputs [B, T, D])."""
        image, text = self.presence(batch)
        N = self.grid ** 2
        x = self.embed(self.image(batch), masks["input_ids"], masks["patch_mask"])
        key_padding = torch.cat([image[:, None].expand(-1, 1 + N), batch.attention_mask & text[:, None]], dim=1)
        h = self.transformer(x, key_padding)
        return h[:, 1:1 + N], h[:, 1 + N:]

    def mvm_predictions(self, patch_states: torch.Tensor) -> list:
        """Per scale f: [B, N, (P/f)²] predicted pixels of every patch (average-pooled by f)."""
        return [head(patch_states) for head in self.mvm_heads]

    def mvm_targets(self, image: torch.Tensor) -> list:
        """Per scale f: [B, N, (P/f)²] the image average-pooled by f, cut into the patches' grid."""
        P = self.config.patch_size
        return [patchify(F.avg_pool2d(image, f) if f > 1 else image, P // f) for f in self.config.mvm_scales]

    # ----------------------------------------------------------------------------------------- losses
    def forward(self, batch: Batch, masks: dict | None = None) -> dict:
        """{"mlm", "mvm", "mvm_x{f}" per scale, "loss"}: see the module docstring. `masks` (make_masks'
        dict) overrides the model's own draw; without it, training mode advances the mask counter."""
        c = self.config
        if masks is None:
            masks = self.make_masks(batch, row_offset=distributed.global_rows(batch.input_ids)[0])
            if self.training:
                self.mask_step.add_(1)
        patch_states, token_states = self.hidden_states(batch, masks)
        # MLM: the K picked slots per report, gathered (static shapes, no boolean indexing)
        B, K = masks["positions"].shape
        picked = token_states.gather(1, masks["positions"][..., None].expand(-1, -1, token_states.shape[-1]))
        logits = widen(self.mlm_head(picked, self.text_embed.word.weight))
        ce = F.cross_entropy(logits.reshape(B * K, -1), masks["labels"].reshape(-1), reduction="none").view(B, K)
        losses = {"mlm": masked_average(ce, masks["valid"])}
        # MVM at every scale, on the masked patches of present images (patch_mask is False elsewhere)
        image = self.image(batch)
        per_scale = {}
        for f, pred, target in zip(c.mvm_scales, self.mvm_predictions(patch_states), self.mvm_targets(image)):
            diff = widen(pred) - widen(target)
            err = (diff.abs() if c.mvm_loss == "l1" else diff.square()).mean(-1)   # [B, N]
            per_scale[f"mvm_x{f}"] = masked_average(err, masks["patch_mask"])
        losses["mvm"] = sum(per_scale.values()) / len(per_scale)
        losses["loss"] = weighted_total(losses, {"mlm": c.mlm_weight, "mvm": c.mvm_weight})
        losses.update(per_scale)
        return losses

    # ----------------------------------------------------------------------------------------- evaluation
    def encode_image(self, batch: Batch) -> dict:
        """The stream on the (unmasked) image alone: {"global": [B, D] the [IMG] output, "local": [B, N, D],
        "grid": (g, g), "present": [B] bool}."""
        image, _ = self.presence(batch)
        x = self.embed(self.image(batch), None)
        h = self.transformer(x, image[:, None].expand(-1, x.shape[1]))
        return {"global": h[:, 0], "local": h[:, 1:], "grid": (self.grid, self.grid), "present": image}

    def encode_text(self, batch: Batch) -> dict:
        """The stream on the (unmasked) report alone: {"global": [B, D] the [CLS] output, "tokens": [B, T, D],
        "mask": [B, T] bool, "present": [B] bool}."""
        _, text = self.presence(batch)
        mask = batch.attention_mask & text[:, None]
        h = self.transformer(self.embed(None, batch.input_ids), mask)
        return {"global": h[:, 0], "tokens": h, "mask": mask, "present": text}

    @torch.no_grad()
    def reconstruct(self, batch: Batch, masks: dict | None = None) -> dict:
        """The masked-vision reconstructions, for pictures (no gradient; the mask counter does not move; no
        collective: the batch's rows are drawn as rows 0..B-1, as one process would).

        Returns {"patch_mask": [B, N] bool, "mask": [B, 1, H, W] bool (the masked pixels), "masks": the
        masks used, "scales": {f: {"target": [B, 1, H/f, W/f] the pooled image, "prediction": the heads'
        output for every patch, "composite": the target with its masked patches replaced by the prediction}}}.
        """
        masks = self.make_masks(batch) if masks is None else masks
        patch_states, _ = self.hidden_states(batch, masks)
        image = self.image(batch)
        P, g = self.config.patch_size, self.grid
        pm = masks["patch_mask"]
        out = {"patch_mask": pm, "masks": masks, "scales": {},
               "mask": unpatchify(pm[..., None].expand(-1, -1, P * P), g, P)}
        for f, pred, target in zip(self.config.mvm_scales, self.mvm_predictions(patch_states), self.mvm_targets(image)):
            q = P // f
            pred = pred.to(target.dtype)
            out["scales"][f] = {"target": unpatchify(target, g, q), "prediction": unpatchify(pred, g, q),
                                "composite": unpatchify(torch.where(pm[..., None], pred, target), g, q)}
        return out


MODEL = MixedModel
