"""Lazy access to the compiled extension ``cxrfast._C`` (built from csrc/ by setup.py).

``import cxrfast`` never imports this module; the extension is loaded on the first call to
:func:`load` (or to an op that needs it). Importing ``cxrfast._C`` registers its C++ operators in
the ``cxrfast`` namespace (``torch.ops.cxrfast.*``); :func:`load` then registers their fake
(meta) implementations from Python so they trace under ``torch.compile(fullgraph=True)`` and pass
``torch.library.opcheck``.

    >>> from cxrfast import _ext
    >>> _ext.load() or _ext.unavailable_reason()
"""

from __future__ import annotations

import threading

import torch

__all__ = [
    "load", "available", "unavailable_reason", "cuda_compiled", "group_counts", "group_counts_torch",
]

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_reason: str | None = None
_cuda_compiled = False


def _register_fakes() -> None:
    """Fake (meta) kernels of the C++ ops: output metadata only, no data."""

    @torch.library.register_fake("cxrfast::group_counts")
    def _group_counts_fake(groups: torch.Tensor) -> torch.Tensor:
        _check_groups(groups)
        return groups.new_empty(groups.shape, dtype=torch.int32)

    @torch.library.register_fake("cxrfast::radiograph_render")
    def _radiograph_render_fake(samples, tables, images, size, filter, out_type, mean, inv_std):
        dtypes = {0: torch.uint8, 1: torch.uint16, 2: torch.float16, 3: torch.float32}
        torch._check(out_type in dtypes, lambda: f"radiograph_render: out_type {out_type} is not 0-3")
        return samples.new_empty((images.shape[0], size, size), dtype=dtypes[out_type])


def load() -> bool:
    """Import ``cxrfast._C`` once; True when it is available (see :func:`unavailable_reason`)."""
    global _loaded, _reason, _cuda_compiled
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        try:
            from cxrfast import _C
        except ImportError as exc:
            _reason = (
                f"cxrfast._C could not be imported ({type(exc).__name__}: {exc}); build it with "
                "`pip install --no-build-isolation --no-deps -e .` (without CXRFAST_NO_EXT=1)"
            )
            _loaded = False
            return False
        _register_fakes()
        _cuda_compiled = bool(_C.cuda_compiled())
        _loaded = True
        return True


def available() -> bool:
    """True when ``cxrfast._C`` imports (loads it on first call)."""
    return load()


def unavailable_reason() -> str | None:
    """Why ``cxrfast._C`` is unavailable, or None when it is available."""
    load()
    return _reason


def cuda_compiled() -> bool:
    """True when ``cxrfast._C`` is available and was built with its CUDA kernels."""
    return load() and _cuda_compiled


def _has_kernel(device: torch.device) -> bool:
    """Whether ``cxrfast._C`` carries a kernel for tensors on ``device``."""
    if not load():
        return False
    return device.type == "cpu" or (device.type == "cuda" and _cuda_compiled)


def _check_groups(groups: torch.Tensor) -> None:
    # Same contract and wording as check_group_counts_input in csrc/group_counts.h.
    if groups.dim() != 1 or groups.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(
            "group_counts: expected `groups` to be a 1-D int32/int64 tensor, got a "
            f"{groups.dim()}-D {groups.dtype} tensor of shape {tuple(groups.shape)} "
            f"on {groups.device}"
        )


def group_counts(groups: torch.Tensor) -> torch.Tensor:
    """Size of each element's group: ``out[i] = (groups == groups[i]).sum()`` as int32.

    groups: (B,) int32/int64 group ids (any values, e.g. study ids) -> (B,) int32.
    Uses ``torch.ops.cxrfast.group_counts`` (O(B) on CPU, sort-based on CUDA) when the extension
    has a kernel for the device, else the PyTorch equivalent::

        _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        counts[inverse].int()
    """
    if _has_kernel(groups.device):
        return torch.ops.cxrfast.group_counts(groups)
    return group_counts_torch(groups)


def group_counts_torch(groups: torch.Tensor) -> torch.Tensor:
    """PyTorch fallback of :func:`group_counts` (any device, no extension)."""
    _check_groups(groups)
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse].to(torch.int32)
