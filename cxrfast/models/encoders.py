"""Encoders from transformers (ResNetModel, ViTModel, BertModel): random initialisation by default, a local
Hugging Face directory when given (nothing is downloaded). No torchvision.

    enc = ResNetEncoder(EncoderSpec("resnet", RESNETS["resnet50"]))
    maps, pooled = enc(views)         # views [N, 1, H, W]: feature maps of stages 1..4, pooled [N, C4]
    txt = BertEncoder(EncoderSpec("bert", BERTS["base"]), vocab_size=30522)
    states = txt(input_ids, attention_mask)   # every layer's hidden states [B, T, H], embeddings first

Radiographs are one channel; an encoder built here takes one channel, and one loaded from a directory with
three (ImageNet weights) gets the grey image repeated, as the papers do.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrfast.models.common import global_batch_norms
from cxrfast.models.config import EncoderSpec

__all__ = ["RESNETS", "VITS", "BERTS", "ResNetEncoder", "ViTEncoder", "BertEncoder", "build_image_encoder"]

RESNETS = {
    "resnet50": dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                     embedding_size=64),
    "resnet18": dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic", embedding_size=64),
    "resnet-tiny": dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], layer_type="basic", embedding_size=8),
}
VITS = {
    "vit-b16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    patch_size=16),
    "vit-small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                      patch_size=16),
    "vit-tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16),
}
BERTS = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}


def _channels_of(model) -> int:
    return int(getattr(model.config, "num_channels", 1))


class ResNetEncoder(nn.Module):
    """transformers' ResNetModel on one-channel images. Its BatchNorms take their training statistics over the
    global batch under torch.distributed (GlobalBatchNorm2d: nn.BatchNorm2d in one process)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        if spec.pretrained:
            self.model = ResNetModel.from_pretrained(spec.pretrained)
        else:
            self.model = ResNetModel(ResNetConfig(num_channels=1, **spec.config))
        global_batch_norms(self.model)
        self.channels = list(self.model.config.hidden_sizes)

    def forward(self, x: torch.Tensor, after_stage: dict | None = None):
        """x [N, 1, H, W] → (feature maps of stages 1–S (S = 4 for the ResNets above), each [N, C_s, H_s, W_s];
        pooled last stage [N, C_S]). after_stage: {stage s (1-based): module} applied to stage s's output
        before the next stage reads it (JoImTeRNet's soft attention); the maps returned are those outputs."""
        if _channels_of(self.model) == 3:
            x = x.expand(-1, 3, -1, -1)
        # the model's own modules, walked here: transformers' output capturing (output_hidden_states) installs
        # hooks under a lock that torch.compile cannot trace (graph breaks inside the encoder)
        x = self.model.embedder(x)
        maps = []
        for s, stage in enumerate(self.model.encoder.stages, start=1):
            x = stage(x)
            if after_stage and s in after_stage:
                x = after_stage[s](x)
            maps.append(x)
        return tuple(maps), self.model.pooler(x).flatten(1)


class ViTEncoder(nn.Module):
    """transformers' ViTModel on one-channel images: [N, 1, H, W] → tokens [N, 1 + P, H_d] ([CLS] first)."""

    def __init__(self, spec: EncoderSpec, image_size: int):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        if spec.pretrained:
            self.model = ViTModel.from_pretrained(spec.pretrained, add_pooling_layer=False)
        else:
            self.model = ViTModel(ViTConfig(num_channels=1, image_size=image_size, **spec.config),
                                  add_pooling_layer=False)
        self.hidden = self.model.config.hidden_size

    def forward(self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        if _channels_of(self.model) == 3:
            x = x.expand(-1, 3, -1, -1)
        m = self.model
        h = m.embeddings(x.to(m.embeddings.patch_embeddings.projection.weight.dtype), bool_masked_pos=bool_masked_pos)
        for layer in m.layers if hasattr(m, "layers") else m.encoder.layer:  # (walked: see ResNetEncoder)
            h = layer(h, None)
        return m.layernorm(h)


class BertEncoder(nn.Module):
    """transformers' BertModel: ids [B, T], mask [B, T] → every layer's hidden states (embeddings first).

    add_pooling_layer: keep BERT's pooler (tanh(W h_[CLS] + b), `self.model.pooler`, loaded with the weights
    from a directory) for presets whose report vector is BERT's pooled output (REFERS)."""

    def __init__(self, spec: EncoderSpec, vocab_size: int, max_length: int = 512, add_pooling_layer: bool = False):
        super().__init__()
        from transformers import BertConfig, BertModel

        if spec.pretrained:
            self.model = BertModel.from_pretrained(spec.pretrained, add_pooling_layer=add_pooling_layer)
        else:
            cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max(512, max_length), **spec.config)
            self.model = BertModel(cfg, add_pooling_layer=add_pooling_layer)
        self.hidden = self.model.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        m = self.model
        h = m.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=m.config, inputs_embeds=h, attention_mask=attention_mask.long())
        states = [h]
        for layer in m.encoder.layer:  # walked, not model(output_hidden_states=True): see ResNetEncoder
            h = layer(h, mask)
            states.append(h)
        return tuple(states)


def build_image_encoder(spec: EncoderSpec, image_size: int) -> nn.Module:
    if spec.kind == "resnet":
        return ResNetEncoder(spec)
    if spec.kind == "vit":
        return ViTEncoder(spec, image_size)
    raise ValueError(f"image encoder kind must be 'resnet' or 'vit', got {spec.kind!r}")
