"""The batch: the one contract between the data layer and the models.

    views           float [B, V, 1, H, W]   the study's images (zeros where view_mask is False)
    view_mask       bool  [B, V]            which view slots hold an image
    input_ids       long  [B, T]            token ids of the report (padding: the tokenizer's pad id)
    attention_mask  bool  [B, T]            True on real tokens (special tokens included)
    word_index      long  [B, T]            the word each token belongs to, 0-based per sample; -1 on
                                            special tokens and padding: word pieces merge into words by a
                                            scatter over this index, no Python loop over tokens
    sentence_index  long  [B, T]            the sentence of each token, 0-based; -1 on special tokens and padding
    kind            long  [B]               0 paired, 1 image-only, 2 text-only (KIND_CODES)
    labels          float [B, F]            1 / 0 / NaN (unknown or uncertain-ignored), in `findings` order
    study_ids       list[str]               B ids
    findings        tuple[str]              the F label names
    masks           float [B, V, 1, H, W] or None   where a dataset has them (the synthetic findings' regions)

Image-only samples have no tokens (attention_mask all False); text-only samples have no views
(view_mask all False). Models use `kind` to compute each loss only where its inputs exist.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["Batch", "KIND_CODES"]

KIND_CODES = {"paired": 0, "image": 1, "text": 2}


@dataclass
class Batch:
    views: torch.Tensor
    view_mask: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_index: torch.Tensor
    sentence_index: torch.Tensor
    kind: torch.Tensor
    labels: torch.Tensor
    study_ids: list
    findings: tuple = ()
    masks: torch.Tensor | None = None

    def __post_init__(self):
        self.validate()

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def validate(self) -> None:
        """Shapes and dtypes agree with the contract above; the error names the field."""
        B = self.kind.shape[0]

        def need(name, t, dims, dtypes):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Batch.{name}: expected a tensor, got {type(t).__name__}")
            if t.dim() != dims or t.shape[0] != B:
                raise ValueError(f"Batch.{name}: expected {dims} dims with batch size {B}, got shape {tuple(t.shape)}")
            if t.dtype not in dtypes:
                raise ValueError(f"Batch.{name}: expected dtype in {dtypes}, got {t.dtype}")

        need("kind", self.kind, 1, (torch.int64,))
        need("views", self.views, 5, (torch.float32, torch.float16, torch.bfloat16, torch.uint8))
        need("view_mask", self.view_mask, 2, (torch.bool,))
        if self.views.shape[1] != self.view_mask.shape[1] or self.views.shape[2] != 1:
            raise ValueError(f"Batch.views: expected [B, V, 1, H, W] with V = view_mask's {self.view_mask.shape[1]}, "
                             f"got {tuple(self.views.shape)}")
        for name in ("input_ids", "word_index", "sentence_index"):
            need(name, getattr(self, name), 2, (torch.int64,))
        need("attention_mask", self.attention_mask, 2, (torch.bool,))
        shapes = {n: tuple(getattr(self, n).shape) for n in ("input_ids", "attention_mask", "word_index",
                                                                 "sentence_index")}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"Batch: the token fields must share one shape, got {shapes}")
        need("labels", self.labels, 2, (torch.float32,))
        if len(self.study_ids) != B:
            raise ValueError(f"Batch.study_ids: expected {B} ids, got {len(self.study_ids)}")
        if self.findings and len(self.findings) != self.labels.shape[1]:
            raise ValueError(f"Batch.findings: {len(self.findings)} names for {self.labels.shape[1]} label columns")
        if self.masks is not None and tuple(self.masks.shape) != tuple(self.views.shape):
            raise ValueError(f"Batch.masks: expected the views' shape {tuple(self.views.shape)}, "
                             f"got {tuple(self.masks.shape)}")

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on `device`."""
        moved = {f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                 for f in fields(self) for v in [getattr(self, f.name)]}
        return Batch(**moved)

    def pin_memory(self) -> "Batch":
        """A copy with every tensor in pinned host memory (DataLoader's pin_memory calls this)."""
        pinned = {f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                  for f in fields(self) for v in [getattr(self, f.name)]}
        return Batch(**pinned)

    @property
    def has_image(self) -> torch.Tensor:
        """bool [B]: the sample has at least one view."""
        return self.view_mask.any(dim=1)

    @property
    def has_text(self) -> torch.Tensor:
        """bool [B]: the sample has a report."""
        return self.attention_mask.any(dim=1)
