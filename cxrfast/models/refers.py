"""`refers`: REFERS (Zhou et al., "Generalized Radiograph Representation Learning via Cross-supervision
between Images and Free-text Radiology Reports", Nature Machine Intelligence 2022; code funnyzhou/REFERS,
`Pre-train/refers/models/captioning.py`, `modules/Fusion.py`, `modules/contrastive_learning.py`,
`modules/textual_heads.py`, `utils/losses.py`).

    views   every view slot of a study [B, V, 1, 224, 224] through one ViT-B/16 (shared weights; one call on
            the B·V images): tokens [B·V, 1 + 196, 768] after the final LayerNorm; each patch token gets the
            view's [CLS] token added (REFERS: ``visual_features[:, 1:] + visual_features[:, :1]``)
    fusion  per-token gates (REFERS' ``fusion``): at every patch position p the V views' tokens are
            concatenated, [V·768], and V linear maps to one scalar each (fc1, fc2, fc3 as one Linear(V·768, V))
            give sigmoid gates g[b, p, v]; the gated tokens g · x of all views are concatenated along the
            sequence: the fused study tokens [B, V·196, 768] ("local" of encode_image)
    decoder one post-norm transformer decoder layer (REFERS' textual head
            ``transformer_postnorm::L1_H1024_A16_F4096``, dropout 0.1, GELU): the fused tokens projected
            768 → 1024 are the memory; word + learned position embeddings → LayerNorm(eps 1e-8) → dropout,
            padding positions zeroed; causal self-attention, cross-attention to the memory, FFN; output
            layer tied to the word embeddings. Every attention goes through cxrfast.models.attention
    text    the report vector for the contrastive term is what the released ``TextEncoder`` computes: BERT
            (ClinicalBERT there; BERT-base here, or any local directory) → its pooler output (tanh of a
            dense layer on [CLS]) → Linear(768, V·768)
    image   the study vector for the contrastive term (the "global" of encode_image) is REFERS'
            ``global_feature_all``: the V views' [CLS] tokens concatenated, [B, V·768]
    loss    caption: token cross-entropy with teacher forcing (logits at t predict token t + 1, averaged over
            the real target tokens, [SEP] included: REFERS' CrossEntropyLoss(ignore_index=pad));
            contrastive: ConVIRT's InfoNCE on cosine similarities, τ = 0.1, λ = 0.75 ·
            image→report + 0.25 · report→image (`cxrfast.contrastive_loss(v, u, 1/τ, weights=(λ, 1 − λ))`);
            total = 1.0 · caption + 1.0 · contrastive (REFERS: ``loss + contrastive_loss``)

Defaults (size "paper"): 3 view slots (REFERS draws 3 images of each study), 224 px, reports of up to 100
tokens (DATA.MAX_CAPTION_LENGTH), ViT dropout 0.1 (the released ViT's dropout_rate), decoder dropout 0.1.
"small" and "tiny" shrink the encoders and the decoder and keep every mechanism (3 view slots).

Deviations from the released code, and why:

- Gradients of the contrastive term flow both ways. ``LossesOfConVIRT.text_image`` ends in ``.item()``, so
  the released report→image term (weight 0.25) is a constant: its value is logged and added, its gradient is
  zero, and only the image→report term trains the encoders. The paper's loss (ConVIRT's) has both
  directions; here both are differentiated (tests check both gradient directions against the formula).
- Missing views. The released dataset always fills the 3 slots by drawing images of the study with
  replacement (a 1-image study repeats that image). Here a study fills the slots it has and ``view_mask``
  marks the rest: an absent view's tokens and [CLS] are zeroed before the gates (its slot adds nothing to
  the gate logits), it is masked out of the decoder's cross-attention, and its zero [CLS] adds nothing to
  the cosine of the concatenated study vector. A one-view study is therefore exactly that view alone
  through its gate (tested). The ViT still runs on the absent slots (static shapes: selecting the present
  ones needs their count on the host); their outputs are discarded.
- One tokenizer. REFERS tokenizes each report twice: a 10k SentencePiece vocabulary for the decoder and
  ClinicalBERT's WordPiece for the contrastive BERT. Here the batch's ids (cxrfast's tokenizer, [CLS] …
  [SEP]) serve both: [CLS] is the decoder's start token and [SEP] its end token.
- The BERT is trained whole, as the released code does (its docstring says the embeddings and first 6 layers
  are frozen, but nothing freezes them; they only get a smaller learning rate, OPTIM.BERT_LR).
- Generation is greedy (`generate`) for the evaluation's examples, not the released beam search (beam 5);
  it keeps that search's rule of never repeating the previous token, and never emits [PAD], [CLS] or
  [MASK].
- Under torch.distributed (DDP) the contrastive term is the global batch's (gathered embeddings, rank-local
  rows) and the caption loss the mean over the global batch's tokens, each W × this rank's share
  (cxrfast.distributed), so W ranks give the gradients of one process with the whole batch (dropout aside:
  its draws are each rank's own). The released trainer (pretrain_refers.py) runs DDP with
  OPTIM.BATCH_SIZE // W studies per GPU and its LossesOfConVIRT sees each GPU's own batch (no gather: B/W
  negatives per anchor instead of B).
- Batches are expected to be paired studies (REFERS pre-trains on MIMIC-CXR image–report pairs). A sample
  without report adds no caption tokens; a sample without views has a zero study vector (cosine 0 with every
  report); both still sit among the contrastive negatives (excluding them would need a host sync).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from cxrfast import distributed
from cxrfast.data.batch import Batch
from cxrfast.models.attention import BACKENDS, attention
from cxrfast.models.base import PresetModel, weighted_total
from cxrfast.models.config import EncoderSpec, PresetConfig
from cxrfast.models.encoders import BERTS, VITS, BertEncoder, ViTEncoder

__all__ = ["RefersConfig", "RefersModel", "ViewFusion", "ReportDecoder", "MODEL"]


@dataclasses.dataclass
class RefersConfig(PresetConfig):
    PRESET = "refers"
    # the released ViT-B/16 (ml_collections config): dropout_rate 0.1, attention_dropout_rate 0.0
    image_encoder: EncoderSpec = dataclasses.field(
        default_factory=lambda: EncoderSpec("vit", {**VITS["vit-b16"], "hidden_dropout_prob": 0.1}))
    text_encoder: EncoderSpec = dataclasses.field(default_factory=lambda: EncoderSpec("bert", BERTS["base"]))
    image_size: int = 224
    max_views: int = 3              # REFERS' image, image2, image3
    max_length: int = 100           # DATA.MAX_CAPTION_LENGTH (also the decoder's position table)
    decoder_layers: int = 1         # transformer_postnorm::L1_H1024_A16_F4096
    decoder_hidden: int = 1024
    decoder_heads: int = 16
    decoder_ffn: int = 4096
    decoder_dropout: float = 0.1    # MODEL.TEXTUAL.DROPOUT
    temperature: float = 0.1        # LossesOfConVIRT(tau=0.1, ...)
    contrastive_lambda: float = 0.75  # ... lambd=0.75): weight of image→report; 1 − λ for report→image
    caption_weight: float = 1.0
    contrastive_weight: float = 1.0
    attention_backend: str = "sdpa"

    @classmethod
    def sizes(cls):
        return {
            "paper": {},
            "small": dict(image_encoder=EncoderSpec("vit", VITS["vit-small"]), image_size=128,
                          text_encoder=EncoderSpec("bert", BERTS["small"]), decoder_hidden=256, decoder_heads=4,
                          decoder_ffn=1024, vocab_size=8000, max_length=64),
            "tiny": dict(image_encoder=EncoderSpec("vit", VITS["vit-tiny"]), image_size=64,
                         text_encoder=EncoderSpec("bert", BERTS["tiny"]), decoder_hidden=32, decoder_heads=2,
                         decoder_ffn=64, vocab_size=1000, max_length=24),
        }


class ViewFusion(nn.Module):
    """REFERS' per-token view gates: g[b, p, :] = sigmoid(W · concat_v x[b, v, p] + c), W [V, V·D] (the
    released fc1, fc2, fc3, each Linear(V·D, 1), as the rows of one Linear).

    tokens [B, V, P, D], view_mask [B, V] → (fused [B, V·P, D] view-major, gates [B, P, V]). Absent views'
    tokens are zeroed first, so they add nothing to any gate logit; their gated tokens are zero."""

    def __init__(self, dim: int, views: int):
        super().__init__()
        self.gate = nn.Linear(views * dim, views)

    def forward(self, tokens: torch.Tensor, view_mask: torch.Tensor):
        B, V, P, D = tokens.shape
        x = torch.where(view_mask[:, :, None, None], tokens, 0)
        gates = torch.sigmoid(self.gate(x.transpose(1, 2).reshape(B, P, V * D)))       # [B, P, V]
        fused = x * gates.transpose(1, 2)[..., None]                                     # [B, V, P, D]
        return fused.reshape(B, V * P, D), gates


class _Attention(nn.Module):
    """Multi-head attention (nn.MultiheadAttention's projections) through cxrfast.models.attention."""

    def __init__(self, dim: int, heads: int, dropout: float, backend: str):
        super().__init__()
        self.heads, self.dropout, self.backend = heads, dropout, backend
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, context, key_padding, causal: bool):
        B, Lq, D = x.shape
        H = self.heads

        def heads(t):
            return t.view(B, -1, H, D // H).transpose(1, 2)

        o = attention(heads(self.q(x)), heads(self.k(context)), heads(self.v(context)), key_padding=key_padding,
                      causal=causal, backend=self.backend, dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(B, Lq, D))


class _DecoderLayer(nn.Module):
    """nn.TransformerDecoderLayer (post-norm, GELU) with cxrfast's attention:
    x ← LN(x + SelfAttn_causal(x)); x ← LN(x + CrossAttn(x, memory)); x ← LN(x + W₂ GELU(W₁ x))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, backend: str):
        super().__init__()
        self.self_attn = _Attention(dim, heads, dropout, backend)
        self.cross_attn = _Attention(dim, heads, dropout, backend)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, x_mask, memory, memory_mask):
        x = self.norm1(x + self.drop(self.self_attn(x, x, x_mask, causal=True)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory, memory_mask, causal=False)))
        return self.norm3(x + self.drop(self.linear2(self.drop(F.gelu(self.linear1(x))))))


class ReportDecoder(nn.Module):
    """REFERS' TransformerTextualHead: memory [B, M, D_img] (+ mask [B, M]), ids [B, T] (+ mask [B, T]) →
    next-token logits [B, T, vocab]."""

    def __init__(self, visual_dim: int, vocab_size: int, hidden: int, layers: int, heads: int, ffn: int,
                 dropout: float, max_length: int, pad_id: int, backend: str):
        super().__init__()
        self.visual_projection = nn.Linear(visual_dim, hidden)
        self.words = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_DecoderLayer(hidden, heads, ffn, dropout, backend) for _ in range(layers))
        self.apply(self._init_weights)
        # tied input and output word embeddings (created after the init, as released: the bias keeps
        # nn.Linear's default)
        self.output = nn.Linear(hidden, vocab_size)
        self.output.weight = self.words.weight

    @staticmethod
    def _init_weights(module):
        """BERT's init, as the released head: N(0, 0.02) weights; attention biases 0 (nn.MultiheadAttention's)."""
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=0.02)
        elif isinstance(module, _Attention):
            for lin in (module.q, module.k, module.v, module.out):
                lin.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def project(self, memory: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(memory)

    def logits(self, memory_projected, memory_mask, ids, mask):
        T = ids.shape[1]
        x = self.embed_norm(self.words(ids) + self.positions(torch.arange(T, device=ids.device))[None])
        x = self.dropout(x) * mask[..., None].to(x.dtype)   # padding positions zeroed (released)
        for layer in self.layers:
            x = layer(x, mask, memory_projected, memory_mask)
        return self.output(x)

    def forward(self, memory, memory_mask, ids, mask):
        return self.logits(self.project(memory), memory_mask, ids, mask)


def caption_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced token cross-entropy: logits [B, T, V] at t predict ids[:, t + 1] where mask[:, t + 1];
    the mean over those targets of the global batch (0 when there are none; under torch.distributed W × this
    rank's share, cxrfast.distributed.global_mean, whatever each rank's token count). In one process
    equivalent to REFERS' CrossEntropyLoss(ignore_index=pad)(logits[:, :-1].reshape(-1, V),
    ids[:, 1:].reshape(-1)), without a NaN for a batch with no report."""
    valid = mask[:, 1:]
    target = ids[:, 1:].masked_fill(~valid, -100)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
    return distributed.global_mean(nll, valid.sum())


