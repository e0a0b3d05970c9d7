"""`joimternet`: JoImTeRNet (Improving Joint Learning of Chest X-Ray and Radiology Report by Word Region
Alignment, MLMI 2021; code github.com/mshaikh2/JoImTeR_MLMI_2021, read at commit 965bca9: JoImTeR/model_img.py,
JoImTeR/model_txt.py, JoImTeR/trainer_pretrain.py, misc/losses.py, misc/config.py).

    image  a ResNet of six BasicBlock stages (2 blocks each, 16 → 512 channels, every stage halving the map)
           behind a stride-4 stem with 8 channels, on 2048-px radiographs (the released MAX_DIM crop): stage 5
           gives the 16 × 16 region grid (256 channels, stride 128), through a 1×1 convolution without bias
           into the 512-d joint space; stage 6 (512 × 8 × 8) average-pooled to 2 × 2 and flattened (2048)
           through a linear layer is the global vector. A soft attention follows stages 4 and 5 (a 1×1
           convolution to 16 heads, LeakyReLU, a softmax over positions per head, the heads summed into one
           map a; x + γ · a · x with a learnable scalar γ). The trunk is transformers' ResNetModel (one-channel
           input, embedding 8, hidden sizes 16..512, depths 2 × 6, first stage downsampling).
    text   a 3-layer BERT (hidden 512, 8 heads, feed-forward 2048) trained from scratch; its last layer's
           [CLS] state through a linear layer is the report vector ("sentence", pool='cls' as released), its
           word pieces merged into words (the batch's word indices; mean) through another linear layer are
           the words — without [CLS] (and without [SEP], see below).
    loss   matching (weight 1.0, LAMBDA_DAMSM): global image–sentence cross-entropy over cosine × 10 both ways
           (cxrfast.contrastive_loss, weights (1, 1): sent_loss's loss0 + loss1) and local region–word
           cross-entropy over the word–region similarity (cxrfast.local_contrastive_loss, temperatures 4 / 5
           / 10, both ways: words_loss); triplet (weight 2.0, LAMBDA_TRIPLET): the sentence-level ranking loss
           on cosine distance and the word-level one on the word–region similarity, margin 0.5 each, both
           directions, each direction the mean over the batch (cxrfast.triplet_loss / local_triplet_loss,
           reduction "mean"), with one random other sample per anchor as the negative, drawn every step, the
           same index for both directions and for the sentence and word losses (neither hardest nor all);
           MLM: a masked-LM head (linear, GELU, LayerNorm, linear to the vocabulary) over the BERT, BERT's
           corruption of 15% of the word pieces (80% [MASK], 10% a random token, 10% unchanged), the
           cross-entropy averaged over the chosen tokens.
           total = 1.0 · (global + local) + 2.0 · (global_triplet + local_triplet) + 1.0 · mlm

Every sample is an image–report pair (kind 0), as in the released pre-training on MIMIC-CXR; the first view of
each study is its image.

Sizes: "paper" as above, 54.2 M parameters with cxrfast's default 30 522-id vocabulary: the ResNet trunk
11.19 M, soft attentions 6 178, region and global layers 0.13 M + 1.05 M, BERT 25.35 M (its 3 layers 9.46 M,
the rest embeddings), sentence and word layers 0.26 M each, the MLM head 15.92 M (the released 8 411-word
vocabulary makes the embeddings and the head 22.7 M smaller: 31.5 M in all); "small" the same image network
at 1024 px (8 × 8 regions), a 256-d 3-layer BERT, 256-d joint space (18.6 M); "tiny" a 4-stage ResNet at
64 px with 4 × 4 regions from stage 3, for tests (0.12 M).

The random draws (negatives, MLM corruption) come from a counter-based generator the model owns
(`model.draws`, cxrfast.models.sampling: a hash of the config's seed, a step counter and the position): no
host sync, the same on every device and under torch.compile, reproducible. The step is a buffer saved with
the weights; it advances once per forward in training mode and stands still in eval mode (so an evaluation
sees the same negatives every time). `model.draw(batch)` returns this step's draws without advancing it.

Under torch.distributed (DDP), every term is the global batch's, W × this rank's share (cxrfast.distributed),
so W ranks give the gradients of one process with the whole batch: the sentence matching loss over gathered
embeddings; the negatives drawn over the global batch by global row, the same draw on every rank (same seed
and step), and each anchor's triplet scores taken against the gathered embeddings, words and regions; the
MLM mean over the global batch's chosen tokens (cxrfast.distributed.global_mean); the ResNet's BatchNorms
with global statistics. The released code trains on one GPU (trainer_pretrain.py: cfg.GPU_ID), every loss on
its whole batch. Here the word–region matching loss sees each rank's own batch by default (the multi-GPU
practice of GLoRIA-style codes, and B_local² instead of B_local · B_global pairs per rank);
local_loss_global_batch=True pairs each rank's images with every report of the global batch
(cxrfast.distributed.local_contrastive_loss), the released single-GPU loss at any W.

Deliberate differences from the released code, and why:
- The word-level triplet reads every report with its own length. The released words_triplet_loss reads the
  negative report with the anchor's length (``word_similarity(img, neg_words, cap_lens[i])``): words past
  the negative report's end (padding through BERT) or a cut-off report. A quirk, not the method.
- Words are the report's words. The released vocabulary is word-level (8 410 words + [MASK]) and its word
  list is every token after [CLS] up to cap_lens − 1, so [SEP] is its last "word"; here reports come as word
  pieces (cxrfast.data's WordPiece tokenizer), the pieces of a word are averaged into it (the mean keeps a
  word on one token's scale, as in a word-level vocabulary, and commutes with the linear word layer), and
  [SEP] is not a word.
- MLM and matching are one loss per step: the released trainer alternates tasks, a step being image–text
  matching with probability 0.3 (its own batch, its own optimizer steps) and MLM on another batch of
  reports otherwise. Here each forward computes both on the batch — one BERT pass over the clean reports
  and their corrupted copies stacked — and adds MLM with `mlm_weight` (1.0). The masked-LM head predicts
  the whole vocabulary (the released one omits its last id, [MASK]); random replacement tokens are drawn
  from the non-special ids [max special id + 1, vocab_size) (released: [4, 8410)).
- The sentence and word matching losses do not mask "same class" pairs: the released sent_loss / words_loss
  mask pairs with equal class_ids, which the pre-training loader fills with study ids, unique in a batch,
  so the mask is empty there.
- The cosine distance clamps each norm at 1e-12 (cxrfast's normalisation) where the released one clamps the
  product of the norms at 1e-8: the same values for any non-degenerate feature.
- Initialisation is transformers' (ResNet, BERT) and PyTorch's (the heads); the released image encoder
  re-initialises its convolutions with Kaiming-normal (fan-out). The stem is transformers' 7×7 stride-2
  convolution + 3×3 stride-2 max-pool (the released stem is one 7×7 stride-4 convolution): the same stride,
  the same grids at every stage.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from cxrfast import distributed
from cxrfast.data.batch import Batch
from cxrfast.models.base import PresetModel, common_dtype, weighted_total
from cxrfast.models.common import merge_words, word_region_loss
from cxrfast.models.config import EncoderSpec, PresetConfig
from cxrfast.models.encoders import BertEncoder, ResNetEncoder
from cxrfast.models.sampling import CounterDraws, mlm_corrupt

__all__ = ["JoImTeRNetConfig", "JoImTeRNetModel", "SoftAttention", "MODEL", "RESNETS", "BERTS"]

# the released image encoder (model_img.ImageEncoder) as transformers' ResNetConfig fields
RESNETS = {
    "joimternet": dict(embedding_size=8, hidden_sizes=[16, 32, 64, 128, 256, 512], depths=[2] * 6,
                       layer_type="basic", downsample_in_first_stage=True),
    "joimternet-tiny": dict(embedding_size=4, hidden_sizes=[8, 8, 16, 16], depths=[1] * 4, layer_type="basic",
                            downsample_in_first_stage=False),
}
# the released BertConfig (trainer_pretrain.JoImTeR.__init__): hidden 512, 3 layers, 8 heads, feed-forward 2048
BERTS = {
    "joimternet": dict(hidden_size=512, num_hidden_layers=3, num_attention_heads=8, intermediate_size=2048),
    "small": dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4, intermediate_size=1024),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}
# the draws' streams (CounterDraws): the negatives, and the MLM corruption (three consecutive streams)
STREAM_NEGATIVES, STREAM_MLM = 0, 1


@dataclasses.dataclass
class JoImTeRNetConfig(PresetConfig):
    PRESET = "joimternet"
    image_encoder: EncoderSpec = dataclasses.field(
        default_factory=lambda: EncoderSpec("resnet", RESNETS["joimternet"]))
    text_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("bert", BERTS["joimternet"]))
    image_size: int = 2048            # the released MAX_DIM (random crop / centre crop of the JPEG)
    region_stage: int = 5             # 2048 / 128 = 16 × 16 regions
    soft_attention_stages: tuple = (4, 5)
    soft_attention_heads: int = 16
    global_pool: int = 2              # the last stage average-pooled to 2 × 2 before the global linear layer
    embed_dim: int = 512              # cfg.hidden_dim
    max_length: int = 160             # cfg.max_length 159, + 1
    temp_attention: float = 4.0       # GAMMA1
    temp_aggregate: float = 5.0       # GAMMA2
    temp_logits: float = 10.0         # GAMMA3
    sentence_margin: float = 0.5
    word_margin: float = 0.5
    matching_weight: float = 1.0      # LAMBDA_DAMSM
    triplet_weight: float = 2.0       # LAMBDA_TRIPLET
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    mlm_mask_fraction: float = 0.8
    mlm_random_fraction: float = 0.1
    word_reduce: str = "mean"         # word pieces → words ("sum" as GLoRIA)
    seed: int = 0                     # the draws' seed (the same on every DDP rank: draws go by global row)
    # under torch.distributed, each rank's images against the reports of the whole global batch in the local
    # matching loss (rank-local blocks); False: its own batch only (see the module docstring)
    local_loss_global_batch: bool = False

    @classmethod
    def sizes(cls):
        return {
            "paper": {},
            # the paper's networks at half the resolution (8 × 8 regions) and a smaller BERT
            "small": dict(text_encoder=EncoderSpec("bert", BERTS["small"]), image_size=1024, embed_dim=256,
                          vocab_size=8000, max_length=64),
            "tiny": dict(image_encoder=EncoderSpec("resnet", RESNETS["joimternet-tiny"]),
                         text_encoder=EncoderSpec("bert", BERTS["tiny"]), image_size=64, region_stage=3,
                         soft_attention_stages=(2, 3), soft_attention_heads=4, embed_dim=32, vocab_size=1000,
                         max_length=48),
        }


class SoftAttention(nn.Module):
    """The released SoftAttention (model_img.py): a = Σ_heads softmax_positions(LeakyReLU(conv(x))), out =
    x + γ · a · x. Its Conv3d spans all channels with a (C, 1, 1) kernel and stride: a 1×1 Conv2d to `heads`
    channels. γ is one learnable scalar, initialised uniform on [0, 1) as released."""

    def __init__(self, channels: int, heads: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(channels, heads, kernel_size=1)
        self.scale = nn.Parameter(torch.rand(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The map a [N, 1, H, W] (each head's map sums to 1 over positions)."""
        logits = F.leaky_relu(self.conv(x), 0.01)
        return torch.softmax(logits.flatten(2), dim=-1).view_as(logits).sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.attention(x) * self.scale


