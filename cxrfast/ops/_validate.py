"""Input checks shared by the ops. Every message names the argument, what was expected and what came."""

from __future__ import annotations

import math
import os
from numbers import Real

import torch


def check_finite_enabled() -> bool:
    """Non-finite input checks cost one device sync per call; CXRFAST_CHECK_FINITE=0 turns them off.
    They are skipped while torch.compile traces (data-dependent control flow)."""
    if os.environ.get("CXRFAST_CHECK_FINITE", "1") == "0":
        return False
    return not torch.compiler.is_compiling()


def readable(t: torch.Tensor) -> bool:
    """Whether a data-dependent check may read `t`'s values: not while torch.compile traces, and never for
    meta tensors (they have shapes only: shape inference must not fail on a check)."""
    return t.device.type != "meta" and not torch.compiler.is_compiling()


def embedding_pair(op: str, a: torch.Tensor, b: torch.Tensor, names=("image_emb", "text_emb")) -> None:
    na, nb = names
    for name, t in ((na, a), (nb, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{op}: `{name}` must be 2-D [B, D], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: `{name}` must be a floating-point tensor, got {t.dtype}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"{op}: empty batch: `{na}` has shape {tuple(a.shape)}, `{nb}` {tuple(b.shape)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{op}: batch sizes differ: `{na}` has B={a.shape[0]}, `{nb}` has B={b.shape[0]} "
                         "(each image needs its paired text at the same index)")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{op}: embedding dims differ: `{na}` has D={a.shape[1]}, `{nb}` has D={b.shape[1]}")
    if a.shape[1] == 0:
        raise ValueError(f"{op}: embedding dim D is 0")
    if a.device != b.device:
        raise ValueError(f"{op}: `{na}` is on {a.device} but `{nb}` is on {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: `{na}` is {a.dtype} but `{nb}` is {b.dtype}; cast one of them")
    finite(op, na, a)
    finite(op, nb, b)


def finite(op: str, name: str, t: torch.Tensor) -> None:
    if check_finite_enabled() and readable(t) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{op}: `{name}` contains {bad} non-finite value(s) (NaN or inf)")


def scalar(op: str, name: str, value, like: torch.Tensor, *, positive: str | None = None) -> torch.Tensor:
    """A 0-dim float tensor on `like`'s device (a learnable tensor is kept, so its gradient flows).
    positive: when given, the value must be > 0, and this text says what it is (for the message); a tensor's
    sign is checked with its finiteness (one sync, under CXRFAST_CHECK_FINITE)."""
    def not_positive(got):
        return ValueError(f"{op}: `{name}` must be > 0 ({positive}), got {got}")

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{op}: `{name}` must be a scalar (one element), got shape {tuple(value.shape)}")
        if value.device != like.device:
            if value.device.type != "cpu" or value.dim() != 0:
                raise ValueError(f"{op}: `{name}` is on {value.device} but the embeddings are on {like.device}")
            value = value.to(like.device)  # a 0-dim CPU scalar, as PyTorch's own ops accept (gradient flows)
        if not value.is_floating_point():
            value = value.to(torch.float32)
        finite(op, name, value)
        if positive and check_finite_enabled() and readable(value) and not bool(value.detach() > 0):
            raise not_positive(value.item())
        return value.reshape(())
    if isinstance(value, Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{op}: `{name}` must be finite, got {value}")
        if positive and not value > 0:
            raise not_positive(value)
        return torch.tensor(float(value), dtype=torch.float32, device=like.device)
    raise TypeError(f"{op}: `{name}` must be a number or a scalar tensor, got {type(value).__name__}")


def groups_arg(op: str, groups, batch: int, like: torch.Tensor):
    if groups is None:
        return None
    if not isinstance(groups, torch.Tensor):
        raise TypeError(f"{op}: `groups` must be a 1-D integer tensor or None, got {type(groups).__name__}")
    if groups.dim() != 1 or groups.shape[0] != batch:
        raise ValueError(f"{op}: `groups` must have shape [{batch}] (one id per pair), got {tuple(groups.shape)}")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"{op}: `groups` must hold integer ids, got {groups.dtype}")
    if groups.device != like.device:
        raise ValueError(f"{op}: `groups` is on {groups.device} but the embeddings are on {like.device}")
    return groups.to(torch.int64).contiguous()


def lengths_arg(op: str, name: str, value, batch: int, like: torch.Tensor, per: str) -> torch.Tensor:
    """Per-sample counts (word / sentence lengths) as int64 on `like`'s device: a 1-D integer tensor or a list
    of ints, [batch] long (`per`: what each counts, for the message); a CPU tensor is moved. The values are the
    caller's to check."""
    lengths = value
    if not isinstance(lengths, torch.Tensor):
        try:
            if isinstance(value, (str, bytes)) or value is None:
                raise TypeError
            lengths = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{op}: `{name}` must be a 1-D integer tensor or a list of ints (one {per}), got "
                            f"{type(value).__name__}") from None
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{op}: `{name}` must have shape [{batch}] (one {per}), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{op}: `{name}` must hold integers, got {lengths.dtype}")
    if lengths.device != like.device:
        if lengths.device.type != "cpu":
            raise ValueError(f"{op}: `{name}` is on {lengths.device} but the features are on {like.device}")
        lengths = lengths.to(like.device)
    return lengths.to(torch.int64)


