"""`globallocal`: Cross-Modal Global-Local representation learning (GLoRIA-style; Cross Modal Global Local
Representation Learning from Radiology Reports and X-Ray Chest Images, 2023; GLoRIA, Huang et al. 2021).

    image  ResNet-50 at 299 px (the 224-px crop upsampled, as GLoRIA): local features from stage 3 (1024 ×
           19 × 19) through a 1×1 convolution without bias, global from stage 4 average-pooled through a
           linear layer, both into the 768-d joint space
    text   BERT: the sum of its last 4 layers' hidden states; word pieces summed into words (the batch's word
           indices: a scatter, no loop); the report vector is the mean of its tokens' summed states
    loss   global: InfoNCE over cosine similarities × 10, both directions added (GLoRIA's global_loss);
           local: cxrfast.local_contrastive_loss (word–region attention, temperatures 4 / 5 / 10, both
           directions added); total = 1.0 · local + 1.0 · global (GLoRIA's weights)

GLoRIA's code differs in two places that we do not copy. Its local loss reads the first cap_len slots of the
word-merged sequence ([CLS], the words, [SEP], then zeros), where cap_len counts the report's word *pieces*
plus [CLS] and [SEP] (datasets/pretraining_dataset.py: the non-pad ids; models/text_model.py merges the
pieces into words afterwards): so [CLS] and [SEP] count as words, and one zero vector per "##" continuation
piece joins every report. All of these enter the attention's first softmax (over a region's words), so they
shift every real word's attention, and each adds its own term to the image's sum over words (a zero vector's
cosine score 0 adds exp(0)). And its report vector averages over all 97 padded slots (zeros included). Here
the words are the report's words and the report vector is the mean over its real tokens. Neither changes the
architecture; both change what the losses see, by 2 + (number of "##" pieces) slots per report.

Under torch.distributed (DDP) the global loss is computed over the whole global batch (gathered embeddings,
rank-local rows: cxrfast.distributed) and the ResNet's BatchNorms take global statistics, so W ranks train as
one process with the whole batch. The local loss is each rank's own batch by default: GLoRIA's released
pre-training config runs on one GPU (configs/chexpert_pretrain_config.yaml: gpus '1', Lightning's 'dp'
backend, whose replicas would each compute the loss of their own slice), and no released code of these papers
computes the word–region loss across GPUs. local_loss_global_batch=True pairs each rank's images with every
report of the global batch (cxrfast.distributed.local_contrastive_loss: the one-GPU loss at any W) — then
W ranks equal 1 process with the whole batch in every term.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from cxrfast.data.batch import Batch
from cxrfast.models.base import PresetModel, common_dtype, weighted_total
from cxrfast.models.common import masked_mean, merge_words, word_region_loss
from cxrfast.models.config import EncoderSpec, PresetConfig
from cxrfast.models.encoders import BERTS, RESNETS, BertEncoder, ResNetEncoder

__all__ = ["GlobalLocalConfig", "GlobalLocalModel", "MODEL"]


@dataclasses.dataclass
class GlobalLocalConfig(PresetConfig):
    PRESET = "globallocal"
    image_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("resnet", RESNETS["resnet50"]))
    text_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("bert", BERTS["base"]))
    image_size: int = 224
    encoder_size: int | None = 299   # the crop is upsampled to this before the CNN (GLoRIA: 299 → 19 × 19 maps)
    local_stage: int = 3
    embed_dim: int = 768
    last_n_layers: int = 4
    temp_attention: float = 4.0
    temp_aggregate: float = 5.0
    temp_logits: float = 10.0
    local_weight: float = 1.0
    global_weight: float = 1.0
    max_length: int = 97            # GLoRIA's word_num
    # under torch.distributed, each rank's images against the reports of the whole global batch in the local
    # loss (rank-local blocks); False: against its own batch only (see the module docstring)
    local_loss_global_batch: bool = False

    @classmethod
    def sizes(cls):
        return {
            "paper": {},
            "small": dict(image_encoder=EncoderSpec("resnet", RESNETS["resnet18"]),
                          text_encoder=EncoderSpec("bert", BERTS["small"]), embed_dim=256, encoder_size=None,
                          vocab_size=8000, max_length=64),
            "tiny": dict(image_encoder=EncoderSpec("resnet", RESNETS["resnet-tiny"]),
                         text_encoder=EncoderSpec("bert", BERTS["tiny"]), embed_dim=32, encoder_size=None,
                         image_size=64, vocab_size=1000, max_length=48, last_n_layers=2),
        }


class GlobalLocalModel(PresetModel):
    CONFIG = GlobalLocalConfig

    def __init__(self, config: GlobalLocalConfig):
        super().__init__(config)
        c = config
        self.image_encoder = ResNetEncoder(c.image_encoder)
        self.text_encoder = BertEncoder(c.text_encoder, c.vocab_size, c.max_length)
        if not 1 <= c.local_stage <= 4:
            raise ValueError(f"GlobalLocalConfig.local_stage must be 1..4, got {c.local_stage}")
        if not 1 <= c.last_n_layers <= self.text_encoder.model.config.num_hidden_layers:
            raise ValueError(f"GlobalLocalConfig.last_n_layers must be 1..the BERT's layers, got {c.last_n_layers}")
        chans = self.image_encoder.channels
        self.local_embed = nn.Conv2d(chans[c.local_stage - 1], c.embed_dim, kernel_size=1, bias=False)
        self.global_embed = nn.Linear(chans[-1], c.embed_dim)
        h = self.text_encoder.hidden
        self.word_embed = nn.Identity() if h == c.embed_dim else nn.Linear(h, c.embed_dim)
        self.report_embed = nn.Identity() if h == c.embed_dim else nn.Linear(h, c.embed_dim)

    def encode_image(self, batch: Batch) -> dict:
        """{"global": [B, E], "local": [B, R, E], "grid": (h, w)} of each sample's first view."""
        x = batch.views[:, 0]
        if self.config.encoder_size:
            x = F.interpolate(x, size=(self.config.encoder_size,) * 2, mode="bilinear", align_corners=True)
        maps, pooled = self.image_encoder(x)
        local = self.local_embed(maps[self.config.local_stage - 1])  # [B, E, h, w]
        B, E, h, w = local.shape
        return {"global": self.global_embed(pooled), "local": local.flatten(2).transpose(1, 2), "grid": (h, w)}

    def encode_text(self, batch: Batch) -> dict:
        """{"global": [B, E], "words": [B, T, E], "word_lengths": [B], "word_mask": [B, T]}."""
        states = self.text_encoder(batch.input_ids, batch.attention_mask)
        tokens = torch.stack(states[-self.config.last_n_layers:]).sum(0)
        words, lengths, mask = merge_words(tokens, batch.word_index, "sum")
        report = masked_mean(tokens, batch.attention_mask)
        return {"global": self.report_embed(report), "words": self.word_embed(words), "word_lengths": lengths,
                "word_mask": mask}

    def forward(self, batch: Batch) -> dict:
        c = self.config
        img, txt = self.encode_image(batch), self.encode_text(batch)
        regions, words = common_dtype(img["local"], txt["words"])
        losses = {
            "global": self.contrastive_loss(img["global"], txt["global"], c.temp_logits, weights=(1.0, 1.0)),
            "local": word_region_loss(regions, words, txt["word_lengths"], global_batch=c.local_loss_global_batch,
                                      temp_attention=c.temp_attention, temp_aggregate=c.temp_aggregate,
                                      temp_logits=c.temp_logits),
        }
        losses["loss"] = weighted_total(losses, {"global": c.global_weight, "local": c.local_weight})
        return losses


MODEL = GlobalLocalModel