class JoImTeRNetModel(PresetModel):
    CONFIG = JoImTeRNetConfig

    def __init__(self, config: JoImTeRNetConfig):
        super().__init__(config)
        c = config
        self.image_encoder = ResNetEncoder(c.image_encoder)
        chans = self.image_encoder.channels
        n = len(chans)
        if not 1 <= c.region_stage <= n:
            raise ValueError(f"JoImTeRNetConfig.region_stage must be 1..{n} (the ResNet's stages), "
                             f"got {c.region_stage}")
        bad = [s for s in c.soft_attention_stages if not 1 <= s <= n]
        if bad:
            raise ValueError(f"JoImTeRNetConfig.soft_attention_stages must be stages 1..{n}, got {bad}")
        for name in ("mlm_probability", "mlm_mask_fraction", "mlm_random_fraction"):
            if not 0.0 <= getattr(c, name) <= 1.0:
                raise ValueError(f"JoImTeRNetConfig.{name} must be in [0, 1], got {getattr(c, name)}")
        if c.mlm_mask_fraction + c.mlm_random_fraction > 1.0:
            raise ValueError("JoImTeRNetConfig: mlm_mask_fraction + mlm_random_fraction must be ≤ 1, got "
                             f"{c.mlm_mask_fraction} + {c.mlm_random_fraction}")
        if c.word_reduce not in ("mean", "sum"):
            raise ValueError(f"JoImTeRNetConfig.word_reduce must be 'mean' or 'sum', got {c.word_reduce!r}")
        self.soft_attention = nn.ModuleDict({str(s): SoftAttention(chans[s - 1], c.soft_attention_heads)
                                             for s in c.soft_attention_stages})
        self.region_embed = nn.Conv2d(chans[c.region_stage - 1], c.embed_dim, kernel_size=1, bias=False)
        self.global_embed = nn.Linear(chans[-1] * c.global_pool ** 2, c.embed_dim)
        self.text_encoder = BertEncoder(c.text_encoder, c.vocab_size, c.max_length)
        h = self.text_encoder.hidden
        self.sentence_embed = nn.Linear(h, c.embed_dim)
        self.word_embed = nn.Linear(h, c.embed_dim)
        eps = self.text_encoder.model.config.layer_norm_eps
        self.mlm_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=eps), nn.Linear(h, c.vocab_size))
        self.draws = CounterDraws(c.seed)

    # ---- encoders ---------------------------------------------------------------------------------------------

    def encode_image(self, batch: Batch) -> dict:
        """{"global": [B, E], "local": [B, R, E] (row-major regions), "grid": (h, w)} of each sample's first view."""
        c = self.config
        after = {int(s): m for s, m in self.soft_attention.items()}
        maps, _ = self.image_encoder(batch.views[:, 0], after_stage=after)
        regions = self.region_embed(maps[c.region_stage - 1])  # [B, E, h, w]
        pooled = F.adaptive_avg_pool2d(maps[-1], c.global_pool).flatten(1)
        return {"global": self.global_embed(pooled), "local": regions.flatten(2).transpose(1, 2),
                "grid": tuple(regions.shape[2:])}

    def text_features(self, last: torch.Tensor, batch: Batch) -> dict:
        """The text faces from the BERT's last hidden states [B, T, H] of the clean reports."""
        words, lengths, mask = merge_words(last, batch.word_index, self.config.word_reduce)
        return {"global": self.sentence_embed(last[:, 0]), "words": self.word_embed(words), "word_lengths": lengths,
                "word_mask": mask}

    def encode_text(self, batch: Batch) -> dict:
        """{"global": [B, E] (from [CLS]), "words": [B, T, E], "word_lengths": [B], "word_mask": [B, T]}."""
        return self.text_features(self.text_encoder(batch.input_ids, batch.attention_mask)[-1], batch)

    # ---- the step's random draws --------------------------------------------------------------------------------

    def draw(self, batch: Batch) -> dict:
        """This step's draws, without advancing the step: {"negatives": [B] (sample i's negative, ≠ i, an index
        into the global batch; shared by both directions and both triplet losses), "mlm_input_ids": [B, T]
        (the corrupted reports), "mlm_labels": [B, T] (the original ids where chosen, -100 elsewhere)}.
        Drawn by global row (cxrfast.distributed.global_rows: a collective under torch.distributed), so a
        rank's rows get what one process with the whole batch draws for them."""
        c = self.config
        device = batch.input_ids.device
        B = batch.input_ids.shape[0]
        offset, total = distributed.global_rows(batch.input_ids)
        negatives = self.draws.other_indices(STREAM_NEGATIVES, total, device)[offset:offset + B]
        special = max(c.pad_id, c.cls_id, c.sep_id, c.mask_id) + 1
        ids, labels = mlm_corrupt(self.draws, batch.input_ids, batch.word_index >= 0, vocab_size=c.vocab_size,
                                  mask_id=c.mask_id, random_low=special, probability=c.mlm_probability,
                                  mask_fraction=c.mlm_mask_fraction, random_fraction=c.mlm_random_fraction,
                                  stream=STREAM_MLM, row_offset=offset)
        return {"negatives": negatives, "mlm_input_ids": ids, "mlm_labels": labels}

    def mlm_loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the masked-LM head over the chosen tokens (mean over the global batch's chosen
        tokens, cxrfast.distributed.global_mean; 0 when none is chosen)."""
        logits = self.mlm_head(states)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return distributed.global_mean(total, (labels != -100).sum())

    # ---- the step -------------------------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> dict:
        c = self.config
        B = batch.input_ids.shape[0]
        drawn = self.draw(batch)
        # one BERT pass: the clean reports (matching) stacked over their corrupted copies (MLM)
        last = self.text_encoder(torch.cat([batch.input_ids, drawn["mlm_input_ids"]]),
                                 batch.attention_mask.repeat(2, 1))[-1]
        txt = self.text_features(last[:B], batch)
        img = self.encode_image(batch)
        img_g, txt_g = common_dtype(img["global"], txt["global"])
        regions, words = common_dtype(img["local"], txt["words"])
        lengths, negatives = txt["word_lengths"], drawn["negatives"]
        temps = dict(temp_attention=c.temp_attention, temp_aggregate=c.temp_aggregate)
        # under torch.distributed: the global batch's regions and words, gathered once for the local losses
        gathered = distributed.gather_word_regions(regions, words, lengths)
        losses = {
            "global": self.contrastive_loss(img_g, txt_g, c.temp_logits, weights=(1.0, 1.0)),
            "local": word_region_loss(regions, words, lengths, global_batch=c.local_loss_global_batch,
                                      gathered=gathered, temp_logits=c.temp_logits, **temps),
            "global_triplet": distributed.triplet_loss(img_g, txt_g, margin=c.sentence_margin, negatives=negatives,
                                                       reduction="mean"),
            "local_triplet": distributed.local_triplet_loss(regions, words, lengths, margin=c.word_margin,
                                                            negatives=negatives, reduction="mean",
                                                            gathered=gathered, **temps),
            "mlm": self.mlm_loss(last[B:], drawn["mlm_labels"]),
        }
        losses["loss"] = weighted_total(losses, {
            "global": c.matching_weight, "local": c.matching_weight, "global_triplet": c.triplet_weight,
            "local_triplet": c.triplet_weight, "mlm": c.mlm_weight})
        if self.training:
            self.draws.advance()
        return losses


MODEL = JoImTeRNetModel
