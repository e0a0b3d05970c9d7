"""Tensor building blocks the presets share: word pieces → words, tokens → sentences, views → images; the
BatchNorm of the global batch; the word–region loss over a rank's batch or the global one.

No loop over tokens, words or samples and no host sync: the word and sentence indices of the batch
(cxrfast.data.Batch) drive scatters, and every output keeps a static size (as many word and sentence slots
as there are tokens), with the real count per sample as a tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrfast import distributed

__all__ = ["merge_words", "pool_sentences", "flatten_views", "Projection", "masked_mean", "batch_norm",
           "GlobalBatchNorm2d", "global_batch_norms", "word_region_loss"]


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


def batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """BatchNorm with `bn`'s parameters and buffers over x [..., C] (channels last), its statistics taken over
    the positions where mask [...] is True (all of them when mask is None).

    Training (or track_running_stats=False): normalised with the mean and biased variance of the selected
    positions of the GLOBAL batch — cxrfast.distributed.batch_moments: this rank's alone without
    torch.distributed, every rank's under it (torch.nn.SyncBatchNorm's semantics, on any backend) — and
    the running statistics updated with their unbiased variance, as nn.BatchNorm1d over just those rows
    would; evaluation: the running statistics (no collective). Unselected positions are normalised too
    (finite, meaningless): callers never read them. The count is a tensor, so nothing syncs with the host.
    Statistics in fp32 (or fp64) whatever autocast does.

    Written out rather than calling F.batch_norm: LoVT applies one BatchNorm to both attention directions,
    and F.batch_norm saves the running-statistics buffers for its backward, so a second call's in-place
    update of them would invalidate the first call's graph."""
    shape = x.shape
    compute = torch.promote_types(x.dtype, torch.float32)
    xf = x.reshape(-1, shape[-1]).to(compute)
    if bn.training or not bn.track_running_stats:
        if mask is None and xf.shape[0] < 2 and not distributed.is_distributed():
            raise ValueError(f"{type(bn).__name__}: expected more than 1 value per channel when training, got "
                             f"input of shape {tuple(shape)}")
        mean, var, n = distributed.batch_moments(xf, None if mask is None else mask.reshape(-1))
        if bn.training and bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                f = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
                unbiased = var * n / (n - 1).clamp(min=1)
                bn.running_mean.mul_(1 - f).add_(f * mean.to(bn.running_mean.dtype))
                bn.running_var.mul_(1 - f).add_(f * unbiased.to(bn.running_var.dtype))
    else:
        mean, var = bn.running_mean.to(compute), bn.running_var.to(compute)
    y = (xf - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        y = y * bn.weight.to(compute) + bn.bias.to(compute)
    return y.to(x.dtype).view(shape)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics are the global batch's under torch.distributed
    (`batch_norm`, torch.nn.SyncBatchNorm's semantics on any device and backend), so that W ranks train
    as one process with the whole batch; in one process and in evaluation exactly nn.BatchNorm2d (its
    fused kernel). The same parameters and buffers (state dicts are interchangeable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and distributed.is_distributed():
            return batch_norm(self, x.movedim(1, -1)).movedim(-1, 1)
        return super().forward(x)


def global_batch_norms(module: nn.Module) -> nn.Module:
    """Every nn.BatchNorm2d inside `module` (exactly that class) replaced, in place, by a GlobalBatchNorm2d
    holding the same parameters and buffers (as torch.nn.SyncBatchNorm.convert_sync_batchnorm does, which
    torch runs on GPUs only); returns `module`."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            for key, value in list(child._parameters.items()) + list(child._buffers.items()):
                setattr(new, key, value)
            new.train(child.training)
            setattr(module, name, new)
        else:
            global_batch_norms(child)
    return module


def word_region_loss(regions: torch.Tensor, words: torch.Tensor, word_lengths, *, global_batch: bool,
                     gathered=None, **hyper) -> torch.Tensor:
    """GLoRIA's word–region loss (cxrfast.local_contrastive_loss; `hyper` its keyword arguments) of each rank's
    images against the reports of its own batch (global_batch=False, as the released GLoRIA and JoImTeRNet
    codes: DDP then averages the ranks' losses) or of the whole global batch (True:
    cxrfast.distributed.local_contrastive_loss, rank-local blocks; `gathered` its shared gather). One
    process: the same loss either way."""
    if global_batch:
        return distributed.local_contrastive_loss(regions, words, word_lengths, gathered=gathered, **hyper)
    import cxrfast

    return cxrfast.local_contrastive_loss(regions, words, word_lengths, **hyper)
