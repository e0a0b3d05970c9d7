"""Tensor building blocks the presets share: word pieces → words, tokens → sentences, views → images.

No loop over tokens, words or samples and no host sync: the word and sentence indices of the batch
(cxrfast.data.Batch) drive scatters, and every output keeps a static size (as many word and sentence slots
as there are tokens), with the real count per sample as a tensor.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["merge_words", "pool_sentences", "flatten_views", "Projection", "masked_mean"]


def merge_words(tokens: torch.Tensor, word_index: torch.Tensor, reduce: str = "sum"):
    """Word pieces → words. tokens [B, T, D], word_index [B, T] (-1: special tokens and padding).

    Returns (words [B, T, D], lengths [B] int64, mask [B, T] bool): word w of sample b is the sum (GLoRIA
    sums its pieces) or mean of the pieces with word_index == w; slots past a sample's word count are zero.
    Equivalent to the per-sample loop ``words[b, w] = tokens[b, word_index[b] == w].sum(0)``."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"merge_words: reduce must be 'sum' or 'mean', got {reduce!r}")
    B, T, D = tokens.shape
    valid = word_index >= 0
    idx = word_index.clamp(min=0)
    words = tokens.new_zeros(B, T, D).scatter_add_(1, idx[..., None].expand(-1, -1, D),
                                                   tokens * valid[..., None].to(tokens.dtype))
    lengths = (word_index.amax(dim=1) + 1).clamp(min=0)
    if reduce == "mean":
        counts = tokens.new_zeros(B, T).scatter_add_(1, idx, valid.to(tokens.dtype))
        words = words / counts.clamp(min=1)[..., None]
    mask = torch.arange(T, device=tokens.device)[None, :] < lengths[:, None]
    return words, lengths, mask


def pool_sentences(tokens: torch.Tensor, sentence_index: torch.Tensor, reduce: str = "max"):
    """Tokens → sentences by max (LoVT) or mean pooling. tokens [B, T, D], sentence_index [B, T] (-1 ignored).

    Returns (sentences [B, T, D], lengths [B], mask [B, T]); empty slots are zero."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"pool_sentences: reduce must be 'max' or 'mean', got {reduce!r}")
    B, T, D = tokens.shape
    valid = sentence_index >= 0
    idx = sentence_index.clamp(min=0)[..., None].expand(-1, -1, D)
    lengths = (sentence_index.amax(dim=1) + 1).clamp(min=0)
    mask = torch.arange(T, device=tokens.device)[None, :] < lengths[:, None]
    if reduce == "max":
        low = torch.finfo(tokens.dtype).min
        src = tokens.masked_fill(~valid[..., None], low)
        out = tokens.new_full((B, T, D), low).scatter_reduce_(1, idx, src, reduce="amax", include_self=True)
    else:
        out = tokens.new_zeros(B, T, D).scatter_add_(1, idx, tokens * valid[..., None].to(tokens.dtype))
        counts = tokens.new_zeros(B, T).scatter_add_(1, idx[..., 0], valid.to(tokens.dtype))
        out = out / counts.clamp(min=1)[..., None]
    return out.masked_fill(~mask[..., None], 0.0), lengths, mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of x over `dim` where mask (broadcast to x without its last dim) is True; 0 where none is."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def flatten_views(views: torch.Tensor, view_mask: torch.Tensor, view: int = 0):
    """The image each sample contributes for single-view presets: its first view slot, [B, 1, H, W]
    (presets that take several views fuse them instead)."""
    return views[:, view]


class Projection(nn.Module):
    """Linear (or 2-layer MLP) projection into the joint space: GLoRIA and LoVT project global and local
    features separately."""

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, norm: bool = False):
        super().__init__()
        if hidden:
            layers = [nn.Linear(d_in, hidden, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [nn.ReLU(inplace=True), nn.Linear(hidden, d_out)]
            self.net = nn.Sequential(*layers)
        else:
            self.net = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and isinstance(self.net, nn.Sequential) and any(isinstance(m, nn.BatchNorm1d) for m in self.net):
            B, L, _ = x.shape
            return self.net(x.reshape(B * L, -1)).view(B, L, -1)
        return self.net(x)
