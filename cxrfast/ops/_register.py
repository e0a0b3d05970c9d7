"""One decorator for every cxrfast op.

torch.library.triton_op lets torch.compile see (and fuse around) the Triton launches inside an op; it
imports triton when the op is defined, i.e. on first use of cxrfast.ops, never at `import cxrfast`.
Where triton is not installed (it is a Linux-only dependency) the same function is registered with
torch.library.custom_op: the chunked path needs nothing more.
"""

from __future__ import annotations

import importlib.util

import torch


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def op(name: str):
    if has_triton():
        return torch.library.triton_op(name, mutates_args=())
    return torch.library.custom_op(name, mutates_args=())