class RefersModel(PresetModel):
    CONFIG = RefersConfig

    def __init__(self, config: RefersConfig):
        super().__init__(config)
        c = config
        if c.image_encoder.kind != "vit":
            raise ValueError(f"RefersConfig.image_encoder must be a 'vit', got {c.image_encoder.kind!r}")
        if c.max_views < 1:
            raise ValueError(f"RefersConfig.max_views must be >= 1, got {c.max_views}")
        if c.decoder_hidden % c.decoder_heads:
            raise ValueError(f"RefersConfig.decoder_hidden ({c.decoder_hidden}) must be a multiple of "
                             f"decoder_heads ({c.decoder_heads})")
        if c.attention_backend not in BACKENDS:
            raise ValueError(f"RefersConfig.attention_backend must be one of {BACKENDS}, got {c.attention_backend!r}")
        if not 0.0 <= c.contrastive_lambda <= 1.0 or c.temperature <= 0:
            raise ValueError(f"RefersConfig: need 0 <= contrastive_lambda <= 1 and temperature > 0, got "
                             f"{c.contrastive_lambda} and {c.temperature}")
        self.image_encoder = ViTEncoder(c.image_encoder, c.image_size)
        self.text_encoder = BertEncoder(c.text_encoder, c.vocab_size, c.max_length, add_pooling_layer=True)
        d = self.image_encoder.hidden
        self.fusion = ViewFusion(d, c.max_views)
        self.text_projection = nn.Linear(self.text_encoder.hidden, c.max_views * d)   # TextEncoder.fc
        self.decoder = ReportDecoder(d, c.vocab_size, c.decoder_hidden, c.decoder_layers, c.decoder_heads,
                                     c.decoder_ffn, c.decoder_dropout, c.max_length, c.pad_id, c.attention_backend)

    # -- encoders ---------------------------------------------------------------------------------------

    def view_tokens(self, batch: Batch):
        """Per view slot: (patch tokens + that view's [CLS], [B, V, P, D], as the ViT gives them (ViewFusion masks
        them); [CLS], [B, V, D], zero where the view is absent)."""
        B, V = batch.view_mask.shape
        if V != self.config.max_views:
            raise ValueError(f"refers: batch has {V} view slots, the model {self.config.max_views} (max_views)")
        h = self.image_encoder(batch.views.flatten(0, 1)).unflatten(0, (B, V))    # [B, V, 1 + P, D]
        cls = h[:, :, :1]
        return h[:, :, 1:] + cls, torch.where(batch.view_mask[:, :, None], cls[:, :, 0], 0)

    def encode_image(self, batch: Batch) -> dict:
        """{"global": [B, V·D] the views' [CLS] concatenated (the contrastive study vector), "local": [B, V·P, D]
        the gated tokens of all views (the decoder's memory), "local_mask": [B, V·P], "gates": [B, P, V]}."""
        tokens, cls = self.view_tokens(batch)
        B, V, P, _ = tokens.shape
        fused, gates = self.fusion(tokens, batch.view_mask)
        local_mask = batch.view_mask[:, :, None].expand(B, V, P).reshape(B, V * P)
        return {"global": cls.flatten(1), "local": fused, "local_mask": local_mask, "gates": gates}

    def encode_text(self, batch: Batch) -> dict:
        """{"global": [B, V·D] pooler → Linear (REFERS' TextEncoder), "tokens": [B, T, H] BERT's last layer,
        "token_mask": [B, T]}."""
        states = self.text_encoder(batch.input_ids, batch.attention_mask)
        pooled = self.text_encoder.model.pooler(states[-1])
        return {"global": self.text_projection(pooled), "tokens": states[-1], "token_mask": batch.attention_mask}

    # -- losses -----------------------------------------------------------------------------------------

    def contrastive(self, image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
        """λ · InfoNCE(image → report) + (1 − λ) · InfoNCE(report → image) on cosines / τ, both
        differentiated, over the global batch (PresetModel.contrastive_loss)."""
        c = self.config
        return self.contrastive_loss(image_global, text_global, 1.0 / c.temperature,
                                     weights=(c.contrastive_lambda, 1.0 - c.contrastive_lambda))

    def _check_length(self, T: int) -> None:
        if T > self.config.max_length:
            raise ValueError(f"refers: reports of {T} tokens, the decoder's positions stop at max_length="
                             f"{self.config.max_length}")

    def forward(self, batch: Batch) -> dict:
        c = self.config
        self._check_length(batch.input_ids.shape[1])
        img, txt = self.encode_image(batch), self.encode_text(batch)
        logits = self.decoder(img["local"], img["local_mask"], batch.input_ids, batch.attention_mask)
        losses = {
            "caption": caption_loss(logits, batch.input_ids, batch.attention_mask),
            "contrastive": self.contrastive(img["global"], txt["global"]),
        }
        losses["loss"] = weighted_total(losses, {"caption": c.caption_weight, "contrastive": c.contrastive_weight})
        return losses

    # -- generation -------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, batch: Batch, max_length: int | None = None) -> torch.Tensor:
        """Greedy reports of the batch's studies: ids [B, 1 + max_length], [CLS] first, [PAD] after [SEP].

        A loop over output positions (one decoder pass each over the prefix); no host sync inside it, so it
        always runs max_length steps. Runs in eval mode (restored after)."""
        c = self.config
        n = c.max_length - 1 if max_length is None else int(max_length)
        if not 1 <= n <= c.max_length - 1:
            raise ValueError(f"refers.generate: max_length must be 1..{c.max_length - 1} (the decoder's "
                             f"positions), got {max_length}")
        was_training = self.training
        self.eval()
        try:
            img = self.encode_image(batch)
            memory = self.decoder.project(img["local"])
            B = memory.shape[0]
            ids = torch.full((B, n + 1), c.pad_id, dtype=torch.long, device=memory.device)
            ids[:, 0] = c.cls_id
            done = torch.zeros(B, dtype=torch.bool, device=memory.device)
            banned = torch.tensor(sorted({c.pad_id, c.cls_id, c.mask_id}), device=memory.device)
            for t in range(n):
                prefix = ids[:, :t + 1]
                logits = self.decoder.logits(memory, img["local_mask"], prefix, torch.ones_like(prefix, dtype=torch.bool))
                step = logits[:, -1].float()
                step[:, banned] = float("-inf")
                step.scatter_(1, prefix[:, -1:], float("-inf"))   # the released search never repeats a token
                nxt = step.argmax(dim=-1)
                ids[:, t + 1] = torch.where(done, c.pad_id, nxt)
                done = done | (nxt == c.sep_id)
            return ids
        finally:
            self.train(was_training)


MODEL = RefersModel