def weights_arg(op: str, weights) -> tuple[float, float]:
    try:
        w = tuple(float(v) for v in weights)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: `weights` must be a pair of numbers (w_i2t, w_t2i), got {weights!r}") from None
    if len(w) != 2:
        raise ValueError(f"{op}: `weights` must be a pair (w_i2t, w_t2i), got {len(w)} values")
    if not all(math.isfinite(v) for v in w):
        raise ValueError(f"{op}: `weights` must be finite, got {w}")
    if min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"{op}: `weights` must be ≥ 0 with a positive sum (w_i2t, w_t2i; (1, 0) is one "
                         f"direction only), got {w}")
    return w


def finite_number(op: str, name: str, value) -> float:
    """A finite real number (not a bool, not a tensor): hyper-parameters such as a margin."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{op}: `{name}` must be a finite number, got {value!r}")
    return float(value)


def positive_number(op: str, name: str, value) -> float:
    """A finite number > 0 (temperatures, scales)."""
    value = finite_number(op, name, value)
    if not value > 0:
        raise ValueError(f"{op}: `{name}` must be > 0, got {value}")
    return value


def probability(op: str, name: str, value) -> float:
    value = finite_number(op, name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{op}: `{name}` must be in [0, 1), got {value}")
    return value


def choice(op: str, name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{op}: `{name}` must be one of {tuple(allowed)}, got {value!r}")
    return value


def negatives_arg(op: str, negatives, batch: int, like: torch.Tensor, generator, modes=("hardest", "all", "random"),
                  *, pool: int | None = None, offset: int = 0):
    """The triplet losses' `negatives` and `generator`: returns (mode, indices). mode is "hardest" / "all"
    (indices None: the loss looks at every negative), "random" (indices freshly drawn from `generator`,
    cxrfast.reference.triplet.random_negatives) or "indices" (the given int64 [batch] tensor, on `like`'s
    device; a CPU tensor is moved). Indices must be -1 (no negative) or another sample's index, 0..pool-1
    (pool: the samples the indices point into, default the batch itself, whose anchors are samples
    offset..offset+batch-1 of it); that data check costs one sync and runs with the finiteness checks
    (CXRFAST_CHECK_FINITE)."""
    from cxrfast.reference.triplet import random_negatives

    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{op}: `generator` must be a torch.Generator or None, got {type(generator).__name__}")
        if not (isinstance(negatives, str) and negatives == "random"):
            raise ValueError(f"{op}: `generator` is only used with negatives='random', got negatives="
                             f"{'<tensor>' if isinstance(negatives, torch.Tensor) else repr(negatives)}")
        if generator.device.type != "cpu" and generator.device != like.device:
            raise ValueError(f"{op}: `generator` is on {generator.device} but the inputs are on {like.device} "
                             "(a CPU generator serves any device)")
    if not isinstance(negatives, torch.Tensor):
        expected = f"one of {tuple(modes)} or an integer tensor of per-sample negative indices [{batch}]"
        if not isinstance(negatives, str):
            raise TypeError(f"{op}: `negatives` must be {expected}, got {type(negatives).__name__}")
        if negatives not in modes:
            raise ValueError(f"{op}: `negatives` must be {expected}, got {negatives!r}")
        if negatives == "random":
            return "random", random_negatives(batch, generator, like.device)
        return negatives, None
    if negatives.is_floating_point() or negatives.is_complex() or negatives.dtype == torch.bool:
        raise TypeError(f"{op}: `negatives` indices must be an integer tensor, got {negatives.dtype}")
    if negatives.dim() != 1 or negatives.shape[0] != batch:
        raise ValueError(f"{op}: `negatives` indices must have shape [{batch}] (one negative per sample), "
                         f"got {tuple(negatives.shape)}")
    if negatives.device != like.device:
        if negatives.device.type != "cpu":
            raise ValueError(f"{op}: `negatives` is on {negatives.device} but the inputs are on {like.device}")
        negatives = negatives.to(like.device)
    idx = negatives.to(torch.int64)
    pool = batch if pool is None else pool
    if check_finite_enabled() and readable(idx):
        own = torch.arange(offset, offset + batch, device=idx.device)
        bad = (idx < -1) | (idx >= pool) | (idx == own)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            why = "the sample itself" if int(idx[i]) == i + offset else f"outside -1..{pool - 1}"
            raise ValueError(f"{op}: `negatives[{i}]` = {int(idx[i])} is {why}; each entry must be another "
                             f"sample's index (0..{pool - 1}, not its own) or -1 for none")
    return "indices", idx
